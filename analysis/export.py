"""The analysis tables as Parquet files, one per table (docs/export.md), for DuckDB, Polars or Spark.

Rows are written in row groups of `row_group_rows` as the engine finishes them (the native core hands
them over as Arrow record batches; a thread of their own writes them), so memory stays bounded by the
engine's open state plus one row group per table and `QUEUED` waiting, whatever the size of the input.
Every string is passed through the redaction once more, so an export holds no token even from a
capture recorded with redaction off.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from operator import itemgetter
from typing import Callable

from analysis import _core
from analysis.config import Config
from analysis.engine import TABLES
from analysis.load import streamed
from analysis.reader import Paths
from analysis.redact import redact_text, redact_url
from analysis.tables import COLUMNS, epoch_s, int64

FILE_MODE = 0o600
DIR_MODE = 0o700
ROW_GROUP_ROWS = 25_000
ROW_GROUP_CHARS = 8_000_000  # payload bytes buffered before a row group is written (frames): peak RSS stays under 300 MB
QUEUED = 2  # row groups waiting for the writing thread (each up to ~ROW_GROUP_CHARS of payloads)


def _schema(table: str):
    import pyarrow as pa
    types = {"str": pa.string(), "time": pa.timestamp("us", tz="UTC"), "float": pa.float64(), "int": pa.int64(),
             "bool": pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in COLUMNS[table]])


def _float(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _each(convert: Callable) -> Callable[[tuple], list]:
    return lambda values: list(map(convert, values))


def _redacted(redact: Callable[[str], str]) -> Callable[[tuple], list]:
    """A str column's conversion: each distinct string redacted once (ids, types, names repeat)."""
    def convert(values: tuple) -> list:
        done: dict[str, str] = {}
        out = []
        for value in values:
            if value.__class__ is str:
                clean = done.get(value)
                if clean is None:
                    clean = done[value] = redact(value)
                out.append(clean)
            else:
                out.append(None if value is None else redact(str(value)))
        return out
    return convert


_CONVERT: dict[str, Callable[[tuple], list]] = {
    "int": _each(int64), "float": _each(_float), "time": _each(epoch_s), "str": _redacted(redact_text),
    "bool": _each(lambda v: v if isinstance(v, bool) else None)}
_URL = _redacted(redact_url)


class _Writing:
    """The row groups of every file written in the order they come, on a thread of its own
    (`mwtap-write`): pyarrow encodes and compresses without the GIL, so the core reads on while a row
    group is written (the core's callback wrote them itself, a third of the export's time). At most
    `QUEUED` row groups wait, so memory stays bounded; a failed write is raised at the next hand-over."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUED)
        self.error: BaseException | None = None
        self.discard = False
        self.thread = threading.Thread(target=self._run, name="mwtap-write", daemon=True)
        self.thread.start()

    def put(self, writer, batch) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((writer, batch))

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None and not self.discard:
                try:
                    item[0].write_batch(item[1])
                except BaseException as e:  # raised on the core's thread, where the export stops
                    self.error = e

    def finish(self, discard: bool) -> None:
        """Waits until what was handed over is written (`discard`: dropped instead); raises a failed write."""
        self.discard = discard
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if self.error is not None and not discard:
            raise self.error


class _TableWriter:
    """One Parquet file, written a row group at a time: at most `row_group_rows` rows, and at most
    about `ROW_GROUP_CHARS` characters of payloads (frames of megabytes would otherwise pile up)."""

    def __init__(self, table: str, path: str, row_group_rows: int, writing: _Writing):
        import pyarrow.parquet as pq
        self.table, self.schema = table, _schema(table)
        self.names = [name for name, _ in COLUMNS[table]]
        self.values = itemgetter(*self.names)
        self.converters = [_URL if name == "url" else _CONVERT[kind] for name, kind in COLUMNS[table]]
        self.buffer: list[dict] = []
        self.row_group_rows = row_group_rows
        self.sized, self.chars = "text" in self.names, 0
        self.rows = 0
        self.path = path
        self.writing = writing
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        self.file = os.fdopen(fd, "wb")
        # A dictionary pays for strings that repeat (ids, types; not payloads); numbers and times are
        # nearly all distinct (1M frames: 5 % less CPU, 14 % smaller files without). Min/max
        # statistics let a reader skip row groups by time or number. Strings get none: rows come
        # roughly in time order, so a row group holds most connections and types, and string bounds
        # would skip nothing (they were a quarter of the writing's CPU).
        coded = [name for name, kind in COLUMNS[table] if kind == "str" and name != "text"]
        bounded = [name for name, kind in COLUMNS[table] if kind != "str"]
        try:
            self.writer = pq.ParquetWriter(self.file, self.schema, compression="zstd", use_dictionary=coded,
                                           write_statistics=bounded)
        except BaseException:
            self.file.close()
            os.unlink(path)
            raise

    def write(self, batch) -> None:
        """Rows handed over by `analysis.load.streamed`: row dicts, or a RecordBatch in the file's
        types (one row group)."""
        if isinstance(batch, list):
            for row in batch:
                self.add(row)
            return
        self.writing.put(self.writer, batch)
        self.rows += batch.num_rows

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if self.sized:
            text = row.get("text")
            self.chars += len(text) if text.__class__ is str else 0
        if len(self.buffer) >= self.row_group_rows or self.chars >= ROW_GROUP_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        try:  # the rows as tuples in the schema's order, then its columns: no Python loop per value
            rows = list(map(self.values, self.buffer))
        except KeyError:  # a row without some column: missing there
            rows = [tuple(map(row.get, self.names)) for row in self.buffer]
        columns = [convert(column) for convert, column in zip(self.converters, zip(*rows))]
        # the core makes the batch (times rounded to the microsecond as in the tables it hands over):
        # pyarrow's own conversion of Python values imports pandas, a third of a second
        converted = [dict(zip(self.names, values)) for values in zip(*columns)]
        self.writing.put(self.writer, _core.arrow_rows(self.table, converted, parquet=True))
        self.rows += len(self.buffer)
        self.buffer.clear()
        self.chars = 0

    def close(self) -> None:
        """Ends the file (after `_Writing.finish`: every row group written); the file is closed also
        when its end cannot be written."""
        try:
            self.writer.close()
        finally:
            self.file.close()


def export_parquet(paths: Paths, out_dir: str, config: Config | None = None, *,
                   row_group_rows: int = ROW_GROUP_ROWS) -> tuple[dict[str, int], list]:
    """Analyse `paths` and write each table to `out_dir/<table>.parquet` (created 0600; the directory
    0700 if it is new). Returns (rows per table, damaged lines). Refuses to overwrite a table file."""
    os.makedirs(out_dir, mode=DIR_MODE, exist_ok=True)
    existing = [t for t in TABLES if os.path.exists(os.path.join(out_dir, f"{t}.parquet"))]
    if existing:
        raise FileExistsError(f"{out_dir}: {existing[0]}.parquet exists (mwtap never overwrites an export)")
    writing = _Writing()
    writers: dict[str, _TableWriter] = {}
    written = False
    try:  # the core cuts the tables into row groups and redacts them (the url column: here, as rows)
        for table in TABLES:
            writers[table] = _TableWriter(table, os.path.join(out_dir, f"{table}.parquet"), row_group_rows, writing)
        _, damage = streamed(paths, config or Config(), TABLES, lambda table, batch: writers[table].write(batch),
                             rows=row_group_rows, payload_bytes=ROW_GROUP_CHARS, dicts=["connections"], redact=True,
                             parquet=True)
        for writer in writers.values():
            writer.flush()
        writing.finish(discard=False)
        for writer in writers.values():  # the last bytes and each file's footer are written here
            writer.close()
        written = True
    finally:
        if not written:  # a bad input or a failed write leaves no table behind (a rerun would be refused)
            writing.finish(discard=True)
            for writer in writers.values():
                with contextlib.suppress(Exception):  # a file whose end cannot be written either
                    writer.close()
                with contextlib.suppress(OSError):
                    os.unlink(writer.path)
    return {table: writer.rows for table, writer in writers.items()}, damage
