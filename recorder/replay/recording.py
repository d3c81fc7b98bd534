"""The replay records itself in capture format v1 (header `source: "replay"`, `mitmproxy: null`).
Every `open` record carries `replay_of`: the recorded connection it replays (docs/capture-format.md)."""

from __future__ import annotations

import time
import uuid
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Callable

from analysis.capture import CLOSE, OPEN, header_record, message_record
from analysis.redact import marker, redact_headers, redact_text, redact_url, redaction_info
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

    def open(self, conn: str, replay_of: str, url: str, t_request: float, request_headers: list[list[str]],
             status: int, response_headers: list[list[str]], client: str | None, server: str | None,
             extensions: str | None, subprotocol: str | None) -> None:
        self._next_n[conn] = 0
        self.writer.write({
            "rec": OPEN, "t": time.time(), "conn": conn, "url": redact_url(self._clean(url)),
            "client": client, "server": server, "t_request": t_request,
            "request_headers": [[k, self._clean(v)] for k, v in redact_headers(request_headers)],
            "status": status, "response_headers": redact_headers(response_headers),
            "extensions": extensions, "subprotocol": subprotocol, "tls": url.startswith("wss:"),
            "replay_of": replay_of,
        })

    def message(self, conn: str, from_client: bool, data: bytes | str) -> dict:
        """Records one message; returns the record (with its index fields)."""
        n = self._next_n.get(conn, 0)
        self._next_n[conn] = n + 1
        is_text = isinstance(data, str)
        record = message_record(conn, time.time(), n, from_client, is_text,
                                data.encode("utf-8") if is_text else data)
        text = record.get("text")
        if text is not None:
            clean = self._clean(redact_text(text))
            if clean != text:
                record = {**record, "text": clean, "redacted": True}
        self.writer.write(record)
        return record

    def close(self, conn: str, code: int | None, reason: str | None, by: str | None) -> None:
        self.writer.write({"rec": CLOSE, "t": time.time(), "conn": conn, "code": code,
                           "reason": self._clean(reason) if reason else reason, "by": by})
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()
