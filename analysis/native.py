"""The protocol core's analysis (`analysis._core`, core/src/analysis_py.rs and engine_py.rs) in the
terms of the Python side: `analyze` gives the summary `mwtap analyze` prints, built by the same
`Summary` from the rows and statistics the core hands over (per connection and per subscription;
violations as they are found, so memory stays bounded however many a capture holds)."""

from __future__ import annotations

import dataclasses

import orjson

from analysis import _core
from analysis.capture import Damage, announce_read, as_paths
from analysis.config import Config
from analysis.histogram import LogHistogram
from analysis.imports import SourceLimits, all_captures
from analysis.reader import CaptureSet, Paths
from analysis.summary import Summary

# The core's analyzers, in the order the rules run (the order of their violations).
ANALYZERS = ("connections", "keepalive", "pairs", "streams", "sequences", "rings")
# The tables the summary is built from, besides the violations.
SUMMARISED = ("connections", "keepalive", "streams", "reconnects")
# The core's latency keys are strings: "\0none" stands for a request without a type, and a type
# that starts with NUL has another one in front.
NO_TYPE_KEY = "\0none"


def open_captures(paths: Paths, arrow: bool = False) -> _core.Analysis:
    """The capture files opened by the core (headers read: a file that is not a capture raises
    analysis.capture.CaptureError here), each announced to `analysis.capture.watch_reads`."""
    analysis = _core.Analysis(as_paths(paths), arrow)
    for progress in analysis.files:
        announce_read(progress)
    return analysis


def analyze(paths: Paths, config: Config | None = None) -> tuple[dict, list[Damage]]:
    """The summary of one or more captures (what `mwtap analyze --format json` prints) and the
    damaged lines. Capture files are read by the core; HAR and flow files are converted to records
    by analysis.imports (the Python reader merges them by time) and fed to the core's engine."""
    config = config or Config()
    summary = Summary(config.max_violations)
    add_violation = summary.adder("violations")
    if all_captures(paths):
        analysis = open_captures(paths)
        limits = SourceLimits.of(analysis.headers)

        def violations(rows: list[dict]) -> None:
            for row in rows:
                add_violation(row)
        result = analysis.run(dataclasses.asdict(limits.config(config)), ANALYZERS, SUMMARISED, violations)
        files = Files(result)
    else:
        captures = CaptureSet(paths)
        limits = SourceLimits.of(capture.header for capture in captures.files)
        engine = _core.Engine(dataclasses.asdict(limits.config(config)), ANALYZERS, SUMMARISED)
        for rec in captures.records():
            for row in engine.feed(orjson.dumps(rec)) or ():
                add_violation(row)
        result = engine.finish()
        files = captures
    for row in result["violations"]:
        add_violation(row)
    for name, rows in result["tables"].items():
        add = summary.adder(name)
        for row in rows:
            add(row)
    return limits.annotate(summary.result(Counters(result), files)), files.damage


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
