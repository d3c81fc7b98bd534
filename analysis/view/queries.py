"""What the view's page asks of an index: connections grouped by consumer, a range of a connection's
(filtered) frames, one frame in full with its links, violations grouped as in the verdict, timeline
buckets. Answers are plain dicts (JSON); frames are read from disk by offset."""

from __future__ import annotations

import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np
import orjson

from analysis.capture import record_of
from analysis.explain import EXPLANATIONS
from analysis.rules import SEVERITIES, SEVERITY_RANK
from analysis.verdict import consumer_keys
from analysis.view.index import DIR_CODE, DIRS, KIND_CODE, KINDS, SEVERITY_LEVEL, Connection, ViewIndex

PREVIEW_CHARS = 160
ROWS_MAX = 500  # rows per request: the page asks for what is on screen
CONSUMERS_SHOWN = 300  # groups listed on the page (worst first); the rest are counted
CONNECTIONS_SHOWN = 200  # connections listed per group
SEARCH_CHUNK = 8 << 20  # bytes read at a time by the text filter
PAYLOAD_SHOWN = 1 << 20  # characters of a payload sent to the page
LINK_SCAN = 20_000  # frames looked at when finding a message's ACCEPT / READ (or back)
ITEMS_PER_RULE = 200
_ACK_TYPES = ("AcceptStatusEvent",)
_CONTENT_TYPES = ("ContentEvent", "RichContentEvent")


@dataclass(frozen=True)
class Filter:
    """A frame filter as the page's URL carries it; empty fields do not filter."""
    type: str = ""
    kind: str = ""
    dir: str = ""
    rule: str = ""
    text: str = ""
    t0: float | None = None
    t1: float | None = None
    stream: int | None = None

    @classmethod
    def of(cls, query) -> "Filter":
        def number(name, kind=float):
            value = query.get(name)
            try:
                return kind(value) if value not in (None, "") else None
            except ValueError:
                raise ValueError(f"{name}: not a number: {value!r}") from None
        return cls(query.get("type", ""), query.get("kind", ""), query.get("dir", ""), query.get("rule", ""),
                   query.get("text", ""), number("t0"), number("t1"), number("stream", int))


class Queries:
    def __init__(self, index: ViewIndex, paths: list[str], names: list[str]):
        self.index = index
        self.paths = paths
        self.names = names
        self._fds = [os.open(p, os.O_RDONLY) for p in paths]
        self._filtered: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cached_at = -1  # records indexed when the cache was made (following: a new record clears it)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    # --- reading ------------------------------------------------------------------------------
    def record(self, g: int) -> dict:
        cols = self.index.columns
        return record_of(os.pread(self._fds[cols.file[g]], cols.length[g], cols.offset[g]))

    # --- summary and connections --------------------------------------------------------------
    def summary(self) -> dict:
        index = self.index
        counts = dict.fromkeys(SEVERITIES, 0)
        for c in index.connections:
            for sev, n in c.counts.items():
                counts[sev] += n
        return {"files": self.names, "records": len(index.columns), "connections": len(index.connections),
                "violations": counts, "violations_total": index.violation_total,
                "violations_listed": len(index.violations), "last_t": index.last_t}

    def connection(self, c: Connection) -> dict:
        row, closed = c.row or {}, c.closed or {}
        t_close = closed.get("t")
        state = "refused" if c.refused else ("closed" if c.closed else "open")
        return {"number": c.number, "conn": c.conn, "url": c.url, "client": c.client, "t_open": c.t_open,
                "t_close": t_close, "duration_s": None if t_close is None else t_close - c.t_open, "state": state,
                "close_code": closed.get("code"), "close_reason": closed.get("reason"), "closed_by": closed.get("by"),
                "refused_status": (c.refused or {}).get("status"), "frames": len(c.msgs), "records": len(c.rows),
                "violations": c.counts, "prev": c.prev, "next": c.next, "linked_by": c.linked_by,
                "identity": c.identity, "auth": row.get("auth")}

    def consumers(self) -> dict:
        """Connections grouped by consumer (see `consumer`), each group's reconnect chains in
        order; the groups with the most errors (then warnings, info) first. The first
        CONSUMERS_SHOWN groups and CONNECTIONS_SHOWN connections of each are listed, the rest counted."""
        groups: dict[str, list[Connection]] = {}
        keys = self.consumer_keys()
        for c in self.index.connections:
            groups.setdefault(keys[c.number], []).append(c)
        ranked = sorted(groups.items(), key=lambda kv: (*(-sum(c.counts[s] for c in kv[1]) for s in SEVERITIES),
                                                        -len(kv[1])))
        out = []
        for key, conns in ranked[:CONSUMERS_SHOWN]:
            chains, shown = [], 0
            for c in conns:
                if c.prev is None or keys[c.prev] != key:
                    chain, link = [], c
                    while link is not None and shown < CONNECTIONS_SHOWN:
                        chain.append(self.connection(link))
                        shown += 1
                        link = None if link.next is None else self.index.connections[link.next]
                    if chain:
                        chains.append(chain)
            out.append({"consumer": key, "violations": {s: sum(c.counts[s] for c in conns) for s in SEVERITIES},
                        "connections": len(conns), "more": len(conns) - shown, "chains": chains})
        return {"consumers": out, "more": max(0, len(ranked) - CONSUMERS_SHOWN)}

    def consumer_keys(self) -> list[str]:
        """Who each connection is (by number): the JWT `sub` of the first connection of its
        reconnect chain, else its token, else its client host (a reconnect with a fresh token is the
        same consumer). A connection's predecessor always comes first in the numbering."""
        connections = self.index.connections
        keys = consumer_keys({c.number: (c.prev if c.prev is not None and c.prev < c.number else None, c.identity,
                                         c.client) for c in connections})
        return [keys[c.number] for c in connections]

    # --- frames ---------------------------------------------------------------------------------
    def frames(self, number: int, start: int, count: int, flt: Filter) -> dict:
        c = self.index.connections[number]
        selected = self.selection(number, flt)
        total = len(c.rows) if selected is None else len(selected)
        start = max(0, min(start, total))
        end = min(total, start + max(0, min(count, ROWS_MAX)))
        gs = c.rows[start:end] if selected is None else selected[start:end].tolist()
        return {"total": total, "start": start, "rows": [self.row(g) for g in gs]}

    def position(self, number: int, g: int, flt: Filter) -> int | None:
        """Where frame `g` is in the connection's (filtered) list."""
        selected = self.selection(number, flt)
        rows = np.frombuffer(self.index.connections[number].rows, np.int64) if selected is None else selected
        at = int(np.searchsorted(rows, g))
        return at if at < len(rows) and rows[at] == g else None

    def row(self, g: int) -> dict:
        cols, index = self.index.columns, self.index
        rec = self.record(g)
        kind = KINDS[cols.kind[g]]
        peer = cols.peer[g]
        out = {"g": g, "t": cols.t[g], "n": cols.n[g] if kind not in ("open", "close", "ping", "pong") else None,
               "dir": DIRS[cols.dir[g]], "kind": kind, "type": index.types[cols.type[g]] or None,
               "id": rec.get("id"), "reqId": rec.get("reqId"), "code": rec.get("code"), "size": cols.size[g],
               "severity": _severity_name(cols.severity[g]), "peer": None if peer < 0 else peer,
               "latency_ms": None if peer < 0 else abs(cols.t[peer] - cols.t[g]) * 1000,
               "stream": None if cols.stream[g] < 0 else cols.stream[g]}
        out["preview"] = _preview(rec)
        return out

    def selection(self, number: int, flt: Filter) -> np.ndarray | None:
        """The g of the connection's records the filter keeps (None: no filter), cached."""
        if flt == Filter():
            return None
        if self._cached_at != len(self.index.columns):
            self._filtered.clear()
            self._cached_at = len(self.index.columns)
        key = (number, flt)
        if key in self._filtered:
            self._filtered.move_to_end(key)
            return self._filtered[key]
        selected = self._select(number, flt)
        self._filtered[key] = selected
        if len(self._filtered) > 16:
            self._filtered.popitem(last=False)
        return selected

    def _select(self, number: int, flt: Filter) -> np.ndarray:
        cols, index = self.index.columns, self.index
        rows = np.frombuffer(index.connections[number].rows, np.int64).copy()
        keep = np.ones(len(rows), bool)
        if flt.kind:
            kinds = [KIND_CODE[k] for k in flt.kind.split(",") if k in KIND_CODE]
            keep &= np.isin(cols.view("kind")[rows], kinds)
        if flt.dir in DIR_CODE:
            keep &= cols.view("dir")[rows] == DIR_CODE[flt.dir]
        if flt.type:
            wanted = [code for code, name in enumerate(index.types) if name and flt.type.lower() in name.lower()]
            keep &= np.isin(cols.view("type")[rows], wanted)
        if flt.t0 is not None:
            keep &= cols.view("t")[rows] >= flt.t0
        if flt.t1 is not None:
            keep &= cols.view("t")[rows] <= flt.t1
        if flt.stream is not None:
            keep &= cols.view("stream")[rows] == flt.stream
        if flt.rule:
            flagged = np.array(sorted({v[4] for v in index.violations if v[0] == flt.rule and v[4] is not None}),
                               np.int64)
            keep &= np.isin(rows, flagged)
        rows = rows[keep]
        if flt.text and len(rows):
            rows = rows[self._text_matches(rows, flt.text)]
        return rows

    def _text_matches(self, rows: np.ndarray, text: str) -> np.ndarray:
        """Which of `rows` (g, ascending) contain `text` (case-insensitive) in their line: a regex
        search over the file bytes they span, read SEARCH_CHUNK at a time (memory stays flat),
        each hit mapped to its record by offset."""
        cols = self.index.columns
        pattern = re.compile(re.escape(text.encode()), re.IGNORECASE)
        files, offsets, lengths = cols.view("file")[rows], cols.view("offset")[rows], cols.view("length")[rows]
        hit = np.zeros(len(rows), bool)
        for file in np.unique(files):
            mine = np.nonzero(files == file)[0]
            starts = offsets[mine]
            order = np.argsort(starts, kind="stable")
            mine, starts = mine[order], starts[order]
            ends = starts + lengths[mine]
            i = 0
            while i < len(starts):  # records i..j-1 start within one chunk
                base = int(starts[i])
                j = max(i + 1, int(np.searchsorted(starts, base + SEARCH_CHUNK, "left")))
                chunk = os.pread(self._fds[file], int(ends[j - 1]) - base, base)
                pos = 0
                while (m := pattern.search(chunk, pos)) is not None:
                    at = int(np.searchsorted(starts, base + m.start(), "right")) - 1
                    if base + m.end() <= ends[at]:
                        hit[mine[at]] = True  # one hit per record is enough
                    if at + 1 >= j:
                        break
                    pos = int(starts[at + 1]) - base  # other connections' lines in between are skipped
                i = j
        return hit

    # --- one frame -----------------------------------------------------------------------------
    def frame(self, g: int) -> dict:
        index, cols = self.index, self.index.columns
        rec = self.record(g)
        out = self.row(g)
        c = index.connections[cols.conn[g]]
        out["connection"] = c.number
        out["record"] = {k: v for k, v in rec.items() if k not in ("text", "b64")}
        out["payload"] = _pretty(rec)
        out["file"] = f"{self.names[cols.file[g]]} @ byte {cols.offset[g]}"
        out["violations"] = [_violation(index, v) for v in index.violations if v[4] == g]
        stream = cols.stream[g]
        if stream >= 0:
            owner, key, value = index.streams[stream]
            out["stream_info"] = {"number": stream, "key": key, "id": value, "frames": index.stream_sizes[stream]}
        links = {}
        if KINDS[cols.kind[g]] == "close" and c.next is not None:
            links["reconnect"] = {"connection": c.next, "linked_by": index.connections[c.next].linked_by}
        if c.prev is not None and KINDS[cols.kind[g]] == "open":
            links["reconnect_of"] = {"connection": c.prev}
        links.update(self._acks(c, g, rec))
        out["links"] = links
        return out

    def _acks(self, c: Connection, g: int, rec: dict) -> dict:
        """A content message's ACCEPT and READ publishes, or an ACCEPT/READ's messages."""
        events = rec.get("events")
        if isinstance(events, list):
            wanted = {(e[0], e[2]) for e in events if isinstance(e, list) and len(e) > 3
                      and e[3] in _CONTENT_TYPES and isinstance(e[2], int)}
            if not wanted:
                return {}
            found = {}
            for other in self._near(c, g, forward=True):
                if DIRS[self.index.columns.dir[other]] != "c2s":
                    continue
                publish = self.record(other)
                ev = publish.get("event")
                if isinstance(ev, list) and len(ev) == 3 and ev[0] in _ACK_TYPES and isinstance(ev[2], list):
                    dialog = publish.get("dialogId")
                    if any((dialog, s) in wanted for s in ev[2]) and str(ev[1]).lower() not in found:
                        found[str(ev[1]).lower()] = other
                if len(found) == 2:
                    break
            return found
        event = rec.get("event")
        if isinstance(event, list) and len(event) == 3 and event[0] in _ACK_TYPES and isinstance(event[2], list):
            wanted = {(rec.get("dialogId"), s) for s in event[2]}
            for other in self._near(c, g, forward=False):
                evs = self.record(other).get("events") if KINDS[self.index.columns.kind[other]] == "notification" else None
                if isinstance(evs, list) and any(isinstance(e, list) and len(e) > 2 and (e[0], e[2]) in wanted
                                                 for e in evs):
                    return {"message": other}
        return {}

    def _near(self, c: Connection, g: int, forward: bool):
        rows = np.frombuffer(c.rows, np.int64)
        at = int(np.searchsorted(rows, g))
        picked = rows[at + 1:at + 1 + LINK_SCAN] if forward else rows[max(0, at - LINK_SCAN):at][::-1]
        return picked.tolist()

    # --- violations and timeline -----------------------------------------------------------------
    def violations(self, number: int | None = None) -> list[dict]:
        """Grouped as in the verdict: by consumer, then by rule; worst first."""
        index = self.index
        groups: dict[str, dict[str, list]] = {}
        keys = self.consumer_keys()
        for v in index.violations:
            if number is not None and v[2] != number:
                continue
            consumer = keys[v[2]] if v[2] is not None else "(capture)"
            groups.setdefault(consumer, {}).setdefault(v[0], []).append(v)
        out = []
        for consumer, rules in groups.items():
            listed = []
            for rule, items in rules.items():
                # as the verdict counts: the findings at the worst severity, the lower ones apart
                by_severity = sorted(Counter(v[1] for v in items).items(), key=lambda s: SEVERITY_RANK[s[0]])
                (worst, count), lower = by_severity[0], by_severity[1:]
                listed.append({"rule": rule, "severity": worst, "count": count, "lower": dict(lower),
                               "connections": len({v[2] for v in items if v[1] == worst}),
                               "explanation": EXPLANATIONS.get(rule),
                               "items": [_violation(index, v) for v in items[:ITEMS_PER_RULE]]})
            listed.sort(key=lambda r: (SEVERITY_RANK[r["severity"]], -r["count"]))
            out.append({"consumer": consumer, "rules": listed})
        out.sort(key=lambda grp: min((SEVERITY_RANK[r["severity"]], -r["count"]) for r in grp["rules"]))
        return out

    def timeline(self, number: int, t0: float | None, t1: float | None, buckets: int) -> dict:
        index, cols = self.index, self.index.columns
        c = index.connections[number]
        rows = np.frombuffer(c.rows, np.int64)
        times = cols.view("t")[rows]
        lo = float(times.min()) if t0 is None and len(times) else (t0 or c.t_open)
        hi = float(times.max()) if t1 is None and len(times) else (t1 if t1 is not None else lo + 1)
        hi = max(hi, lo + 1e-3)
        buckets = max(1, min(buckets, 2000))
        kinds, dirs = cols.view("kind")[rows], cols.view("dir")[rows]
        edges = np.linspace(lo, hi, buckets + 1)
        series = {}
        for name, mask in (("c2s", (dirs == 0) & (kinds >= KIND_CODE["req"])),
                           ("s2c", (dirs == 1) & (kinds >= KIND_CODE["req"])),
                           ("pings", (kinds == KIND_CODE["ping"]) | (kinds == KIND_CODE["pong"]))):
            series[name] = np.histogram(times[mask], edges)[0].tolist()
        mine = [v for v in index.violations if v[2] == number]
        marks = [_violation(index, v) for v in mine if lo <= v[3] <= hi][:2000]
        silences = [s for s in self.silences(c, mine) if s["end"] >= lo and s["start"] <= hi]
        return {"t0": lo, "t1": hi, "buckets": buckets, "series": series, "violations": marks,
                "silences": silences, "open": c.t_open, "close": (c.closed or {}).get("t")}

    def silences(self, c: Connection, violations: list[tuple]) -> list[dict]:
        """The client silences over the keep-alive limit: each keepalive-gap violation, from the
        client's activity before it (a message, ping or pong it sent; or the open) to its time."""
        cols = self.index.columns
        rows = np.frombuffer(c.rows, np.int64)
        client = cols.view("t")[rows[cols.view("dir")[rows] == DIR_CODE["c2s"]]]
        out = []
        for v in violations:
            if v[0] == "keepalive-gap":
                before = int(np.searchsorted(client, v[3], "left")) - 1
                start = float(client[before]) if before >= 0 else c.t_open
                out.append({"start": start, "end": v[3], "seconds": v[3] - start})
        return out




def _severity_name(level: int) -> str | None:
    for name, value in SEVERITY_LEVEL.items():
        if value == level:
            return name
    return None


def _violation(index: ViewIndex, v: tuple) -> dict:
    rule, severity, number, t, g, message, at_end = v
    return {"rule": rule, "severity": severity, "connection": number, "t": t, "g": g, "message": message,
            "at_capture_end": at_end}


def _preview(rec: dict) -> str:
    if "text" in rec:
        return rec["text"][:PREVIEW_CHARS]
    if "b64" in rec:
        return f"(binary, {rec.get('size', '?')} bytes)"
    kind = rec.get("rec")
    if kind == "close":
        return f"close {rec.get('code')} by {rec.get('by')}" + (f": {rec['reason']}" if rec.get("reason") else "")
    if kind in ("ping", "pong"):
        return f"{kind} {rec.get('payload') or ''}"
    if kind == "open":
        return f"open {rec.get('url')}"
    if kind == "refused":
        return f"refused {rec.get('status')} {rec.get('error') or ''}"
    return ""


def _pretty(rec: dict) -> str | None:
    """The payload as indented JSON, or as it is when it is not JSON (its first PAYLOAD_SHOWN
    characters: a 64 MB frame would stall the page)."""
    if len(rec.get("text") or rec.get("b64") or "") > PAYLOAD_SHOWN:
        payload = rec.get("text") or "(base64) " + rec["b64"]
        return payload[:PAYLOAD_SHOWN] + f"\n… (first {PAYLOAD_SHOWN:,} of {len(payload):,} characters)"
    if "text" in rec:
        try:
            return orjson.dumps(orjson.loads(rec["text"]), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            return rec["text"]
    if "b64" in rec:
        return "(base64) " + rec["b64"]
    return None

