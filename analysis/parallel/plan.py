"""Which files can be analysed apart: a cheap survey of each file, then partitions that no
cross-connection rule can span (docs/export.md, "Scale-out").

A partition is a set of recordings (rotated parts of one recording stay together). Two recordings
go to the same partition when they share a connection id, a token fingerprint or a JWT `sub`
(reconnect chains, publish-after-close of one consumer), and partitions must follow each other in
time with a gap of more than `reconnect_window_s` (host-linked reconnects) and of every timer delay,
so that the single-process run would see them one after the other.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import orjson

from analysis.capture import CLOSE, MSG, OPEN, REFUSED, CaptureFile
from analysis.identity import header_token, init_connection_token, url_token


@dataclass
class FileSurvey:
    position: int
    """Place of the file in the input."""
    path: str
    recording: str
    header: dict | None
    t_min: float = float("inf")
    t_max: float = float("-inf")
    keys: set[str] = field(default_factory=set)


# Capture lines as mwtap writes them start with `{"rec":KIND,"t":T`: the survey scans blocks of
# lines with these patterns instead of parsing every line. A file with other lines (another
# producer's key order) is parsed line by line.
# (Patterns anchor on "\n" rather than on ^ with re.M: several times faster.)
_TIME = re.compile(rb'\n\{"rec":"(?!header")[a-z]+","t":(-?[0-9][0-9.eE+-]*)[,}]')
_HEADER = re.compile(rb'\n\{"rec":"header"')
_CONNECTION = re.compile(rb'\n(\{"rec":"(?:open|close|refused)",[^\n]*)')
_INIT = b'"type":"InitConnection"'  # the lifted field; inside a payload text the quotes are escaped
_BLOCK = 1 << 23


def survey(position: int, path: str) -> FileSurvey:
    """One pass over a file: its recording, time range and the identities of its connections."""
    from analysis.imports import CAPTURE, detect
    if detect(path) == CAPTURE:
        found = _scan(position, path)
        if found is not None:
            return found
    return _parse(position, path)


def _scan(position: int, path: str) -> FileSurvey | None:
    """The survey of an mwtap capture from its line patterns, or None if a line does not fit them."""
    from analysis.capture import _open
    reader = CaptureFile(path)
    next(reader.records(), None)  # reads and checks the header line
    found = FileSurvey(position, path, _recording(reader.header, path), reader.header)
    rest = b""
    with _open(path) as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            block, _, rest = (rest + block).rpartition(b"\n")
            if not _scan_block(found, b"\n" + block):
                return None
    return found if not rest.strip() else None


def _scan_block(found: FileSurvey, block: bytes) -> bool:
    times = _TIME.findall(block)
    if len(times) + len(_HEADER.findall(block)) != block.count(b"\n"):  # one "\n" before each line
        return False
    if times:
        values = list(map(float, times))
        found.t_min, found.t_max = min(found.t_min, *values), max(found.t_max, *values)
    for line in _CONNECTION.findall(block) + list(_lines_with(block, _INIT)):
        try:
            _identify(found.keys, orjson.loads(line))
        except orjson.JSONDecodeError:
            pass
    return True


def _lines_with(block: bytes, needle: bytes):
    at = block.find(needle)
    while at >= 0:
        start, end = block.rfind(b"\n", 0, at) + 1, block.find(b"\n", at)
        yield block[start:end]
        at = block.find(needle, end)


def _parse(position: int, path: str) -> FileSurvey:
    from analysis.imports import open_capture
    capture = open_capture(path)
    records = capture.records()
    first = next(records, None)
    found = FileSurvey(position, path, _recording(capture.header, path), capture.header)
    for rec in itertools.chain([first] if first is not None else [], records):
        t = rec.get("t")
        if t.__class__ is float or t.__class__ is int:
            found.t_min, found.t_max = min(found.t_min, t), max(found.t_max, t)
        if rec.get("rec") in (OPEN, CLOSE, REFUSED) or rec.get("type") == "InitConnection":
            _identify(found.keys, rec)
    return found


def _recording(header: dict | None, path: str) -> str:
    recording = (header or {}).get("recording")
    return recording if isinstance(recording, str) else path


def _identify(keys: set[str], rec: dict) -> None:
    conn = rec.get("conn")
    if isinstance(conn, str):
        keys.add("conn:" + conn)
    if rec.get("rec") == OPEN:
        _add_token(keys, header_token(rec))
        _add_token(keys, url_token(rec.get("url")))
    elif rec.get("rec") == MSG and isinstance(rec.get("text"), str):
        try:
            _add_token(keys, init_connection_token(orjson.loads(rec["text"])))
        except orjson.JSONDecodeError:
            pass


def _add_token(keys: set[str], token) -> None:
    if token is not None:
        keys.add("token:" + token.fingerprint)
        if token.sub:
            keys.add("sub:" + token.sub)


@dataclass
class Partition:
    files: list[tuple[int, str]]
    """(position in the input, path), in input order."""
    t_min: float
    t_max: float


def partitions(surveys: list[FileSurvey], gap: float) -> list[Partition]:
    """Partitions in time order; each keeps its files in input order."""
    groups: dict[str, list[FileSurvey]] = {}
    for s in surveys:
        groups.setdefault(s.recording, []).append(s)
    parent = {name: name for name in groups}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    owner: dict[str, str] = {}
    for name, files in groups.items():
        for key in set().union(*(f.keys for f in files)):
            if key in owner:
                parent[root(name)] = root(owner[key])
            else:
                owner[key] = name
    components: dict[str, list[FileSurvey]] = {}
    for name, files in groups.items():
        components.setdefault(root(name), []).extend(files)
    spans = sorted(([min(f.t_min for f in files), max(f.t_max for f in files), files]
                    for files in components.values()), key=lambda span: span[0])
    merged: list[list] = []
    for span in spans:
        if merged and span[0] - merged[-1][1] <= gap:  # too close: one partition
            merged[-1][1] = max(merged[-1][1], span[1])
            merged[-1][2] = merged[-1][2] + span[2]
        else:
            merged.append(span)
    return [Partition(sorted((f.position, f.path) for f in files), t_min, t_max)
            for t_min, t_max, files in merged]
