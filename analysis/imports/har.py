"""HAR files with WebSocket messages (`_webSocketMessages`: Chrome DevTools, mitmproxy's HAR export,
Playwright, HTTP Toolkit) as capture records.

HAR has no close codes and no pings: connections have no close record (they end at capture end).
The file is read entry by entry, so a truncated HAR gives every entry before the damage.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any, Iterator
from urllib.parse import urlsplit

from analysis.capture import Damage, host_port
from analysis.imports.records import (connection_id, import_header, is_upgrade, open_record,
                                      recording_id, refused_record)
from analysis.redact import redacted_message

TEXT_OPCODE, BINARY_OPCODE = 1, 2
_SPACE = re.compile(r"[ \t\n\r]*")
_decoder = json.JSONDecoder()


class _Damaged(Exception):
    def __init__(self, pos: int, problem: str):
        super().__init__(problem)
        self.pos = pos
        self.problem = problem


class _Scanner:
    """Walks a JSON document, decoding only the values asked for."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def _next(self) -> str:
        self.pos = _SPACE.match(self.text, self.pos).end()
        return self.text[self.pos:self.pos + 1]

    def _expect(self, char: str) -> None:
        found = self._next()
        if found != char:
            raise _Damaged(self.pos, f"expected {char!r}, found {found!r}" if found else "truncated (file ends early)")
        self.pos += 1

    def value(self) -> Any:
        self._next()
        try:
            value, self.pos = _decoder.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as e:
            ended = e.msg.startswith("Unterminated") or e.pos >= len(self.text.rstrip())
            raise _Damaged(e.pos, "truncated (file ends early)" if ended else f"invalid JSON ({e.msg})") from None
        return value

    def keys(self) -> Iterator[str]:
        """The keys of an object; the caller consumes each value before asking for the next key."""
        self._expect("{")
        if self._next() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            self._expect(":")
            yield key
            if self._next() == ",":
                self.pos += 1
                continue
            self._expect("}")
            return

    def items(self) -> Iterator[Any]:
        self._expect("[")
        if self._next() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self._next() == ",":
                self.pos += 1
                continue
            self._expect("]")
            return


class HarReader:
    """The WebSocket connections of one HAR file (`read()`), with `header` and `damage` filled in."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        self.damage: list[Damage] = []
        self.creator: dict = {}

    def read(self) -> tuple[dict, list[list[dict]]]:
        connections = []
        scanner = _Scanner(self.text)
        try:
            for index, entry in enumerate(self._entries(scanner)):
                records = self._connection(index, entry) if isinstance(entry, dict) else None
                if records:
                    connections.append(records)
        except _Damaged as e:
            line = self.text.count("\n", 0, e.pos) + 1
            self.damage.append(Damage(self.path, line, f"HAR damaged at character {e.pos}: {e.problem}; "
                                                       f"read {len(connections)} connection(s) before it"))
        creator = self.creator if isinstance(self.creator, dict) else {}
        mitmproxy = creator.get("version") if creator.get("name") == "mitmproxy" else None
        start = min((c[0]["t"] for c in connections), default=0.0)
        header = import_header(start, source="har", mitmproxy_version=mitmproxy,
                               recording=recording_id("har", self.path))
        return header, connections

    def _entries(self, scanner: _Scanner) -> Iterator[Any]:
        found = False
        for key in scanner.keys():
            if key != "log":
                scanner.value()
                continue
            for log_key in scanner.keys():
                if log_key == "entries":
                    found = True
                    yield from scanner.items()
                elif log_key == "creator":
                    self.creator = scanner.value()
                else:
                    scanner.value()
        if not found:
            raise _Damaged(scanner.pos, "no log.entries array")

    def _connection(self, index: int, entry: dict) -> list[dict] | None:
        request, response = _dict(entry.get("request")), _dict(entry.get("response"))
        request_headers, response_headers = _pairs(request.get("headers")), _pairs(response.get("headers"))
        status = response.get("status") if isinstance(response.get("status"), int) else None
        websocket = entry.get("_resourceType") == "websocket" or status == 101
        if not websocket and not is_upgrade(request_headers):
            return None
        url = request.get("url") if isinstance(request.get("url"), str) else ""
        started = _epoch(entry.get("startedDateTime"))
        if started is None:
            self.damage.append(Damage(self.path, 0, f"entry {index}: no usable startedDateTime, skipped"))
            return None
        conn = connection_id("har", index, entry.get("startedDateTime"), url)
        client = entry.get("_clientAddress") if isinstance(entry.get("_clientAddress"), str) else None
        if not websocket:
            return [refused_record(conn, started, url=url, client=client, status=status or None,
                                   error=response.get("_error"))]
        messages = self._messages(index, conn, entry.get("_webSocketMessages"))
        duration = entry.get("time") if isinstance(entry.get("time"), (int, float)) else 0
        t_open = started + max(duration, 0) / 1000
        if messages:
            t_open = min(t_open, messages[0]["t"])
        parts = urlsplit(url)
        server = host_port(entry.get("serverIPAddress"), _port(parts)) if entry.get("serverIPAddress") else None
        opened = open_record(conn, t_open, url=url, client=client, server=server, t_request=started,
                             request_headers=request_headers, status=status, response_headers=response_headers,
                             tls=parts.scheme in ("https", "wss"))
        return [opened, *messages]

    def _messages(self, index: int, conn: str, messages: Any) -> list[dict]:
        records = []
        for i, message in enumerate(messages if isinstance(messages, list) else []):
            built = _message(conn, len(records), message)
            if isinstance(built, str):
                self.damage.append(Damage(self.path, 0, f"entry {index} message {i}: {built}, skipped"))
            else:
                records.append(built)
        return records


def _message(conn: str, n: int, message: Any) -> dict | str:
    """The msg record of one `_webSocketMessages` item, or what is wrong with it."""
    if not isinstance(message, dict) or message.get("type") not in ("send", "receive"):
        return "not a send/receive message"
    t, opcode, data = message.get("time"), message.get("opcode"), message.get("data")
    if not isinstance(t, (int, float)) or not isinstance(data, str) or opcode not in (TEXT_OPCODE, BINARY_OPCODE):
        return "no usable time, opcode (1 or 2) or data"
    if opcode == TEXT_OPCODE:
        content = data.encode("utf-8", "surrogatepass")
    else:
        try:
            content = base64.b64decode(data, validate=True)
        except binascii.Error:
            return "binary data is not base64"
    return redacted_message(conn, float(t), n, message["type"] == "send", opcode == TEXT_OPCODE, content)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _pairs(headers: Any) -> list[list[str]]:
    return [[str(h.get("name", "")), str(h.get("value", ""))] for h in headers or () if isinstance(h, dict)] \
        if isinstance(headers, list) else []


def _epoch(started: Any) -> float | None:
    if not isinstance(started, str):
        return None
    try:
        return datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _port(parts) -> int | None:
    try:
        return parts.port or {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(parts.scheme)
    except ValueError:
        return None
