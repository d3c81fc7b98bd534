"""`mwtap demo`: the built-in server, the recorder in front of it and a handful of scripted
consumers, all in one process on 127.0.0.1, then the analysis of what was recorded. With Node, a
bot written against LivePerson's `node-agent-sdk` (recorder/demo_bot) takes the consumers'
conversations, through the same recorder; without, the server's built-in agent answers them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from mitmproxy.options import CONF_BASENAME, CONF_DIR

from recorder import demo_bot
from recorder.consumer import ConsumerConfig, ConsumerStats, run_consumer
from recorder.proxy import RecordingProxy
from recorder.server.app import MessagingServer
from recorder.server.config import ServerConfig

WRAP_UP_TIMEOUT = 15.0
BOT_READY_TIMEOUT = 20.0
BOT_STOP_TIMEOUT = 5.0
BOT_LOGIN = {"LP_ACCOUNT": "mwtap", "LP_USER": "mwtap-demo-bot", "LP_PASS": "demo"}
REPLY_DELAY = 0.3
"""Seconds the agent, built-in or bot, takes to answer: the consumers' misbehaviours (silences past
the idle timeout, reconnects, token expiry) are timed for it."""
ANALYSIS_FLAGS = {"keepalive_limit_s": "--keepalive-limit", "accept_timeout_s": "--accept-timeout",
                  "response_timeout_s": "--response-timeout"}  # the options of analyze and report


@dataclass(frozen=True)
class DemoSettings:
    """The limits the demo gives the server, and hands on to the analysis."""
    duration: float = 20.0
    idle_timeout: float = 4.0
    token_lifetime: float = 9.0
    seed: int = 7

    def server_config(self, advertise: str | None = None) -> ServerConfig:
        return ServerConfig(
            advertise=advertise,
            idle_timeout=self.idle_timeout,
            token_lifetime=self.token_lifetime,
            agent_reply_delay=REPLY_DELAY,
            # The one injected fault: now and then a sequence number is skipped.
            sequence_fault="skip",
            sequence_fault_rate=0.03,
            seed=self.seed,
        )

    def analysis_options(self) -> dict:
        return {"keepalive_limit_s": self.idle_timeout, "accept_timeout_s": 3.0, "response_timeout_s": 5.0}

    def analysis_flags(self) -> list[str]:
        """The options of `mwtap analyze` and `mwtap report` that give the demo's own numbers."""
        return [arg for field, value in self.analysis_options().items()
                for arg in (ANALYSIS_FLAGS[field], f"{value:g}")]

    def consumers(self) -> dict[str, ConsumerConfig]:
        """Most consumers behave; a few carry one misbehaviour each."""
        good = ConsumerConfig(messages=None, duration=self.duration, message_interval=1.0,
                              keepalive_interval=self.idle_timeout / 3, reconnect_delay=1.5, read_delay=0.3)
        return {
            "header-auth": good,
            "init-connection": replace(good, auth="init", keepalive="getclock"),
            "patient": replace(good, message_interval=2.5),
            # Silent for longer than the idle timeout between texts, so the server closes them.
            "no-keepalive": replace(good, no_keepalive=True, message_interval=self.idle_timeout * 1.5),
            "stale-token": replace(good, reuse_token_after_4401=True),
            "skips-accept": replace(good, skip_accept=True),
            "reused-id": replace(good, reuse_request_id=True),
            "impatient": replace(good, no_keepalive=True, message_interval=self.idle_timeout * 1.5,
                                 reconnect_immediately=True),
        }


class DemoBot:
    """bot.js under Node; counts the events it prints (one JSON line each)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.events: Counter[str] = Counter()
        self.last_line = ""
        """The last line that was not an event (Node's error, when the bot dies)."""
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, csds: str, keepalive: float) -> DemoBot:
        # The bot's TLS (the SDK calls https:// and wss:// only) ends at the recorder, whose
        # certificates mitmproxy makes with its CA: Node trusts that CA beside its own roots.
        ca = Path(os.path.expanduser(CONF_DIR)) / f"{CONF_BASENAME}-ca-cert.pem"
        env = demo_bot.bot_env(csds, ca, KEEPALIVE_S=f"{keepalive:g}", REPLY_DELAY_S=f"{REPLY_DELAY:g}",
                               RECONNECT_DELAY_S="1", **BOT_LOGIN)
        proc = await asyncio.create_subprocess_exec(demo_bot.node(), str(demo_bot.BOT), env=env,
                                                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        return cls(proc)

    async def _read(self) -> None:
        async for line in self.proc.stdout:
            text = line.decode("utf-8", "replace").strip()
            try:
                event = json.loads(text)["event"]
            except (ValueError, TypeError, KeyError):
                self.last_line = text or self.last_line
                continue
            self.events[event] += 1
            if event == "subscribed-routing":
                self.ready.set()

    async def wait_ready(self, timeout: float) -> str | None:
        """None once the bot takes rings; else why it does not."""
        exited = asyncio.create_task(self.proc.wait())
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait([exited, ready], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        ready.cancel()
        if self.ready.is_set():
            return None
        if self.proc.returncode is not None:
            await self._reader
            return f"it exited with status {self.proc.returncode}" + (f": {self.last_line}" if self.last_line else "")
        return f"it was not ready within {timeout:g} s"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), BOT_STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


def _free_port(host: str) -> int:
    """A port free now, for the recorder: the server's domain lookup must name it before it listens."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class DemoResult:
    consumers: dict[str, ConsumerStats]
    bot: Counter[str] | None
    """The bot's events ("connected", "ring-accepted", "answered", ...); None: no bot took part."""


async def run_demo(out_dir: Path, settings: DemoSettings, on_start=None, with_bot: bool = False) -> DemoResult:
    """Runs the whole demo; the capture is written to `out_dir / "capture.jsonl"`. `with_bot`: run
    bot.js (its SDK installed, `recorder.demo_bot.install`) before the consumers start.
    `on_start(server, proxy, bot_problem)` is called before they start; `bot_problem` says why a
    bot that was started does not take part (None: it does, or none was asked for)."""
    host = "127.0.0.1"
    proxy_port = _free_port(host) if with_bot else 0
    advertise = f"{host}:{proxy_port}" if with_bot else None
    bot = None
    try:
        async with MessagingServer(settings.server_config(advertise), host=host) as server:
            server_address = f"{server.host}:{server.port}"
            async with RecordingProxy(f"ws://{server_address}", out_dir / "capture.jsonl",
                                      listen_port=proxy_port) as proxy:
                ws_url = server.url().replace(server_address, f"{server.host}:{proxy.port}", 1)
                problem = None
                if with_bot:
                    bot = await DemoBot.start(f"{host}:{proxy.port}", settings.idle_timeout / 3)
                    problem = await bot.wait_ready(BOT_READY_TIMEOUT)
                    if problem is not None:
                        await bot.stop()
                        bot = None
                if on_start is not None:
                    on_start(server, proxy, problem)
                consumers = await _run_consumers(ws_url, server.idp_url(), settings)
    finally:  # after the recorder stopped: the bot's connection ends with the recording
        if bot is not None:
            await bot.stop()
    return DemoResult(consumers, bot.events if bot is not None else None)


async def _run_consumers(ws_url: str, idp_url: str, settings: DemoSettings) -> dict[str, ConsumerStats]:
    stop = asyncio.Event()
    names = list(settings.consumers())
    tasks = [asyncio.create_task(run_consumer(ws_url, idp_url, config, stop=stop))
             for config in settings.consumers().values()]
    await asyncio.sleep(settings.duration)
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=WRAP_UP_TIMEOUT)
    for task in pending:
        task.cancel()
    results = {}
    for name, task in zip(names, tasks):
        with contextlib.suppress(asyncio.CancelledError):
            results[name] = await task
    return results
