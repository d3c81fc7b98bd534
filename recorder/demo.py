"""`mwtap demo`: the built-in server, the recorder in front of it and a handful of scripted
consumers, all in one process on 127.0.0.1, then the analysis of what was recorded."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

from recorder.consumer import ConsumerConfig, ConsumerStats, run_consumer
from recorder.proxy import RecordingProxy
from recorder.server.app import MessagingServer
from recorder.server.config import ServerConfig

WRAP_UP_TIMEOUT = 15.0
ANALYSIS_FLAGS = {"keepalive_limit_s": "--keepalive-limit", "accept_timeout_s": "--accept-timeout",
                  "response_timeout_s": "--response-timeout"}  # the options of analyze and report


@dataclass(frozen=True)
class DemoSettings:
    """The limits the demo gives the server, and hands on to the analysis."""
    duration: float = 20.0
    idle_timeout: float = 4.0
    token_lifetime: float = 9.0
    seed: int = 7

    def server_config(self) -> ServerConfig:
        return ServerConfig(
            idle_timeout=self.idle_timeout,
            token_lifetime=self.token_lifetime,
            agent_reply_delay=0.3,
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


async def run_demo(out_dir: Path, settings: DemoSettings, on_start=None) -> dict[str, ConsumerStats]:
    """Runs the whole demo; the capture is written to `out_dir / "capture.jsonl"`."""
    async with MessagingServer(settings.server_config()) as server:
        server_address = f"{server.host}:{server.port}"
        async with RecordingProxy(f"ws://{server_address}", out_dir / "capture.jsonl") as proxy:
            ws_url = server.url().replace(server_address, f"{server.host}:{proxy.port}", 1)
            if on_start is not None:
                on_start(server, proxy)
            stop = asyncio.Event()
            names = list(settings.consumers())
            tasks = [asyncio.create_task(run_consumer(ws_url, server.idp_url(), config, stop=stop))
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
