"""Capture format v1: the records mwtap writes and reads (see docs/capture-format.md).

This module is the contract between the live side (recorder, replay, importers) and the
analysis. Builders turn observations into records; the reader streams them back, reporting
damaged lines instead of failing on them.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import sys
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import SplitResult, urlsplit

import orjson

from analysis._core import line_problem, message_line

FORMAT = "mwtap-capture"
VERSION = 1

# Values of the "rec" field.
HEADER = "header"
OPEN = "open"
REFUSED = "refused"
MSG = "msg"
PING = "ping"
PONG = "pong"
CLOSE = "close"
DROP = "drop"
KNOWN_RECORDS = frozenset({HEADER, OPEN, REFUSED, MSG, PING, PONG, CLOSE, DROP})

C2S = "c2s"
S2C = "s2c"

DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
# Largest |t| a reader accepts (year 2255): pandas' datetime64[ns] ends in 2262 and Python's
# datetime in 9999, so a record stamped beyond is damaged rather than a crash later.
MAX_TIME = 9e9


def usable_time(t: Any) -> bool:
    """Whether `t` is a record time the analysis can use: a number (not a bool) within MAX_TIME (NaN is not)."""
    return (t.__class__ is float or t.__class__ is int) and -MAX_TIME < t < MAX_TIME


class CaptureError(Exception):
    """A file that cannot be read as a capture at all (one line, names the file)."""


def ws_url(url: str) -> str:
    """The `url` of an open record: mitmproxy and HAR show the upgrade as http(s)://, captures as ws(s)://."""
    return "ws" + url[4:] if url.startswith("http") else url


def host_port(host: str | None, port: int | None) -> str | None:
    """`host:port` as captures write addresses (IPv6 hosts in brackets)."""
    if not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def authority(scheme: str, host: str, port: int) -> str:
    """`host[:port]` as a URL or Host header has it: an IPv6 host in brackets, the scheme's default
    port left out."""
    default = 443 if scheme in ("https", "wss") else 80
    return host_port(host, None if port == default else port) or ""


def request_url(scheme: str, host: str, port: int, path: str) -> str:
    """The `url` of an open record from an upgrade request's parts (where mitmproxy's `request.url`
    leaves an IPv6 host bare: `ws://::1:PORT`)."""
    return ws_url(f"{scheme}://{authority(scheme, host, port)}{path}")


def split_url(url: str) -> SplitResult:
    """`urlsplit` of a recorded URL, which may be anything (a HAR's `wss://[host/…`): where urlsplit
    refuses a stray bracket in the host, the URL is split with its brackets escaped."""
    try:
        return urlsplit(url)
    except ValueError:
        return urlsplit(url.replace("[", "%5B").replace("]", "%5D"))


def dumps(record: dict) -> bytes:
    """One capture line, newline included."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def header_record(t: float, *, mwtap_version: str, mitmproxy_version: str | None,
                  redaction: dict, recording_id: str, part: int = 1, source: str = "mitmproxy") -> dict:
    return {
        "rec": HEADER, "t": t, "format": FORMAT, "version": VERSION,
        "mwtap": mwtap_version, "mitmproxy": mitmproxy_version,
        "recording": recording_id, "part": part, "source": source,
        "redaction": redaction,
    }


def message_record(conn: str, t: float, n: int, from_client: bool, is_text: bool, content: bytes,
                   max_payload: int = DEFAULT_MAX_PAYLOAD) -> dict:
    """A msg record with the payload kept exactly (text as a string, anything else base64) and its
    index fields lifted from the whole payload: the line the recorder writes
    (`analysis._core.message_line`, docs/capture-format.md "msg"), as a dict."""
    record = orjson.loads(message_line(conn, 0.0, n, from_client, is_text, content, max_payload, False))
    record["t"] = t  # as given: a float from the recorder, anything in a hand-built record
    return record


def payload_bytes(rec: dict) -> bytes:
    """The recorded payload of a msg record, as the bytes that were on the wire."""
    text = rec.get("text")
    if text is not None:
        return text.encode("utf-8")
    return base64.b64decode(rec.get("b64", ""))


@dataclass
class Damage:
    """A line that could not be read; `problem` is a short phrase, `kind` the same problem without its
    details (what damage is counted by). An entry with `more` stands for that many further lines of
    its kind that are not listed one by one (`DamageLog`)."""
    path: str
    line: int
    problem: str
    kind: str = ""
    more: int = 0

    def __post_init__(self) -> None:
        self.kind = self.kind or self.problem

    @property
    def lines(self) -> int:
        """How many damaged lines this entry stands for."""
        return self.more or 1

    def __str__(self) -> str:
        if self.more:
            return f"{self.path}: {self.more:,} more line(s) with: {self.kind}"
        return f"{self.path}:{self.line}: {self.problem}"


DAMAGE_EXAMPLES = 20  # lines listed per kind of damage, per file
DAMAGE_KINDS = 50  # kinds told apart per file; further kinds are counted together
OTHER_DAMAGE = "other problems"


class DamageLog(list):
    """A file's damage as a list of `Damage`: the first DAMAGE_EXAMPLES lines of each kind, then one
    entry counting the others of that kind. Memory stays flat whatever the damage (a file of a
    million broken lines lists 20 of them and says how many more)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, int] = {}  # kind -> lines
        self._more: dict[str, Damage] = {}  # kind -> its entry counting the lines not listed

    def append(self, damage: Damage) -> None:
        kind = damage.kind
        if kind not in self._seen and len(self._seen) >= DAMAGE_KINDS:
            kind = OTHER_DAMAGE
        seen = self._seen.get(kind, 0)
        self._seen[kind] = seen + damage.lines
        if not damage.more and seen < DAMAGE_EXAMPLES:
            super().append(damage)
            return
        more = self._more.get(kind)
        if more is None:
            more = self._more[kind] = Damage(damage.path, damage.line, kind, kind, 0)
            super().append(more)
        more.more += damage.lines

    def extend(self, damage) -> None:
        for d in damage:
            self.append(d)


@dataclass
class CaptureFile:
    """One capture file opened for a single streaming pass."""
    path: str
    header: dict | None = None
    damage: DamageLog = field(default_factory=DamageLog)
    unknown_records: dict[str, int] = field(default_factory=dict)
    lines: int = 0

    def __post_init__(self) -> None:
        self._source: io.BufferedReader | None = None
        self._read_at_end = 0
        announce_read(self)

    @property
    def bytes_read(self) -> int:
        """How far the pass has read into the file on disk (the compressed bytes of a gzip file), for
        progress; safe to ask from another thread."""
        source = self._source
        if source is None:
            return self._read_at_end
        try:
            return (source.raw.compressed if is_gzip(source) else source).raw.tell()
        except ValueError:  # closed meanwhile
            return self._read_at_end

    def records(self) -> Iterator[dict]:
        """Yield the records after the header, skipping (and noting) damaged lines."""
        with _open(self.path) as f:
            self._source = f
            try:
                yield from self._parse(f)
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                # The wording (not zlib's message) is what the native reader says too (core/src/reader.rs).
                how = "ends early" if isinstance(e, EOFError) else "corrupt data"
                self.damage.append(Damage(self.path, self.lines + 1, f"compressed stream damaged ({how})"))
            finally:
                self._read_at_end, self._source = self.bytes_read, None
        if self.lines == 0:
            raise CaptureError(f"{self.path}: empty file, not an mwtap capture")

    def _parse(self, f: io.BufferedReader) -> Iterator[dict]:
        loads = orjson.loads
        for lineno, line in enumerate(f, 1):
            self.lines = lineno
            try:
                rec = loads(line)
            except orjson.JSONDecodeError as e:
                if lineno == 1:
                    raise CaptureError(f"{self.path}:1: not an mwtap capture (no JSON header line)") from e
                rec = read_refused(line)
                if isinstance(rec, tuple):
                    self.damage.append(Damage(self.path, lineno, rec[0], rec[1] or ""))
                    continue
            if not isinstance(rec, dict) or not isinstance(rec.get("rec"), str):
                if lineno == 1:
                    raise CaptureError(f"{self.path}:1: not an mwtap capture (first line is not a header)")
                self.damage.append(Damage(self.path, lineno, "not a capture record"))
                continue
            kind = rec["rec"]
            if lineno == 1:
                self.header = _check_header(self.path, rec)
                continue
            problem = _unusable(rec)
            if problem is not None:
                self.damage.append(Damage(self.path, lineno, *problem))
                continue
            if kind not in KNOWN_RECORDS:
                count_unknown(self.unknown_records, kind)
                continue
            if kind == HEADER:
                continue
            yield rec


def read_refused(line: bytes) -> dict | tuple[str, str | None]:
    """A line orjson refuses, as the core's reader takes it (`_core.line_problem`), so that this
    reader damns the lines `mwtap analyze` does, in its words: the problem, or the record (see
    `record_of`)."""
    problem = line_problem(line)
    if problem is not None:
        return problem
    try:
        return _json_record(line)
    except (ValueError, RecursionError):  # not met: `json` reads what the core reads; a reader never raises
        return "invalid JSON", None


def record_of(line: bytes) -> dict:
    """The record of a line the core has read (`mwtap view` reads its frames back by their place):
    orjson's, or for a line orjson refuses (a number past a double, 1e400, in a field the core does
    not decode) `json`'s, made as orjson makes it but that number infinity."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _json_record(line)


def _json_record(line: bytes) -> dict:
    with json_nesting_room():
        return json.loads(line, parse_int=_orjson_int)


@contextmanager
def json_nesting_room() -> Iterator[None]:
    """Room on Python's stack for `json`, which recurses once a level, to read or write the deepest
    line a capture holds (1,024 levels, as the core reads; Python allows ~1,000 by default)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _orjson_int(text: str) -> int | float:
    """An integer as orjson reads it: a float past 64 bits."""
    if len(text) <= 20:
        value = int(text)
        if -2**63 <= value < 2**64:
            return value
    return float(text)


_read_watcher: ContextVar = ContextVar("capture_read_watcher", default=None)


def as_paths(paths) -> list[str]:
    """One path or several (str or os.PathLike), as a list of str."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def announce_read(capture) -> None:
    """Tells the watcher of `watch_reads`, if any, of a file about to be read (anything with `path`
    and `bytes_read`: a CaptureFile, or the native core's analysis.native reading it)."""
    watcher = _read_watcher.get()
    if watcher is not None:
        watcher(capture)


@contextmanager
def watch_reads(callback):
    """Within the block, `callback(capture_file)` is called with every CaptureFile created in this
    context (for progress: `CaptureFile.bytes_read` of the file's size)."""
    token = _read_watcher.set(callback)
    try:
        yield
    finally:
        _read_watcher.reset(token)


UNKNOWN_KINDS_LISTED = 20
OTHER_KINDS = "(other kinds)"


def count_unknown(counts: dict[str, int], kind: str, n: int = 1) -> None:
    """Counts `n` records of an unknown kind: the first UNKNOWN_KINDS_LISTED kinds by name, any
    further kind under OTHER_KINDS (a file can hold a million made-up kinds)."""
    if kind not in counts and len(counts) >= UNKNOWN_KINDS_LISTED:
        kind = OTHER_KINDS
    counts[kind] = counts.get(kind, 0) + n


class _Absent:
    """The value of a field a record does not carry."""


_ABSENT = _Absent()
_NONE = type(None)
_STR, _INT = (str,), (int,)
_OPT_STR, _OPT_INT, _OPT_LIST = (str, _NONE, _Absent), (int, _NONE, _Absent), (list, _NONE, _Absent)
_MAYBE_STR, _MAYBE_INT = (str, _Absent), (int, _Absent)
_ID = (str, _NONE, _Absent)
# The type of every field the analysis reads, per record kind (docs/capture-format.md). A record
# whose field has another type is a damaged line: reported, never analysed.
_FIELD_TYPES: dict[str, tuple[tuple[str, tuple], ...]] = {
    MSG: (("conn", _STR), ("n", _MAYBE_INT), ("dir", _STR), ("op", _MAYBE_STR), ("size", _MAYBE_INT),
          ("text", _MAYBE_STR), ("b64", _MAYBE_STR), ("kind", _ID), ("type", _ID), ("id", _ID), ("reqId", _ID),
          ("subscriptionId", _ID), ("code", (int, float, str, bool, _NONE, _Absent))),
    OPEN: (("conn", _STR), ("url", _OPT_STR), ("client", _OPT_STR), ("request_headers", _OPT_LIST),
           ("status", _OPT_INT)),
    REFUSED: (("conn", _STR), ("url", _OPT_STR), ("client", _OPT_STR), ("status", _OPT_INT), ("error", _OPT_STR)),
    PING: (("conn", _STR), ("dir", _OPT_STR)),
    PONG: (("conn", _STR), ("dir", _OPT_STR)),
    CLOSE: (("conn", _STR), ("code", _OPT_INT), ("reason", _OPT_STR), ("by", _OPT_STR)),
    DROP: (("count", _OPT_INT), ("reason", _OPT_STR)),
}


_ID_CLASSES = frozenset({str, _NONE})
_CODE_CLASSES = frozenset({int, float, str, bool, _NONE})


def _unusable(rec: dict) -> tuple[str, str] | None:
    """(problem, kind) of a record that parsed but cannot be analysed: a time beyond any calendar, or
    a field whose type is not the documented one."""
    get = rec.get
    t = get("t")
    if (t.__class__ is float or t.__class__ is int) and not -MAX_TIME < t < MAX_TIME:
        return f"time t={t} out of range", "time out of range"
    kind = get("rec")
    if kind == MSG and (  # the same check as _FIELD_TYPES[MSG], unrolled for the most common record
            get("conn").__class__ is str and get("dir").__class__ is str and get("n", 0).__class__ is int
            and get("size", 0).__class__ is int and get("op", "").__class__ is str
            and get("text", "").__class__ is str and get("b64", "").__class__ is str
            and get("kind", "").__class__ in _ID_CLASSES and get("type", "").__class__ in _ID_CLASSES
            and get("id", "").__class__ in _ID_CLASSES and get("reqId", "").__class__ in _ID_CLASSES
            and get("subscriptionId", "").__class__ in _ID_CLASSES and get("code").__class__ in _CODE_CLASSES):
        return None
    for name, allowed in _FIELD_TYPES.get(kind, ()):
        if get(name, _ABSENT).__class__ not in allowed:
            problem = f"field {name!r} of a {get('rec')} record has the wrong type"
            return problem, problem
    return None


def _check_header(path: str, rec: dict) -> dict:
    if rec.get("rec") != HEADER or rec.get("format") != FORMAT:
        raise CaptureError(f"{path}:1: not an mwtap capture (first line is not a {FORMAT} header)")
    version = rec.get("version")
    if not isinstance(version, int) or version < 1:
        raise CaptureError(f"{path}:1: capture header has no valid version")
    if version > VERSION:
        raise CaptureError(f"{path}:1: capture format version {version} is newer than this mwtap reads "
                           f"(up to {VERSION}); upgrade mwtap")
    return rec


def _open(path: str) -> io.BufferedReader:
    if os.path.isdir(path):
        raise CaptureError(f"{path}: is a directory, not a capture file")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CaptureError(f"{path}: cannot open ({e.strerror})") from e
    if f.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(_Gunzipped(f), _GZIP_BUFFER)
    return f


def is_gzip(f: io.BufferedReader) -> bool:
    """Whether a file `_open` returned reads a gzip stream (whose size is known only by reading it all)."""
    return isinstance(f.raw, _Gunzipped)


_GZIP_BUFFER = 1 << 16


class _Gunzipped(io.RawIOBase):
    """A GzipFile as the raw stream of a BufferedReader, whose line iteration runs in C (iterating
    the GzipFile itself costs a Python `readline` call per line: ~35 % more time per line). Each
    read is one `read1`, so when the stream turns out damaged, every byte decompressed before the
    damage has already been handed on (a plain `readinto` of the GzipFile fills the whole buffer
    first and would drop what it had read when the damage raises)."""

    def __init__(self, compressed: io.BufferedReader):
        self.compressed = compressed
        self.gz = gzip.GzipFile(fileobj=compressed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.gz.read1(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.gz.seek(offset, whence)

    def tell(self) -> int:
        return self.gz.tell()

    def close(self) -> None:
        self.gz.close()
        self.compressed.close()
        super().close()
