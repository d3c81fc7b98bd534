"""The replay records itself in capture format v1 (header `source: "replay"`, `mitmproxy: null`):
the client-side replay its connections to the target, `--as-server` the live clients' connections.
Every `open` record carries `replay_of`: the recorded connection it replays (docs/capture-format.md)."""

from __future__ import annotations

import time
import uuid
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Callable

from analysis.capture import CLOSE, OPEN, REFUSED, header_record, host_port
from analysis.redact import marker, redact_headers, redact_text, redact_url, redacted_message, redaction_info
from recorder.writer import CaptureWriter


class ReplayRecording:
    """`secrets()` lists the tokens in use: they are replaced by their marker wherever they appear."""

    def __init__(self, path: Path | str, secrets: Callable[[], list[str]]):
        self.secrets = secrets
        self.recording_id = uuid.uuid4().hex
        self.started = time.time()
        self.writer = CaptureWriter(path, self._header)
        self._next_n: dict[str, int] = {}

    def _header(self, part: int) -> dict:
        return header_record(self.started, mwtap_version=package_version("mwtap"), mitmproxy_version=None,
                             redaction=redaction_info(True), recording_id=self.recording_id, part=part,
                             source="replay")

    def _clean(self, text: str) -> str:
        for secret in self.secrets():
            if secret in text:
                text = text.replace(secret, marker(secret))
        return text

    def open(self, conn: str, replay_of: str | None, url: str, t_request: float, ws, side: str,
             t: float | None = None) -> None:
        """An opened websockets connection (client or server side: `side` is "client" or "server"),
        opened at `t` (default: now)."""
        self._next_n[conn] = 0
        ours, peer = _address(ws.local_address), _address(ws.remote_address)
        self.writer.write({
            "rec": OPEN, "t": time.time() if t is None else t, "conn": conn, "url": self.clean_url(url),
            "client": ours if side == "client" else peer, "server": peer if side == "client" else ours,
            "t_request": t_request,
            "request_headers": [[k, self._clean(v)] for k, v in redact_headers(list(ws.request.headers.raw_items()))],
            "status": ws.response.status_code, "response_headers": redact_headers(list(ws.response.headers.raw_items())),
            "extensions": ws.response.headers.get("Sec-WebSocket-Extensions"), "subprotocol": ws.subprotocol,
            "tls": url.startswith("wss:"), "replay_of": replay_of,
        })

    def clean_url(self, url: str) -> str:
        return redact_url(self._clean(url))

    def refused(self, conn: str, replay_of: str, url: str, status: int | None, error: str) -> str:
        """A connection the target refused (or that could not be made); returns `error` redacted."""
        error = self._clean(redact_text(error))
        self.writer.write({"rec": REFUSED, "t": time.time(), "conn": conn, "url": self.clean_url(url),
                           "client": None, "status": status, "error": error, "replay_of": replay_of})
        self.writer.flush()
        return error

    def message(self, conn: str, from_client: bool, data: bytes | str) -> dict:
        """Records one message; returns the record (with its index fields)."""
        n = self._next_n.get(conn, 0)
        self._next_n[conn] = n + 1
        is_text = isinstance(data, str)
        record = redacted_message(conn, time.time(), n, from_client, is_text,
                                  data.encode("utf-8") if is_text else data)
        text = record.get("text")
        if text is not None:
            clean = self._clean(text)
            if clean != text:
                record = {**record, "text": clean, "redacted": True}
        self.writer.write(record)
        return record

    def close(self, conn: str, ws, side: str) -> None:
        """A closed websockets connection; `by` is the side that closed first (None: TCP died)."""
        protocol, peer = ws.protocol, "server" if side == "client" else "client"
        by = None
        if protocol.close_rcvd is not None and (protocol.close_sent is None or protocol.close_rcvd_then_sent):
            by = peer
        elif protocol.close_sent is not None:
            by = side
        # The code and reason of the first close frame (docs/capture-format.md), not the peer's echo.
        first = protocol.close_rcvd if by == peer else protocol.close_sent if by == side else None
        code, reason = (first.code, first.reason) if first is not None else (ws.close_code, ws.close_reason)
        self.writer.write({"rec": CLOSE, "t": time.time(), "conn": conn, "code": code,
                           "reason": self._clean(reason) if reason else reason, "by": by})
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


def _address(address) -> str | None:
    return host_port(address[0], address[1]) if address else None
