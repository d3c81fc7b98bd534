"""One partition analysed in a worker process: the engine as usual, but every row the summary needs
is tagged with its place in the single-process run, so the merge can replay them in that order.

Place of a row: (partition where it fires, record index in it, phase, timer delay, origin partition,
sequence). Phase 0 is a deadline firing before the record, phase 1 the record itself. Deadlines
left when the partition's records end fire in the single-process run at the next partition's first
record (partitions are at least every timer delay apart): they are fired here by advancing the
clock to the end of the whole input, and placed before that next partition's first record. Rows
of connections still open at the end come after everything (`finish`), in partition order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from analysis.config import Config
from analysis.engine import TABLES, Engine, Timers
from analysis.histogram import LogHistogram
from analysis.reader import CaptureSet
from analysis.summary import Summary

RECORD, DEADLINE = 1, 0
BEFORE_FIRST = -1
COUNTERS = ("frames", "drops", "dropped_records", "malformed_records", "records_after_close")


class _TaggedRows:
    """The sink: keeps the rows of the tables the summary aggregates, each with its place."""

    def __init__(self, index: int):
        self.index = index
        self.rows: list[tuple[tuple, str, dict]] = []
        self.partition, self.record = index, BEFORE_FIRST  # where rows fire: partition, record index there
        self.delay: float | None = None  # of the deadline firing now; None while a record is handled
        self.wanted = {table for table in TABLES if Summary().adder(table) is not None}

    def adder(self, table: str):
        if table not in self.wanted:
            return None
        rows = self.rows

        def add(row: dict) -> None:
            phase = RECORD if self.delay is None else DEADLINE
            rows.append(((self.partition, self.record, phase, self.delay, self.index, len(rows)), table, row))
        return add


class _DeadlineTagger:
    """Fires the engine's deadlines for `Timers.run_until`, telling the sink which delay fires (it
    orders deadlines firing at the same record). Installed as the `fire` hook of the engine's own
    `Timers`, since analyzers keep its bound `after`."""

    def __init__(self, timers: Timers, rows: _TaggedRows):
        self.timers = timers
        self.rows = rows
        self.latest_fired = -math.inf
        timers.fire = self.fire

    def fire(self, delay: float, deadline: float, callback, args: tuple) -> None:
        self.latest_fired = max(self.latest_fired, deadline)
        self.rows.delay = delay
        try:
            callback(deadline, *args)
        finally:
            self.rows.delay = None


@dataclass
class PartitionResult:
    index: int
    rows: list[tuple[tuple, str, dict]]
    t_min: float
    """The earliest and latest times of the partition's records."""
    t_max: float
    latest_fired: float = -math.inf
    """The latest deadline that fired (those left at the end fire at the next partition's start)."""
    open_at_end: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    aggregates: list[dict] = field(default_factory=list)
    """Per analyzer, its attributes that merge by addition: count dicts and latency histograms."""
    files: list[tuple[int, str, list, dict]] = field(default_factory=list)
    """(position in the input, path, damage, unknown record counts) per file."""
    delays: list[float] = field(default_factory=list)
    """Timer delays in the order the engine first used them."""


def analyze_partition(index: int, files: list[tuple[int, str]], config: Config, end_t: float | None
                      ) -> PartitionResult:
    """Analyse one partition. `end_t`: the last time of the whole input (None for the last partition),
    when connections still open at the end are closed."""
    captures = CaptureSet([path for _, path in files])
    rows = _TaggedRows(index)
    engine = Engine(config, rows)
    timers = _DeadlineTagger(engine.ctx.timers, rows)
    feed = engine.feed
    t_min = math.inf
    for i, rec in enumerate(captures.records()):
        rows.record = i
        t = rec.get("t")
        if (t.__class__ is float or t.__class__ is int) and t < t_min:
            t_min = t
        feed(rec)
    result = PartitionResult(index, rows.rows, t_min=t_min, t_max=engine.last_t)
    if end_t is not None:
        # Whatever is still pending fires now; the merge checks that it all falls before the next partition.
        rows.partition, rows.record = index + 1, BEFORE_FIRST
        engine.advance(math.inf)
        engine.last_t = end_t
    result.latest_fired = timers.latest_fired
    result.open_at_end = bool(engine.open_conns)
    rows.partition, rows.record = math.inf, index
    engine.finish()
    result.counters = {name: getattr(engine, name) for name in COUNTERS}
    result.aggregates = [_aggregates(analyzer) for analyzer in engine.analyzers]
    result.files = [(position, capture.path, capture.damage, capture.unknown_records)
                    for (position, _), capture in zip(files, captures.files)]
    result.delays = list(timers.timers.queues)
    return result


def _aggregates(analyzer) -> dict:
    out = {}
    for name, value in vars(analyzer).items():
        if isinstance(value, LogHistogram):
            out[name] = value
        elif isinstance(value, dict) and value and all(
                isinstance(v, LogHistogram) or v.__class__ is int for v in value.values()):
            out[name] = value
    return out
