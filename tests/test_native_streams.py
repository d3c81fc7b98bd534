"""The native Streams analyzer (core/src/streams.rs) reading a capture and fed its records one at a time
(`test_native_engine.fed_engine`) gives the same answers exactly (its answers on fixed captures are the
retired Python analyzer's: tests/test_golden.py): the same violations in the same order (values quoted with
ascii(), `{delay:.3f}`), the same `streams` rows (an int time stays an int, None where Python has None, rows
in Python's dict order), alone and routed beside the other native analyzers. On every capture the tests
ship, on generated captures, on a fuzz of subscription traffic (keyed and messaging subscriptions,
unsubscribes, responses of every type and code, notifications before their answer, agent connections by URL
and by request, malformed body index fields, clocks stepping back) and on the damaged captures of
tests/test_native_engine.py's fuzz."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.synth import CaptureBuilder
from sample_capture import generate
from test_fuzz_engine import fuzz_settings
from test_native_analyzers import AGENT_URL, CONSUMER_URL
from test_native_engine import ROOT, SHIPPED, assert_same, capture_files, written
from test_reliability_load import soak_size

TABLES = ("streams", "keepalive")
SETS = [("streams",), ("keepalive", "streams", "rings")]  # alone, and in the engine's order (analysis.native.ANALYZERS)
DEFAULT_CASES = 300
SOAK_CASES = soak_size(300, 10_000)


def same(paths: list[str], analyzers=("keepalive", "streams", "rings")) -> dict | str:
    return assert_same(paths, None, False, analyzers, TABLES)


@pytest.mark.parametrize("analyzers", SETS, ids="+".join)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path, analyzers):
    same([str(path)], analyzers)


def test_generated_captures(tmp_path):
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=7)
    result = same([str(sample)])
    assert {row["kind"] for row in result["tables"]["streams"]} == {"conversations", "messaging-events"}
    assert any(row["unsubscribed"] for row in result["tables"]["streams"])
    same([str(ROOT / "notebooks/data/demo.jsonl.gz")], ("streams",))


def req(id_, type_, body) -> dict:
    return {"kind": "req", "id": id_, "type": type_, "body": body}


def resp(req_id, type_, code, body=None) -> dict:
    return {"kind": "resp", "reqId": req_id, "type": type_, "code": code, "body": body or {}}


def conversation_note(sid) -> dict:
    return {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
            "body": {"subscriptionId": sid, "changes": []}}


def events(*dialogs) -> dict:
    return {"kind": "notification", "type": "ms.MessagingEventNotification",
            "body": {"changes": [{"dialogId": d, "sequence": i, "event": {"type": "ContentEvent"}}
                                 for i, d in enumerate(dialogs)]}}


def test_every_rule_and_branch(tmp_path):
    """Conversation, messaging, routing-task and agent-state subscriptions: notifications before the answer,
    unknown subscriptions and dialogs (reported once), an unsubscribe and what follows it, a re-subscribe
    ending the previous row, a refused subscription dropping its early events, responses that cannot answer,
    body index fields recorded malformed, agent connections by URL and by request, int times."""
    b = CaptureBuilder()
    b.open("consumer", 0, url=CONSUMER_URL)
    b.open("agent", 0.5, url=AGENT_URL)
    b.c2s("consumer", 1, req("1", "cqm.SubscribeExConversations", {}))
    b.s2c("consumer", 2, conversation_note("s1"))  # before the answer: attached to the pending subscribe
    b.s2c("consumer", 3, resp("1", "cqm.SubscribeExConversationsResponse", 200, {"subscriptionId": "s1"}))
    b.s2c("consumer", 4, conversation_note("s1"))
    b.s2c("consumer", 5, conversation_note("zz\u00fc"))
    b.s2c("consumer", 6, conversation_note("zz\u00fc"))  # reported once
    b.c2s("consumer", 10, req("2", "cqm.UnsubscribeExConversations", {"subscriptionId": "s1"}))
    b.s2c("consumer", 11, resp("2", "StringResponse", 200))
    b.s2c("consumer", 12.5, conversation_note("s1"))
    b.s2c("consumer", 13, conversation_note("s1"))  # reported once
    b.c2s("consumer", 20, req("3", "ms.SubscribeMessagingEvents", {"dialogId": "d1", "fromSeq": 0}))
    b.s2c("consumer", 21, events("d1", "d1", None))  # history before the answer, one dialog counted once
    b.s2c("consumer", 22, resp("3", "GenericSubscribeResponse", 200))
    b.c2s("consumer", 25, req("4", "ms.SubscribeMessagingEvents", {"dialogId": "d1"}))
    b.s2c("consumer", 26, resp("4", "GenericSubscribeResponse", 200))  # ends the first d1 row
    b.c2s("consumer", 30, req("5", "ms.SubscribeMessagingEvents", {"dialogId": "d2"}))
    b.s2c("consumer", 31, events("d2"))
    b.s2c("consumer", 32, resp("5", "StringResponse", 404))  # refused: its row ends, its stream is gone
    b.s2c("consumer", 33, events("d2"))
    b.s2c("consumer", 33.5, events("d2"))
    b.c2s("consumer", 34, req("6", "cqm.SubscribeExConversations", {}))
    b.s2c("consumer", 35, resp("6", "GetClockResponse", 200, {"subscriptionId": "s6"}))  # cannot answer it
    b.s2c("consumer", 36, resp("6", "cqm.SubscribeExConversationsResponse", "200", {"subscriptionId": "s6"}))
    b.s2c("consumer", 40, {"kind": "notification", "type": "ms.OnlineEventDistribution",
                           "body": {"dialogId": "d1", "event": {"type": "ContentEvent"}}})
    b.c2s("consumer", 41, req("7", "ms.SubscribeMessagingEvents", {"dialogId": "d3"}))["dialogId"] = 5
    b.s2c("consumer", 42, resp("7", "GenericSubscribeResponse", 200))
    b.s2c("consumer", 43, events("d3"))["events"] = "recorded malformed"
    b.c2s("consumer", 44, req("8", "ms.SubscribeMessagingEvents", {"dialogId": "d1"}))
    b.s2c("consumer", 45, resp("8", "StringResponse", 500))  # refused: the d1 stream is another request's
    b.c2s("consumer", 46, req("9", "cqm.UnsubscribeExConversations", {"subscriptionId": "nope"}))
    b.s2c("consumer", 47, resp("9", "StringResponse", 200))
    b.c2s("consumer", 47.5, req("10", "SubscribeExConversations", {}))
    b.s2c("consumer", 48, resp("10", "GenericSubscribeResponse", 200))  # no subscriptionId: no stream
    b.c2s("consumer", 49, req("11", "cqm.SubscribeExConversations", {}))
    b.c2s("consumer", 49.25, req("11", "ms.SubscribeMessagingEvents", {"dialogId": "d4"}))  # the same id
    b.s2c("consumer", 49.5, resp("11", "GenericSubscribeResponse", 200, {"subscriptionId": "s11"}))  # the oldest
    b.s2c("consumer", 49.75, resp("11", "GenericSubscribeResponse", 200))
    b.close("consumer", 60)
    b.s2c("agent", 50, events("dx"))  # the brand side's implicit subscription
    b.c2s("agent", 51, req("1", ".ams.routing.SubscribeRoutingTasks", {}))
    b.s2c("agent", 52, resp("1", ".ams.GenericSubscribe$Response", 200, {"subscriptionId": "rt"}))
    b.s2c("agent", 53, {"kind": "notification", "type": ".ams.routing.RoutingTaskNotification",
                        "body": {"subscriptionId": "rt", "changes": []}})
    b.c2s("agent", 57, req("5", ".ams.routing.SubscribeRoutingTasks", {}))
    b.c2s("agent", 57.5, req("6", ".ams.aam.SubscribeAgentsState", {}))
    b.s2c("agent", 58, conversation_note("early"))  # two subscribes pending: the oldest takes it
    b.record({"rec": "msg", "t": 54, "conn": "bot", "n": 0, "dir": "c2s", "op": "text", "size": 1,  # no open
              "kind": "req", "id": "1", "type": ".ams.aam.SubscribeAgentsState"})
    b.s2c("bot", 55, events("dy"))  # an agent by its request
    b.s2c("bot", 56, conversation_note("as"))  # attached to the pending SubscribeAgentsState
    b.record({"rec": "msg", "t": 57, "conn": "bot2", "n": 0, "dir": "c2s", "op": "text", "size": 1,
              "kind": "req", "type": ".ams.userprofile.GetUserProfile"})  # an agent request without an id
    b.s2c("bot2", 58, events("dz"))
    path = tmp_path / "cases.jsonl"
    b.write(path)
    for analyzers in SETS:
        result = same([str(path)], analyzers)
    violations = [(v["rule"], v["severity"], v["conn"], v["t"], v["message"]) for v in result["violations"]
                  if v["rule"] in ("unknown-subscription", "notification-after-unsubscribe")]
    assert violations == [
        ("unknown-subscription", "warning", "consumer", 5,
         "notification for unknown subscription 'zz\\xfc' (reported once per connection)"),
        ("notification-after-unsubscribe", "warning", "consumer", 12.5,
         "notification for subscription 's1' 1.500 s after it was unsubscribed (reported once per subscription)"),
        ("unknown-subscription", "info", "consumer", 33,
         "messaging events for dialog 'd2' that was not subscribed on this connection (reported once per "
         "connection)")]
    rows = [(r["conn"], r["kind"], r["subscription_id"] or r["dialog_id"], r["t"], r["t_confirmed"],
             r["notifications"], r["after_unsubscribe"], r["rate_per_min"]) for r in result["tables"]["streams"]]
    assert rows == [
        ("consumer", "messaging-events", "d1", 20, 22, 1, 0, 15.0),  # ended by the re-subscribe
        ("consumer", "messaging-events", "d2", 30, None, 1, 0, 60.0),  # refused
        ("consumer", "conversations", "s1", 1, 3, 4, 2, 30.0),
        ("consumer", "conversations", "s11", 49, 49.5, 0, 0, 0.0),
        ("consumer", "messaging-events", "d1", 25, 26, 1, 0, 60 / 34),
        ("consumer", "messaging-events", "d3", 41, 42, 1, 0, 60 / 18),
        ("consumer", "messaging-events", "d4", 49.25, 49.75, 0, 0, 0.0),
        # Still open when the capture ended, at its latest time (60).
        ("agent", "routing-tasks", "rt", 51, 52, 1, 0, 7.5),
        ("agent", "routing-tasks", "early", 58, None, 1, 0, 30.0),
        ("agent", "messaging-events", "dx", 50, None, 1, 0, 6.0),
        ("bot", "agent-states", "as", 56, None, 1, 0, 15.0),
        ("bot", "messaging-events", "dy", 55, None, 1, 0, 12.0),
        ("bot2", "messaging-events", "dz", 58, None, 1, 0, 30.0)]
    s1 = result["tables"]["streams"][2]
    assert (s1["request_type"], s1["request_frame"], s1["first_notification_delay_ms"], s1["t_first"],
            s1["t_last"], s1["t_unsubscribed"], s1["unsubscribed"]) == (
        "cqm.SubscribeExConversations", 0, 1000.0, 2, 13, 11, True)


CONNS = st.sampled_from(["a", "b", "c"])
IDS = st.sampled_from(["1", "2", "3", None, 4])
SIDS = st.sampled_from(["s1", "s2", "s\u00e9", None, 7])
DIALOGS = st.sampled_from(["d1", "d2", "d\u3000", None, 3])
REQUEST_TYPES = st.sampled_from([
    "cqm.SubscribeExConversations", "SubscribeExConversations", "cqm.UnsubscribeExConversations",
    "ms.SubscribeMessagingEvents", ".ams.ms.SubscribeMessagingEvents", ".ams.routing.SubscribeRoutingTasks",
    ".ams.aam.SubscribeAgentsState", ".ams.cm.AgentRequestConversation", "xSubscribeExConversations",
    "ms.UnsubscribeMessagingEvents", "GetClock"])
RESPONSE_TYPES = st.sampled_from([
    "cqm.SubscribeExConversationsResponse", "SubscribeExConversations$Response", "GenericSubscribeResponse",
    ".ams.GenericSubscribe$Response", "StringResponse", "GetClockResponse", "x", None])
CODES = st.sampled_from([200, 200, 201, 400, 404, 500, None, "200", 399.5, 1, 1.0, True, 200.0])
NOTIFICATION_TYPES = st.sampled_from(["ms.MessagingEventNotification", ".ams.ms.MessagingEventNotification",
                                      "ms.OnlineEventDistribution", "cqm.ExConversationChangeNotification", "x"])
URLS = st.sampled_from([AGENT_URL, CONSUMER_URL, None, "ws://h/p?x=/messaging/brand/"])


@st.composite
def traffic(draw) -> list[dict]:
    """Records of subscription traffic, the clock moving on by int or float steps (now and then back)."""
    b, t = CaptureBuilder(), 0
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.integers(-1, 10) | st.floats(-1, 10, allow_nan=False))
        conn = draw(CONNS)
        what = draw(st.sampled_from(["open", "req", "req", "resp", "resp", "note", "note", "note", "close"]))
        if what == "open":
            b.open(conn, t, url=draw(URLS))
        elif what == "req":
            body = draw(st.fixed_dictionaries({}, optional={"subscriptionId": SIDS, "dialogId": DIALOGS}))
            rec = b.c2s(conn, t, req(draw(IDS), draw(REQUEST_TYPES), body))
            if draw(st.integers(0, 5)) == 0:
                rec["dialogId"] = draw(st.sampled_from([5, None, [], "d2"]))  # recorded malformed (or not)
        elif what == "resp":
            body = draw(st.fixed_dictionaries({}, optional={"subscriptionId": SIDS}))
            b.s2c(conn, t, resp(draw(IDS), draw(RESPONSE_TYPES), draw(CODES), body))
        elif what == "note":
            type_ = draw(NOTIFICATION_TYPES)
            changes = draw(st.lists(st.fixed_dictionaries({"dialogId": DIALOGS}), max_size=4))
            body = changes[0] if changes and "OnlineEventDistribution" in type_ else {"changes": changes}
            if draw(st.booleans()):
                body["subscriptionId"] = draw(SIDS)
            rec = b.s2c(conn, t, {"kind": "notification", "type": type_, "body": body})
            if draw(st.integers(0, 5)) == 0:
                rec["events"] = draw(st.sampled_from(["x", [["d1"]], [["d9", None, None, None, None, None, None,
                                                                        None]], None]))
        else:
            b.close(conn, t)
    return b.records


def check_traffic(records: list[dict]) -> None:
    builder = CaptureBuilder()
    builder.records = records
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traffic.jsonl"
        builder.write(path)
        for analyzers in SETS:
            same([str(path)], analyzers)


def check_damaged(files: list[tuple[str, bytes]]) -> None:
    with written(files) as paths:
        same(paths)


@fuzz_settings(DEFAULT_CASES)
@given(traffic())
def test_fuzz_traffic(records):
    check_traffic(records)


@fuzz_settings(DEFAULT_CASES // 2)
@given(capture_files())
def test_fuzz_damaged_captures(files):
    check_damaged(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(traffic())
def test_fuzz_traffic_soak(records):
    check_traffic(records)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_damaged_captures_soak(files):
    check_damaged(files)
