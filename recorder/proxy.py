"""RecordingProxy: mitmproxy with the recorder, in-process, on the caller's asyncio loop.

A lean `Master` holding only the addons a WebSocket relay needs (core, proxyserver, next_layer,
tlsconfig) and the Recorder, with a leaner hook dispatch (`_LeanAddons`): mitmdump visits about
35 addons twice per message, so this relays about twice as many messages per second
(benchmarks/README.md).

mitmproxy keeps one global `ctx.master`: run one RecordingProxy per process at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path
from typing import Callable, Iterable

from mitmproxy import exceptions, hooks, options
from mitmproxy.addonmanager import AddonManager, safecall
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.net import server_spec

from analysis.capture import DEFAULT_MAX_PAYLOAD, host_port
from recorder.addon import Observer, Recorder
from recorder.live import LiveCheck

STARTUP_TIMEOUT = 20.0
CLOSE_TIMEOUT = 5.0  # seconds to wait for client connections to end after mitmproxy stopped


def upstream_mode(upstream: str) -> str:
    """mitmproxy's reverse mode for a ws:// or wss:// upstream (mitmproxy rejects `reverse:ws://`),
    checked here with mitmproxy's own parser: a bad one would fail only inside mitmproxy's startup."""
    scheme, sep, rest = upstream.partition("://")
    schemes = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
    server = f"{schemes[scheme.lower()]}://{rest}" if sep and scheme.lower() in schemes else ""
    try:
        server_spec.parse(server, default_scheme="https")
    except ValueError:
        raise ValueError(f"upstream must be ws://HOST:PORT or wss://HOST:PORT (an IPv6 address in brackets: "
                         f"ws://[::1]:PORT), not {upstream!r}") from None
    return f"reverse:{server}"


def upstream_tls_options(ca: str | Path | None, insecure: bool) -> dict:
    """mitmproxy's options for trusting the upstream's certificate: the CA file in `ca` (PEM), or
    none at all (`insecure`); neither keeps mitmproxy's default, the certifi bundle."""
    if ca is not None and insecure:
        raise ValueError("give either an upstream CA file or insecure, not both")
    if insecure:
        return {"ssl_insecure": True}
    if ca is None:
        return {}
    try:  # mitmproxy reads the file only at the first upstream connection: check it now
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(ca))
    except ssl.SSLError as e:
        raise ValueError(f"{ca}: not a PEM certificate ({e.reason or e})") from None
    except OSError as e:
        raise ValueError(f"{ca}: {e.strerror or e}") from None
    return {"ssl_verify_upstream_trusted_ca": str(ca)}


class _Ready:
    """Tells the proxy's starter that mitmproxy's servers are up (the `running` hook)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


class _LeanAddons(AddonManager):
    """The lean Master's addon manager, cut down where the profile of a flood shows mitmproxy's
    dispatch: it skips the `update` hook mitmproxy fires after every flow hook (no addon of this
    Master has one), and calls `websocket_message`, the hook of every relayed message, through a
    list of its handlers built once instead of walking the whole chain each time."""

    def __init__(self, master: Master) -> None:
        super().__init__(master)
        self._message_handlers: list | None = None

    def add(self, *addons) -> None:
        self._message_handlers = None
        super().add(*addons)

    def remove(self, addon) -> None:
        self._message_handlers = None
        super().remove(addon)

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)

    async def trigger_event(self, event: hooks.Hook) -> None:
        if event.name != "websocket_message":
            await super().trigger_event(event)
            return
        if self._message_handlers is None:
            self._message_handlers = [func for addon in self.chain for _, func in self._iter_hooks(addon, event)]
        args = event.args()
        for func in self._message_handlers:
            try:
                with safecall():  # logs an addon's exception the way mitmproxy does
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return


class RecordingProxy:
    """`async with RecordingProxy(upstream, out) as proxy:` then connect to `proxy.port`.

    `upstream` is ws://host:port or wss://host:port (reverse proxy); or give `mode`, any
    mitmproxy mode string such as "regular", with `upstream=None`. `recorder` is the addon (its
    counters: messages, written, dropped, errors). `force` writes even into a world-writable
    directory (refused otherwise, see the addon's `mwtap_force`). A wss upstream's certificate is
    checked against the certifi bundle, or `upstream_ca` (a PEM file), or not at all with
    `upstream_insecure`.
    """

    def __init__(self, upstream: str | None, out: Path | str, listen_host: str = "127.0.0.1", listen_port: int = 0,
                 mode: str | None = None, redact: bool = True, rotate_mb: int = 0,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, observers: Iterable[Observer] = (),
                 live: Callable[[str], None] | None = None, force: bool = False,
                 upstream_ca: str | Path | None = None, upstream_insecure: bool = False):
        if (upstream is None) == (mode is None):
            raise ValueError("give either upstream (ws://HOST:PORT) or mode, not both")
        self.mode = upstream_mode(upstream) if upstream is not None else mode
        self.out = Path(out)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.settings = {"mwtap_out": str(self.out), "mwtap_redact": redact, "mwtap_rotate_mb": rotate_mb,
                         "mwtap_max_payload": max_payload, "mwtap_force": force,
                         "mwtap_trim_messages": True,  # no addon of the lean master reads past messages
                         **upstream_tls_options(upstream_ca, upstream_insecure)}
        self.recorder = Recorder(observers)
        self.live = LiveCheck(self.recorder, report=live) if live is not None else None
        if self.live is not None:
            self.settings["mwtap_live"] = True
        self.port: int | None = None
        self._master: Master | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> RecordingProxy:
        opts = options.Options(listen_host=self.listen_host, listen_port=self.listen_port, mode=[self.mode])
        master = Master(opts)
        master.addons = _LeanAddons(master)
        ready = _Ready()
        master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                          self.recorder, *([self.live] if self.live else []), ready)
        # lazy: the upstream is contacted once the upgrade request is read, so an unreachable one
        # gives a flow with an error (a `refused` record) instead of a silently closed client.
        opts.update(connection_strategy="lazy", **self.settings)
        self._master = master
        self._task = asyncio.create_task(master.run())
        waiter = asyncio.create_task(ready.event.wait())
        await asyncio.wait([waiter, self._task], timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        addresses = master.addons.get("proxyserver").listen_addrs()
        if not ready.event.is_set() or not addresses:
            await self._stop()
            if self.recorder.written == 0:  # nothing recorded: leave no capture that blocks a retry
                self.out.unlink(missing_ok=True)
            listen = host_port(self.listen_host, self.listen_port)
            raise OSError(f"mitmproxy could not listen on {listen} ({self.mode})")
        self.port = addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._master is None or self._task is None:
            return
        self._master.shutdown()
        try:
            await self._task
            await self._end_connections()
        finally:
            self._master = None
            self._task = None

    async def _end_connections(self) -> None:
        """End the client connections mitmproxy leaves open after it stopped.

        Left alone, `asyncio.run` cancels their tasks on exit and asyncio logs each cancellation
        with a CancelledError traceback. Cancelling the client's I/O task is what mitmproxy's own
        inactivity timeout does: the connection handler then finishes normally.
        """
        server = self._master.addons.get("proxyserver")
        for handler in list(server.connections.values()):
            io = handler.transports.get(handler.client)
            if io is not None and io.handler is not None:
                io.handler.cancel("recorder stopped")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while server.connections and loop.time() < deadline:
            await asyncio.sleep(0.01)
