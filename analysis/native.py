"""The protocol core's analysis (`analysis._core`, core/src/analysis_py.rs and engine_py.rs) in the
terms of the Python side: its analyzers, the capture files it opens, and what `Summary.result`
reads of its result (`analysis.load.streamed` runs it)."""

from __future__ import annotations

import dataclasses
import os

from analysis import _core
from analysis.capture import Damage, announce_read, as_paths
from analysis.histogram import LogHistogram
from analysis.reader import Paths

# The core's analyzers, in the order the rules run (the order of their violations).
ANALYZERS = ("connections", "keepalive", "pairs", "streams", "sequences", "rings")
# The tables the summary is built from, besides the violations.
SUMMARISED = ("connections", "keepalive", "streams", "reconnects")
# The core's latency keys are strings: "\0none" stands for a request without a type, and a type
# that starts with NUL has another one in front.
NO_TYPE_KEY = "\0none"


# More threads parsing than this cannot help: the engine's own thread is the slower half.
MAX_PARSERS = 2


def open_captures(paths: Paths, arrow: bool = False, jobs: int | None = None) -> _core.Analysis:
    """The capture files opened by the core (headers read: a file that is not a capture raises
    analysis.capture.CaptureError here), each announced to `analysis.capture.watch_reads`. With
    `jobs` cores (default: those this process may run on), one recording's lines are parsed on up
    to `jobs - 1` threads beside the engine's (core/src/reader/parallel.rs): the same result."""
    analysis = _core.Analysis(as_paths(paths), arrow, min((jobs or cores()) - 1, MAX_PARSERS))
    for progress in analysis.files:
        announce_read(progress)
    return analysis


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Counters:
    """What `Summary.result` reads of an engine, from the core's result."""

    def __init__(self, result: dict):
        self.frames: int = result["frames"]
        self.malformed_records: int = result["malformed_records"]
        self.records_after_close: int = result["records_after_close"]
        self.drops: int = result["drops"]
        self.dropped_records: int = result["dropped_records"]
        self._stats = result["stats"]

    def stats(self) -> dict:
        stats = dict(self._stats)
        stats["latency"] = {_request_type(key): LogHistogram.from_state(state)
                            for key, state in stats["latency"].items()}
        return stats


class Files:
    """What `Summary.result` reads of a CaptureSet, from the core's result."""

    def __init__(self, result: dict):
        self.files = [_File(f["path"]) for f in result["files"]]
        self.damage = [Damage(*entry) for entry in result["damage"]]
        self.unknown_records: dict[str, int] = result["unknown_records"]


def _request_type(key: str) -> str | None:
    if key == NO_TYPE_KEY:
        return None
    return key[1:] if key.startswith("\0") else key


@dataclasses.dataclass
class _File:
    path: str
