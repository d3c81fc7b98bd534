"""Several capture files read as one stream: rotated parts of one recording in `part` order,
different recordings merged by time. One pass, nothing kept but one pending record per file."""

from __future__ import annotations

import heapq
import itertools
import os
from typing import Iterable, Iterator

from analysis.capture import Damage, as_paths, count_unknown
from analysis.imports import open_capture

Paths = str | os.PathLike | Iterable[str | os.PathLike]


def _time(rec: dict) -> float:
    t = rec.get("t")
    return t if isinstance(t, (int, float)) else 0.0


class CaptureSet:
    """Opens every file up front (so a file that is not a capture fails before any analysis)."""

    def __init__(self, paths: Paths):
        self.files = [open_capture(p) for p in as_paths(paths)]  # captures, HAR or flow files
        self._streams = []
        for capture in self.files:
            records = capture.records()
            first = next(records, None)  # reads and checks the header
            self._streams.append((capture, itertools.chain([first] if first is not None else [], records)))

    def records(self) -> Iterator[dict]:
        recordings: dict[str, list] = {}
        for capture, stream in self._streams:
            header = capture.header or {}
            key = header.get("recording") if isinstance(header.get("recording"), str) else capture.path
            recordings.setdefault(key, []).append((capture, stream))
        chained = []
        for parts in recordings.values():
            parts.sort(key=lambda p: (_part(p[0].header), p[0].path))
            chained.append(itertools.chain.from_iterable(stream for _, stream in parts))
        if len(chained) == 1:
            return chained[0]
        return heapq.merge(*chained, key=_time)

    @property
    def damage(self) -> list[Damage]:
        """Every file's damage (each file's bounded: `analysis.capture.DamageLog`)."""
        return [d for capture in self.files for d in capture.damage]

    @property
    def unknown_records(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for capture in self.files:
            for kind, n in capture.unknown_records.items():
                count_unknown(counts, kind, n)
        return counts


def _part(header: dict | None) -> int:
    part = (header or {}).get("part")
    return part if isinstance(part, int) else 0
