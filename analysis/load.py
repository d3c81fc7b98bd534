"""Entry points: `analyze` (aggregate summary, bounded memory) and `load` (pandas tables for notebooks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from analysis.capture import MAX_TIME, Damage
from analysis.config import Config
from analysis.engine import TABLES, Engine, Sink
from analysis.imports import SourceLimits
from analysis.reader import CaptureSet, Paths
from analysis.summary import Summary
from analysis.tables import COLUMNS, int64
from analysis.verdict import Verdict


def run(captures: CaptureSet, config: Config, sink: Sink | None, on_violation=None) -> Engine:
    engine = Engine(config, sink, on_violation)
    feed = engine.feed
    for rec in captures.records():
        feed(rec)
    engine.finish()
    return engine


def analyze(paths: Paths, config: Config | None = None) -> tuple[dict, list[Damage]]:
    """The summary of one or more captures (what `mwtap analyze --format json` prints) and the damaged lines."""
    config = config or Config()
    captures = CaptureSet(paths)
    limits = SourceLimits.of(capture.header for capture in captures.files)
    summary = Summary(config.max_violations)
    engine = run(captures, limits.config(config), summary)
    return limits.annotate(summary.result(engine, captures)), captures.damage


class _Rows:
    """Keeps every row (notebooks want them) and passes the aggregated tables on to the summary."""

    def __init__(self, summary: Summary):
        self.tables: dict[str, list[dict]] = {name: [] for name in TABLES}
        self.summary = summary

    def adder(self, table: str):
        keep = self.tables[table].append
        aggregate = self.summary.adder(table)
        if aggregate is None:
            return keep

        def add(row: dict) -> None:
            keep(row)
            aggregate(row)
        return add


@dataclass
class Capture:
    """The tables of one analysis (columns: docs/analysis.md) and its summary."""
    frames: Any
    pairs: Any
    streams: Any
    sequences: Any
    keepalive: Any
    silences: Any
    pings: Any
    connections: Any
    reconnects: Any
    violations: Any
    config: Config = field(default_factory=Config)
    damage: list[Damage] = field(default_factory=list)
    _summary: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """The same dict `mwtap analyze --format json` prints."""
        return self._summary

    def verdict(self) -> Verdict:
        """What is wrong, who does it, how often, since when (the lines every output opens with)."""
        return Verdict(self._summary["verdict"])


def load(paths: Paths, **config) -> Capture:
    """Analyse one capture path or a list of them into pandas DataFrames.

    Keyword arguments are `Config` fields (e.g. `response_timeout_s=10`).
    """
    cfg = Config.from_options(**config)
    rows, summary, damage = analysed(paths, cfg, _Rows)
    tables = {name: to_frame(name, rows.tables[name]) for name in TABLES}
    return Capture(**tables, config=cfg, damage=damage, _summary=summary)


def analysed(paths: Paths, config: Config, sink_of: Callable[[Summary], Sink]) -> tuple[Any, dict, list[Damage]]:
    """One pass of the engine over `paths` into `sink_of(summary)`: the sink, the summary, the damaged lines."""
    captures = CaptureSet(paths)
    limits = SourceLimits.of(capture.header for capture in captures.files)
    summary = Summary(config.max_violations)
    sink = sink_of(summary)
    engine = run(captures, limits.config(config), sink)
    return sink, limits.annotate(summary.result(engine, captures)), captures.damage


def to_frame(table: str, rows: list[dict] | dict[str, Any]):
    """A table as a DataFrame from its rows, or from some of its columns (the others missing)."""
    import pandas as pd
    columns = COLUMNS[table]
    names = [name for name, _ in columns]
    df = (pd.DataFrame.from_records(rows, columns=names) if isinstance(rows, list)
          else pd.DataFrame(rows, columns=names, index=pd.RangeIndex(len(next(iter(rows.values()), ())))))
    for name, kind in columns:
        if kind == "time":  # one resolution for every table (pandas 3 infers one from the values otherwise)
            seconds = pd.to_numeric(df[name], errors="coerce").astype("float64")
            seconds = seconds.where(seconds.abs() < MAX_TIME)  # as analysis.tables.epoch_s: NaN, inf are missing
            df[name] = pd.to_datetime(seconds, unit="s", utc=True).dt.as_unit("ns")
        elif kind == "float":
            df[name] = pd.to_numeric(df[name], errors="coerce").astype("float64")
        elif kind == "int":
            df[name] = _int64_column(df[name])
        elif kind == "bool":
            df[name] = df[name].astype("boolean")
        else:
            df[name] = df[name].astype("string")
    if "t" in df.columns and len(df):
        df = df.sort_values("t", kind="stable", ignore_index=True)
    return df


def _int64_column(column):
    """An int column as analysis.tables.int64 has each value, vectorised where pandas typed it."""
    import pandas as pd
    if column.dtype.kind == "i":  # every value an int64
        return column.astype("Int64")
    if column.dtype.kind == "f":  # numbers and missing values
        return column.where((column % 1 == 0) & (column >= -2**63) & (column < 2**63)).astype("Int64")
    return pd.array([int64(v) for v in column], dtype="Int64")  # beyond int64, bools, strings
