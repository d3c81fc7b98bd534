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
from dataclasses import dataclass, field

import orjson

from analysis.capture import MSG, OPEN
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


def survey(position: int, path: str) -> FileSurvey:
    """One pass over a file: its recording, time range and the identities of its connections."""
    from analysis.imports import open_capture
    capture = open_capture(path)
    records = capture.records()
    first = next(records, None)
    header = capture.header
    recording = header.get("recording") if isinstance((header or {}).get("recording"), str) else path
    found = FileSurvey(position, path, recording, header)
    keys = found.keys
    t_min, t_max = found.t_min, found.t_max
    for rec in itertools.chain([first] if first is not None else [], records):
        t = rec.get("t")
        if t.__class__ is float or t.__class__ is int:
            if t < t_min:
                t_min = t
            if t > t_max:
                t_max = t
        conn = rec.get("conn")
        if conn.__class__ is str:
            keys.add("conn:" + conn)
        kind = rec.get("rec")
        if kind == OPEN:
            _add_token(keys, header_token(rec))
            _add_token(keys, url_token(rec.get("url")))
        elif kind == MSG and rec.get("type") == "InitConnection" and isinstance(rec.get("text"), str):
            try:
                _add_token(keys, init_connection_token(orjson.loads(rec["text"])))
            except orjson.JSONDecodeError:
                pass
    found.t_min, found.t_max = t_min, t_max
    return found


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
