"""What the report says about a loaded capture (`analysis.load`): sections of tables and plots."""

from __future__ import annotations

from typing import Callable

import pandas as pd

from analysis import plots
from analysis.explain import EXPLANATIONS
from analysis.histogram import PERCENTILE_METHOD
from analysis.ids import short_ids_in
from analysis.report.stream import LISTED_REQUESTS, TIMELINE_FRAMES, UNANSWERED, StreamedCapture
from analysis.report.model import (Anchor, Code, Conn, Details, Heading, Link, Plot, Report, Section, Table,
                                   anchor_id)
from analysis.rules import SEVERITIES, SEVERITY_RANK
from analysis.verdict import clock, lower, verdict_lines, who

LISTED = 50  # rows of a table before "first N of M"
PER_RULE = 50  # violations listed per rule
SLOWEST = LISTED_REQUESTS  # a streamed capture keeps this many requests whole
TIMELINES = 4
FRAME_TARGETS = 300  # frames linked from violations and the slowest requests (each shown with its context)
CONTEXT = 2  # frames shown before and after each linked frame
PAYLOAD_CHARS = 2000

STAGES = ("verdict", "summary", "violations", "latency", "slowest requests", "connections", "reconnects", "keep-alive",
          "streams", "frames")


def build_report(cap, *, progress: Callable[[str], None] | None = None, full_ids: bool = False) -> Report:
    """The report of a Capture; `progress(stage)` is called before each of `STAGES`; `full_ids`:
    connection ids in full (else short, the full id in the HTML cell's tooltip)."""
    return _Builder(cap, progress or (lambda stage: None), full_ids).build()


def fmt_time(value) -> str:
    return "-" if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _value(value):
    """A table value as a plain Python value (None for missing)."""
    if value is None or value is pd.NA or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return fmt_time(value)
    return value.item() if hasattr(value, "item") else value


def _listed(total: int, shown: int) -> str:
    return f"first {shown} of {total}" if shown < total else ""


def _payload(text, chars: int | None = None) -> Code | None:
    """A payload as the report shows it; `chars`: its length when `text` is its beginning only."""
    if text is None or text is pd.NA:
        return None
    text = str(text)
    chars = chars or len(text)
    return Code(text if chars <= PAYLOAD_CHARS else text[:PAYLOAD_CHARS] + f"… ({chars} chars)")


class _Builder:
    def __init__(self, cap, progress: Callable[[str], None], full_ids: bool):
        self.cap, self.limit_s, self.progress, self.full_ids = cap, cap.config.keepalive_limit_s, progress, full_ids
        # Connection ids are untrusted strings: anchors use their position instead.
        self.conn_index = {conn: i for i, conn in enumerate(cap.connections.conn.dropna().unique())}
        self.targets: list[tuple[str, int]] = []  # frames linked from anywhere, in link order

    def build(self) -> Report:
        sections = []
        for stage, method in zip(STAGES, (self.verdict, self.summary, self.violations, self.latency, self.slowest,
                                          self.connections, self.reconnects, self.keepalive, self.streams,
                                          self.frames)):
            self.progress(stage)
            sections.append(method())
        return Report("mwtap capture report", sections)

    def frame_link(self, conn, frame) -> Link | str | None:
        if conn is None or conn is pd.NA or frame is None or frame is pd.NA or conn not in self.conn_index:
            return None if frame is None or frame is pd.NA else int(frame)
        if len(self.targets) < FRAME_TARGETS:
            self.targets.append((conn, int(frame)))
        elif (conn, int(frame)) not in self.targets:
            return str(int(frame))
        return Link(f"#{int(frame)}", self.frame_anchor(conn, frame))

    def frame_anchor(self, conn, frame) -> str:
        return anchor_id("f", self.conn_index[conn], int(frame))

    def conn(self, conn) -> Conn | None:
        conn = _value(conn)
        return None if conn is None else Conn(str(conn), self.full_ids)

    def verdict(self) -> Section:
        """What is wrong, who does it, how often, since when: one row per consumer and rule, worst
        first, each rule opening its explanation and each row linking its first frame."""
        verdict = self.cap.summary()["verdict"]
        head = verdict_lines(verdict, self.full_ids)[0]
        if verdict["clean"]:
            return Section("verdict", "Verdict", [head])
        rows = [[g["severity"], who(g["consumer"], g["connections"], g.get("side")),
                 Details(f"{g['does']} [{g['rule']}]", g["explanation"] or ""),
                 f"{g['count']}{lower(g)}" if g["lower"] else g["count"], clock(g["since"]),
                 self.conn(g["conn"]), self.frame_link(g["conn"], g["frame"])] for g in verdict["findings"][:LISTED]]
        total = len(verdict["findings"]) + verdict["omitted"]
        return Section("verdict", "Verdict", [head, Table(
            ["severity", "who", "what (click for the rule)", "count", "since", "first in conn", "frame"], rows,
            _listed(total, len(rows)))])

    def summary(self) -> Section:
        s = self.cap.summary()
        cap, req, rec, msg = s["capture"], s["requests"], s["reconnects"], s["messaging"]
        counts = s["violation_counts"]
        blocks = [f"Files: {', '.join(cap['files']) or '-'}",
                  f"{cap['frames']} frames, {cap['connections']} connections ({cap['refused']} refused), "
                  f"{cap['damaged_lines']} damaged line(s)" + (", INCOMPLETE (the recorder lost records)"
                                                                 if cap["incomplete"] else "")]
        blocks += [f"Note: {note}" for note in cap["notes"]]
        rows = [["violations: " + sev, sum(c.get(sev, 0) for c in counts.values())] for sev in SEVERITIES]
        rows += [["requests sent", req["total"]], ["answered", req["answered"]], ["unanswered", req["unanswered"]],
                 ["pending at capture end", req["open_at_end"]], ["late responses", req["late"]],
                 ["error responses", req["error_responses"]], ["orphan responses", req["orphan_responses"]],
                 ["reconnects", rec["total"]], ["after 4401/4407", rec["after_token_close"]],
                 ["... with a fresh token", rec["fresh_token"]], ["... with the same token", rec["same_token"]],
                 ["messaging events", msg["events"]], ["messages from others", msg["from_others"]],
                 ["accepted", msg["accepted"]], ["read", msg["read"]]]
        blocks.append(Table(["", "count"], rows))
        return Section("summary", "Summary", blocks)

    def violations(self) -> Section:
        v = self.cap.violations
        if v.empty:
            return Section("violations", "Violations", ["No violations."])
        by_rule = (v.groupby(["rule", "severity"]).size().reset_index(name="count")
                   .assign(rank=lambda d: d.severity.map(SEVERITY_RANK))
                   .sort_values(["rank", "count", "rule"], ascending=[True, False, True]))
        blocks = [Table(["rule", "severity", "count"],
                        [[Link(r.rule, anchor_id("rule", r.rule)), r.severity, r.count]
                         for r in by_rule.itertuples()])]
        conns = set(self.cap.connections.conn)
        for rule in dict.fromkeys(by_rule.rule):
            rows = v[v.rule == rule].sort_values("t")
            blocks.append(Heading(f"{rule} ({len(rows)})", anchor_id("rule", rule)))
            blocks.append(Details("what this rule means", EXPLANATIONS.get(rule, "")))
            blocks.append(Table(["time", "severity", "conn", "frame", "message"],
                                [[fmt_time(r.t), r.severity, self.conn(r.conn), self.frame_link(r.conn, r.frame),
                                  _value(short_ids_in(r.message, conns, self.full_ids))]
                                 for r in rows.head(PER_RULE).itertuples()],
                                _listed(len(rows), PER_RULE)))
        return Section("violations", f"Violations ({len(v)})", blocks)

    def sample_note(self, table: str, what: str) -> list[str]:
        """The sentence under a plot drawn from a sample of a streamed capture's `table`."""
        kept, seen = self.cap.sampled.get(table, (0, 0)) if isinstance(self.cap, StreamedCapture) else (0, 0)
        return [f"Sampled: drawn from {kept} of the {seen} {what}, evenly spaced; the plot's counts are the "
                "sample's."] if kept < seen else []

    def latency(self) -> Section:
        table = self.cap.summary()["latency"]
        blocks: list = [Plot(plots.plot_latency(self.cap), "latency CDF per request type"),
                        *self.sample_note("pairs", "answered requests")]
        if table:
            blocks.append(f"Latency percentiles: {PERCENTILE_METHOD}; the numbers `mwtap analyze` prints.")
            blocks.append(Table(["request type", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                                [[type_, r["count"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"]]
                                 for type_, r in table.items()]))
        return Section("latency", "Latency", blocks)

    def slowest(self) -> Section:
        pairs = self.cap.listed_pairs if isinstance(self.cap, StreamedCapture) else self.cap.pairs
        answered = pairs[pairs.status == "answered"].nlargest(SLOWEST, "latency_ms")
        unanswered = pairs[pairs.status.isin(UNANSWERED)].head(SLOWEST)
        listed = [(title, rows, [self.frame_link(r.conn, r.frame) for r in rows.itertuples()])
                  for title, rows in (("Slowest answered requests", answered),
                                      ("Requests without a response", unanswered)) if not rows.empty]
        self.fetch_frames([rows for _, rows, _ in listed])  # every frame link of the report is known now
        frames = self.cap.frames.set_index(["conn", "frame"]).text
        text = lambda conn, frame: self.payload(conn, frame, frames.get((conn, frame))) if pd.notna(frame) else None
        blocks: list = []
        for title, rows, links in listed:
            blocks.append(Heading(title, anchor_id("slowest", title)))
            blocks.append(Table(["time", "conn", "frame", "type", "latency ms", "status", "code", "request",
                                 "response"],
                                [[fmt_time(r.t), self.conn(r.conn), link, _value(r.type),
                                  _value(r.latency_ms), _value(r.status), _value(r.code), text(r.conn, r.frame),
                                  text(r.conn, r.response_frame)] for r, link in zip(rows.itertuples(), links)]))
        return Section("slowest", "Slowest requests", blocks or ["No requests."])

    def fetch_frames(self, requests: list[pd.DataFrame]) -> None:
        """A streamed capture reads the frames the report shows: the linked ones with their context,
        the listed requests' and responses', and those of the timelines."""
        if not isinstance(self.cap, StreamedCapture):
            return
        wanted = {(conn, frame + d) for conn, frame in self.targets for d in range(-CONTEXT, CONTEXT + 1)}
        wanted |= {(r.conn, int(frame)) for rows in requests for r in rows.itertuples()
                   for frame in (r.frame, r.response_frame) if pd.notna(r.conn) and pd.notna(frame)}
        self.cap.fetch_frames(wanted, plots.worst_connections(self.cap, TIMELINES), PAYLOAD_CHARS)

    def payload(self, conn, frame, text) -> Code | None:
        cut = self.cap.payload_chars if isinstance(self.cap, StreamedCapture) else {}
        return _payload(text, cut.get((conn, frame)))

    def connections(self) -> Section:
        conns = self.cap.connections
        worst = plots.worst_connections(self.cap, LISTED)
        blocks: list = [Plot(plots.plot_timeline(self.cap, worst[:TIMELINES], limit_s=self.limit_s),
                             "timelines of the connections with the most violations")]
        strides = self.cap.timeline_stride if isinstance(self.cap, StreamedCapture) else {}
        if any(stride > 1 for stride in strides.values()):
            blocks.append(f"Sampled: a timeline of more than {TIMELINE_FRAMES} frames draws one frame in "
                          f"{max(strides.values())} or fewer, evenly spaced, and every frame a violation or a "
                          "link of this report points at.")
        counts = self.cap.violations.conn.value_counts()
        rows = conns.set_index("conn").loc[worst]
        blocks.append(Table(["conn", "side", "client", "opened", "duration s", "close", "by", "reason", "c2s", "s2c",
                             "pings", "violations"],
                            [[self.conn(conn), _value(r.side), _value(r.client), fmt_time(r.opened_at), _value(r.duration_s),
                              _value(r.close_code), _value(r.closed_by), _value(r.close_reason), _value(r.frames_c2s),
                              _value(r.frames_s2c), _value(r.pings_c2s), int(counts.get(conn, 0))]
                             for conn, r in zip(rows.index, rows.itertuples())],
                            "most violations first; " + (_listed(len(conns), len(rows)) or "all")))
        refused = conns[conns.state == "refused"]
        if len(refused):
            blocks.append(f"{len(refused)} upgrade(s) refused.")
        return Section("connections", f"Connections ({len(conns)})", blocks)

    def reconnects(self) -> Section:
        r = self.cap.reconnects
        blocks: list = [Plot(plots.plot_reconnects(self.cap), "reconnect chains")]
        if r.empty:
            return Section("reconnects", "Reconnect chains", blocks + ["No reconnects."])
        shown = r.sort_values("delay_s").head(LISTED)
        blocks.append(Table(["time", "conn", "previous", "attempt", "linked by", "delay s", "previous close",
                             "closed by", "fresh token"],
                            [[fmt_time(x.t), self.conn(x.conn), self.conn(x.prev_conn), _value(x.attempt),
                              _value(x.linked_by), _value(x.delay_s), _value(x.prev_close_code),
                              _value(x.prev_closed_by), _value(x.fresh_token)] for x in shown.itertuples()],
                            "shortest delay first; " + (_listed(len(r), len(shown)) or "all")))
        return Section("reconnects", f"Reconnect chains ({len(r)} reconnects)", blocks)

    def keepalive(self) -> Section:
        k = self.cap.keepalive
        blocks: list = [Plot(plots.plot_keepalive(self.cap, limit_s=self.limit_s), "client silences"),
                        *self.sample_note("silences", "silences within the limit (every silence over the "
                                                      "limit and each connection's longest are drawn)"),
                        f"Keep-alive limit: {self.limit_s:g} s."]
        shown = k.sort_values("longest_gap_s", ascending=False).head(LISTED)
        if len(shown):
            blocks.append(Table(["conn", "client activities", "longest silence s", "from", "over the limit",
                                 "silence before close s", "closed by server after silence"],
                                [[self.conn(x.conn), _value(x.client_activities), _value(x.longest_gap_s),
                                  fmt_time(x.longest_gap_start), _value(x.gaps_over_limit),
                                  _value(x.silence_before_close_s), _value(x.closed_by_server_after_silence)]
                                 for x in shown.itertuples()],
                                "longest silence first; " + (_listed(len(k), len(shown)) or "all")))
        return Section("keepalive", "Keep-alive", blocks)

    def streams(self) -> Section:
        s = self.cap.streams
        blocks: list = [Plot(plots.plot_streams(self.cap), "notifications per subscription stream"),
                        *self.sample_note("notifications", "conversation notifications"),
                        *self.sample_note("sequences", "messaging events")]
        if len(s):
            shown = s.sort_values(["after_unsubscribe", "notifications"], ascending=False).head(LISTED)
            blocks.append(Table(["conn", "kind", "subscription / dialog", "request", "notifications",
                                 "first after ms", "per min", "unsubscribed", "after unsubscribe"],
                                [[self.conn(x.conn), _value(x.kind), _value(x.subscription_id) or _value(x.dialog_id),
                                  _value(x.request_type), _value(x.notifications),
                                  _value(x.first_notification_delay_ms), _value(x.rate_per_min),
                                  _value(x.unsubscribed), _value(x.after_unsubscribe)] for x in shown.itertuples()],
                                "notifications after unsubscribe first; " + (_listed(len(s), len(shown)) or "all")))
        return Section("streams", f"Subscription streams ({len(s)})", blocks)

    def frames(self) -> Section:
        """The linked frames with their neighbours, each linked one carrying its anchor."""
        if not self.targets:
            return Section("frames", "Frames", ["No frame is linked from this report."])
        targets = pd.DataFrame(list(dict.fromkeys(self.targets)), columns=["conn", "frame"])
        around = pd.concat([targets.assign(frame=targets.frame + d) for d in range(-CONTEXT, CONTEXT + 1)])
        frames = self.cap.frames.astype({"frame": "int64"}, errors="ignore")
        shown = frames.merge(around.drop_duplicates(), on=["conn", "frame"]).sort_values(["conn", "frame"])
        linked = set(self.targets)
        rows = []
        for f in shown.itertuples():
            number = (Anchor(f"#{f.frame}", self.frame_anchor(f.conn, f.frame)) if (f.conn, f.frame) in linked
                      else f"#{f.frame}")
            rows.append([number, self.conn(f.conn), fmt_time(f.t), _value(f.dir), _value(f.category), _value(f.type),
                         _value(f.size), self.payload(f.conn, f.frame, f.text)])
        return Section("frames", "Frames", [
            f"The frames linked from the tables above, with {CONTEXT} frames of context before and after.",
            Table(["frame", "conn", "time", "dir", "category", "type", "bytes", "payload"], rows)])
