"""The summary as a terminal report or Markdown: the verdict first, then worst offenders first."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

from analysis.explain import EXPLANATIONS
from analysis.histogram import PERCENTILE_METHOD
from analysis.ids import short_id, short_ids_in
from analysis.rules import SEVERITIES, SEVERITY_RANK
from analysis.verdict import SHOWN, verdict_lines

LISTED = 20


def _time(t) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (OverflowError, OSError, ValueError):  # a damaged capture's time: NaN, or past year 9999
        return str(t)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _table(headers: list[str], rows: list[list], markdown: bool) -> list[str]:
    cells = [[_cell(v) for v in row] for row in rows]
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return out + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda row: "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
    return [line(headers)] + [line(r) for r in cells]


def _count(severities: dict) -> int:
    return sum(severities.values())


def render(summary: dict, markdown: bool = False, full_ids: bool = False) -> str:
    """`full_ids`: connection ids in full (else `analysis.ids.short_id`)."""
    out: list[str] = []
    heading = (lambda s: out.extend(["", f"## {s}", ""])) if markdown else (lambda s: out.extend(["", s]))
    cap = summary["capture"]
    conn = lambda c: short_id(c, full_ids)
    if markdown:
        out.append("# mwtap analysis")
        out.append("")
    verdict = verdict_lines(summary["verdict"], full_ids)
    out += [verdict[0]] + [("- " + line.strip()) if markdown else line for line in verdict[1:]]
    out.append("")
    out.append(f"Capture: {len(cap['files'])} file(s), {cap['frames']} frames, {cap['connections']} connections"
               f" ({cap['refused']} refused), {cap['damaged_lines']} damaged line(s)")
    out += [f"  note: {note}" for note in cap["notes"]]

    counts = summary["violation_counts"]
    totals = {s: sum(c.get(s, 0) for c in counts.values()) for s in SEVERITIES}
    heading("Violations: " + ", ".join(f"{totals[s]} {s}" for s in SEVERITIES))
    by_rule = sorted(((rule, sev, n) for rule, sevs in counts.items() for sev, n in sevs.items()),
                     key=lambda r: (SEVERITY_RANK[r[1]], -r[2], r[0]))
    if by_rule:
        out += _table(["rule", "severity", "count"], [list(r) for r in by_rule], markdown)
        listed = summary["violations"][:LISTED]
        conns = {c["conn"] for c in summary["connections"]}
        heading(f"First {len(listed)} of {summary['violations_total']} violations (worst first)")
        out += _table(["severity", "rule", "conn", "t", "frame", "message"],
                      [[v["severity"], v["rule"], conn(v["conn"]), _time(v["t"]), v["frame"],
                        short_ids_in(v["message"], conns, full_ids)]
                       for v in listed], markdown)

    req = summary["requests"]
    heading(f"Requests: {req['total']} sent, {req['answered']} answered, {req['unanswered']} unanswered, "
            f"{req['open_at_end']} pending at capture end, {req['orphan_responses']} orphan responses, "
            f"{req['error_responses']} error responses")
    latency = sorted(summary["latency"].items(), key=lambda kv: -(kv[1]["p99_ms"] or 0))
    if latency:
        out.append(f"  latency percentiles: {PERCENTILE_METHOD}")
        out += _table(["request type", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                      [[t, s["count"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]] for t, s in latency],
                      markdown)

    conns = sorted(summary["connections"], key=lambda c: (
        -c["violations"].get("error", 0), -_count(c["violations"]), -(c["max_client_gap_s"] or 0)))
    heading(f"Connections ({len(conns)}, worst first{', first %d' % LISTED if len(conns) > LISTED else ''})")
    out += _table(["conn", "side", "opened", "closed", "code", "by", "c2s", "s2c", "pings", "max gap s", "errors",
                   "warnings"],
                  [[conn(c["conn"]), c["side"], _time(c["opened_at"]), _time(c["closed_at"]), c["close_code"], c["closed_by"],
                    c["frames_c2s"], c["frames_s2c"], c["pings_c2s"], c["max_client_gap_s"],
                    c["violations"].get("error", 0), c["violations"].get("warning", 0)] for c in conns[:LISTED]],
                  markdown)

    subs = summary["subscriptions"]
    if subs:
        heading(f"Subscriptions ({len(subs)})")
        subs = sorted(subs, key=lambda s: (-s["after_unsubscribe"], -s["notifications"]))[:LISTED]
        out += _table(["conn", "kind", "id", "request type", "notifications", "first after ms", "unsubscribed"],
                      [[conn(s["conn"]), s["kind"], s["subscription_id"] or s["dialog_id"], s["request_type"],
                        s["notifications"], s["first_notification_delay_ms"], s["unsubscribed"]] for s in subs],
                      markdown)
    m, r = summary["messaging"], summary["reconnects"]
    heading("Messaging and reconnects")
    out.append(f"  {m['events']} messaging events, {m['from_others']} messages from others awaiting ACCEPT, "
               f"{m['accepted']} accepted (p50 {_cell(m['accept_p50_ms'])} ms), {m['read']} read")
    out.append(f"  {r['total']} reconnects, {r['after_token_close']} after 4401/4407 "
               f"({r['fresh_token']} with a fresh token, {r['same_token']} with the same token)")
    shown = dict.fromkeys(f["rule"] for f in summary["verdict"]["findings"][:SHOWN])
    if shown:
        heading("What the rules found mean")
        for rule in shown:
            text = f"{rule}: {EXPLANATIONS.get(rule, '')}"
            out += [f"- **{rule}**: {EXPLANATIONS.get(rule, '')}"] if markdown else \
                textwrap.wrap(text, 110, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(out) + "\n"
