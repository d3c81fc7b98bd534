"""Keep-alive: the client's silences (any client message, ping or pong resets the clock), and the
WebSocket pings and pongs themselves."""

from __future__ import annotations

from dataclasses import dataclass

from analysis.engine import Analyzer
from analysis.frame import Frame
from analysis.identity import AGENT, is_agent_request, side_of_url

SERVER_CLOSE_TOLERANCE = 0.98
"""A server close after a silence of at least this share of the limit is a keep-alive gap: the
server enforced the limit on its own clock, and the capture sees the silence a few ms shorter."""
AGENT_SLACK = 0.1
"""On an agent connection a silence may exceed the limit by this share of it: LivePerson's agent SDK
(node-agent-sdk) pings on a timer of exactly 60 s, which fires a few ms late; its bots are not
silent for too long (mwtap serve gives them the same slack)."""


@dataclass(slots=True)
class _Silence:
    last: float
    activities: int = 0
    longest: float = 0.0
    longest_start: float | None = None
    over_limit: int = 0
    limit: float = 0.0


class Keepalive(Analyzer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = ctx.rows("keepalive")
        self.silence_rows = ctx.rows("silences")
        self.ping_rows = ctx.rows("pings")
        self.limit = self.config.keepalive_limit_s
        self.conns: dict[str, _Silence] = {}

    def open(self, rec: dict) -> None:
        agent = side_of_url(rec.get("url")) == AGENT
        self.conns[rec["conn"]] = _Silence(rec["t"], limit=self.limit * (1 + AGENT_SLACK) if agent else self.limit)

    def wants(self, hook: str, direction: str, type_: str | None) -> bool:
        return direction == "c2s"  # only the client's activity counts

    def message(self, frame: Frame) -> None:
        rec = frame.rec
        if is_agent_request(rec.get("type")):
            self.conns[rec["conn"]].limit = self.limit * (1 + AGENT_SLACK)
        self._activity(rec["conn"], rec["t"], rec.get("n"))

    def ping(self, rec: dict) -> None:
        if self.ping_rows is not None:
            self.ping_rows({"conn": rec["conn"], "t": rec["t"], "rec": rec["rec"], "dir": rec.get("dir")})
        if rec.get("dir") == "c2s":
            self._activity(rec["conn"], rec["t"], None)

    pong = ping

    def _activity(self, conn: str, t: float, frame: int | None) -> None:
        state = self.conns[conn]
        gap = t - state.last
        if gap > state.longest or gap > state.limit:
            self._gap(conn, state, t, frame, gap, "")
        if self.silence_rows is not None:
            self.silence_rows({"conn": conn, "t": t, "start": state.last, "silence_s": gap,
                               "over_limit": gap > state.limit, "ended_by": "activity"})
        state.last = t
        state.activities += 1

    def _gap(self, conn: str, state: _Silence, t: float, frame: int | None, gap: float, how: str,
             at_capture_end: bool = False, limit: float | None = None) -> None:
        if gap > state.longest:
            state.longest = gap
            state.longest_start = state.last
        if gap > (state.limit if limit is None else limit):
            state.over_limit += 1
            slack = f" + {AGENT_SLACK:.0%} for an agent" if state.limit > self.limit else ""
            self.ctx.violation("keepalive-gap", conn, t, frame,
                               f"client silent for {gap:.1f} s{how} (limit {self.limit:g} s{slack})",
                               at_capture_end=at_capture_end)

    def close(self, rec: dict, at_capture_end: bool) -> None:
        conn, t = rec["conn"], rec["t"]
        state = self.conns.pop(conn)
        silence = t - state.last
        by_server = rec.get("by") == "server"
        how = (" before the server closed the connection" if by_server
               else " until the capture ended" if at_capture_end else " before the close")
        limit = state.limit * SERVER_CLOSE_TOLERANCE if by_server else state.limit
        self._gap(conn, state, t, None, silence, how, at_capture_end, limit)
        if self.silence_rows is not None:
            self.silence_rows({"conn": conn, "t": t, "start": state.last, "silence_s": silence,
                               "over_limit": silence > limit,
                               "ended_by": "capture-end" if at_capture_end else "close"})
        if self.rows is not None:
            self.rows({"conn": conn, "t": t, "client_activities": state.activities,
                       "longest_gap_s": state.longest, "longest_gap_start": state.longest_start,
                       "gaps_over_limit": state.over_limit, "silence_before_close_s": silence,
                       "closed_by_server_after_silence": by_server and silence > limit,
                       "at_capture_end": at_capture_end})
