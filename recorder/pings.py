"""WebSocket ping/pong frames, learnt from mitmproxy's log.

mitmproxy relays ping and pong frames without a hook; its only trace is an INFO record of the
logger `mitmproxy.proxy.server`, "Received WebSocket ping from client (payload: b'…')", whose
`client` attribute is the client's peername. The message is a log string, not an API: the tests
check that PING_RE still matches it on every supported mitmproxy version.
"""

from __future__ import annotations

import logging
import re
from typing import Callable

LOGGER = "mitmproxy.proxy.server"
PING_RE = re.compile(r"Received WebSocket (ping|pong) from (client|server) \(payload: (.*)\)$", re.DOTALL)

# (t, client peername, "ping" | "pong", "client" | "server" (the sender), payload as logged)
ControlFrameCallback = Callable[[float, object, str, str, str], None]


class PingLogHandler(logging.Handler):
    """Calls `on_frame` for every ping/pong record of mitmproxy's proxy server logger."""

    def __init__(self, on_frame: ControlFrameCallback):
        super().__init__(level=logging.INFO)
        self.on_frame = on_frame
        self._logger = logging.getLogger(LOGGER)
        self._saved_level: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg
        if not isinstance(msg, str) or not msg.startswith("Received WebSocket p"):
            return
        match = PING_RE.match(msg)
        if match:
            kind, sender, payload = match.groups()
            self.on_frame(record.created, getattr(record, "client", None), kind, sender, payload)

    def install(self) -> None:
        """Attach to the logger and make sure INFO records reach it (embedded masters leave it at
        WARNING; mitmdump has DEBUG, which is kept)."""
        if self._saved_level is None:
            self._saved_level = self._logger.level
            if self._logger.getEffectiveLevel() > logging.INFO:
                self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)

    def uninstall(self) -> None:
        self._logger.removeHandler(self)
        if self._saved_level is not None:
            self._logger.setLevel(self._saved_level)
            self._saved_level = None
