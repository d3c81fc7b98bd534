"""Request/response pairing: latency, unanswered requests, orphan and error responses, responses
of a type that cannot answer their request, request ids, response codes, and requests sent before
the InitConnection response.

A response is paired with the oldest outstanding request of its `reqId` that its type can answer
(`analysis.frame.can_answer`): with a reused id, a publish response answers the publish, not an
older subscription still waiting under the same id."""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.engine import Analyzer, trim_oldest
from analysis.frame import Frame, can_answer, type_is
from analysis.histogram import LogHistogram
from analysis.identity import header_token, other_token_header, url_token
from analysis.rules import ERROR, INFO, WARNING

ANSWERED_IDS_KEPT = 10_000  # per connection, at least (see trim_oldest), for `reused-request-id`


@dataclass(slots=True, eq=False)  # hashed by identity: a key of `Pairs.pending`
class _Req:
    t: float
    n: int | None
    id: str
    type: str | None
    conn: str
    timed_out: bool = False
    queued: list | None = None  # later requests with the same id, outstanding with this one
    early: str | None = None  # sent before the InitConnection response: what the verdict says of it


@dataclass(slots=True)
class _PairConn:
    awaiting_init: bool
    outstanding: dict[str, _Req] = field(default_factory=dict)
    answered: dict[str, None] = field(default_factory=dict)  # insertion-ordered, bounded by trim_oldest
    reuse_reported: set[str] = field(default_factory=set)
    init_ids: set[str] = field(default_factory=set)
    token_header: str | None = None  # a token sent in a header the API does not read


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
        self.conns[rec["conn"]] = _PairConn(awaiting_init,
                                            token_header=other_token_header(rec) if awaiting_init else None)

    def request(self, frame: Frame) -> None:
        rec = frame.rec
        req_id = rec.get("id")
        if not req_id:
            return
        conn, t, type_ = rec["conn"], rec["t"], rec.get("type")
        state = self.conns[conn]
        req = _Req(t, rec.get("n"), req_id, type_, conn)
        if state.awaiting_init:
            self._check_init(state, req)
        earlier = state.outstanding.get(req_id)
        if earlier is not None:
            self.ctx.violation("duplicate-request-id", conn, t, req.n,
                               f"request id {ascii(req_id)} reused while request {earlier.n} ({earlier.type}) "
                               "is still unanswered")
            if earlier.queued is None:
                earlier.queued = []
            earlier.queued.append(req)
        else:
            state.outstanding[req_id] = req
            if req_id in state.answered and req_id not in state.reuse_reported:
                state.reuse_reported.add(req_id)
                self.ctx.violation("reused-request-id", conn, t, req.n,
                                   f"request id {ascii(req_id)} reused after it was answered (reported once per id)")
        if type_ not in self.no_response:
            self.pending[req] = None
            if not self._armed:
                self._arm(req)

    def _check_init(self, state: _PairConn, req: _Req) -> None:
        """An early request is judged by what the server did with it: its response, or its absence
        at the response timeout or the close (the API reference says such requests are rejected)."""
        if type_is(req.type, "InitConnection"):
            state.init_ids.add(req.id)
        elif req.type not in self.init_exempt:
            sent = "before the InitConnection response" if state.init_ids else "without InitConnection"
            where = f" (its token was in header {ascii(state.token_header)})" if state.token_header else ""
            req.early = f"{req.type} sent {sent} on a connection without an Authorization header{where}"
            if req.type in self.no_response:  # no answer to wait for
                self._early(req, req.t, "", None)

    def _early(self, req: _Req, t: float, outcome: str, severity: str | None, at_capture_end: bool = False) -> None:
        self.ctx.violation("request-before-init", req.conn, t, req.n, req.early + outcome, severity,
                           at_capture_end=at_capture_end)

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
                               f"{req.type} (id {ascii(req.id)}) has no response after {timeout:g} s")
            if req.early:
                self._early(req, req.t + timeout, f", and no response after {timeout:g} s", ERROR)
        if pending:
            self._arm(next(iter(pending)))

    def response(self, frame: Frame) -> None:
        rec = frame.rec
        conn, t = rec["conn"], rec["t"]
        code = rec.get("code")
        if code.__class__ is not int or not 100 <= code <= 599:
            problem = "no code" if "code" not in rec else f"code {ascii(code)} is not an HTTP status (100-599)"
            self.ctx.violation("invalid-response-code", conn, t, rec.get("n"), f"response has {problem}")
            code = None
        req_id = rec.get("reqId")
        state = self.conns[conn]
        head = state.outstanding.get(req_id) if req_id is not None else None
        if head is None:
            why = ("has no reqId" if req_id is None else
                   f"answers request id {ascii(req_id)} a second time" if req_id in state.answered else
                   f"answers request id {ascii(req_id)} that was never sent")
            self.ctx.violation("orphan-response", conn, t, rec.get("n"), f"response {why}")
            self._orphan(conn, rec, code)
            return
        if head.queued is None and can_answer(rec.get("type"), code, head.type):  # the common case, inlined
            del state.outstanding[req_id]
            req = head
        else:
            req = self._answered(state, head, rec.get("type"), code)
        if req is None:
            waiting = [head, *(head.queued or ())]
            named = ", ".join(f"request {r.n} ({r.type})" for r in waiting)
            self.ctx.violation("response-type-mismatch", conn, t, rec.get("n"),
                               f"{rec.get('type')} (reqId {ascii(req_id)}) cannot answer {named}, "
                               f"outstanding with that id; left unpaired")
            self._orphan(conn, rec, code)
            return
        self.pending.pop(req, None)
        state.answered[req_id] = None
        trim_oldest(state.answered, ANSWERED_IDS_KEPT)
        if state.awaiting_init and req_id in state.init_ids and code is not None and code < 400:
            state.awaiting_init = False
        if req.early and not req.timed_out:  # a late answer: judged at the timeout already
            if code is not None and code < 400:
                self._early(req, req.t, f"; this server answered it {code}, but the API reference allows "
                                        "rejecting such requests", WARNING)
            else:
                self._early(req, req.t, f"; refused with {code if code is not None else 'an invalid code'}", ERROR)
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

    @staticmethod
    def _answered(state: _PairConn, head: _Req, response_type, code) -> _Req | None:
        """Take the oldest outstanding request with the head's id that the response can answer."""
        queued = head.queued
        if can_answer(response_type, code, head.type):
            if queued:
                state.outstanding[head.id] = nxt = queued.pop(0)
                nxt.queued = queued or None
            else:
                del state.outstanding[head.id]
            return head
        for i, req in enumerate(queued or ()):
            if can_answer(response_type, code, req.type):
                del queued[i]
                head.queued = queued or None
                return req
        return None

    def _orphan(self, conn: str, rec: dict, code: int | None) -> None:
        self.counts["orphan_responses"] += 1
        self._row(conn, None, "orphan", rec, code)

    def close(self, rec: dict, at_capture_end: bool) -> None:
        conn, t = rec["conn"], rec["t"]
        state = self.conns.pop(conn)
        by_client = rec.get("by") == "client"
        for first in state.outstanding.values():
            for req in [first, *(first.queued or ())]:
                self.pending.pop(req, None)
                self._unanswered(conn, t, req, at_capture_end, by_client)

    def _unanswered(self, conn: str, t: float, req: _Req, at_capture_end: bool, by_client: bool) -> None:
        status = "open-at-end" if at_capture_end and not req.timed_out else "unanswered"
        self.counts["total"] += 1
        self.counts["open_at_end" if status == "open-at-end" else "unanswered"] += 1
        if req.timed_out:
            self.counts["late"] += 1
        if not req.timed_out and req.type not in self.no_response:
            waited = t - req.t
            if at_capture_end:
                self.ctx.violation("unanswered-request", conn, t, req.n,
                                   f"{req.type} (id {ascii(req.id)}) still unanswered when the capture ended "
                                   f"({waited:.1f} s after it was sent)", INFO, at_capture_end=True)
                if req.early:
                    self._early(req, t, ", still unanswered when the capture ended", INFO, at_capture_end=True)
            else:
                # The client that hangs up without waiting chose not to know the answer: worth knowing
                # (info); a server that closes on a pending request dropped it (warning).
                closer = "the client closed the connection" if by_client else "the connection closed"
                self.ctx.violation("unanswered-request", conn, t, req.n,
                                   f"{req.type} (id {ascii(req.id)}) unanswered when {closer} "
                                   f"{waited:.1f} s after it was sent", INFO if by_client else WARNING)
                if req.early:
                    self._early(req, t, f", and unanswered when {closer}", ERROR)
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
