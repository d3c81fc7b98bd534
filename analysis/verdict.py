"""The verdict that opens every output: who breaks which rule, how often and since when, worst
first. Findings are grouped by consumer (the JWT `sub` fingerprint of the first connection of its
reconnect chain, else its token fingerprint, else its client host: the rule `mwtap view` groups by)
and by rule, and ranked by severity, then count. Pure: built from the summary's aggregates."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Hashable, Mapping

from analysis.explain import DOES, EXPLANATIONS
from analysis.ids import short_id
from analysis.rules import SEVERITY_RANK

CAPTURE = "(capture)"  # violations of no connection (the capture as a whole)
SHOWN = 10  # verdict lines printed before "... and N more"


def identity(sub, token) -> str | None:
    """A connection's own identity: its JWT `sub` fingerprint, else its token fingerprint."""
    return f"sub:{sub}" if sub else (f"token:{token}" if token else None)


def consumer_keys(conns: Mapping[Hashable, tuple]) -> dict:
    """Who each connection is: `conns` maps a connection to (its predecessor in a reconnect chain or
    None, its identity or None, its client "host:port", optionally its side); a connection takes the
    key of the first connection of its chain (a reconnect with a fresh token is the same consumer)."""
    keys: dict = {}
    for start in conns:
        chain, node = [], start
        while node in conns and node not in keys and node not in chain:
            chain.append(node)
            node = conns[node][0]
        if node in keys:
            key = keys[node]
        else:  # the chain's first connection (or the start of a loop in a damaged capture)
            ident, client = conns[chain[-1]][1:3]
            key = ident or "host:" + ((client or "").rpartition(":")[0] or client or "unknown")
        for c in chain:
            keys[c] = key
    return keys


def build_verdict(findings: Mapping[tuple, list], conns: Mapping[Hashable, tuple], listed: int) -> dict:
    """`findings` maps (conn, rule, severity) to [count, first t, its frame]; `conns` as
    `consumer_keys` takes it. The groups (consumer, rule), worst first, at most `listed` of them. A
    group says its worst severity and counts the findings at it (`count`, `connections`, `since`,
    `conn`, `frame`); those at lower severities are only counted, in `lower` (severity: count): a
    consumer with 9 warnings and 1 info of a rule is told as 9 times, and one more as info."""
    keys = consumer_keys(conns)
    groups: dict[tuple, dict] = {}
    for (conn, rule, severity), (count, t, frame) in findings.items():
        consumer = CAPTURE if conn is None else keys.get(conn) or f"conn:{conn}"
        g = groups.get((consumer, rule))
        if g is None:
            side = conns[conn][3] if conn in conns and len(conns[conn]) > 3 else None
            g = groups[(consumer, rule)] = {"consumer": consumer, "side": side, "rule": rule, "at": {}}
        at = g["at"].get(severity)
        if at is None:
            at = g["at"][severity] = {"count": 0, "connections": 0, "since": t, "conn": conn, "frame": frame}
        at["count"] += count
        at["connections"] += conn is not None
        if t is not None and (at["since"] is None or t < at["since"]):
            at["since"], at["conn"], at["frame"] = t, conn, frame
    for g in groups.values():
        severities = sorted(g.pop("at").items(), key=lambda item: SEVERITY_RANK[item[0]])
        (worst, at), below = severities[0], severities[1:]
        g.update(severity=worst, **at, lower={severity: at["count"] for severity, at in below})
    ranked = sorted(groups.values(), key=lambda g: (SEVERITY_RANK[g["severity"]], -g["count"], g["consumer"],
                                                    g["rule"]))
    for g in ranked[:listed]:
        g["does"] = DOES.get(g["rule"], f"breaks {g['rule']}")
        g["explanation"] = EXPLANATIONS.get(g["rule"])
    return {"clean": not ranked, "findings": ranked[:listed], "omitted": max(0, len(ranked) - listed)}


def lower(g: dict) -> str:
    """' (and 1 more as info)' for a group's findings below its severity, '' when there are none."""
    more = ", ".join(f"{count} more as {severity}" for severity, count in g["lower"].items())
    return f" (and {more})" if more else ""


def who(consumer: str, connections: int, side: str | None = None) -> str:
    """'consumer sub:5b1d7a2c… (2 connections)', 'agent token:…' for a bot's or agent's connections
    (`side`); 'the capture' for violations of no connection."""
    if consumer == CAPTURE:
        return "the capture"
    kind, _, value = consumer.partition(":")
    plural = "" if connections == 1 else "s"
    return f"{side or 'consumer'} {kind}:{short_id(value)} ({connections} connection{plural})"


def finding_line(g: dict, full_ids: bool = False) -> str:
    """One finding as a sentence: what is wrong, who does it, how often, since when, where to look."""
    where = "" if g["conn"] is None else f"; open conn {short_id(g['conn'], full_ids)}"
    where += "" if g["conn"] is None or g["frame"] is None else f" frame {g['frame']}"
    times = "once" if g["count"] == 1 else f"{g['count']} times"
    return (f"{g['severity']}: {who(g['consumer'], g['connections'], g.get('side'))} {g['does']}: {times} "
            f"since {clock(g['since'])}{lower(g)} [{g['rule']}]{where}")


def verdict_lines(verdict: dict, full_ids: bool = False, shown: int = SHOWN) -> list[str]:
    """The verdict as a few lines of text: one line for a clean capture."""
    if verdict["clean"]:
        return ["Verdict: no violations found."]
    findings = verdict["findings"]
    total = len(findings) + verdict["omitted"]
    out = [f"Verdict: {total} finding{'' if total == 1 else 's'} (by consumer and rule, worst first)"]
    out += ["  " + finding_line(g, full_ids) for g in findings[:shown]]
    if total > shown:
        out.append(f"  ... and {total - shown} more")
    return out


class Verdict:
    """The verdict of a loaded capture (`cap.verdict()`): prints as its lines; `findings` is the list
    of groups (the `verdict` key of `mwtap analyze --format json`)."""

    def __init__(self, verdict: dict):
        self.clean, self.findings, self.omitted = verdict["clean"], verdict["findings"], verdict["omitted"]
        self._verdict = verdict

    def lines(self, full_ids: bool = False, shown: int = SHOWN) -> list[str]:
        return verdict_lines(self._verdict, full_ids, shown)

    def __repr__(self) -> str:
        return "\n".join(self.lines())


def clock(t) -> str:
    """A finding's time to the second, UTC (any float a capture holds: no pandas Timestamp range)."""
    if not isinstance(t, (int, float)):
        return "-"
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # a damaged capture's time
        return str(t)
