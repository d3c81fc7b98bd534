"""The tables the report needs, read in two passes in memory that does not grow with the capture:
`mwtap report` on a capture of millions of frames never holds the per-frame table.

The first pass runs the engine (its tables handed over in batches while it reads) and keeps the tables
of a row per connection or finding whole (connections, reconnects, keep-alive, streams, violations), of
the requests only those the report lists (the slowest, the first unanswered), and of the tables with
a row per frame or so only the columns its plots draw, an evenly spaced sample of at most `SAMPLE_ROWS`
rows (`StreamedCapture.sampled` says how many were seen: the report says so under each plot drawn from
a sample). The second pass reads the capture again, without the engine, for the frames the report
shows (the linked frames with their context, the listed requests and responses, with payloads), the
frames and WebSocket pings of the timeline connections (at most `TIMELINE_FRAMES` frames a
connection, evenly spaced) and a sample of the subscription notifications (streams plot); the core
hands over only the lines of those connections and of subscription messages (`Analysis.select`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from operator import itemgetter
from typing import Any, Callable, Iterable

import orjson

from analysis import _core, native
from analysis.capture import MSG, PING, PONG
from analysis.config import Config
from analysis.engine import as_line
from analysis.frame import NOTIFICATION
from analysis.imports import all_captures
from analysis.load import Capture, streamed, to_frame
from analysis.reader import CaptureSet, Paths
from analysis.tables import COLUMNS, epoch_s

WHOLE = ("connections", "reconnects", "keepalive", "streams", "violations")  # a row per connection or finding
LISTED_REQUESTS = 20  # the slowest answered and the first unanswered requests, kept whole
SAMPLE_ROWS = 50_000  # rows kept of a table drawn from a sample
TIMELINE_FRAMES = 20_000  # frames drawn per connection timeline
UNANSWERED = ("unanswered", "open-at-end")
FRAME_COLUMNS = [name for name, _ in COLUMNS["frames"]]
NOTIFICATION_COLUMNS = ("conn", "t", "frame", "dir", "category", "subscription_id")  # those the plots use


class _Rows:
    """Some columns of a table, row by row (converted by `to_frame`, as `load` converts them). With a
    `limit`, an evenly spaced sample: every row until `limit` are kept, then every 2nd, 4th, … row."""

    def __init__(self, table: str, names: Iterable[str], limit: int | None = None):
        self.table, self.names, self.limit = table, list(names), limit
        self.values = itemgetter(*self.names)
        self.rows: list[tuple] = []
        self.seen, self.every = 0, 1

    def add(self, row: dict) -> None:
        self.add_values(self.values(row))

    def add_values(self, values: tuple) -> None:
        """A row given as the values of `names`, in their order."""
        self.seen += 1
        if (self.seen - 1) % self.every == 0:
            self.rows.append(values)
            if len(self.rows) == self.limit:
                del self.rows[1::2]
                self.every *= 2

    @property
    def kept(self) -> int:
        return len(self.rows)

    def frame(self):
        columns = zip(*self.rows) if self.rows else [()] * len(self.names)
        return to_frame(self.table, {name: list(values) for name, values in zip(self.names, columns)})


class _Best:
    """The `n` rows of largest key seen so far, ties to the first seen (a bounded heap)."""

    def __init__(self, n: int):
        self.n, self.heap, self.order = n, [], count()

    def add(self, key, row_of: Callable[[], dict]) -> None:
        """`row_of()` gives the row, asked for only when it is kept."""
        order = -next(self.order)
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, (key, order, row_of()))
        elif (key, order) > self.heap[0][:2]:  # the heap's top: the worst kept
            heapq.heapreplace(self.heap, (key, order, row_of()))

    def rows(self) -> list[dict]:
        return [row for *_, row in self.heap]


class _Batch:
    """A batch as `analysis.load.streamed` hands it over, read a column at a time: row dicts (values
    as recorded) or a RecordBatch (values converted as `to_frame` converts them, which converting
    them again leaves as they are). Rows become dicts only where the report keeps them."""

    def __init__(self, batch):
        self.batch, self.dicts = batch, isinstance(batch, list)

    def column(self, name: str) -> list:
        return [row.get(name) for row in self.batch] if self.dicts else self.batch.column(name).to_pylist()

    def columns(self, names: Iterable[str]) -> Iterable[tuple]:
        """The values of `names`, a tuple a row."""
        return zip(*(self.column(name) for name in names))

    def row(self, i: int) -> dict:
        return self.batch[i] if self.dicts else self.batch.slice(i, 1).to_pylist()[0]


def _time_key(t) -> float:
    t = epoch_s(t)
    return math.inf if t is None else t  # to_frame sorts the missing times last


def _number(value) -> bool:
    return (value.__class__ is float or value.__class__ is int) and value == value


class _Kept:
    """What the first pass keeps of the tables (see the module docstring), handed over by
    `analysis.load.streamed`: the tables kept whole as row dicts, the others as they come."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.whole: dict[str, list[dict]] = {table: [] for table in WHOLE}
        self.latencies = _Rows("pairs", ("type", "status", "latency_ms"), SAMPLE_ROWS)
        self.sequences = _Rows("sequences", ("conn", "t", "frame", "dialog_id"), SAMPLE_ROWS)
        self.silences = _Rows("silences", ("conn", "t", "start", "silence_s"), SAMPLE_ROWS)
        self.over_limit: list[dict] = []  # every silence over the limit (timelines), whole
        self.longest: dict[str, tuple] = {}  # each connection's longest silence within the limit (its histogram)
        self.slowest, self.unanswered = _Best(LISTED_REQUESTS), _Best(LISTED_REQUESTS)
        self.keepers = {**{table: rows.extend for table, rows in self.whole.items()},
                        "pairs": self._pairs, "sequences": self._sequences, "silences": self._silences}

    def add(self, table: str, batch) -> None:
        self.keepers[table](batch)

    def _pairs(self, batch) -> None:
        batch = _Batch(batch)
        names = self.latencies.names
        for i, (values, t) in enumerate(zip(batch.columns(names), batch.column("t"))):
            _, status, latency = values
            if status == "answered":
                if _number(latency):
                    self.latencies.add_values(values)
                    self.slowest.add((latency, -_time_key(t)), partial(batch.row, i))
            elif status in UNANSWERED:
                self.unanswered.add(-_time_key(t), partial(batch.row, i))

    def _sequences(self, batch) -> None:
        for values in _Batch(batch).columns(self.sequences.names):
            if values[3] is not None:  # dialog_id: the streams plot's messaging notifications
                self.sequences.add_values(values)

    def _silences(self, batch) -> None:
        """Each silence kept once: whole if over the limit or its connection's longest so far within
        it (the one it displaces joins the sample), else in the sample."""
        batch = _Batch(batch)
        for i, values in enumerate(batch.columns(self.silences.names)):
            conn, silence = values[0], values[3]
            if _number(silence):
                if silence > self.limit_s:
                    self.over_limit.append(batch.row(i))
                    continue
                longest = self.longest.get(conn)
                if longest is None or silence > longest[0][3]:
                    self.longest[conn] = (values, batch.row(i))
                    if longest is None:
                        continue
                    values = longest[0]
            self.silences.add_values(values)

    def silence_rows(self) -> list[dict]:
        """The silences kept whole: those over the limit and each connection's longest within it."""
        return self.over_limit + [row for _, row in self.longest.values()]


@dataclass
class StreamedCapture(Capture):
    """A Capture of `stream_capture`: `pairs` holds the answered requests' latencies, `listed_pairs`
    the requests the report lists, `silences`, `sequences` samples, and `frames`, `pings` are empty
    until `fetch_frames`. `sampled`: table -> (rows drawn, rows seen) of the tables drawn from a sample."""
    paths: Any = None
    listed_pairs: Any = None
    sampled: dict[str, tuple[int, int]] = field(default_factory=dict)
    timeline_stride: dict[str, int] = field(default_factory=dict)
    payload_chars: dict[tuple[str, int], int] = field(default_factory=dict)  # the length of each payload cut

    def fetch_frames(self, wanted: set[tuple[str, int]], timeline: list[str], payload_chars: int) -> None:
        """Read the capture again for the frames `wanted` (with their payloads' first `payload_chars`
        characters), the frames and pings of the `timeline` connections and a sample of the
        subscription notifications."""
        frames_of = self.connections.groupby("conn")[["frames_c2s", "frames_s2c"]].sum().sum(axis=1)
        stride = {conn: max(1, math.ceil(int(frames_of.get(conn, 0)) / TIMELINE_FRAMES)) for conn in timeline}
        marked = set(zip(self.violations.conn, self.violations.frame)) | wanted
        shown, notes = _Rows("frames", FRAME_COLUMNS), _Rows("frames", NOTIFICATION_COLUMNS, SAMPLE_ROWS)
        pings = _Rows("pings", [name for name, _ in COLUMNS["pings"]])
        seen = dict.fromkeys(timeline, 0)

        def take(rec: dict, line: bytes | None = None) -> None:
            """One record (`line`: its JSON, when read from a capture file)."""
            kind, conn, n = rec.get("rec"), rec.get("conn"), rec.get("n")
            if conn.__class__ is not str:  # the engine skipped it
                return
            if kind != MSG:
                if (kind == PING or kind == PONG) and conn in seen and epoch_s(rec.get("t")) is not None:
                    pings.add({"conn": conn, "t": rec["t"], "rec": kind, "dir": rec.get("dir")})
                return
            key = (conn, n if n.__class__ is int or n.__class__ is float else None)  # hashable
            if key not in wanted and conn not in seen and "subscriptionId" not in rec:
                return  # most messages: nothing the report shows
            if rec.get("dir") not in ("c2s", "s2c") or epoch_s(rec.get("t")) is None:
                return
            if key in wanted:
                row = _core.frame_row(line or as_line(rec))
                if row is None:  # damage, left out of the frames table
                    return
                text = row["text"]
                if text.__class__ is str and len(text) > payload_chars:
                    self.payload_chars[key] = len(text)
                    row["text"] = text[:payload_chars]
                shown.add(row)
                return
            drawn = conn in seen
            if drawn:
                seen[conn] += 1
                drawn = key in marked or (seen[conn] - 1) % stride[conn] == 0
            if drawn or "subscriptionId" in rec:
                row = _core.frame_row(line or as_line(rec))
                if row is None:
                    return
                row["text"] = None  # only the frames shown in the report carry their payload
                if drawn:
                    shown.add(row)
                elif row["category"] == NOTIFICATION:
                    notes.add(row)
        if all_captures(self.paths):  # the core picks out the lines of the connections asked for
            loads = orjson.loads
            native.open_captures(self.paths).select([*seen, *{conn for conn, _ in wanted}],
                                                    lambda lines: [take(loads(line), line) for line in lines])
        else:
            for rec in CaptureSet(self.paths).records():
                take(rec)
        import pandas as pd
        self.frames = _by_time(pd.concat([shown.frame(), notes.frame()], ignore_index=True))
        self.pings = pings.frame()
        self.timeline_stride = stride
        self.sampled["notifications"] = (notes.kept, notes.seen)


def _by_time(table):
    """A table put together from parts in the order `to_frame` gives it."""
    return table.sort_values("t", kind="stable", ignore_index=True)


def stream_capture(paths: Paths, **config) -> StreamedCapture:
    """The first pass over one capture path or a list of them (keyword arguments: `Config` fields)."""
    import pandas as pd
    cfg = Config.from_options(**config)
    kept = _Kept(cfg.keepalive_limit_s)
    summary, damage = streamed(paths, cfg, kept.keepers, kept.add, dicts=list(WHOLE))
    tables = {table: to_frame(table, rows) for table, rows in kept.whole.items()}
    silences = _by_time(pd.concat([to_frame("silences", kept.silence_rows()), kept.silences.frame()]))
    return StreamedCapture(
        **tables, pairs=kept.latencies.frame(), sequences=kept.sequences.frame(), silences=silences,
        frames=to_frame("frames", []), pings=to_frame("pings", []), config=cfg, damage=damage, _summary=summary,
        paths=paths, listed_pairs=to_frame("pairs", kept.slowest.rows() + kept.unanswered.rows()),
        sampled={table: (columns.kept, columns.seen) for table, columns in
                 (("pairs", kept.latencies), ("sequences", kept.sequences), ("silences", kept.silences))})
