"""The native Keepalive and Rings analyzers (core/src/keepalive.rs, rings.rs) reading a capture and fed its
records one at a time (`test_native_engine.fed_engine`) give the same answers exactly (their answers on
fixed captures are the retired Python analyzers': tests/test_golden.py): the same violations in the same
order (messages worded alike: `{gap:.1f}`, `{limit:g}`), the same `keepalive`, `silences` and `pings` rows
(an int time stays an int, an int minus an int too), the same stats. On every capture the tests ship, on
generated captures, on a fuzz of keep-alive and ring traffic (agent and consumer URLs, pings and pongs
either way, server closes, ring offers, answers, cancellations and expirations of every JSON type, times as
ints and floats, clocks stepping back) and on the damaged captures of tests/test_native_engine.py's fuzz."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.config import Config
from analysis.synth import CaptureBuilder
from sample_capture import generate
from test_fuzz_engine import fuzz_settings
from test_native_engine import ROOT, SHIPPED, assert_same, capture_files, written
from test_reliability_load import soak_size

TABLES = ("keepalive", "silences", "pings")
SETS = [("keepalive",), ("rings",), ("keepalive", "rings")]
AGENT_URL = "wss://127.0.0.1/ws_api/account/1/messaging/brand/[redacted sha256:0123456789ab]?v=2"
CONSUMER_URL = "wss://127.0.0.1/ws_api/account/1/messaging/consumer?v=3"
DEFAULT_CASES = 400
SOAK_CASES = soak_size(400, 10_000)


def same(paths: list[str], analyzers, config: Config | None = None) -> dict | str:
    return assert_same(paths, config, False, analyzers, TABLES)


@pytest.mark.parametrize("analyzers", SETS, ids="+".join)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path, analyzers):
    same([str(path)], analyzers)


def test_generated_captures(tmp_path):
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=5)
    result = same([str(sample)], ("keepalive", "rings"), Config(keepalive_limit_s=2.0))
    assert result["tables"]["silences"] and any(v["rule"] == "keepalive-gap" for v in result["violations"])
    same([str(ROOT / "notebooks/data/demo.jsonl.gz")], ("keepalive", "rings"))


def test_keepalive_and_rings_cases(tmp_path):
    """Agent slack (by URL and by an agent request), a server close within the 98 % tolerance, pings and
    pongs either way, int times, rings answered, cancelled, expired on their own deadline or the default."""
    b = CaptureBuilder()
    b.open("agent", 0, url=AGENT_URL)
    b.open("consumer", 1.5, url=CONSUMER_URL)
    b.c2s("consumer", 50, {"kind": "req", "id": "1", "type": ".ams.aam.SubscribeAgentsState", "body": {}})
    b.ping("agent", 65)  # 65 s: within 60 s + 10 %
    b.c2s("consumer", 116.75, {"kind": "req", "id": "2", "type": "KeepAlive"})  # 66.75 s: over
    notification = {"kind": "notification", "type": ".ams.routing.RoutingTaskNotification",
                    "body": {"changes": [{"type": "UPSERT", "result": {"ringsDetails": [
                        {"ringId": "r1", "ringState": "WAITING", "ringExpiration": 20000},
                        {"ringId": "r2", "ringState": "WAITING"}, {"ringId": "r3", "ringState": "WAITING"},
                        {"ringId": "r4", "ringState": "WAITING", "ringExpiration": 1500}]}},
                        {"type": "UPSERT", "result": {"ringsDetails": {"ringId": "r3", "ringState": "CANCELLED"}}}]}}
    b.s2c("consumer", 117, notification)
    b.c2s("consumer", 118, {"kind": "req", "id": "3", "type": ".ams.routing.UpdateRingState",
                            "body": {"ringId": "r4", "ringState": "ACCEPTED"}})
    b.ping("agent", 140, pong=True)  # 75 s: over
    b.ping("agent", 141, from_client=False)
    b.close("agent", 205, by="server")  # 65 s: at least 98 % of 66 s
    b.close("consumer", 206)
    for conn, t in (("over", 300), ("within", 400)):  # 98 % of 60 s is 58.8 s
        b.open(conn, t, url=CONSUMER_URL)
        b.close(conn, t + (58.9 if conn == "over" else 58.7), by="server")
    path = tmp_path / "cases.jsonl"
    b.write(path)
    result = same([str(path)], ("keepalive", "rings"))
    messages = [(v["rule"], v["t"], v["message"]) for v in result["violations"]]
    agent = "(limit 60 s + 10% for an agent)"
    assert messages == [
        ("keepalive-gap", 116.75, f"client silent for 66.8 s {agent}"),
        ("ring-not-answered", 137.0, "ring r1 offered WAITING was neither ACCEPTED nor REJECTED within its 20 s"),
        ("keepalive-gap", 140, f"client silent for 75.0 s {agent}"),
        ("ring-not-answered", 147.0, "ring r2 offered WAITING was neither ACCEPTED nor REJECTED within its 30 s"),
        ("keepalive-gap", 205, f"client silent for 65.0 s before the server closed the connection {agent}"),
        ("keepalive-gap", 206, f"client silent for 88.0 s before the close {agent}"),
        ("keepalive-gap", 358.9, "client silent for 58.9 s before the server closed the connection (limit 60 s)")]
    assert [r["silence_s"] for r in result["tables"]["silences"]][:7] == [48.5, 65, 66.75, 1.25, 75, 65, 88]
    assert [(r["rec"], r["dir"]) for r in result["tables"]["pings"]] == [("ping", "c2s"), ("pong", "c2s"),
                                                                         ("ping", "s2c")]


CONNS = st.sampled_from(["a", "b", "c"])
RING_IDS = st.sampled_from(["r1", "r2", "r3"])
expiration = st.sampled_from([None, 0, -5, 1500, 2500, 20000, True, False, 1.5e3, "3000", 2**64 - 1, 1.2e21])
# Mostly rings offered WAITING (to be answered), now and then anything else.
ring = st.fixed_dictionaries({"ringId": RING_IDS | RING_IDS | st.integers(0, 2),
                              "ringState": st.sampled_from(["WAITING"] * 5 + ["ACCEPTED", "REJECTED", "EXPIRED",
                                                                              "CANCELLED", None])},
                             optional={"ringExpiration": expiration})
change = st.fixed_dictionaries({"type": st.sampled_from(["UPSERT"] * 3 + ["DELETE"]),
                                "result": st.fixed_dictionaries({"ringsDetails": st.lists(ring, max_size=3) | ring})})
changes = st.lists(change, max_size=3) | change | st.just("x")
REQUEST_TYPES = st.sampled_from([".ams.routing.UpdateRingState", "UpdateRingState", "cqm.UpdateRingState",
                                 ".ams.aam.SubscribeAgentsState", ".ams.cm.AgentRequestConversation", "KeepAlive",
                                 ".GetClock", ".ams.routing.RoutingTaskNotification"])


@st.composite
def traffic(draw) -> list[dict]:
    """Records of keep-alive and ring traffic, the clock moving on by int or float steps (now and then back)."""
    b, t = CaptureBuilder(), 0
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.integers(-1, 25) | st.floats(-1, 25, allow_nan=False))
        conn, what = draw(CONNS), draw(st.sampled_from(["open", "c2s", "c2s", "s2c", "s2c", "ping", "close"]))
        if what == "open":
            b.open(conn, t, url=draw(st.sampled_from([AGENT_URL, CONSUMER_URL, "//messaging/brand/x",
                                                      "ws://h/p?x=/messaging/brand/", " \tws://h/messaging/brand/"])))
        elif what == "c2s":
            body = draw(st.fixed_dictionaries({}, optional={"ringId": RING_IDS | st.integers(0, 2**64 - 1)}) | st.none())
            b.c2s(conn, t, {"kind": "req", "id": "1", "type": draw(REQUEST_TYPES), "body": body})
        elif what == "s2c":
            b.s2c(conn, t, {"kind": "notification", "type": draw(st.sampled_from(
                [".ams.routing.RoutingTaskNotification", "RoutingTaskNotification", "x"])),
                "body": {"changes": draw(changes)}})
        elif what == "ping":
            b.record({"rec": draw(st.sampled_from(["ping", "pong"])), "t": t, "conn": conn,
                      "dir": draw(st.sampled_from(["c2s", "s2c", None]))})
        else:
            b.record({"rec": "close", "t": t, "conn": conn, "code": 1000, "reason": None,
                      "by": draw(st.sampled_from(["client", "server", None]))})
    return b.records


def check_traffic(records: list[dict], limit: float) -> None:
    builder = CaptureBuilder()
    builder.records = records
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traffic.jsonl"
        builder.write(path)
        same([str(path)], ("keepalive", "rings"), Config(keepalive_limit_s=limit))


def check_damaged(files: list[tuple[str, bytes]]) -> None:
    with written(files) as paths:
        same(paths, ("keepalive", "rings"))


LIMITS = st.sampled_from([60.0, 5.0, 12.5, 0.5])


@fuzz_settings(DEFAULT_CASES)
@given(traffic(), LIMITS)
def test_fuzz_traffic(records, limit):
    check_traffic(records, limit)


@fuzz_settings(DEFAULT_CASES // 2)
@given(capture_files())
def test_fuzz_damaged_captures(files):
    check_damaged(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(traffic(), LIMITS)
def test_fuzz_traffic_soak(records, limit):
    check_traffic(records, limit)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_damaged_captures_soak(files):
    check_damaged(files)
