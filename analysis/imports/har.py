"""HAR files with WebSocket messages (`_webSocketMessages`: Chrome DevTools, mitmproxy's HAR export,
Playwright, HTTP Toolkit) as capture records.

HAR has no close codes and no pings: connections have no close record (they end at capture end).

Two passes, so that memory follows the connections open at a time, not the file (a HAR is one JSON
document, but each element of `log.entries` is one connection): the first streams the file, decoding
one entry at a time, and notes where each entry that gives records starts and ends and when its first
record is; the second merges the entries' records by time, reading an entry again (by seeking to it)
only when the merge reaches its first record. An entry is read whole, so one WebSocket connection
with all its messages is the unit of memory. A truncated or damaged HAR gives every entry before
the damage.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import tempfile
import zlib
from datetime import datetime
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import SplitResult

import orjson

from analysis.capture import CaptureError, Damage, DamageLog, dumps, host_port, is_gzip, split_url, usable_time
from analysis.capture import _open as open_binary  # the capture reader's open: gunzips, one-line errors
from analysis.imports.records import (by_time, connection_id, import_header, is_upgrade, open_record, utf8,
                                      recording_id, refused_record)
from analysis.redact import redacted_message

TEXT_OPCODE, BINARY_OPCODE = 1, 2
_SPACE = re.compile(r"[ \t\n\r]*")
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 18
# Text that must follow a decoded value before it counts as complete: a number or literal at the
# end of what was read may go on in the next chunk, and an error there may be the chunk's end.
_LOOKAHEAD = 32
_decoder = json.JSONDecoder()

# (time of its first record, its index in log.entries, (that index, byte offset, length in bytes))
Entry = tuple[float, int, tuple[int, int, int]]
Connection = tuple[float, Callable[[], list[dict]]]  # (time of its first record, what builds its records)
Payload = tuple[float, bool, bool, bytes]  # (time, from client, is text, content)


def read_har(path: str, damage: list[Damage]) -> tuple[dict, Iterator[dict]]:
    """(header, records of all connections in time order) of a HAR; damage is appended to `damage`.
    The records are read while they are iterated."""
    reader = HarReader(path)
    header, index = reader.index()
    damage.extend(reader.damage)
    return header, reader.merged(index)


class _Damaged(Exception):
    def __init__(self, offset: int, line: int, problem: str):
        super().__init__(problem)
        self.offset = offset
        self.line = line
        self.problem = problem


class _Stream:
    """A JSON document walked while it is read in chunks, decoding only the values asked for, each
    with its byte extent in the file.

    What was read is kept as latin-1 text, one character a byte, so positions are byte offsets: JSON's
    structure is ASCII, and UTF-8 puts no byte below 0x80 inside a multi-byte character, so the text
    has the same structure and extents as the UTF-8 one. Values are then decoded from their bytes as
    UTF-8 (invalid bytes replaced). Only the unread rest of the current value is kept, so the buffer is
    a chunk, or up to twice the largest value asked for (it grows geometrically: linear time).
    For a `.har.gz` the offsets are those of the decompressed document."""

    def __init__(self, f: BinaryIO):
        self.f = f
        head = f.read(len(_BOM))
        self.base = len(_BOM) if head == _BOM else 0  # byte offset of text[0]
        self.text = "" if self.base else head.decode("latin-1")
        self.pos = 0  # in `text`
        self.lines = 0  # newlines before text[0]
        self.ended = False
        self.broken: str | None = None  # why a compressed stream ended early

    def _more(self) -> None:
        """Read on, at least as much again as the value being decoded holds, dropping what is done.
        One `read1` at a time, so that what a damaged compressed stream gave before its damage is kept."""
        wanted, chunks = max(_CHUNK, len(self.text) - self.pos), []
        try:
            while wanted > 0 and (data := self.f.read1(wanted)):
                chunks.append(data)
                wanted -= len(data)
            self.ended = not chunks
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            self.ended, self.broken = True, f"compressed stream damaged ({e})"
        self.lines += self.text.count("\n", 0, self.pos)
        self.base += self.pos
        self.text = self.text[self.pos:] + b"".join(chunks).decode("latin-1")
        self.pos = 0

    def damaged(self, pos: int, problem: str) -> _Damaged:
        return _Damaged(self.base + pos, self.lines + self.text.count("\n", 0, pos) + 1, self.broken or problem)

    def _next(self) -> str:
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text) or self.ended:
                return self.text[self.pos:self.pos + 1]
            self._more()

    def _expect(self, char: str) -> None:
        found = self._next()
        if found != char:
            raise self.damaged(self.pos, f"expected {char!r}, found {found!r}" if found
                               else "truncated (file ends early)")
        self.pos += 1

    def value(self) -> tuple[Any, int, bytes]:
        """(the next value, its byte offset, its bytes)."""
        self._next()
        while True:
            try:
                value, end = _decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                unterminated = e.msg.startswith("Unterminated")
                if not self.ended and (unterminated or e.pos + _LOOKAHEAD >= len(self.text)):
                    self._more()
                    continue
                ended = unterminated or e.pos >= len(self.text.rstrip())
                raise self.damaged(e.pos, "truncated (file ends early)" if ended
                                   else f"invalid JSON ({e.msg})") from None
            except ValueError:  # json's limit on integer digits
                raise self.damaged(self.pos, "invalid JSON (an integer of over 4,300 digits)") from None
            except RecursionError:
                raise self.damaged(self.pos, "invalid JSON (nested too deeply)") from None
            if self.ended or end + _LOOKAHEAD < len(self.text):
                break
            self._more()
        data, start, self.pos = self.text[self.pos:end].encode("latin-1"), self.base + self.pos, end
        return value if data.isascii() else decoded(data), start, data

    def keys(self) -> Iterator[str]:
        """The keys of an object; the caller consumes each value before asking for the next key."""
        self._expect("{")
        if self._next() == "}":
            self.pos += 1
            return
        while True:
            key, _, _ = self.value()
            self._expect(":")
            yield key
            if self._next() == ",":
                self.pos += 1
                continue
            self._expect("}")
            return

    def items(self) -> Iterator[tuple[Any, int, bytes]]:
        """The values of an array, as `value()` gives them."""
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


def decoded(data: bytes) -> Any:
    """The JSON value `data` holds, read as UTF-8 with invalid bytes replaced."""
    return _decoder.decode(data.decode("utf-8", "replace"))


class HarReader:
    """The WebSocket connections of one HAR file: `index()` (with `damage` filled in), then `merged()`."""

    def __init__(self, path: str):
        self.path = path
        self.damage = DamageLog()
        self.creator: Any = {}
        # A compressed file is not read again (seeking back in it decompresses it again from its start):
        # the records of its entries are written, redacted, to a temporary file as they are indexed.
        self._copy: BinaryIO | None = None

    def index(self) -> tuple[dict, list[Entry]]:
        """(header, the entries that give records, in time order and file order among equal times)."""
        index: list[Entry] = []
        with open_binary(self.path) as f:
            self._copy = tempfile.TemporaryFile() if is_gzip(f) else None
            try:
                for position, (entry, offset, data) in enumerate(self._entries(f)):
                    found = self._connection(position, entry, self.damage) if isinstance(entry, dict) else None
                    if found:
                        where = (position, offset, len(data))
                        if self._copy:
                            lines = b"".join(map(dumps, found[1]()))
                            where = (position, self._copy.tell(), len(lines))
                            self._copy.write(lines)
                        index.append((found[0], position, where))
            except _Damaged as e:
                self.damage.append(Damage(self.path, e.line, f"HAR damaged at byte {e.offset}: {e.problem}; "
                                                             f"read {len(index)} connection(s) before it"))
            except BaseException as e:
                if self._copy:
                    self._copy.close()
                if isinstance(e, (EOFError, gzip.BadGzipFile, zlib.error)):  # nothing readable at all
                    raise CaptureError(f"{self.path}: compressed stream damaged ({e})") from None
                raise
        index.sort()
        creator = self.creator if isinstance(self.creator, dict) else {}
        mitmproxy = utf8(_str(creator.get("version"))) if creator.get("name") == "mitmproxy" else None
        header = import_header(min((t for t, _, _ in index), default=0.0), source="har",
                               mitmproxy_version=mitmproxy, recording=recording_id("har", self.path))
        return header, index

    def merged(self, index: list[Entry]) -> Iterator[dict]:
        """The records of the entries `index()` gave, merged by time; each entry is read again (from the
        file, or its records from the copy of a compressed one) when the merge reaches its first record."""
        with self._copy or open_binary(self.path) as f:
            def entry_at(where: tuple[int, int, int]) -> list[dict]:
                position, offset, length = where
                f.seek(offset)
                if self._copy:
                    return [orjson.loads(line) for line in f.read(length).splitlines()]
                return self._connection(position, decoded(f.read(length)), [])[1]()  # its damage is known

            yield from by_time(index, entry_at)

    def _entries(self, f: BinaryIO) -> Iterator[tuple[Any, int, bytes]]:
        """The elements of `log.entries` (and of any later `log.entries`), as `_Stream.value()` gives them;
        `log.creator` is kept."""
        stream = _Stream(f)
        found = False
        for key in stream.keys():
            if key != "log":
                stream.value()
                continue
            for log_key in stream.keys():
                if log_key == "entries":
                    found = True
                    yield from stream.items()
                elif log_key == "creator":
                    self.creator = stream.value()[0]
                else:
                    stream.value()
        if not found:
            raise stream.damaged(stream.pos, "no log.entries array")
        if stream.broken:  # the document was whole, the compressed stream after it was not
            raise stream.damaged(stream.pos, stream.broken)

    def _connection(self, index: int, entry: dict, damage: list[Damage]) -> Connection | None:
        """(time of the first record, what builds the records) of an entry, None for an entry that gives
        no records; what is wrong in it is appended to `damage`. The records are built only when asked
        for: the index needs the time alone."""
        request, response = _dict(entry.get("request")), _dict(entry.get("response"))
        request_headers, response_headers = _pairs(request.get("headers")), _pairs(response.get("headers"))
        status = response.get("status") if isinstance(response.get("status"), int) else None
        websocket = entry.get("_resourceType") == "websocket" or status == 101
        if not websocket and not is_upgrade(request_headers):
            return None
        url = request.get("url") if isinstance(request.get("url"), str) else ""
        started = _epoch(entry.get("startedDateTime"))
        if started is None:
            damage.append(Damage(self.path, 0, f"entry {index}: no usable startedDateTime, skipped",
                                 "entry with no usable startedDateTime"))
            return None
        conn = connection_id("har", index, entry.get("startedDateTime"), url)
        client, server_ip = (value if isinstance(value, str) else None
                             for value in (entry.get("_clientAddress"), entry.get("serverIPAddress")))
        if not websocket:
            return started, lambda: [refused_record(conn, started, url=url, client=client, status=status or None,
                                                    error=_str(response.get("_error")))]
        payloads = self._payloads(index, entry.get("_webSocketMessages"), damage)
        duration = entry.get("time") if usable_time(entry.get("time")) else 0
        t_open = started + max(duration, 0) / 1000
        if not usable_time(t_open):  # a duration of centuries
            t_open = started
        if payloads:
            t_open = min(t_open, payloads[0][0])

        def records() -> list[dict]:
            parts = split_url(url)
            server = host_port(server_ip, _port(parts)) if server_ip else None
            opened = open_record(conn, t_open, url=url, client=client, server=server, t_request=started,
                                 request_headers=request_headers, status=status, response_headers=response_headers,
                                 tls=parts.scheme in ("https", "wss"))
            messages = [redacted_message(conn, t, n, from_client, is_text, content)
                        for n, (t, from_client, is_text, content) in enumerate(payloads)]
            return [opened, *messages]

        return t_open, records

    def _payloads(self, index: int, messages: Any, damage: list[Damage]) -> list[Payload]:
        payloads = []
        for i, message in enumerate(messages if isinstance(messages, list) else []):
            found = _payload(message)
            if isinstance(found, str):
                damage.append(Damage(self.path, 0, f"entry {index} message {i}: {found}, skipped",
                                     f"message: {found}"))
            else:
                payloads.append(found)
        return payloads


def _payload(message: Any) -> Payload | str:
    """(time, from client, is text, content) of one `_webSocketMessages` item, or what is wrong with it."""
    if not isinstance(message, dict) or message.get("type") not in ("send", "receive"):
        return "not a send/receive message"
    t, opcode, data = message.get("time"), message.get("opcode"), message.get("data")
    if not usable_time(t) or not isinstance(data, str) or opcode not in (TEXT_OPCODE, BINARY_OPCODE):
        return "no usable time, opcode (1 or 2) or data"
    if opcode == TEXT_OPCODE:
        content = data.encode("utf-8", "surrogatepass")
    else:
        try:
            content = base64.b64decode(data, validate=True)
        except ValueError:  # binascii.Error, or a character outside ASCII
            return "binary data is not base64"
    return float(t), message["type"] == "send", opcode == TEXT_OPCODE, content


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


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


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port or {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(parts.scheme)
    except ValueError:
        return None
