"""One partition analysed in a worker process by the native core (`_core.analyze_partition`,
core/src/partition_py.rs), with what the merge needs to rebuild the single-process run.

The summary tables' rows come in three phases: made while the records were fed, by the deadlines
still pending after the last record (in the single-process run they fire at the next partition's
first record: the worker fires them all, at the end of the whole input), and when connections
still open at the end are closed (after everything, in partition order). Violations, the only
rows deadlines make, also carry the record they were found at and the delay of the deadline that
found them: deadlines due at one record fire queue by queue in the order the delays were first
used over the whole input.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from analysis import _core
from analysis.capture import Damage
from analysis.config import Config
from analysis.native import ANALYZERS, SUMMARISED

COUNTERS = ("frames", "drops", "dropped_records", "malformed_records", "records_after_close")
END, FINISH = "end", "finish"
"""Where violations were found besides a record's index: deadlines fired at the end, the close
of the connections still open."""


@dataclass
class PartitionResult:
    index: int
    tables: list[dict[str, list[dict]]]
    """Per phase (records, end, finish): the summary tables' rows."""
    violations: list[tuple[int | str, float | None, list[dict]]]
    """(record index, END or FINISH; delay of the deadline that found them or None; rows)."""
    t_min: float
    """The earliest and latest times of the partition's records (the latest as recorded)."""
    t_max: float
    latest_fired: float = -math.inf
    """The latest deadline that fired (those left at the end fire at the next partition's start)."""
    open_at_end: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    """The analyzers' statistics, histograms as their state (they merge exactly)."""
    files: list[tuple[int, str, list[Damage], dict[str, int]]] = field(default_factory=list)
    """(position in the input, path, damage, unknown record counts) per file."""
    delays: list[float] = field(default_factory=list)
    """Timer delays in the order the engine first used them."""


def analyze_partition(index: int, files: list[tuple[int, str]], config: Config, end_t: float | None
                      ) -> PartitionResult:
    """Analyse one partition. `end_t`: the last time of the whole input (None for the last partition),
    when connections still open at the end are closed."""
    out = _core.analyze_partition([path for _, path in files], dataclasses.asdict(config), list(ANALYZERS),
                                  list(SUMMARISED), end_t)
    return PartitionResult(
        index, out["tables"], out["violations"], t_min=out["t_min"], t_max=out["t_max"],
        latest_fired=out["latest_fired"], open_at_end=out["open_at_end"],
        counters={name: out[name] for name in COUNTERS}, stats=out["stats"],
        files=[(position, path, [Damage(*entry) for entry in damage], dict(unknown))
               for (position, _), (path, damage, unknown) in zip(files, out["files"])],
        delays=out["delays"])
