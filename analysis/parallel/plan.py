"""Which files can be analysed apart (docs/export.md, "Scale-out").

A partition is a set of recordings (rotated parts of one recording always stay together), and
partitions must follow each other in time with a gap of more than `reconnect_window_s`
(host-linked reconnects) and of every timer delay, so that the single-process run sees them one
after the other. Planning only looks at each file's header, first record and last lines; what it
assumes (exact time gaps, no connection id, token or JWT `sub` shared between partitions) is
checked on the exact values the partition runs report (`analysis.parallel`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import orjson

from analysis.capture import CaptureFile

_TAIL = 1 << 16
_BLOCK = 1 << 23


@dataclass
class FileSurvey:
    position: int
    """Place of the file in the input."""
    path: str
    recording: str
    header: dict | None
    t_first: float
    """Time of the first record (an estimate of the earliest)."""
    t_last: float
    """Latest time among the last lines (an estimate of the latest)."""


def survey(position: int, path: str) -> FileSurvey:
    from analysis.imports import CAPTURE, detect, open_capture
    capture = CaptureFile(path) if detect(path) == CAPTURE else open_capture(path)
    records = capture.records()
    first = next(records, None)
    recording = (capture.header or {}).get("recording")
    recording = recording if isinstance(recording, str) else path
    if isinstance(capture, CaptureFile):
        t_first, t_last = _time(first), max(map(_time, _last_records(path)), default=-float("inf"))
    else:  # HAR and flow files: their records, read one connection at a time
        times = [_time(first), *map(_time, records)]
        t_first, t_last = min(times), max(times)
    return FileSurvey(position, path, recording, capture.header, t_first, t_last)


def _time(rec: dict | None) -> float:
    t = (rec or {}).get("t")
    return t if isinstance(t, (int, float)) and not isinstance(t, bool) else -float("inf")


def _last_records(path: str) -> list[dict]:
    from analysis.capture import _open, _unusable, is_gzip, read_refused
    with _open(path) as f:
        if is_gzip(f):
            tail = b""
            while block := f.read(_BLOCK):
                tail = (tail + block)[-_TAIL:]
        else:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
            tail = f.read()
    records = []
    for line in tail.split(b"\n")[1:]:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            rec = read_refused(line + b"\n")  # as the core reads it: 1e400 in a field it skips is a record
        if isinstance(rec, dict) and _unusable(rec) is None:  # a line the reader damns dates nothing
            records.append(rec)
    return records


@dataclass
class Partition:
    files: list[tuple[int, str]]
    """(position in the input, path), in input order."""
    t_min: float
    t_max: float


def partitions(surveys: list[FileSurvey], gap: float) -> list[Partition]:
    """Partitions in time order; each keeps its files in input order."""
    recordings: dict[str, list[FileSurvey]] = {}
    for s in surveys:
        recordings.setdefault(s.recording, []).append(s)
    spans = sorted(([min(f.t_first for f in files), max(f.t_last for f in files), files]
                    for files in recordings.values()), key=lambda span: span[0])
    merged: list[list] = []
    for span in spans:
        if merged and span[0] - merged[-1][1] <= gap:  # too close: one partition
            merged[-1][1] = max(merged[-1][1], span[1])
            merged[-1][2] = merged[-1][2] + span[2]
        else:
            merged.append(span)
    return [Partition(sorted((f.position, f.path) for f in files), t_min, t_max) for t_min, t_max, files in merged]
