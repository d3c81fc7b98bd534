"""Rings on agent connections: every ring offered WAITING (`.ams.routing.RoutingTaskNotification`)
is answered with `.ams.routing.UpdateRingState` (ACCEPTED or REJECTED) before it expires
(Messaging Agent API — Getting Started, Step 6: the agent accepts the routing task with its ringId)."""

from __future__ import annotations

from analysis.engine import Analyzer
from analysis.frame import Frame, as_list, type_is

RING_TIMEOUT_S = 30.0  # a ring's deadline when its notification names no `ringExpiration`


class Rings(Analyzer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.waiting: dict[str, dict[str, float]] = {}  # conn -> ring id -> when offered

    def open(self, rec: dict) -> None:
        self.waiting[rec["conn"]] = {}

    def wants(self, hook: str, direction: str, type_: str | None) -> bool:
        if hook == "request":
            return type_is(type_, "UpdateRingState")
        return hook == "notification" and type_ is not None and type_.endswith("RoutingTaskNotification")

    def notification(self, frame: Frame) -> None:
        body, rec = frame.body, frame.rec
        waiting = self.waiting[rec["conn"]]
        for change in as_list(body.get("changes")) if isinstance(body, dict) else ():
            result = change.get("result") if isinstance(change, dict) else None
            for ring in as_list(result.get("ringsDetails")) if isinstance(result, dict) else ():
                ring_id = ring.get("ringId") if isinstance(ring, dict) else None
                if not isinstance(ring_id, str):
                    continue
                if ring.get("ringState") == "WAITING" and change.get("type") != "DELETE":
                    if ring_id not in waiting:
                        expiration = ring.get("ringExpiration")
                        timeout = (expiration / 1000.0 if isinstance(expiration, (int, float)) and expiration > 0
                                   else RING_TIMEOUT_S)
                        waiting[ring_id] = rec["t"]
                        self.ctx.timers.after(rec["t"], timeout, self._due, rec["conn"], ring_id, rec["t"],
                                              rec.get("n"), timeout)
                elif ring.get("ringState") != "EXPIRED":  # taken elsewhere or cancelled: nothing to answer
                    waiting.pop(ring_id, None)

    def request(self, frame: Frame) -> None:
        body = frame.body
        ring_id = body.get("ringId") if isinstance(body, dict) else None
        if isinstance(ring_id, str):
            self.waiting[frame.rec["conn"]].pop(ring_id, None)

    def _due(self, deadline: float, conn: str, ring_id: str, offered: float, n, timeout: float) -> None:
        waiting = self.waiting.get(conn)
        if waiting is not None and waiting.get(ring_id) == offered:
            del waiting[ring_id]
            self.ctx.violation("ring-not-answered", conn, deadline, n,
                               f"ring {ring_id} offered WAITING was neither ACCEPTED nor REJECTED within its "
                               f"{timeout:g} s")

    def close(self, rec: dict, at_capture_end: bool) -> None:
        del self.waiting[rec["conn"]]
