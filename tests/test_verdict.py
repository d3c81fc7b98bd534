"""The verdict that opens every output: findings grouped by consumer and rule, worst first, each
rule explained, in analyze's text, Markdown and JSON, the report and `cap.verdict()`."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

import analysis
from analysis.explain import DOES, EXPLANATIONS
from analysis.render import render
from analysis.report import build_report, render_html, render_markdown
from analysis.rules import RULES
from analysis.synth import T0, CaptureBuilder
from analysis.verdict import consumer_keys
from conftest import BIN, REPO

A1, A2, B1 = "aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002", \
    "bbbbbbbb-0000-4000-8000-000000000003"


def clock(b: CaptureBuilder, conn: str, t: float, req_id: str) -> None:
    b.c2s(conn, t, {"kind": "req", "id": req_id, "type": "GetClock", "body": {}})


def answer(b: CaptureBuilder, conn: str, t: float, req_id: str) -> None:
    b.s2c(conn, t, {"kind": "resp", "reqId": req_id, "code": 200, "type": "GetClockResponse",
                    "body": {"currentTime": 1}})


@pytest.fixture(scope="module")
def two_consumers(tmp_path_factory):
    """Consumer A (two connections, the second a reconnect after 1006) sends a request id again while
    it is in flight on each; consumer B (another token and host) sends three frames that are not JSON."""
    b = CaptureBuilder()
    t = T0
    for conn, start in ((A1, t), (A2, t + 5)):
        b.open(conn, start, token="token-a", client="10.0.0.1:4000" + conn[-1])
        clock(b, conn, start + 0.1, "1")
        clock(b, conn, start + 0.2, "1")
        answer(b, conn, start + 0.3, "1")
        answer(b, conn, start + 0.4, "1")
        b.close(conn, start + 3, code=1006, reason=None, by="server")
    b.open(B1, t + 1, token="token-b", client="10.0.0.2:5000")
    for i in range(3):
        b.msg(B1, t + 1.5 + i * 0.1, "not json {", from_client=True)
    b.close(B1, t + 4)
    path = tmp_path_factory.mktemp("verdict") / "two.jsonl"
    b.write(path)
    return path


def test_every_rule_has_a_verdict_phrase():
    assert set(DOES) == set(RULES) == set(EXPLANATIONS)


def test_findings_grouped_by_consumer_and_rule_worst_first(two_consumers):
    summary, _ = analysis.analyze(two_consumers)
    findings = summary["verdict"]["findings"]
    top = [(f["rule"], f["count"], f["connections"]) for f in findings[:2]]
    assert top == [("invalid-json", 3, 1), ("duplicate-request-id", 2, 2)]  # errors, the larger count first
    b_key, a_key = findings[0]["consumer"], findings[1]["consumer"]
    assert a_key.startswith("token:") and a_key != b_key
    assert findings[1]["conn"] == A1 and findings[1]["frame"] is not None  # where it started
    assert findings[1]["explanation"] == EXPLANATIONS["duplicate-request-id"]
    text = render(summary)
    lines = text.splitlines()
    assert lines[0] == f"Verdict: {len(findings)} findings (by consumer and rule, worst first)"
    assert lines[2].strip().startswith(f"error: consumer {a_key[:6]}")
    assert "(2 connections) reuses request ids while they are in flight: 2 times since" in lines[2]
    assert "open conn aaaaaaaa… frame" in lines[2] and A1 not in text
    assert A1 in render(summary, full_ids=True)
    assert "What the rules found mean" in text and "Use a counter per connection." in " ".join(lines)


def test_a_clean_capture_says_so_in_one_line(tmp_path):
    b = CaptureBuilder()
    b.open(A1, T0)
    clock(b, A1, T0 + 0.1, "1")
    answer(b, A1, T0 + 0.2, "1")
    b.close(A1, T0 + 1)
    b.write(tmp_path / "clean.jsonl")
    summary, _ = analysis.analyze(tmp_path / "clean.jsonl")
    assert summary["verdict"] == {"clean": True, "findings": [], "omitted": 0}
    assert render(summary).splitlines()[0] == "Verdict: no violations found."
    assert repr(analysis.load(tmp_path / "clean.jsonl").verdict()) == "Verdict: no violations found."


def test_report_opens_with_the_verdict_and_explains_each_rule(two_consumers):
    cap = analysis.load(two_consumers)
    html = render_html(build_report(cap))
    verdict = html[html.index('<section id="verdict">'):]
    assert html.index('<section id="verdict">') < html.index('<section id="summary">')
    for rule in ("invalid-json", "duplicate-request-id"):
        summary = f"<summary>{DOES[rule]} [{rule}]</summary><p>{EXPLANATIONS[rule]}</p>"
        assert summary in verdict, rule
        assert f"<summary>what this rule means</summary><p>{EXPLANATIONS[rule]}</p>" in html
    markdown = render_markdown(build_report(cap))
    assert markdown.index("## Verdict") < markdown.index("## Summary")
    assert "Use a counter per connection." in markdown


def test_notebook_verdict_is_analyzes(two_consumers):
    cap = analysis.load(two_consumers)
    summary, _ = analysis.analyze(two_consumers)
    assert cap.verdict().findings == summary["verdict"]["findings"]
    assert repr(cap.verdict()).splitlines() == render(summary).splitlines()[:len(summary["verdict"]["findings"]) + 1]


def test_analyze_json_has_the_verdict(two_consumers):
    result = subprocess.run([str(BIN / "mwtap"), "analyze", "--format", "json", str(two_consumers)],
                            capture_output=True, text=True, timeout=60)
    verdict = json.loads(result.stdout)["verdict"]
    assert [f["rule"] for f in verdict["findings"][:2]] == ["invalid-json", "duplicate-request-id"]
    assert verdict["findings"][1]["conn"] == A1  # the full id in JSON


def test_consumer_keys_follow_reconnect_chains():
    keys = consumer_keys({1: (None, "sub:x", "h:1"), 2: (1, "sub:y", "h:2"), 3: (None, None, "10.0.0.9:7"),
                          4: (5, None, "h:4"), 5: (4, None, "h:5")})  # 4 and 5: a loop in a damaged capture
    assert keys[1] == keys[2] == "sub:x" and keys[3] == "host:10.0.0.9" and keys[4] == keys[5]


def test_one_short_connection_id_in_every_text_output():
    from analysis.diff import DiffReport, Difference, render_text
    from analysis.ids import short_id
    assert short_id(A1) == "aaaaaaaa…" and short_id(A1, full=True) == A1 and short_id("c1") == "c1"
    assert short_id("twelve-chars") == "twelve-chars"  # as mwtap view's page: ids up to 12 shown whole
    diff = render_text(DiffReport(pairs=[(A1, [B1])], differences=[Difference("close-code", A1, "1000 -> 4401")]))
    assert "connection aaaaaaaa… <-> bbbbbbbb…" in diff and "[close-code] aaaaaaaa…: 1000 -> 4401" in diff
    assert A1 not in diff


def test_a_bots_findings_are_told_as_the_agents(tmp_path):
    """A brand connection (a bot's, its bearer in the URL path) is an agent in the verdict, not a consumer."""
    b = CaptureBuilder()
    b.open(A1, T0, url="wss://127.0.0.1/ws_api/account/123/messaging/brand/bearer-of-the-bot?v=2.1")
    for i in range(2):
        b.msg(A1, T0 + 1 + i, "not json {", from_client=True)
    b.close(A1, T0 + 5)
    b.open(B1, T0, token="token-b")
    b.msg(B1, T0 + 1, "not json {", from_client=True)
    b.close(B1, T0 + 5)
    path = tmp_path / "bot.jsonl"
    b.write(path)
    lines = analysis.load(path).verdict().lines()
    assert any(line.strip().startswith("error: agent token:") and "2 times" in line for line in lines), lines
    assert any(line.strip().startswith("error: consumer token:") and "once" in line for line in lines), lines


def test_a_group_counts_its_findings_at_its_severity_and_the_lower_ones_apart():
    """In the demo one consumer has 9 missing-accept warnings and 1 info (its connection closed just after
    a message arrived, before it could have accepted): the verdict says 9 times, and one more as info."""
    cap = analysis.load(REPO / "notebooks" / "data" / "demo.jsonl.gz")
    findings = cap.verdict().findings
    accept = cap.violations[cap.violations.rule == "missing-accept"].severity.value_counts().to_dict()
    group, = [g for g in findings if g["rule"] == "missing-accept"]
    assert accept == {"warning": 9, "info": 1}
    assert (group["severity"], group["count"], group["lower"]) == ("warning", 9, {"info": 1})
    line, = [line for line in cap.verdict().lines() if "[missing-accept]" in line]
    assert ": 9 times since " in line and " (and 1 more as info) [missing-accept]" in line
    # every finding is counted once, at its own severity
    assert sum(g["count"] + sum(g["lower"].values()) for g in findings) == len(cap.violations)


def test_no_full_connection_id_in_any_text_without_full_ids():
    """Connection ids print short everywhere, violation messages naming the connection before a
    reconnect included; dialog ids (uuids too) stay whole, and `--full-ids` gives every id in full."""
    demo = REPO / "notebooks" / "data" / "demo.jsonl.gz"
    summary, _ = analysis.analyze(demo)
    ids = {c["conn"] for c in summary["connections"]}
    report = build_report(analysis.load(demo))
    texts = [render(summary), render(summary, markdown=True), render_markdown(report),
             re.sub(r"<[^>]*>", "", render_html(report))]  # the page's text: ids stay in its links and titles
    assert [i for i in ids for text in texts if i in text] == []
    full = render(summary, full_ids=True)
    assert "after close 4401 (server) of 269c5632-832b-419a-8196-e0265f12789f;" in full
    assert "after close 4401 (server) of 269c5632…;" in render(summary)
    assert "dialog '2142f915-ba97-497a-b73e-6eebe9e7a778'" in render(summary)
