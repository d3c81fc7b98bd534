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
hands over only the lines of those frames, of those connections and of subscription messages
(`Analysis.select`).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import count
from operator import itemgetter
from typing import Any, Callable, Iterable

from analysis import _core, native
from analysis.capture import MSG, PING, PONG, record_of
from analysis.config import Config
from analysis.engine import as_line
from analysis.frame import NOTIFICATION
from analysis.imports import all_captures
from analysis.load import Capture, streamed, to_frame
from analysis.reader import CaptureSet, Paths
from analysis.tables import COLUMNS, INT64, epoch_s

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
        assert limit is None or limit >= 2, "a sample of at least two rows"
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
                self._thin()

    def add_batch(self, batch) -> None:
        """Every row of a RecordBatch holding `names`, as `add` would take them one by one: only the
        rows kept become Python values."""
        start, end = 0, batch.num_rows
        while start < end:
            room = self.limit - len(self.rows) if self.limit else end + 1  # no limit: never full
            kept = range(start + (-self.seen) % self.every, end, self.every)[:room]
            if kept:
                columns = batch.take(list(kept)).select(self.names).to_pydict().values()
                self.rows.extend(zip(*columns))
            if len(kept) == room:  # full: thinned, then on from the row after the last kept
                self.seen += kept[-1] + 1 - start
                start = kept[-1] + 1
                self._thin()
            else:
                self.seen += end - start
                start = end

    def _thin(self) -> None:
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

    def add(self, key, row: dict) -> None:
        order = -next(self.order)
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, (key, order, row))
        elif (key, order) > self.heap[0][:2]:  # the heap's top: the worst kept
            heapq.heapreplace(self.heap, (key, order, row))

    def add_best(self, batch, sort_keys: list[tuple[str, str]], key: Callable[[dict], Any]) -> None:
        """The rows of `batch` that could be among the `n` best: its own best `n` by `sort_keys` (a
        stable sort, missing and NaN last, so ties go to the first), added in the order they came."""
        import pyarrow as pa
        import pyarrow.compute as pc
        best = pc.sort_indices(batch, sort_keys=sort_keys)[:self.n]  # nulls last
        for row in batch.take(pa.array(sorted(best.to_pylist()), pa.uint64())).to_pylist():
            self.add(key(row), row)

    def rows(self) -> list[dict]:
        """Best first (the heap's own order depends on how the rows came in batches)."""
        return [row for *_, row in sorted(self.heap, reverse=True)]


def _take(counts: Counter, values: tuple) -> bool:
    """Whether `values` is one of `counts` (then counted one less)."""
    if counts[values] > 0:
        counts[values] -= 1
        return True
    return False


def _time_key(t) -> float:
    t = epoch_s(t)
    return math.inf if t is None else t  # to_frame sorts the missing times last


BATCHED = ("pairs", "sequences", "silences")  # the tables the first pass reads a column at a time
DICT_ROWS = 4_096  # rows of these tables handed over as dicts (HAR, flow files) made into a batch at a time


class _Kept:
    """What the first pass keeps of the tables (see the module docstring), handed over by
    `analysis.load.streamed`: the tables kept whole as row dicts, the others read a column at a time
    from RecordBatches (rows handed over as dicts are made into one first); `finish` when all came."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.whole: dict[str, list[dict]] = {table: [] for table in WHOLE}
        self.latencies = _Rows("pairs", ("type", "status", "latency_ms"), SAMPLE_ROWS)
        self.sequences = _Rows("sequences", ("conn", "t", "frame", "dialog_id"), SAMPLE_ROWS)
        self.silences = _Rows("silences", ("conn", "t", "start", "silence_s"), SAMPLE_ROWS)
        self.over_limit: list[dict] = []  # every silence over the limit (timelines), whole
        self.longest: dict[str, dict] = {}  # each connection's longest silence within the limit (its histogram)
        self.slowest, self.unanswered = _Best(LISTED_REQUESTS), _Best(LISTED_REQUESTS)
        self.dict_rows: dict[str, list[dict]] = {table: [] for table in BATCHED}
        self.finished = False
        self.keepers = {**{table: rows.extend for table, rows in self.whole.items()},
                        "pairs": self._pairs, "sequences": self._sequences, "silences": self._silences}

    def add(self, table: str, batch) -> None:
        if isinstance(batch, list) and table in self.dict_rows:
            waiting = self.dict_rows[table]
            waiting.extend(batch)
            if len(waiting) < DICT_ROWS:
                return
            batch = self._batch_of(table)
        self.keepers[table](batch)

    def finish(self) -> None:
        """After the last batch, once: the rows still waiting are read, and the silences kept whole
        leave the sample (it stands for the others; of two equal rows, one silence read twice, one
        copy leaves)."""
        if self.finished:
            raise RuntimeError("the first pass is finished already")
        self.finished = True
        for table, waiting in self.dict_rows.items():
            if waiting:
                self.keepers[table](self._batch_of(table))
        whole = Counter(self.silences.values(row) for row in self.longest.values())
        sample = self.silences.rows
        self.silences.rows = [values for values in sample if not _take(whole, values)]
        self.silences.seen -= len(self.longest)

    def _batch_of(self, table: str):
        batch = _core.arrow_rows(table, self.dict_rows[table])
        self.dict_rows[table] = []
        return batch

    def _pairs(self, batch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        status, latency = batch.column("status"), batch.column("latency_ms")
        answered = batch.filter(pc.and_(pc.equal(status, "answered"), pc.invert(pc.is_nan(latency))))
        self.latencies.add_batch(answered)
        self.slowest.add_best(answered, [("latency_ms", "descending"), ("t", "ascending")],
                              lambda row: (row["latency_ms"], -_time_key(row["t"])))
        self.unanswered.add_best(batch.filter(pc.is_in(status, pa.array(UNANSWERED))), [("t", "ascending")],
                                 lambda row: -_time_key(row["t"]))

    def _sequences(self, batch) -> None:
        import pyarrow.compute as pc
        # those of a dialog: the streams plot's messaging notifications
        self.sequences.add_batch(batch.filter(pc.is_valid(batch.column("dialog_id"))))

    def _silences(self, batch) -> None:
        """Silences over the limit are kept whole; those within it go to the sample, and each
        connection's longest (the first of equal ones) is kept whole too (`finish` takes it out of
        the sample)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        silence = batch.column("silence_s")
        over = pc.greater(silence, self.limit_s)  # NaN is not over, nor a missing silence
        self.over_limit += batch.filter(over).to_pylist()
        within = batch.filter(pc.invert(pc.fill_null(over, False)))
        self.silences.add_batch(within)
        numbers = within.filter(pc.and_(pc.invert(pc.is_nan(within.column("silence_s"))),
                                        pc.is_valid(within.column("conn"))))
        if not numbers.num_rows:
            return
        order = pc.sort_indices(numbers, sort_keys=[("conn", "ascending"), ("silence_s", "descending")])
        conns = numbers.column("conn").take(order)
        first = pa.concat_arrays([pa.array([True]), pc.not_equal(conns[1:], conns[:-1])])
        for row in numbers.take(order.filter(first)).to_pylist():  # each connection's longest in the batch
            longest = self.longest.get(row["conn"])
            if longest is None or row["silence_s"] > longest["silence_s"]:  # equal: the first stays
                self.longest[row["conn"]] = row

    def silence_rows(self) -> list[dict]:
        """The silences kept whole: those over the limit and each connection's longest within it."""
        assert self.finished, "finish() first"
        return self.over_limit + list(self.longest.values())


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
            # a linked frame's context may step past int64, where no record's number is (nor the core's)
            frames = [(conn, n) for conn, n in wanted if n in INT64]
            native.open_captures(self.paths).select(list(seen), frames,
                                                    lambda lines: [take(record_of(line), line) for line in lines])
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
    kept.finish()
    tables = {table: to_frame(table, rows) for table, rows in kept.whole.items()}
    silences = _by_time(pd.concat([to_frame("silences", kept.silence_rows()), kept.silences.frame()]))
    return StreamedCapture(
        **tables, pairs=kept.latencies.frame(), sequences=kept.sequences.frame(), silences=silences,
        frames=to_frame("frames", []), pings=to_frame("pings", []), config=cfg, damage=damage, _summary=summary,
        paths=paths, listed_pairs=to_frame("pairs", kept.slowest.rows() + kept.unanswered.rows()),
        sampled={table: (columns.kept, columns.seen) for table, columns in
                 (("pairs", kept.latencies), ("sequences", kept.sequences), ("silences", kept.silences))})
