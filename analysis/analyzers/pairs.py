"""Request/response pairing: latency, unanswered requests, orphan and error responses, request ids,
response codes, and requests sent before the InitConnection response."""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.engine import Analyzer, trim_oldest
from analysis.frame import Frame, type_is
from analysis.histogram import LogHistogram
from analysis.identity import header_token, url_token
from analysis.rules import INFO, WARNING

ANSWERED_IDS_KEPT = 10_000  # per connection, at least (see trim_oldest), for `reused-request-id`


@dataclass(slots=True, eq=False)  # hashed by identity: a key of `Pairs.pending`
class _Req:
    t: float
    n: int | None
    id: str
    type: str | None
    conn: str
    timed_out: bool = False
    queued: list | None = None  # later requests with the same id, answered after this one


@dataclass(slots=True)
class _PairConn:
    awaiting_init: bool
    outstanding: dict[str, _Req] = field(default_factory=dict)
    answered: dict[str, None] = field(default_factory=dict)  # insertion-ordered, bounded by trim_oldest
    reuse_reported: set[str] = field(default_factory=set)
    init_ids: set[str] = field(default_factory=set)


class Pairs(Analyzer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = ctx.rows("pairs")
        self.timeout = self.config.response_timeout_s
        self.no_response = frozenset(self.config.no_response_types)
        self.init_exempt = frozenset(self.config.init_exempt_types)
        self.conns: dict[str, _PairConn] = {}
        self._after = ctx.timers.after
        # Requests waiting for their response, in the order sent, with one timer armed for the oldest:
        # an answered request costs nothing more, however long the timeout (live checking runs for days).
        self.pending: dict[_Req, None] = {}
        self._armed = False
        self.counts = dict.fromkeys(("total", "answered", "unanswered", "open_at_end", "late", "orphan_responses",
                                     "error_responses"), 0)
        self.latency: dict[str | None, LogHistogram] = {}  # per request type

    def stats(self) -> dict:
        return {"requests": dict(self.counts), "latency": self.latency}

    def open(self, rec: dict) -> None:
        awaiting_init = (not rec.get("implicit") and header_token(rec) is None and url_token(rec.get("url")) is None)
        self.conns[rec["conn"]] = _PairConn(awaiting_init)

    def request(self, frame: Frame) -> None:
        rec = frame.rec
        req_id = rec.get("id")
        if not req_id:
            return
        conn, t, type_ = rec["conn"], rec["t"], rec.get("type")
        state = self.conns[conn]
        if state.awaiting_init:
            self._check_init(state, rec, req_id, type_)
        req = _Req(t, rec.get("n"), req_id, type_, conn)
        earlier = state.outstanding.get(req_id)
        if earlier is not None:
            self.ctx.violation("duplicate-request-id", conn, t, req.n,
                               f"request id {req_id!r} reused while request {earlier.n} ({earlier.type}) "
                               "is still unanswered")
            if earlier.queued is None:
                earlier.queued = []
            earlier.queued.append(req)
        else:
            state.outstanding[req_id] = req
            if req_id in state.answered and req_id not in state.reuse_reported:
                state.reuse_reported.add(req_id)
                self.ctx.violation("reused-request-id", conn, t, req.n,
                                   f"request id {req_id!r} reused after it was answered (reported once per id)")
        if type_ not in self.no_response:
            self.pending[req] = None
            if not self._armed:
                self._arm(req)

    def _check_init(self, state: _PairConn, rec: dict, req_id: str, type_: str | None) -> None:
        if type_is(type_, "InitConnection"):
            state.init_ids.add(req_id)
        elif type_ not in self.init_exempt:
            sent = "before the InitConnection response" if state.init_ids else "without InitConnection"
            self.ctx.violation("request-before-init", rec["conn"], rec["t"], rec.get("n"),
                               f"{type_} sent {sent} on a connection without an Authorization header")

    def _arm(self, req: _Req) -> None:
        self._armed = True
        self._after(req.t, self.timeout, self._due)

    def _due(self, deadline: float) -> None:
        """The oldest pending request's deadline passed: every request due by then timed out."""
        self._armed = False
        pending, timeout = self.pending, self.timeout
        due = []
        for req in pending:
            if req.t + timeout > deadline:
                break
            due.append(req)
        for req in due:
            del pending[req]
            req.timed_out = True
            self.ctx.violation("unanswered-request", req.conn, req.t + timeout, req.n,
                               f"{req.type} (id {req.id!r}) has no response after {timeout:g} s")
        if pending:
            self._arm(next(iter(pending)))

    def response(self, frame: Frame) -> None:
        rec = frame.rec
        conn, t = rec["conn"], rec["t"]
        code = rec.get("code")
        if code.__class__ is not int or not 100 <= code <= 599:
            problem = "no code" if "code" not in rec else f"code {code!r} is not an HTTP status (100-599)"
            self.ctx.violation("invalid-response-code", conn, t, rec.get("n"), f"response has {problem}")
            code = None
        req_id = rec.get("reqId")
        state = self.conns[conn]
        req = state.outstanding.pop(req_id, None) if req_id is not None else None
        if req is None:
            why = ("has no reqId" if req_id is None else
                   f"answers request id {req_id!r} a second time" if req_id in state.answered else
                   f"answers request id {req_id!r} that was never sent")
            self.ctx.violation("orphan-response", conn, t, rec.get("n"), f"response {why}")
            self.counts["orphan_responses"] += 1
            self._row(conn, None, "orphan", rec, code)
            return
        if req.queued:
            state.outstanding[req_id] = nxt = req.queued.pop(0)
            nxt.queued = req.queued or None
        self.pending.pop(req, None)
        state.answered[req_id] = None
        trim_oldest(state.answered, ANSWERED_IDS_KEPT)
        if state.awaiting_init and req_id in state.init_ids and code is not None and code < 400:
            state.awaiting_init = False
        counts = self.counts
        counts["total"] += 1
        counts["answered"] += 1
        if req.timed_out:
            counts["late"] += 1
        if code is not None and code >= 400:
            counts["error_responses"] += 1
        histogram = self.latency.get(req.type)
        if histogram is None:
            histogram = self.latency[req.type] = LogHistogram()
        histogram.add((t - req.t) * 1000.0)
        if self.rows is not None:
            self._row(conn, req, "answered", rec, code)

    def close(self, rec: dict, at_capture_end: bool) -> None:
        conn, t = rec["conn"], rec["t"]
        state = self.conns.pop(conn)
        for first in state.outstanding.values():
            for req in [first, *(first.queued or ())]:
                self.pending.pop(req, None)
                self._unanswered(conn, t, req, at_capture_end)

    def _unanswered(self, conn: str, t: float, req: _Req, at_capture_end: bool) -> None:
        status = "open-at-end" if at_capture_end and not req.timed_out else "unanswered"
        self.counts["total"] += 1
        self.counts["open_at_end" if status == "open-at-end" else "unanswered"] += 1
        if req.timed_out:
            self.counts["late"] += 1
        if not req.timed_out and req.type not in self.no_response:
            waited = t - req.t
            if at_capture_end:
                self.ctx.violation("unanswered-request", conn, t, req.n,
                                   f"{req.type} (id {req.id!r}) still unanswered when the capture ended "
                                   f"({waited:.1f} s after it was sent)", INFO, at_capture_end=True)
            else:
                self.ctx.violation("unanswered-request", conn, t, req.n,
                                   f"{req.type} (id {req.id!r}) unanswered when the connection closed "
                                   f"{waited:.1f} s after it was sent", WARNING)
        self._row(conn, req, status, None, None)

    def _row(self, conn: str, req: _Req | None, status: str, resp: dict | None, code: int | None) -> None:
        if self.rows is None:
            return
        t_resp = resp["t"] if resp is not None else None
        self.rows({
            "conn": conn, "t": req.t if req else t_resp, "frame": req.n if req else None,
            "id": req.id if req else resp.get("reqId"), "type": req.type if req else None,
            "t_response": t_resp, "response_frame": resp.get("n") if resp else None,
            "response_type": resp.get("type") if resp else None, "code": code,
            "latency_ms": (t_resp - req.t) * 1000.0 if req and resp else None,
            "status": status, "late": req.timed_out if req else False,
            "error": code is not None and code >= 400,
        })
