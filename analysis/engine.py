"""The protocol engine for records that arrive one at a time (`record --live`, HAR and flow files,
`view --follow`, records a notebook makes itself): the native core's engine (`analysis._core.Engine`,
core/src/engine.rs and the analyzers beside it) behind rows and violations in Python's terms.
Capture files are read by the core itself (`analysis.native.open_captures`), not through this."""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Protocol

import orjson

from analysis import _core
from analysis.capture import json_nesting_room
from analysis.config import Config
from analysis.native import ANALYZERS, Counters
from analysis.rules import Violation

TABLES = ("frames", "pairs", "streams", "sequences", "keepalive", "silences", "pings", "connections", "reconnects",
          "violations")


class Sink(Protocol):
    """Receives finished rows. `adder(table)` is asked once per table and returns the function
    taking its rows, or None: rows nobody wants (the per-frame table in `mwtap analyze`) are never built."""
    def adder(self, table: str) -> Callable[[dict], None] | None: ...


def as_line(rec: dict) -> bytes:
    """A record as the JSON line the core reads. orjson writes at most 254 levels of nesting, but a
    capture line may hold up to 1,023 (the most orjson reads): those are written by `json`, whose
    encoder recurses once a level. A value no JSON text holds (bytes, a lone surrogate) raises
    TypeError or ValueError; orjson writes NaN and infinities as null."""
    try:
        return orjson.dumps(rec)
    except TypeError:
        with json_nesting_room():
            return json.dumps(rec, ensure_ascii=False, allow_nan=False).encode()


class Engine:
    """Feed capture records (dicts, as a capture line decodes) with `feed`, then call `finish` once.

    Violations go to `on_violation` the moment they are found; the rows of the tables `sink` asks
    for go to it after the record (or the `advance`) that finished them, a record's violations
    first. The counters (`frames`, `malformed_records`, `records_after_close`, `drops`,
    `dropped_records`) and `stats()` are known once finished; a finished engine takes no more
    records. Every analyzer of the core runs (the tables nobody asked for are not built).
    """

    def __init__(self, config: Config | None = None, sink: Sink | None = None,
                 on_violation: Callable[[Violation], None] | None = None):
        self.config = config or Config()
        adders = {} if sink is None else {table: sink.adder(table) for table in TABLES}
        self._adders = {table: add for table, add in adders.items() if add is not None}
        self._on_violation = on_violation
        self._tables = [table for table in self._adders if table != "violations"]
        self._core = _core.Engine(dataclasses.asdict(self.config), ANALYZERS, self._tables)
        self.frames = self.malformed_records = self.records_after_close = self.drops = self.dropped_records = 0
        self._counters: Counters | None = None
        # records the core could not take (a value no JSON holds, a line it reads as no record): malformed
        self._unfed = 0

    def feed(self, rec: dict) -> None:
        """One record. One without a string `rec` is no capture record and is passed over, as the
        capture reader passes over lines of kinds it does not know; one holding a value no capture
        line can (bytes, a lone surrogate) is counted as malformed."""
        if rec.get("rec").__class__ is not str:
            return
        try:
            line = as_line(rec)
        except (TypeError, ValueError):
            self._unfed += 1
            return
        self._hand_over(self._core.feed(line))

    def feed_line(self, line: bytes) -> None:
        """One record as its capture line (a line of a capture file that holds a record), read by the
        core as `mwtap analyze` reads it; a line it reads as no record is counted as malformed."""
        try:
            found = self._core.feed(line)
        except ValueError:
            self._unfed += 1
            return
        self._hand_over(found)

    def advance(self, t: float) -> None:
        """Let the clock reach `t` without a record (live checking): deadlines up to `t` fire."""
        self._hand_over(self._core.advance(t))

    def finish(self) -> None:
        """End of the records: what is still pending on connections left open is reported."""
        result = self._core.finish()
        self._hand_over(result["violations"], result["tables"])
        self._counters = counters = Counters(result)
        self.frames, self.malformed_records = counters.frames, counters.malformed_records + self._unfed
        self.records_after_close, self.drops = counters.records_after_close, counters.drops
        self.dropped_records = counters.dropped_records

    def stats(self) -> dict:
        """What the analyzers keep themselves (sections of the summary), once finished."""
        if self._counters is None:
            raise ValueError("the engine's statistics are known once it has finished")
        return self._counters.stats()

    def _hand_over(self, violations: list[dict] | None, tables: dict[str, list[dict]] | None = None) -> None:
        if violations:
            if self._on_violation is not None:
                for row in violations:
                    self._on_violation(Violation(**row))
            add = self._adders.get("violations")
            if add is not None:
                for row in violations:
                    add(row)
        if tables is None and self._tables:
            tables = self._core.take_tables()
        for table, rows in (tables or {}).items():
            add = self._adders[table]
            for row in rows:
                add(row)
