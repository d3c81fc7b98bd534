"""`mwtap demo` end to end: real server, real recorder, real consumers and, with Node, the real
node-agent-sdk bot, then the analysis of the capture, with the facts the demo's misbehaving
consumers must produce."""

from __future__ import annotations

import json
import re
import os
import shutil
import stat
import subprocess

import pytest

from analysis import load
from conftest import BIN, free_port, holds_jwt

DURATION = 13.0  # past the demo's 9 s token lifetime, so every consumer meets a 4401
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    result = subprocess.run([str(BIN / "mwtap"), "demo", "-o", str(out), "--duration", str(DURATION)],
                            capture_output=True, text=True, timeout=DURATION + 60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout, json.loads((out / "analysis.json").read_text())


def test_demo_prints_where_everything_went(demo_run):
    out, stdout, _ = demo_run
    assert f"capture:  {out / 'capture.jsonl'}" in stdout
    assert "Violations:" in stdout
    assert f"report:   {out / 'report.html'}" in stdout
    for name in ("capture.jsonl", "analysis.txt", "analysis.json", "report.html"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    report = (out / "report.html").read_text()
    assert "token-not-refreshed" in report
    assert not holds_jwt(report)  # the plots are base64: only a whole JWT or its header segment counts


def test_demo_capture_has_every_consumer_and_no_clear_token(demo_run):
    out, _, summary = demo_run
    text = (out / "capture.jsonl").read_text()
    assert not holds_jwt(text)  # the built-in IDP issues JWTs; only their redaction markers may be recorded
    assert "[redacted sha256:" in text
    assert summary["capture"]["damaged_lines"] == 0
    assert summary["capture"]["connections"] >= 8
    requests = summary["requests"]
    assert requests["answered"] > 100 and requests["orphan_responses"] == 0
    # The server answers everything; only a request in flight when a token expired (4401) can miss
    # its answer, and then the close came first: never a timeout on an open connection (an error).
    token_closes = sum(c["close_code"] in (4401, 4407) for c in summary["connections"])
    assert requests["unanswered"] <= 2 * token_closes and requests["late"] == 0
    assert not [v for v in summary["violations"] if v["rule"] == "unanswered-request" and v["severity"] == "error"]


def test_demo_misbehaviours_are_found(demo_run):
    _, _, summary = demo_run
    rules = {v["rule"] for v in summary["violations"] if v["severity"] != "info"}
    assert {"duplicate-request-id", "keepalive-gap", "fast-reconnect", "token-not-refreshed",
            "missing-accept"} <= rules
    # The server's skipped sequences: a warning on the bot's connection, which receives every event of
    # its conversations; info on a consumer's, where a gap may be a message for agents only.
    side = {c["conn"]: c["side"] for c in summary["connections"]}
    gaps = {(side[v["conn"]], v["severity"]) for v in summary["violations"] if v["rule"] == "sequence-gap"}
    assert ("consumer", "info") in gaps and gaps <= {("consumer", "info"), ("agent", "warning")}
    assert not rules & {"invalid-json", "orphan-response", "invalid-response-code", "request-before-init",
                        "unknown-subscription", "sequence-regression", "publish-after-close"}


def test_demo_violations_agree_with_the_connections(demo_run):
    out, _, _ = demo_run
    cap = load(out / "capture.jsonl", keepalive_limit_s=4.0, accept_timeout_s=3.0, response_timeout_s=5.0)
    conns = cap.connections.set_index("conn")
    gaps = cap.violations[cap.violations.rule == "keepalive-gap"]
    # Each keep-alive gap ends in the server's idle close (code 1000, by the server).
    assert set(conns.loc[gaps.conn, "closed_by"]) == {"server"}
    assert set(conns.loc[gaps.conn, "close_code"]) == {1000}
    # The stale token is used right after a 4401 and is refused again with 4401.
    stale = cap.violations[cap.violations.rule == "token-not-refreshed"].conn
    assert set(conns.loc[stale, "close_code"]) == {4401}
    refreshed = cap.reconnects[cap.reconnects.prev_close_code == 4401]
    assert refreshed.fresh_token.sum() >= 7  # the seven other consumers fetch a new token
    # Every consumer publishes messages that the agent answers, and the pairs table sees them all.
    published = cap.pairs[cap.pairs.type == "ms.PublishEvent"]
    assert (published.code == 200).all() and len(published) > 50


def test_analyze_and_report_with_the_demos_limits_give_the_demos_numbers(demo_run):
    """The demo prints the limits it analyses with; analyze and report given them agree with it."""
    out, stdout, summary = demo_run
    flags = ["--keepalive-limit", "4", "--accept-timeout", "3", "--response-timeout", "5"]
    assert f"analysed with {' '.join(flags)} " in stdout
    capture = str(out / "capture.jsonl")
    analyzed = subprocess.run([str(BIN / "mwtap"), "analyze", "--format", "json", capture, *flags],
                              capture_output=True, text=True, timeout=60)
    again = json.loads(analyzed.stdout)
    assert again["violation_counts"] == summary["violation_counts"]
    assert again["verdict"] == summary["verdict"] and again["latency"] == summary["latency"]
    reported = subprocess.run([str(BIN / "mwtap"), "report", "--format", "markdown", "-o", "-", capture, *flags],
                              capture_output=True, text=True, timeout=120)
    assert f"## Violations ({summary['violations_total']})" in reported.stdout
    assert f"Violations ({summary['violations_total']})" in (out / "report.html").read_text()
    assert stdout.split("analysed with", 1)[1].splitlines()[2].startswith("Verdict: ")


@pytest.mark.skipif(NODE is None, reason="node is not installed (the demo's bot runs on Node)")
def test_the_node_agent_sdk_bot_answers_the_consumers_through_the_recorder(demo_run):
    out, stdout, summary = demo_run
    assert "answered by a node-agent-sdk 1.2.0 bot" in stdout, stdout
    bot = re.search(r"bot \(agent\) +(\d+) connection\(s\), (\d+) ring\(s\) accepted, (\d+) answer\(s\), "
                    r"(\d+) error\(s\)", stdout)
    assert bot is not None, stdout
    connections, rings, answers, errors = map(int, bot.groups())
    assert connections == 1 and rings >= 8 and answers > 20 and errors == 0, bot.group(0)  # 8 consumers
    agents = [c for c in summary["connections"] if c["side"] == "agent"]
    assert len(agents) == 1 and "/messaging/brand/[redacted sha256:" in agents[0]["url"], agents
    assert len([c for c in summary["connections"] if c["side"] == "consumer"]) >= 8
    on_agent = [v for v in summary["violations"] if v["conn"] == agents[0]["conn"]]
    assert not [v for v in on_agent if v["severity"] == "error"], on_agent
    # the bot's side of the conversations: each ring accepted, consumer texts READ and answered
    latency = summary["latency"]
    assert latency[".ams.routing.UpdateRingState"]["count"] == rings, latency
    assert latency[".ams.ms.PublishEvent"]["count"] >= 2 * answers, latency

def short_demo_without_bot(tmp_path, **env: str) -> list[str]:
    """A 3 s demo in `env`, which leaves no bot; returns its lines, after checking it ran with the
    built-in agent alone."""
    env = {**{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}, **env}
    out = tmp_path / "out"
    result = subprocess.run([str(BIN / "mwtap"), "demo", "-o", str(out), "--duration", "3"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("answered by the built-in agent" in line for line in lines), result.stdout
    summary = json.loads((out / "analysis.json").read_text())
    assert {c["side"] for c in summary["connections"]} == {"consumer"}
    return lines


def test_without_node_the_built_in_agent_answers_and_the_demo_says_so(tmp_path):
    """PATH without node (nor npm): the demo still runs, with the built-in agent, and says why."""
    empty = tmp_path / "bin"
    empty.mkdir()
    lines = short_demo_without_bot(tmp_path, PATH=str(empty))
    assert "no node-agent-sdk bot (node is not on PATH): the built-in agent answers the consumers" in lines


@pytest.mark.skipif(NODE is None or shutil.which("npm") is None, reason="node and npm are needed to try the install")
def test_when_the_sdk_cannot_be_installed_the_built_in_agent_answers_and_the_demo_says_so(tmp_path):
    """No network: npm's registry refuses (a closed loopback port), with an empty npm cache and an
    empty mwtap cache. The demo tries the install once, says it failed, and runs without the bot."""
    lines = short_demo_without_bot(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"),
                                   npm_config_cache=str(tmp_path / "npm-cache"),
                                   npm_config_registry=f"http://127.0.0.1:{free_port()}/",
                                   npm_config_fetch_retries="0")
    assert lines[0].startswith(f"installing node-agent-sdk 1.2.0 into {tmp_path / 'cache' / 'mwtap'}"), lines[0]
    assert lines[1].startswith("no node-agent-sdk bot (npm ci failed with status ") and lines[1].endswith(
        "): the built-in agent answers the consumers"), lines[1]
    assert not (tmp_path / "cache" / "mwtap" / "agent-sdk-1.2.0").exists()  # no half install left
