"""The aggregate summary (`mwtap analyze`, `Capture.summary()`): built from finished rows with
bounded memory (per connection, per subscription and per request type; never per frame)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analysis.histogram import LogHistogram
from analysis.rules import SEVERITIES
from analysis.verdict import build_verdict, identity

if TYPE_CHECKING:
    from analysis.engine import Engine
    from analysis.native import Counters, Files
    from analysis.reader import CaptureSet

DAMAGE_LISTED = 100
NO_TYPE = "(no type)"  # the latency key of requests without a type (a JSON object's keys are strings)
# What the summary keeps of each connection and subscription: tuples of these fields (a dict per
# connection would cost several times the memory, and captures can hold many thousands).
_CONNECTION_FIELDS = ("conn", "url", "client", "state", "opened_at", "closed_at", "close_code", "close_reason",
                      "closed_by", "side", "sub", "token", "frames_c2s", "frames_s2c", "pings_c2s", "chain",
                      "prev_conn")
_SUBSCRIPTION_FIELDS = ("conn", "kind", "subscription_id", "dialog_id", "request_type", "notifications",
                        "unsubscribed", "first_notification_delay_ms", "after_unsubscribe")


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Summary:
    """A sink that aggregates the tables with one row per connection or subscription (request and
    messaging counts and latencies come from the analyzers themselves: `Engine.stats()`, so no row
    per request or per event is built for the summary)."""

    def __init__(self, max_violations: int = 1000):
        self.max_violations = max_violations
        self.connections: list[tuple] = []
        self.refused = 0
        self.max_gap: dict[str, float] = {}
        self.subscriptions: list[tuple] = []
        self.reconnects = dict.fromkeys(("total", "after_token_close", "fresh_token", "same_token"), 0)
        self.violations: dict[str, list[dict]] = {s: [] for s in SEVERITIES}
        self.violation_counts: dict[str, dict[str, int]] = {}
        self.violations_total = 0
        self.conn_violations: dict[str, dict[str, int]] = {}
        self.findings: dict[tuple, list] = {}  # (conn, rule, severity) -> [count, first t, its frame]

    def adder(self, table: str):
        return getattr(self, "_" + table, None)  # tables it does not aggregate are not even built

    def _connections(self, row: dict) -> None:
        if row["state"] == "refused":
            self.refused += 1
        else:
            self.connections.append(tuple(row[name] for name in _CONNECTION_FIELDS))

    def _keepalive(self, row: dict) -> None:
        self.max_gap[row["conn"]] = row["longest_gap_s"]

    def _streams(self, row: dict) -> None:
        self.subscriptions.append(tuple(_ms(row[name]) if name.endswith("_ms") else row[name]
                                        for name in _SUBSCRIPTION_FIELDS))

    def _reconnects(self, row: dict) -> None:
        self.reconnects["total"] += 1
        if row["prev_close_code"] in (4401, 4407):
            self.reconnects["after_token_close"] += 1
            if row["fresh_token"] is True:
                self.reconnects["fresh_token"] += 1
            elif row["fresh_token"] is False:
                self.reconnects["same_token"] += 1

    def _violations(self, row: dict) -> None:
        self.violations_total += 1
        counts = self.violation_counts.setdefault(row["rule"], {})
        counts[row["severity"]] = counts.get(row["severity"], 0) + 1
        if row["conn"] is not None:
            per_conn = self.conn_violations.setdefault(row["conn"], {})
            per_conn[row["severity"]] = per_conn.get(row["severity"], 0) + 1
        key = (row["conn"], row["rule"], row["severity"])
        finding = self.findings.get(key)
        if finding is None:
            self.findings[key] = [1, row["t"], row["frame"]]
        else:
            finding[0] += 1
            if row["t"] is not None and (finding[1] is None or row["t"] < finding[1]):
                finding[1], finding[2] = row["t"], row["frame"]
        kept = self.violations[row["severity"]]
        if len(kept) < self.max_violations:
            kept.append(row)

    def result(self, engine: Engine | Counters, captures: CaptureSet | Files | None = None) -> dict:
        damage = captures.damage if captures else []
        unknown = captures.unknown_records if captures else {}
        listed = [v for severity in SEVERITIES for v in self.violations[severity]][:self.max_violations]
        stats = engine.stats()
        messaging: dict = stats["messaging"]
        latency: dict[str | None, LogHistogram] = stats["latency"]
        notes = []
        if engine.drops:
            notes.append(f"capture is incomplete: the recorder lost {engine.dropped_records} record(s) "
                         f"({engine.drops} drop record(s))")
        if unknown:
            notes.append("ignored unknown record kinds: " + ", ".join(f"{k} ({n})" for k, n in sorted(unknown.items())))
        if engine.malformed_records:
            notes.append(f"ignored {engine.malformed_records} record(s) without a usable t, conn or dir")
        if engine.records_after_close:
            notes.append(f"ignored {engine.records_after_close} record(s) of connections already closed")
        damaged_lines = sum(d.lines for d in damage)
        if damaged_lines:
            notes.append(f"skipped {damaged_lines} damaged line(s)")
        conns = [dict(zip(_CONNECTION_FIELDS, values)) for values in self.connections]
        who = {c["conn"]: (c["prev_conn"], identity(c["sub"], c["token"]), c["client"], c["side"]) for c in conns}
        return {
            "verdict": build_verdict(self.findings, who, self.max_violations),
            "capture": {
                "files": [c.path for c in captures.files] if captures else [],
                "frames": engine.frames, "connections": len(self.connections), "refused": self.refused,
                "damaged_lines": damaged_lines, "damage": [str(d) for d in damage[:DAMAGE_LISTED]],
                "incomplete": bool(engine.drops), "dropped_records": engine.dropped_records,
                "unknown_records": unknown, "notes": notes,
            },
            "connections": [self._connection(c) for c in conns],
            "requests": stats["requests"],
            "latency": {NO_TYPE if type_ is None else type_: {
                "count": h.count, "p50_ms": _ms(h.percentile(50)), "p90_ms": _ms(h.percentile(90)),
                "p99_ms": _ms(h.percentile(99)), "max_ms": _ms(h.max)}
                for type_, h in sorted(latency.items(), key=lambda kv: (-kv[1].count, str(kv[0])))},
            "subscriptions": [dict(zip(_SUBSCRIPTION_FIELDS, values)) for values in self.subscriptions],
            "messaging": {k: _ms(v) if k.endswith("_ms") else v for k, v in messaging.items()},
            "reconnects": dict(self.reconnects),
            "violation_counts": self.violation_counts,
            "violations_total": self.violations_total,
            "violations_omitted": self.violations_total - len(listed),
            "violations": [{"rule": v["rule"], "severity": v["severity"], "conn": v["conn"], "t": v["t"],
                            "frame": v["frame"], "message": v["message"], "at_capture_end": v["at_capture_end"]}
                           for v in listed],
        }

    def _connection(self, row: dict) -> dict:
        gap = self.max_gap.get(row["conn"])
        return {
            "conn": row["conn"], "url": row["url"], "client": row["client"], "state": row["state"],
            "opened_at": row["opened_at"], "closed_at": row["closed_at"], "close_code": row["close_code"],
            "close_reason": row["close_reason"], "closed_by": row["closed_by"], "side": row["side"],
            "frames_c2s": row["frames_c2s"],
            "frames_s2c": row["frames_s2c"], "pings_c2s": row["pings_c2s"],
            "max_client_gap_s": None if gap is None else round(gap, 3),
            "chain": row["chain"], "prev_conn": row["prev_conn"],
            "violations": self.conn_violations.get(row["conn"], {}),
        }
