"""The sans-I/O protocol engine: fed capture records one at a time, it keeps per-connection state
and hands each record to small analyzers, each owning one concern and one output table."""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import islice
from operator import itemgetter
from typing import Callable, Iterable, Protocol

from analysis.capture import CLOSE, DROP, MSG, OPEN, PING, PONG, REFUSED
from analysis.config import Config
from analysis.frame import KINDS, NOTIFICATION, REQ, RESP, Frame
from analysis.rules import RULES, Violation

ROUTES_KEPT = 4096
CLOSED_CONNS_KEPT = 100_000  # closed connection ids remembered, to count records after a close
_deadline_of = itemgetter(0)
_CATEGORY_HOOKS = {REQ: "request", RESP: "response", NOTIFICATION: "notification"}

TABLES = ("frames", "pairs", "streams", "sequences", "keepalive", "silences", "pings", "connections", "reconnects",
          "violations")


class Sink(Protocol):
    """Receives finished rows. `adder(table)` is asked once per table and returns the function
    taking its rows, or None: rows nobody wants (the per-frame table in `mwtap analyze`) are never built."""
    def adder(self, table: str) -> Callable[[dict], None] | None: ...


class Timers:
    """Deadlines (request timeouts, accept timeouts), fired by the capture's own clock.

    Deadlines are mostly "now + a fixed delay", so each delay keeps a queue in deadline order that
    is almost always appended to at its end: cheaper than a heap. An earlier deadline (a clock
    stepping back, a deadline re-armed for an older item) is inserted in its place.
    """

    def __init__(self) -> None:
        self.queues: dict[float, deque] = {}
        self.next_due = float("inf")
        # When set, called as fire(delay, deadline, callback, args) instead of each callback
        # (analysis.parallel tags the rows a deadline produces).
        self.fire: Callable[[float, float, Callable[..., None], tuple], None] | None = None

    def after(self, now: float, delay: float, callback: Callable[..., None], *args) -> None:
        queue = self.queues.get(delay)
        if queue is None:
            queue = self.queues[delay] = deque()
        deadline = now + delay
        if queue and deadline < queue[-1][0]:
            queue.insert(bisect_right(queue, deadline, key=_deadline_of), (deadline, callback, args))
        else:
            queue.append((deadline, callback, args))
        if deadline < self.next_due:
            self.next_due = deadline

    def run_until(self, now: float) -> None:
        fire = self.fire
        for delay, queue in list(self.queues.items()):  # callbacks may add a queue
            while queue and queue[0][0] <= now:
                deadline, callback, args = queue.popleft()
                if fire is None:
                    callback(deadline, *args)
                else:
                    fire(delay, deadline, callback, args)
        self.next_due = min((q[0][0] for q in self.queues.values() if q), default=float("inf"))


def trim_oldest(entries: dict, limit: int) -> None:
    """Drop the oldest entries of an insertion-ordered dict once it holds 1.25 × `limit`, keeping
    the newest `limit`.

    In batches: deleting the oldest entry one at a time leaves holes at the front of a dict that
    every `next(iter(entries))` walks over (+1.4 µs per answered request at 10,000 ids).
    """
    if len(entries) > limit + limit // 4:
        for key in list(islice(entries, len(entries) - limit)):
            del entries[key]


class Context:
    """What analyzers share: the config, the timers, the row sink and the violation callback."""

    def __init__(self, config: Config, sink: Sink | None, on_violation: Callable[[Violation], None] | None):
        self.config = config
        self.timers = Timers()
        self._sink = sink
        self._on_violation = on_violation
        self._violation_rows = self.rows("violations")
        self.violation_count = 0

    def rows(self, table: str) -> Callable[[dict], None] | None:
        """The function that takes rows of `table`, or None when nobody wants them."""
        return None if self._sink is None else self._sink.adder(table)

    def violation(self, rule: str, conn: str | None, t: float, frame: int | None, message: str,
                  severity: str | None = None, at_capture_end: bool = False) -> None:
        severity = self.config.severity.get(rule) or severity or RULES[rule]
        v = Violation(rule, severity, conn, t, frame, message, at_capture_end)
        self.violation_count += 1
        if self._on_violation is not None:
            self._on_violation(v)
        if self._violation_rows is not None:
            self._violation_rows(v.as_row())


class Analyzer:
    """Base of the analyzers; the engine calls only the hooks a subclass overrides."""
    HOOKS = ("open", "refused", "message", "request", "response", "notification", "ping", "pong", "close")

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.config = ctx.config

    def wants(self, hook: str, direction: str, type_: str | None) -> bool:
        """Whether the message hook `hook` ("message", "request", …) needs messages of this direction
        and type. Asked once per combination (the engine routes by it), so it must not depend on state."""
        return True

    def open(self, rec: dict) -> None: ...
    def refused(self, rec: dict) -> None: ...
    def message(self, frame: Frame) -> None: ...
    def request(self, frame: Frame) -> None: ...
    def response(self, frame: Frame) -> None: ...
    def notification(self, frame: Frame) -> None: ...
    def ping(self, rec: dict) -> None: ...
    def pong(self, rec: dict) -> None: ...

    def close(self, rec: dict, at_capture_end: bool) -> None:
        """The connection ended (`at_capture_end`: it was still open when the capture ended)."""

    def stats(self) -> dict:
        """Aggregates the analyzer keeps itself (sections of the summary)."""
        return {}


def default_analyzers() -> list[type[Analyzer]]:
    from analysis.analyzers import ANALYZERS
    return list(ANALYZERS)


class Engine:
    """Feed capture records with `feed`, then call `finish` once.

    Violations go to `on_violation` the moment they are detected; finished rows go to `sink`.
    """

    def __init__(self, config: Config | None = None, sink: Sink | None = None,
                 on_violation: Callable[[Violation], None] | None = None,
                 analyzers: Iterable[type[Analyzer]] | None = None):
        self.config = config or Config()
        self.ctx = Context(self.config, sink, on_violation)
        self._timers = self.ctx.timers
        from analysis.analyzers.framing import Framing
        self.framing = Framing(self.ctx)
        # Messages that skip Framing.classify; none when its per-frame table is wanted.
        self._plain_kinds = KINDS if self.framing.rows is None else frozenset()
        self.analyzers = [cls(self.ctx) for cls in (analyzers or default_analyzers())]
        hooks = {name: [getattr(a, name) for a in self.analyzers
                        if getattr(type(a), name) is not getattr(Analyzer, name)] for name in Analyzer.HOOKS}
        self._hooks = hooks
        self._routes: dict[tuple, tuple] = {}  # (dir, category, type) -> the hooks that want such messages
        self._dispatch = {OPEN: self._open, CLOSE: self._close, PING: self._ping,
                          PONG: self._pong, REFUSED: self._refused, DROP: self._drop}
        self.open_conns: dict[str, float] = {}
        self.closed_conns: dict[str, None] = {}  # insertion-ordered, bounded by trim_oldest
        self.last_t = float("-inf")
        self.frames = 0
        self.dropped_records = 0
        self.drops = 0
        self.malformed_records = 0
        self.records_after_close = 0

    def feed(self, rec: dict) -> None:
        t = rec.get("t")
        if t.__class__ is not float and t.__class__ is not int:
            self.malformed_records += 1
            return
        if t > self.last_t:  # advance(t), inlined on the hot path
            self.last_t = t
            if t >= self._timers.next_due:
                self._timers.run_until(t)
        kind = rec.get("rec")
        if kind != MSG:
            handler = self._dispatch.get(kind)
            if handler is not None:
                handler(rec)
            return
        # The hot path (most records are messages), inlined.
        if rec.get("conn") not in self.open_conns and self._known_conn(rec) is None:
            return
        direction = rec.get("dir")
        if direction != "c2s" and direction != "s2c":
            self.malformed_records += 1
            return
        self.frames += 1
        kind, type_ = rec.get("kind"), rec.get("type")
        if kind in self._plain_kinds and type_.__class__ is str and (kind != REQ or rec.get("id")):
            frame = Frame(rec, kind)  # a well-formed message: nothing for Framing to report
        else:
            frame = self.framing.classify(rec)
            if type_.__class__ is not str:
                type_ = None
        key = (direction, frame.category, type_)
        hooks = self._routes.get(key)
        if hooks is None:
            hooks = self._route(key)
        for hook in hooks:
            hook(frame)

    def advance(self, t: float) -> None:
        """Let the clock reach `t` without a record (live checking): deadlines up to `t` fire."""
        if t > self.last_t:
            self.last_t = t
            if t >= self._timers.next_due:
                self._timers.run_until(t)

    def finish(self) -> None:
        """End of capture: close what is still open (the analyzers mark what that leaves pending)."""
        t = self.last_t if self.open_conns else 0.0
        for conn in list(self.open_conns):
            self._end(conn, {"rec": CLOSE, "t": t, "conn": conn, "code": None, "reason": None, "by": None}, True)

    def stats(self) -> dict:
        merged: dict = {}
        for analyzer in self.analyzers:
            merged.update(analyzer.stats())
        return merged

    def _known_conn(self, rec: dict) -> str | None:
        """The record's connection, opened implicitly if the capture missed its open record."""
        conn = rec.get("conn")
        if conn.__class__ is not str:
            self.malformed_records += 1
            return None
        if conn not in self.open_conns:
            if conn in self.closed_conns:
                self.records_after_close += 1
                return None
            self._open({"rec": OPEN, "t": rec["t"], "conn": conn, "implicit": True})
        return conn

    def _route(self, key: tuple) -> tuple:
        direction, category, type_ = key
        names = ["message"] + ([] if category is None else [_CATEGORY_HOOKS[category]])
        hooks = tuple(getattr(analyzer, name) for name in names for analyzer in self.analyzers
                      if getattr(analyzer, name) in self._hooks[name] and analyzer.wants(name, direction, type_))
        if len(self._routes) >= ROUTES_KEPT:  # a capture with endless distinct types: stay bounded
            self._routes.clear()
        self._routes[key] = hooks
        return hooks

    def _open(self, rec: dict) -> None:
        conn = rec.get("conn")
        if conn.__class__ is not str or conn in self.open_conns:
            self.malformed_records += 1
            return
        self.closed_conns.pop(conn, None)
        self.open_conns[conn] = rec["t"]
        for hook in self._hooks["open"]:
            hook(rec)

    def _close(self, rec: dict) -> None:
        conn = self._known_conn(rec)
        if conn is not None:
            # A connection the recorder closed when it stopped was open when the capture ended.
            self._end(conn, rec, rec.get("recorder_stopped") is True)

    def _end(self, conn: str, rec: dict, at_capture_end: bool) -> None:
        del self.open_conns[conn]
        self.closed_conns[conn] = None
        trim_oldest(self.closed_conns, CLOSED_CONNS_KEPT)
        for hook in self._hooks["close"]:
            hook(rec, at_capture_end)

    def _ping(self, rec: dict) -> None:
        if self._known_conn(rec) is not None:
            for hook in self._hooks["ping"]:
                hook(rec)

    def _pong(self, rec: dict) -> None:
        if self._known_conn(rec) is not None:
            for hook in self._hooks["pong"]:
                hook(rec)

    def _refused(self, rec: dict) -> None:
        for hook in self._hooks["refused"]:
            hook(rec)

    def _drop(self, rec: dict) -> None:
        self.drops += 1
        count = rec.get("count")
        if isinstance(count, int):
            self.dropped_records += count
