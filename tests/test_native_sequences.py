"""The native Sequences analyzer (core/src/sequences.rs) reading a capture and fed its records one at a time
(`test_native_engine.fed_engine`) gives the same answers exactly (its answers on fixed captures are the
retired Python analyzer's: tests/test_golden.py): the same violations in the same order (gaps, duplicates,
regressions, missing ACCEPTs from the READ, the deadline and the close, publishes after a close; dialog ids
quoted with ascii()), the same `sequences` rows (accept_ms / read_ms filled in when the message is done
with, in the same order), the same `messaging` stats. On the captures the tests ship, on generated captures,
on hand-built cases for every rule and branch, on a fuzz of messaging traffic (own echoes either way round,
history replay, agent and consumer connections, closes by request and by notification, malformed body index
fields, originators and sequences that Python compares with == across int, float and bool) and on damaged
captures."""

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
from test_native_engine import ROOT, SHIPPED, assert_same, capture_files
from test_native_engine import written as written_files
from test_reliability_load import soak_size

TABLES = ("sequences", "keepalive")
SETS = [("sequences",), ("keepalive", "sequences", "rings")]
AGENT_URL = "wss://127.0.0.1/ws_api/account/1/messaging/brand/[redacted sha256:0123456789ab]?v=2"
CONSUMER_URL = "wss://127.0.0.1/ws_api/account/1/messaging/consumer?v=3"
OWN_SUB = "abcdefabcdef"  # the `sub` fingerprint of the connection's token, as its redaction marker carries it
DEFAULT_CASES = 300
SOAK_CASES = soak_size(300, 10_000)


def same(paths: list[str], analyzers=("sequences",), config: Config | None = None) -> dict | str:
    return assert_same(paths, config, False, analyzers, TABLES)


def written(b: CaptureBuilder, tmp_path: Path, name: str = "cases.jsonl") -> str:
    path = tmp_path / name
    b.write(path)
    return str(path)


def change(seq, originator="agent-1", role="ASSIGNED_AGENT", dialog="d1", event_type="ContentEvent",
           stamp=None, conversation="c1") -> dict:
    entry = {"sequence": seq, "originatorId": originator, "dialogId": dialog, "conversationId": conversation,
             "event": {"type": event_type, "message": "hi", "contentType": "text/plain"}}
    if role is not None:
        entry["originatorMetadata"] = {"id": originator, "role": role}
    if stamp is not None:
        entry["serverTimestamp"] = stamp
    return entry


def events(*changes: dict) -> dict:
    return {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {"changes": list(changes)}}


def publish(id_, event: dict, dialog="d1", conversation="c1", type_="ms.PublishEvent") -> dict:
    return {"kind": "req", "id": id_, "type": type_,
            "body": {"dialogId": dialog, "conversationId": conversation, "event": event}}


def ack(id_, status, *sequences, dialog="d1") -> dict:
    return publish(id_, {"type": "AcceptStatusEvent", "status": status, "sequenceList": list(sequences)}, dialog)


def text(id_, dialog="d1", conversation="c1", event_type="ContentEvent") -> dict:
    return publish(id_, {"type": event_type, "message": "hello", "contentType": "text/plain"}, dialog, conversation)


def response(req_id, code=200, type_="ms.PublishEventResponse", **body) -> dict:
    return {"kind": "resp", "reqId": req_id, "code": code, "type": type_, "body": body}


def subscribe(id_, dialog="d1") -> dict:
    return {"kind": "req", "id": id_, "type": "ms.SubscribeMessagingEvents",
            "body": {"dialogId": dialog, "conversationId": "c1", "fromSeq": 0}}


def close_request(id_, conversation="c1", fields=None) -> dict:
    fields = fields or [{"field": "ConversationStateField", "conversationState": "CLOSE"}]
    return {"kind": "req", "id": id_, "type": "cm.UpdateConversationField",
            "body": {"conversationId": conversation, "conversationField": fields}}


def conversation_change(conversation="c2", state="CLOSE", stage=None, dialogs=()) -> dict:
    details = {"state": state, "dialogs": list(dialogs)}
    if stage is not None:
        details["stage"] = stage
    return {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
            "body": {"subscriptionId": "s", "changes": [
                {"type": "UPSERT", "result": {"convId": conversation, "conversationDetails": details}}]}}


def open_with_sub(b: CaptureBuilder, conn: str, t, url: str = CONSUMER_URL) -> None:
    rec = b.open(conn, t, url=url, token=None)
    rec["request_headers"].append(["Authorization", f"jwt [redacted sha256:0123456789ab sub:{OWN_SUB}]"])


@pytest.mark.parametrize("analyzers", SETS, ids="+".join)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path, analyzers):
    same([str(path)], analyzers)


def test_demo_and_generated_captures(tmp_path):
    result = same([str(ROOT / "notebooks/data/demo.jsonl.gz")], ("keepalive", "sequences", "rings"))
    assert len(result["tables"]["sequences"]) == result["stats"]["messaging"]["events"] > 0
    assert {"sequence-gap", "missing-accept"} <= {v["rule"] for v in result["violations"]}
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=5)
    result = same([str(sample)], ("sequences",))
    assert result["stats"]["messaging"]["accept_p50_ms"] is not None
    result = same([str(sample)], ("sequences",), Config(accept_timeout_s=0.1))  # every ACCEPT too late
    assert result["stats"]["messaging"]["accept_p50_ms"] is None
    assert any(v["rule"] == "missing-accept" for v in result["violations"])


def test_sequence_rules_and_acknowledgements(tmp_path):
    """Gaps (one missing, a range), a duplicate, a regression, an ACCEPT timed into the histogram, a READ
    without an ACCEPT (reported at the READ), no ACCEPT by the deadline, an accepted message whose READ
    never comes (its row finished by the READ wait), sequences acknowledged as 2.0 and true, a non-ASCII
    dialog id, int times."""
    b = CaptureBuilder()
    open_with_sub(b, "c", 0)
    b.c2s("c", 1, subscribe("s1"))
    b.s2c("c", 2, events(change(0), change(1)))
    b.c2s("c", 2.1, publish("t", {"type": "ChatStateEvent", "status": "ACCEPT", "sequenceList": [0]}))  # no ACCEPT
    b.c2s("c", 2.25, ack("a1", "ACCEPT", 0))
    b.c2s("c", 2.5, ack("a2", "READ", 0, 1))            # seq 1: READ without ACCEPT
    b.s2c("c", 3, events(change(3)))                    # gap: missing 2
    b.s2c("c", 4, events(change(3)))                    # duplicate
    b.s2c("c", 5, events(change(2)))                    # regression
    b.s2c("c", 6, events(change(7, dialog="dé"), change(8, dialog="dé"), change(12, dialog="dé")))  # range
    b.c2s("c", 7, ack("a3", "ACCEPT", 2.0, True, dialog="dé"))  # neither 7 nor 8: 2 and 1
    b.c2s("c", 7, ack("a4", "ACCEPT", 7.0, dialog="dé"))
    b.c2s("c", 8, ack("a5", "ACCEPT", 8, 8, dialog="dé"))
    b.c2s("c", 9, ack("a6", "READ", 8, dialog="dé"))
    b.s2c("c", 30, events(change(13, dialog="dé")))     # deadlines of 12 and 3 pass first
    b.s2c("c", 400, events(change(14, dialog="dé")))    # the READ wait of 7 passes
    b.close("c", 401)
    result = same([written(b, tmp_path)])
    found = [(v["rule"], v["t"], v["message"]) for v in result["violations"]]
    assert found[:4] == [
        ("missing-accept", 2.5, "READ published for sequence 1 of dialog 'd1' from agent-1 without an ACCEPT "
                                "before it"),
        ("sequence-gap", 3, "dialog 'd1': sequence 3 after 1 (missing 2): lost, or a message for agents only"),
        ("sequence-duplicate", 4, "dialog 'd1': sequence 3 delivered again"),
        ("sequence-regression", 5, "dialog 'd1': sequence 2 after 3")]
    assert ("sequence-gap", 6, "dialog 'd\\xe9': sequence 12 after 8 (missing 9-11): lost, or a message for agents "
            "only") in found
    assert ("missing-accept", 13.0, "no ACCEPT for sequence 3 of dialog 'd1' from agent-1 within 10 s") in found
    rows = result["tables"]["sequences"]
    assert [r["accept_ms"] for r in rows if r["dialog_id"] == "d1" and r["sequence"] == 0] == [250.0]
    messaging = result["stats"]["messaging"]
    assert (messaging["accepted"], messaging["read"]) == (3, 3)
    same([written(b, tmp_path)], config=Config(accept_timeout_s=300.0))  # one timer queue for both waits


def test_own_events_echoes_history_and_agents(tmp_path):
    """The client's own messages: by its token's sub, by role CONSUMER, by the echo of its publish (response
    first, or notification first); history replayed before the subscribe; an agent connection (by URL and by
    an agent request) acknowledged by READ alone, and its deadline message; an InitConnection token."""
    b = CaptureBuilder()
    open_with_sub(b, "c", 0)
    b.c2s("c", 0.5, subscribe("s1"))
    b.s2c("c", 1, events(change(0, originator=OWN_SUB, role=None),
                         change(1, originator="old", stamp=-5_000),   # history: before the subscribe
                         change(2, originator="me", role="CONSUMER")))
    b.c2s("c", 2, text("p1"))
    b.s2c("c", 2.5, response("p1", sequence=3))
    b.s2c("c", 3, events(change(3, originator="echo-id", role=None)))       # the echo: own from now on
    b.s2c("c", 4, events(change(4, originator="echo-id", role=None)))
    b.s2c("c", 5, events(change(5, originator=1, role=None)))
    b.c2s("c", 6, text("p2"))
    b.s2c("c", 6.5, response("p2", sequence=5))                             # notification first: 1 is own
    b.s2c("c", 7, events(change(6, originator=1.0, role=None), change(7, originator=True, role=None)))
    b.c2s("c", 8, text("p3", event_type="ChatStateEvent"))
    b.s2c("c", 8.5, response("p3", sequence=8))
    b.s2c("c", 9, events(change(8, originator="typing", role=None)))
    b.open("agent", 10, url=AGENT_URL)
    b.s2c("agent", 11, events(change(0, originator="consumer-1", role="CONSUMER", dialog="d9"),
                              change(1, originator="consumer-1", role="CONSUMER", dialog="d9")))
    b.c2s("agent", 12, ack("r1", "READ", 0, dialog="d9"))
    b.open("switch", 13, token=None)
    b.c2s("switch", 13.5, {"kind": "req", "id": "i", "type": "InitConnection", "headers": [
        {"type": ".ams.headers.ConsumerAuthentication", "jwt": "[redacted sha256:0123456789ab sub:123456123456]"}]})
    b.c2s("switch", 14, {"kind": "req", "id": "x", "type": ".ams.aam.SubscribeAgentsState", "body": {}})
    b.s2c("switch", 15, events(change(0, originator="123456123456", role=None, dialog="d8"),
                               change(1, originator="someone", role="CONSUMER", dialog="d8")))
    b.s2c("switch", 30, events(change(2, originator="someone", role="CONSUMER", dialog="d8")))
    b.close("agent", 31)
    result = same([written(b, tmp_path)])
    rows = {(r["conn"], r["dialog_id"], r["sequence"]): r for r in result["tables"]["sequences"]}
    assert [rows[("c", "d1", s)]["own"] for s in range(9)] == [True, False, True, True, True, False, True, True,
                                                               False]
    assert rows[("c", "d1", 1)]["history"] is True
    found = [v["message"] for v in result["violations"]]
    assert ("the agent acknowledged (ACCEPT or READ) no consumer message at sequence 1 of dialog 'd9' from "
            "consumer-1 within 10 s") in found
    assert not any("sequence 0 of dialog 'd8'" in m for m in found)



def test_closed_conversations_and_pending_at_close(tmp_path):
    """A conversation closed by request (answered 2xx; an error answer closes nothing), by dialog change, by
    notification (stage or state; OPEN reopens): publishing there is reported, a chat state is not; the
    messages still pending at a close or the capture's end are reported as info, for both sides."""
    b = CaptureBuilder()
    b.open("c", 0)
    b.c2s("c", 1, close_request("u1", "c1"))
    b.s2c("c", 2, response("u1", type_="StringResponse"))
    b.c2s("c", 3, close_request("u2", "c5"))
    b.s2c("c", 4, response("u2", code=400, type_="StringResponse"))
    b.c2s("c", 5, close_request("u3", "c6", [{"field": "DialogChange", "dialog": {"dialogId": "d6", "state": "CLOSE"}},
                                             {"field": "Stage", "conversationState": "OPEN"}, "junk"]))
    b.s2c("c", 6, response("u3", type_="StringResponse"))
    b.s2c("c", 7, conversation_change("c2", state="OPEN", stage="CLOSE", dialogs=[{"dialogId": "d2", "state": "CLOSE"}]))
    b.s2c("c", 8, conversation_change("c3", state="CLOSE"))
    b.s2c("c", 9, conversation_change("c3", state="OPEN"))
    b.c2s("c", 10, text("p1", "c1", "c1"))  # the conversation's id is its main dialog's
    b.c2s("c", 11, text("p2", "dx", "c2"))
    b.c2s("c", 12, text("p3", "d6", "c6"))
    b.c2s("c", 13, text("p4", "d3", "c3"))
    b.c2s("c", 14, text("p5", "d5", "c5"))
    b.c2s("c", 15, text("p6", "d1", "c1", event_type="ChatStateEvent"))
    b.s2c("c", 16, events(change(0, dialog="d1")))
    b.close("c", 17.25)
    b.open("agent", 18, url=AGENT_URL)
    b.s2c("agent", 19, events(change(0, originator="consumer-1", role="CONSUMER", dialog="d9")))
    b.open("end", 20)
    b.s2c("end", 21, events(change(0, dialog="d7")))
    result = same([written(b, tmp_path)])
    found = [(v["rule"], v["severity"], v["message"]) for v in result["violations"]]
    assert found == [
        ("publish-after-close", "warning", "ContentEvent published to dialog 'c1' closed 8.0 s earlier"),
        ("publish-after-close", "warning", "ContentEvent published to conversation 'c2' closed 4.0 s earlier"),
        ("publish-after-close", "warning", "ContentEvent published to dialog 'd6' closed 6.0 s earlier"),
        ("missing-accept", "info", "the connection closed 1.2 s after sequence 0 of dialog 'd1' arrived, before "
                                   "any ACCEPT"),
        ("missing-accept", "info", "the capture ended 2.0 s after the consumer message at sequence 0 of dialog "
                                   "'d9' arrived, before the agent's ACCEPT or READ"),
        ("missing-accept", "info", "the capture ended 0.0 s after sequence 0 of dialog 'd7' arrived, before any "
                                   "ACCEPT")]


def test_reopened_connection_and_late_reads(tmp_path):
    """A connection id opened again after its close: the old connection's deadlines find it closed; an
    accepted message READ after the deadline, and one replaced in the awaited list by its duplicate."""
    b = CaptureBuilder()
    b.open("c", 0)
    b.s2c("c", 1, events(change(0), change(1)))
    b.c2s("c", 1.5, ack("a", "ACCEPT", 1))
    b.s2c("c", 2, events(change(1)))                 # duplicate, awaited again
    b.close("c", 3)
    b.open("c", 4)
    b.s2c("c", 5, events(change(0, dialog="d2")))
    b.c2s("c", 40, ack("r", "READ", 0, dialog="d2"))
    b.s2c("c", 400, events(change(1, dialog="d2")))
    result = same([written(b, tmp_path)])
    # (the first sequence 1, replaced by its duplicate, is never finished: its deadline finds the connection closed)
    assert [(r["dialog_id"], r["sequence"]) for r in result["tables"]["sequences"]] == [
        ("d1", 0), ("d1", 1), ("d2", 0), ("d2", 1)]


# -- fuzz ------------------------------------------------------------------------------------------

CONNS = st.sampled_from(["a", "b"])
DIALOGS = st.sampled_from(["d1", "d1", "d2", "dé", None, 5])
CONVERSATIONS = st.sampled_from(["c1", "c2", None, 3])
SEQS = st.integers(0, 6) | st.sampled_from([None, 2.0, True, "1", 2**64 - 1, -1])
# Mostly ids seen once (another participant's), now and then one the client may be told is its own.
ORIGINATORS = st.integers(0, 10**6).map(lambda n: f"agent-{n}") | st.sampled_from(
    ["me", OWN_SUB, 1, 1.0, True, None, "x\u00e9"])
ROLES = st.sampled_from([None, "CONSUMER", "ASSIGNED_AGENT", "ASSIGNED_AGENT", 0])
EVENT_TYPES = st.sampled_from(["ContentEvent", "ContentEvent", "ContentEvent", "RichContentEvent", "AcceptStatusEvent",
                               "ChatStateEvent", None, 1])
STAMPS = st.sampled_from([None, 0, -10_000, 1_000, True, 1.5e3, "5", 2**63])
CODES = st.sampled_from([200, 200, 201, 400, 500, None, "200", 200.0, True])
RESPONSE_TYPES = st.sampled_from(["ms.PublishEventResponse", "StringResponse", "GenericSubscribeResponse",
                                  "GetClockResponse", None, "Other"])
IDS = st.sampled_from(["1", "2", "3", None])
STATES = st.sampled_from(["CLOSE", "OPEN", None, "", 0])


def fuzz_change(draw) -> dict:
    entry = {"sequence": draw(SEQS), "dialogId": draw(DIALOGS), "conversationId": draw(CONVERSATIONS),
             "originatorId": draw(ORIGINATORS), "event": {"type": draw(EVENT_TYPES),
                                                          "status": draw(st.sampled_from(["ACCEPT", "READ", None]))},
             "originatorMetadata": {"role": draw(ROLES)}, "serverTimestamp": draw(STAMPS)}
    return {k: v for k, v in entry.items() if v is not None or draw(st.booleans())}


@st.composite
def traffic(draw) -> list[dict]:
    """Records of messaging traffic, the clock moving on by int or float steps (now and then back)."""
    b, t, recent = CaptureBuilder(), 0, []
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.integers(-1, 4) | st.floats(-1, 4, allow_nan=False) | st.sampled_from([300, 320]))
        conn = draw(CONNS)
        what = draw(st.sampled_from(["open", "events", "events", "events", "ack", "ack", "publish", "response",
                                     "response", "subscribe", "close-request", "conversation", "agent", "init",
                                     "close"]))
        if what == "open":
            if draw(st.booleans()):
                open_with_sub(b, conn, t, draw(st.sampled_from([CONSUMER_URL, AGENT_URL])))
            else:
                b.open(conn, t, url=draw(st.sampled_from([CONSUMER_URL, AGENT_URL, "ws://h/p"])))
            continue
        if what == "close":
            b.close(conn, t, by=draw(st.sampled_from(["client", "server"])))
            continue
        if what == "events":
            changes = [fuzz_change(draw) for _ in range(draw(st.integers(0, 3)))]
            recent += [(conn, c.get("dialogId"), c.get("sequence")) for c in changes]
            payload = events(*changes)
            if draw(st.integers(0, 5)) == 0:
                payload = {**payload, "type": "ms.OnlineEventDistribution", "body": fuzz_change(draw)}
        elif what == "ack":
            dialog, sequences = draw(DIALOGS), draw(st.lists(SEQS, max_size=3) | SEQS)
            if recent and draw(st.integers(0, 3)):  # mostly an event delivered on this connection
                conn, dialog, seq = draw(st.sampled_from(recent))
                sequences = [seq, *draw(st.lists(SEQS, max_size=1))]
            payload = publish(draw(IDS), {"type": draw(st.sampled_from(["AcceptStatusEvent"] * 5 + ["ChatStateEvent"])),
                                          "status": draw(st.sampled_from(["ACCEPT", "READ", "ACCEPT", "READ", None])),
                                          "sequenceList": sequences}, dialog, draw(CONVERSATIONS))
        elif what == "publish":
            payload = text(draw(IDS), draw(DIALOGS), draw(CONVERSATIONS), draw(EVENT_TYPES))
        elif what == "response":
            body = {"sequence": draw(SEQS)} if draw(st.integers(0, 3)) else draw(st.sampled_from([None, "x"]))
            payload = {"kind": "resp", "reqId": draw(IDS), "code": draw(CODES), "type": draw(RESPONSE_TYPES),
                       "body": body}
        elif what == "subscribe":
            payload = subscribe(draw(IDS), draw(DIALOGS))
        elif what == "close-request":
            field = draw(st.sampled_from(["ConversationStateField", "Stage", "DialogChange", "Other"]))
            item = {"field": field, "conversationState": draw(STATES),
                    "dialog": draw(st.sampled_from([{"dialogId": "d1", "state": "CLOSE"},
                                                    {"dialogId": 4, "state": "CLOSE"}, {"state": "OPEN"}, "x"]))}
            payload = close_request(draw(IDS), draw(CONVERSATIONS), draw(st.sampled_from([[item], item, [item, 1]])))
        elif what == "conversation":
            payload = conversation_change(draw(st.sampled_from(["c1", "c2", 3])), draw(STATES), draw(STATES),
                                          draw(st.lists(st.fixed_dictionaries({"dialogId": DIALOGS,
                                                                               "state": STATES}), max_size=2)))
            if draw(st.integers(0, 4)) == 0:
                payload["body"]["changes"].append(draw(st.sampled_from(["x", {"type": "DELETE"}, {"type": "UPSERT"}])))
        elif what == "agent":
            payload = {"kind": "req", "id": draw(IDS), "type": ".ams.routing.UpdateRingState", "body": {}}
        else:
            payload = {"kind": "req", "id": draw(IDS), "type": "InitConnection", "headers": [
                {"type": ".ams.headers.ConsumerAuthentication",
                 "jwt": draw(st.sampled_from([f"[redacted sha256:0123456789ab sub:{OWN_SUB}]", 5, "x"]))}]}
        rec = b.msg(conn, t, payload, from_client=what not in ("events", "response", "conversation"))
        if draw(st.integers(0, 6)) == 0:  # a hand-made or damaged capture: body index fields malformed
            key = draw(st.sampled_from(["dialogId", "conversationId", "sequence", "event", "events"]))
            rec[key] = draw(st.sampled_from([5, "x", [1, 2, 3], [["d1", None, 1, "ContentEvent", None, "o", None, 0]],
                                             ["ContentEvent", None, [1]], None, {"a": 1}]))
    return b.records


def check_traffic(records: list[dict], config: Config, analyzers=("sequences",)) -> None:
    builder = CaptureBuilder()
    builder.records = records
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traffic.jsonl"
        builder.write(path)
        same([str(path)], analyzers, config)


def check_damaged(files: list[tuple[str, bytes]]) -> None:
    with written_files(files) as paths:
        same(paths, ("keepalive", "sequences", "rings"))


CONFIGS = st.sampled_from([Config(), Config(accept_timeout_s=2.5), Config(accept_timeout_s=300.0)])
ANALYZER_SETS = st.sampled_from(SETS)


@fuzz_settings(DEFAULT_CASES)
@given(traffic(), CONFIGS, ANALYZER_SETS)
def test_fuzz_traffic(records, config, analyzers):
    check_traffic(records, config, analyzers)


@fuzz_settings(DEFAULT_CASES // 2)
@given(capture_files())
def test_fuzz_damaged_captures(files):
    check_damaged(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(traffic(), CONFIGS, ANALYZER_SETS)
def test_fuzz_traffic_soak(records, config, analyzers):
    check_traffic(records, config, analyzers)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_damaged_captures_soak(files):
    check_damaged(files)
