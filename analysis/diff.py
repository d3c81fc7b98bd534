"""Comparing two sessions (a recording and its replay): pure, record streams in, a report out.

Connections are paired by the `replay_of` field that `mwtap replay` puts on its `open` records
(every replayed connection, reconnects included, is grouped under the recorded connection it
replays); without it, connections are paired in the order they opened. Within a pair, requests
are aligned by order and type (difflib over the request types), and for each aligned pair the
response code, type and masked body are compared. Notifications are compared as counts per type
and stream, close codes per connection, latency as the median per request type, and the analysis
(`mwtap analyze`'s rules, default settings) as the count of findings per rule and connection: a
rule that fired a different number of times in the replay (not at all, or where the recording had
none) is a difference, so a replay that did not reproduce what the recording showed says so.

Masking (the documented default, extended with `ignore_fields`):
* volatile fields (timestamps and signatures: `VOLATILE_KEYS`, keys ending in `Ts`/`Timestamp`)
  become `<volatile>`;
* identifiers (values of `ID_KEYS` and any UUID-, JWT-, marker- or long-token-shaped string) become
  `<id#N>`, N numbered by first appearance within each connection, so a replay that got other ids in
  the same roles compares equal;
* sequence numbers (`SEQUENCE_KEYS`) become `<seq>`.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from analysis.capture import C2S, CLOSE, MSG, OPEN
from analysis.frame import is_conversation_notification, is_messaging_notification, messaging_changes, parse_payload
from analysis.ids import short_id
from analysis.redact import MARKER_RE, JWT_RE

VOLATILE_KEYS = frozenset({"currentTime", "serverTimestamp", "lastUpdateTime", "temp_url_sig", "temp_url_expires",
                           "iat", "exp", "jti"})
VOLATILE_SUFFIXES = ("Ts", "Timestamp")
ID_KEYS = frozenset({"conversationId", "convId", "dialogId", "subscriptionId", "originatorId", "id", "userId",
                     "relativePath", "sub"})
SEQUENCE_KEYS = frozenset({"sequence", "sequenceList", "fromSeq"})
DEFAULT_LATENCY_TOLERANCE_MS = 500.0

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN_RE = re.compile(r"(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{16,}")
MAX_PATHS_SHOWN = 5


def is_identifier(value: str) -> bool:
    """Whether a string looks like a server-assigned identifier (wherever it appears)."""
    return bool(_UUID_RE.fullmatch(value) or MARKER_RE.fullmatch(value) or JWT_RE.fullmatch(value)
                or _TOKEN_RE.fullmatch(value))


def is_volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith(VOLATILE_SUFFIXES)


class Masker:
    """Masks volatile values of decoded payloads. `numbered=False` gives every identifier the same
    mask (a shape, for matching frames); numbered masks keep which values were equal."""

    def __init__(self, ignore_fields: Iterable[str] = (), numbered: bool = True):
        self.ignore = [p for p in ignore_fields]
        self.numbered = numbered
        self.ids: dict[str, int] = {}

    def id_label(self, value: str) -> str:
        if not self.numbered:
            return "<id>"
        number = self.ids.setdefault(value, len(self.ids) + 1)
        return f"<id#{number}>"

    def mask(self, value: Any, path: tuple[str, ...] = (), key: str | None = None) -> Any:
        if key is not None and (is_volatile(key) or self._ignored(path)):
            return "<volatile>" if is_volatile(key) else "<ignored>"
        if isinstance(value, dict):
            return {k: self.mask(v, path + (k,), k) for k, v in value.items()}
        if isinstance(value, list):
            if key in SEQUENCE_KEYS:
                return ["<seq>" for _ in value]
            return [self.mask(v, path, None) for v in value]
        if key in SEQUENCE_KEYS and isinstance(value, int) and not isinstance(value, bool):
            return "<seq>"
        if isinstance(value, str) and ((key in ID_KEYS and value) or is_identifier(value)):
            return self.id_label(value)
        return value

    def _ignored(self, path: tuple[str, ...]) -> bool:
        joined = ".".join(path)
        return any(fnmatch.fnmatchcase(joined, p) or fnmatch.fnmatchcase(joined, "*." + p) for p in self.ignore)


def shape(payload: Any) -> str:
    """A payload with every volatile value masked the same way: equal for 'the same frame' of two runs."""
    import orjson
    return orjson.dumps(Masker(numbered=False).mask(payload), option=orjson.OPT_SORT_KEYS).decode()


# -- reading a session ---------------------------------------------------------------------------

@dataclass
class Exchange:
    type: str | None
    id: str | None
    t: float
    response: dict | None = None
    """{"type", "code", "body" (masked), "t"} of its response."""


@dataclass
class ConnGroup:
    """One recorded connection, or all replayed connections of one recorded connection."""
    key: str
    conns: list[str] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    notifications: Counter = field(default_factory=Counter)
    close_codes: list[int | None] = field(default_factory=list)
    findings: Counter = field(default_factory=Counter)
    """Analysis findings per rule."""


def read_session(records: Iterable[dict], ignore_fields: Iterable[str] = ()) -> list[ConnGroup]:
    """Groups of a capture, in the order they opened (record order). Identifiers are numbered per
    group, so connections that ran in parallel do not shift each other's numbers. The records are
    analysed on the way (the native core's engine); findings on a connection outside every group (a refused
    one) are not counted."""
    from analysis.live import LiveChecker

    findings: Counter = Counter()
    engine = LiveChecker(None, on_violation=lambda v: findings.update(((v.conn, v.rule),)))
    ignore = list(ignore_fields)
    groups: dict[str, ConnGroup] = {}
    maskers: dict[str, Masker] = {}
    group_of: dict[str, ConnGroup] = {}
    waiting: dict[str, dict[str, list[Exchange]]] = {}
    for rec in records:
        engine.feed(rec)
        conn = rec.get("conn")
        if not isinstance(conn, str):
            continue
        kind = rec.get("rec")
        if kind == OPEN:
            key = rec.get("replay_of") if isinstance(rec.get("replay_of"), str) else conn
            group = groups.setdefault(key, ConnGroup(key))
            maskers.setdefault(key, Masker(ignore))
            group.conns.append(conn)
            group_of[conn] = group
            waiting[conn] = {}
            continue
        group = group_of.get(conn)
        if group is None:
            continue
        if kind == CLOSE:
            group.close_codes.append(rec.get("code"))
        elif kind == MSG:
            _read_message(rec, group, waiting[conn], maskers[group.key])
    engine.finish()
    for (conn, rule), count in findings.items():
        if conn in group_of:
            group_of[conn].findings[rule] += count
    return list(groups.values())


def _read_message(rec: dict, group: ConnGroup, waiting: dict[str, list[Exchange]], masker: Masker) -> None:
    payload = parse_payload(rec)
    if not isinstance(payload, dict):
        return
    t = rec.get("t") or 0.0
    if rec.get("dir") == C2S:
        if rec.get("kind", "req") == "req" and isinstance(rec.get("type"), str):
            exchange = Exchange(rec.get("type"), rec.get("id"), t)
            group.exchanges.append(exchange)
            waiting.setdefault(rec.get("id"), []).append(exchange)
        return
    masked = masker.mask(payload)
    if rec.get("kind") == "resp":
        queue = waiting.get(rec.get("reqId"))
        if queue:
            exchange = queue.pop(0)
            exchange.response = {"type": rec.get("type"), "code": rec.get("code"), "body": masked.get("body"), "t": t}
    elif rec.get("kind") == "notification":
        group.notifications[(rec.get("type") or "?", _stream(rec.get("type"), masked))] += 1


def _stream(type_: str | None, masked: dict) -> str:
    body = masked.get("body") if isinstance(masked.get("body"), dict) else {}
    if is_conversation_notification(type_):
        return f"subscription {body.get('subscriptionId', '?')}"
    if is_messaging_notification(type_):
        changes = messaging_changes(type_, body)
        return f"dialog {changes[0].get('dialogId', '?') if changes else '?'}"
    return "-"


# -- comparing -----------------------------------------------------------------------------------

@dataclass
class Difference:
    kind: str
    """response-code, response-type, response-body, missing-response, extra-response, missing-request,
    extra-request, notifications, close-code, finding, latency, missing-connection, extra-connection"""
    conn: str
    message: str
    detail: dict = field(default_factory=dict)


@dataclass
class LatencyChange:
    type: str
    recorded_ms: float
    replayed_ms: float
    count: int

    @property
    def change_ms(self) -> float:
        return self.replayed_ms - self.recorded_ms


@dataclass
class DiffReport:
    pairs: list[tuple[str, list[str]]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    latency: list[LatencyChange] = field(default_factory=list)
    not_replayed: list[str] = field(default_factory=list)
    requests_compared: int = 0

    @property
    def differs(self) -> bool:
        return bool(self.differences)

    def to_json(self) -> dict:
        return {
            "differs": self.differs,
            "requests_compared": self.requests_compared,
            "connections": [{"recorded": rec, "replayed": rep} for rec, rep in self.pairs],
            "not_replayed": self.not_replayed,
            "differences": [asdict(d) for d in self.differences],
            "latency": [{**asdict(l), "change_ms": round(l.change_ms, 1)} for l in self.latency],
        }


def diff_sessions(recorded: Iterable[dict], replayed: Iterable[dict], ignore_fields: Iterable[str] = (),
                  latency_tolerance_ms: float = DEFAULT_LATENCY_TOLERANCE_MS) -> DiffReport:
    ignore = list(ignore_fields)
    rec_groups = read_session(recorded, ignore)
    rep_groups = read_session(replayed, ignore)
    report = DiffReport()
    latencies: dict[str, tuple[list[float], list[float]]] = {}
    for rec, rep in _pair_groups(rec_groups, rep_groups, report):
        report.pairs.append((rec.key, rep.conns))
        _compare_group(rec, rep, report, latencies)
    for type_, (before, after) in sorted(latencies.items()):
        change = LatencyChange(type_, statistics.median(before), statistics.median(after), len(before))
        report.latency.append(change)
        if abs(change.change_ms) > latency_tolerance_ms:
            report.differences.append(Difference(
                "latency", "*", f"{type_}: median latency {change.recorded_ms:.0f} ms -> {change.replayed_ms:.0f} ms "
                                f"({change.change_ms:+.0f} ms, tolerance {latency_tolerance_ms:g} ms)",
                {"type": type_, "recorded_ms": change.recorded_ms, "replayed_ms": change.replayed_ms}))
    return report


def _pair_groups(rec_groups: list[ConnGroup], rep_groups: list[ConnGroup], report: DiffReport):
    by_key = {g.key: g for g in rec_groups}
    if rep_groups and all(g.key in by_key for g in rep_groups):
        replayed = {g.key for g in rep_groups}
        report.not_replayed = [g.key for g in rec_groups if g.key not in replayed]
        return [(by_key[g.key], g) for g in rep_groups]
    for extra in rec_groups[len(rep_groups):]:
        report.differences.append(Difference("missing-connection", extra.key, "connection not in the replay"))
    for extra in rep_groups[len(rec_groups):]:
        report.differences.append(Difference("extra-connection", extra.key, "connection only in the replay"))
    return list(zip(rec_groups, rep_groups))


def _compare_group(rec: ConnGroup, rep: ConnGroup, report: DiffReport, latencies: dict) -> None:
    conn = rec.key
    matcher = difflib.SequenceMatcher(None, [e.type for e in rec.exchanges], [e.type for e in rep.exchanges],
                                      autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for offset, (a, b) in enumerate(zip(rec.exchanges[i1:i2], rep.exchanges[j1:j2])):
                report.requests_compared += 1
                _compare_exchange(conn, i1 + offset, a, b, report, latencies)
            continue
        for index in range(i1, i2):
            report.differences.append(Difference("missing-request", conn,
                                                 f"request #{index + 1} {rec.exchanges[index].type} not in the replay"))
        for index in range(j1, j2):
            report.differences.append(Difference("extra-request", conn,
                                                 f"request {rep.exchanges[index].type} only in the replay"))
    for key in sorted(set(rec.notifications) | set(rep.notifications)):
        before, after = rec.notifications.get(key, 0), rep.notifications.get(key, 0)
        if before != after:
            type_, stream = key
            what = "missing" if after < before else "extra"
            report.differences.append(Difference(
                "notifications", conn, f"{type_} on {stream}: {before} recorded, {after} replayed "
                                       f"({abs(after - before)} {what})",
                {"type": type_, "stream": stream, "recorded": before, "replayed": after}))
    for rule in sorted(set(rec.findings) | set(rep.findings)):
        before, after = rec.findings.get(rule, 0), rep.findings.get(rule, 0)
        if before != after:
            report.differences.append(Difference(
                "finding", conn, f"analysis: {rule} {before} recorded, {after} replayed",
                {"rule": rule, "recorded": before, "replayed": after}))
    rec_close = rec.close_codes[-1] if rec.close_codes else None
    rep_close = rep.close_codes[-1] if rep.close_codes else None
    if rec_close != rep_close:
        report.differences.append(Difference("close-code", conn, f"closed with {rec_close} recorded, "
                                                                 f"{rep_close} replayed",
                                             {"recorded": rec_close, "replayed": rep_close}))


def _compare_exchange(conn: str, index: int, a: Exchange, b: Exchange, report: DiffReport, latencies: dict) -> None:
    where = f"request #{index + 1} {a.type} (id {a.id})"
    ra, rb = a.response, b.response
    if ra is None or rb is None:
        if ra is not rb:
            kind = "missing-response" if rb is None else "extra-response"
            text = "no response in the replay" if rb is None else "answered in the replay only"
            report.differences.append(Difference(kind, conn, f"{where}: {text}", {"index": index}))
        return
    before, after = latencies.setdefault(a.type or "?", ([], []))
    before.append((ra["t"] - a.t) * 1000)
    after.append((rb["t"] - b.t) * 1000)
    if ra["code"] != rb["code"]:
        report.differences.append(Difference("response-code", conn, f"{where}: code {ra['code']} -> {rb['code']}",
                                             {"index": index, "recorded": ra["code"], "replayed": rb["code"]}))
    if ra["type"] != rb["type"]:
        report.differences.append(Difference("response-type", conn, f"{where}: type {ra['type']} -> {rb['type']}",
                                             {"index": index, "recorded": ra["type"], "replayed": rb["type"]}))
    paths = differing_paths(ra["body"], rb["body"])
    if paths:
        shown = ", ".join(paths[:MAX_PATHS_SHOWN]) + (" …" if len(paths) > MAX_PATHS_SHOWN else "")
        report.differences.append(Difference("response-body", conn, f"{where}: body differs at {shown}",
                                             {"index": index, "paths": paths}))


def differing_paths(a: Any, b: Any, path: str = "body") -> list[str]:
    """Paths (`body.x[0].y`) where two decoded values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{path}.{key}")
            else:
                out.extend(differing_paths(a[key], b[key], f"{path}.{key}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in differing_paths(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def render_text(report: DiffReport) -> str:
    lines = []
    for recorded, replayed in report.pairs:
        lines.append(f"connection {short_id(recorded)} <-> {', '.join(map(short_id, replayed))}")
    for key in report.not_replayed:
        lines.append(f"connection {short_id(key)}: not replayed (skipped)")
    lines.append(f"{report.requests_compared} request(s) compared")
    if report.latency:
        lines.append(f"latency (median ms) {'':14} recorded  replayed    change  n")
        for l in report.latency:
            lines.append(f"  {l.type:<32} {l.recorded_ms:9.1f} {l.replayed_ms:9.1f} {l.change_ms:+9.1f}  {l.count}")
    if report.differences:
        lines.append(f"{len(report.differences)} difference(s):")
        lines.extend(f"  [{d.kind}] {short_id(d.conn)}: {d.message}" for d in report.differences)
    else:
        lines.append("no differences")
    return "\n".join(lines) + "\n"
