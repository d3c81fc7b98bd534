"""Entry points: `analyze` (aggregate summary, bounded memory) and `load` (pandas tables for notebooks)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from analysis.capture import MAX_TIME, Damage
from analysis.config import Config
from analysis.engine import TABLES, Engine
from analysis import _core, native
from analysis.imports import SourceLimits, all_captures
from analysis.preload import preload
from analysis.reader import CaptureSet, Paths
from analysis.summary import Summary
from analysis.tables import COLUMNS, int64
from analysis.verdict import Verdict


def analyze(paths: Paths, config: Config | None = None, jobs: int | None = None) -> tuple[dict, list[Damage]]:
    """The summary of one or more captures (what `mwtap analyze --format json` prints) and the damaged lines.

    One pass of `streamed` that hands no table on: the summary's own tables leave the core in
    batches, so memory stays bounded however many connections a capture holds. `jobs`: the cores
    to use (`native.open_captures`)."""
    return streamed(paths, config or Config(), (), lambda table, batch: None, jobs=jobs)


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
    pandas_loaded = preload("pandas")  # a third of a second, while the core reads without the GIL
    batches: dict[str, list] = {name: [] for name in TABLES}
    summary, damage = streamed(paths, cfg, TABLES, lambda table, batch: batches[table].append(batch))
    pandas_loaded.join()
    tables = {name: _frame(name, parts) for name, parts in batches.items()}
    return Capture(**tables, config=cfg, damage=damage, _summary=summary)


def streamed(paths: Paths, config: Config, tables: Iterable[str], on_batch: Callable[[str, Any], None],
             jobs: int | None = None, locations: _core.Locations | None = None, **batching
             ) -> tuple[dict, list[Damage]]:
    """One pass over `paths` handing each of `tables` to `on_batch(table, batch)` while it is read, a
    batch at a time in the order of its rows: a pyarrow RecordBatch (values converted as `to_frame`
    converts them; with `parquet=True`, in the types `mwtap export` writes), or a list of row dicts
    holding the values as recorded (the violations, the tables the summary aggregates, those named in
    `dicts`, and every table of HAR and flow files, whose records are fed to the core one at a
    time). `jobs`: the cores to use (`native.open_captures`). `batching`: the other options of
    analysis._core.Batches (batch size, redaction, types). `locations` (capture files only): every
    record is placed there too, and which request and response answer each other (`mwtap view`'s
    index, core/src/locations.rs). Returns the summary and the damaged lines; memory stays bounded by
    the batches."""
    tables = set(tables)

    def handing_over(summary: Summary) -> Callable[[str, Any], None]:
        def hand_over(table: str, batch) -> None:
            aggregate = summary.adder(table)
            if aggregate is not None:
                for row in batch:
                    aggregate(row)
            if table in tables:
                on_batch(table, batch)
        return hand_over
    summary = Summary(config.max_violations)
    hand_over = handing_over(summary)
    built = [name for name in TABLES if name != "violations" and (name in tables or name in native.SUMMARISED)]
    if not all_captures(paths):
        if locations is not None:
            raise ValueError("records are placed only in capture files")
        engine, files, limits = _fed(paths, config, built, hand_over)
        return limits.annotate(summary.result(engine, files)), files.damage
    analysis = native.open_captures(paths, jobs=jobs)
    limits = SourceLimits.of(analysis.headers)
    dicts = [*native.SUMMARISED, *batching.pop("dicts", ())]
    result = analysis.run(dataclasses.asdict(limits.config(config)), native.ANALYZERS, built,
                          lambda rows: hand_over("violations", rows), _core.Batches(hand_over, dicts=dicts, **batching),
                          locations)
    files = native.Files(result)
    return limits.annotate(summary.result(native.Counters(result), files)), files.damage


def _fed(paths: Paths, config: Config, tables: list[str], hand_over: Callable[[str, list], None]
         ) -> tuple[Engine, CaptureSet, SourceLimits]:
    """The core's engine fed the records of `paths` one at a time (`analysis.engine.Engine`), for
    HAR and flow files, which `analysis.imports` turns into records: the core reads capture files
    only. Rows are handed over one at a time as they are made (so `streamed`'s batching options do
    not apply: no batch size, no redaction, which the importers did already)."""
    captures = CaptureSet(paths)
    limits = SourceLimits.of(capture.header for capture in captures.files)

    class HandOver:
        def adder(self, table: str) -> Callable[[dict], None] | None:
            return (lambda row: hand_over(table, [row])) if table in tables or table == "violations" else None
    engine = Engine(limits.config(config), HandOver())
    for rec in captures.records():
        engine.feed(rec)
    engine.finish()
    return engine, captures, limits


def _frame(table: str, batches: list):
    """A table's DataFrame from the batches `streamed` handed over (lists of row dicts or RecordBatches)."""
    if batches and not isinstance(batches[0], list):
        import pyarrow as pa
        return frame_from_arrow(table, pa.Table.from_batches(batches))
    return to_frame(table, [row for rows in batches for row in rows])


def to_frame(table: str, rows: list[dict] | dict[str, Any]):
    """A table as a DataFrame from its rows, or from some of its columns (the others missing).

    Each value is converted on its own, whatever the other values of its column: a time or float
    is a number (not a bool or a string), an int is `analysis.tables.int64`, a str is `str(value)`.
    """
    import pandas as pd
    columns = COLUMNS[table]
    names = [name for name, _ in columns]
    df = (pd.DataFrame.from_records(rows, columns=names) if isinstance(rows, list)
          else pd.DataFrame(rows, columns=names, index=pd.RangeIndex(len(next(iter(rows.values()), ())))))
    for name, kind in columns:
        column = df[name]
        if column.dtype.kind == "f" and kind in ("str", "int"):
            column = _as_given(rows, name, column, kind)
        if kind == "time":
            df[name] = _datetimes(_numbers(column))
        elif kind == "float":
            df[name] = _numbers(column)
        elif kind == "int":
            df[name] = _int64_column(column)
        elif kind == "bool":
            df[name] = column.astype("boolean")
        else:
            df[name] = column.astype("string")
    return _by_time(df)


def frame_from_arrow(table: str, batch):
    """The DataFrame `to_frame(table, rows)` gives, from the pyarrow RecordBatch of the table that
    `analysis._core.analyze_native(..., arrow=True)` returns (converted there value by value as
    `to_frame` does; times as epoch seconds): no Python object per row."""
    import pandas as pd
    import pyarrow as pa
    columns = COLUMNS[table]
    if batch.schema.names != [name for name, _ in columns]:
        raise ValueError(f"{table}: columns {batch.schema.names} are not {[name for name, _ in columns]}")
    dtypes = {pa.large_string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    df = batch.to_pandas(types_mapper=dtypes.get)
    for name, kind in columns:
        if kind == "time":
            df[name] = _datetimes(df[name])
    return _by_time(df)


def _as_given(rows: list[dict] | dict[str, Any], name: str, column, kind: str):
    """A column pandas made float64 (ints and None) as the values given, where that changed them: an int
    would read "5.0" in a str column, one beyond 2**53 would be rounded in an int column."""
    import pandas as pd
    if kind == "int" and not (column.abs() >= 2**53).any() or isinstance(rows, dict) and name not in rows:
        return column
    values = rows[name] if isinstance(rows, dict) else [row.get(name) for row in rows]
    return pd.Series(values, index=column.index, dtype=object)


def _by_time(df):
    if "t" in df.columns and len(df):
        df = df.sort_values("t", kind="stable", ignore_index=True)
    return df


def _datetimes(seconds):
    """Epoch seconds (float64) as tz-aware UTC datetimes, NaN, inf and beyond MAX_TIME missing (as
    analysis.tables.epoch_s); one resolution for every table (pandas 3 infers one from the values otherwise)."""
    import pandas as pd
    seconds = seconds.where(seconds.abs() < MAX_TIME)
    return pd.to_datetime(seconds, unit="s", utc=True).dt.as_unit("ns")


def _numbers(column):
    """A float64 column of the numbers in `column`, vectorised where pandas typed it; strings and bools are
    missing (as analysis.tables.int64 and epoch_s have them)."""
    import pandas as pd
    if column.dtype.kind in "iuf":
        return column.astype("float64")
    return pd.Series([float(v) if v.__class__ is int or v.__class__ is float else None for v in column],
                     index=column.index, dtype="float64")


def _int64_column(column):
    """An int column as analysis.tables.int64 has each value, vectorised where pandas typed it."""
    import pandas as pd
    if column.dtype.kind == "i":  # every value an int64
        return column.astype("Int64")
    if column.dtype.kind == "f":  # numbers and missing values
        return column.where((column % 1 == 0) & (column >= -2**63) & (column < 2**63)).astype("Int64")
    return pd.array([int64(v) for v in column], dtype="Int64")  # beyond int64, bools, strings
