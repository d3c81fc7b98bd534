"""The body index fields (docs/capture-format.md): the analysis gives the same results whether a
capture carries them (recorders since they exist) or not (older captures: the analysis parses the
payloads instead)."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

import analysis
from analysis.capture import dumps, message_record
from analysis.frame import BODY_INDEX_FIELDS
from analysis.synth import CaptureBuilder
from conftest import DATA, REPO

FIXTURES = [json.loads(line) for line in (DATA / "documented_frames.jsonl").read_text().splitlines()]
TABLES_COMPARED = ("frames", "pairs", "streams", "sequences", "keepalive", "connections", "reconnects", "violations")


def without_body_index(src, dst) -> int:
    """Copy a capture leaving out the body index fields; how many records had some."""
    stripped = 0
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            rec = orjson.loads(line)
            removed = [rec.pop(key) for key in BODY_INDEX_FIELDS if key in rec]
            stripped += bool(removed)
            out.write(dumps(rec))
    return stripped


def assert_same_analysis(with_fields, without_fields) -> None:
    summary, _ = analysis.analyze(str(with_fields))
    older, _ = analysis.analyze(str(without_fields))
    summary["capture"].pop("files"), older["capture"].pop("files")
    assert summary == older
    new, old = analysis.load(str(with_fields)), analysis.load(str(without_fields))
    for table in TABLES_COMPARED:
        a, b = getattr(new, table), getattr(old, table)
        assert a.equals(b), table


def test_synthetic_capture_same_summary_with_and_without_body_index(tmp_path):
    capture, older = tmp_path / "capture.jsonl", tmp_path / "older.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_capture.py"), str(capture), "--frames", "30000"],
                   check=True, timeout=60)
    assert without_body_index(capture, older) > 10_000  # the fields are there, and now gone
    summary, _ = analysis.analyze(str(capture))
    # The capture exercises what the fields feed: messaging events, acknowledgements, publishes, closes.
    assert summary["messaging"]["events"] > 5000 and summary["messaging"]["accepted"] > 1000
    assert summary["requests"]["error_responses"] > 0 and summary["violations_total"] > 0
    assert_same_analysis(capture, older)


def test_generator_without_body_index_writes_what_older_recorders_wrote(tmp_path):
    capture, older = tmp_path / "capture.jsonl", tmp_path / "older.jsonl"
    for path, extra in ((capture, []), (older, ["--no-body-index"])):
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_capture.py"), str(path), "--frames", "2000",
                        *extra], check=True, timeout=60)
    stripped = tmp_path / "stripped.jsonl"
    without_body_index(capture, stripped)
    assert stripped.read_bytes() == older.read_bytes()


def documented_conversation(b: CaptureBuilder) -> None:
    """Every documented frame of the catalog fixtures (all variants of §12), requests from the
    client, the rest from the server, then a conversation closed and published to afterwards."""
    t = 1_795_544_100.0
    b.open("c1", t, token="token-1")
    for i, item in enumerate(FIXTURES):
        from_client = item["group"] == "requests"
        b.msg("c1", t + i * 0.01, item["frame"], from_client=from_client)
    b.c2s("c1", t + 1, {"kind": "req", "id": "sub-9", "type": "ms.SubscribeMessagingEvents",
                        "body": {"dialogId": "d9", "fromSeq": 0}})
    b.s2c("c1", t + 1.01, {"kind": "resp", "reqId": "sub-9", "code": 200, "type": "GenericSubscribeResponse"})
    b.s2c("c1", t + 1.1, {"kind": "notification", "type": "ms.OnlineEventDistribution", "body": {
        "sequence": 1, "originatorPId": "agent-9", "dialogId": "d9", "serverTimestamp": 1_795_544_101_100,
        "event": {"type": "ContentEvent", "message": "hi", "contentType": "text/plain"}}})
    b.c2s("c1", t + 1.2, {"kind": "req", "id": "acc-9", "type": ".ams.ms.PublishEvent", "body": {
        "dialogId": "d9", "event": {"type": "AcceptStatusEvent", "status": "ACCEPT", "sequenceList": 1}}})
    b.c2s("c1", t + 1.3, {"kind": "req", "id": "close-9", "type": "cm.UpdateConversationField", "body": {
        "conversationId": "d9", "conversationField": {"field": "ConversationStateField", "conversationState": "CLOSE"}}})
    b.s2c("c1", t + 1.31, {"kind": "resp", "reqId": "close-9", "code": 200, "type": "cm.UpdateConversationFieldResponse"})
    b.c2s("c1", t + 1.4, {"kind": "req", "id": "late-9", "type": "ms.PublishEvent", "body": {
        "dialogId": "d9", "conversationId": "d9", "event": {"type": "ContentEvent", "message": "still there?"}}})
    b.s2c("c1", t + 1.5, {"kind": "notification", "type": "ms.MessagingEventNotification",
                          "body": {"changes": [{"sequence": 2, "dialogId": "d9", "originatorId": {"odd": True},
                                                "event": []}, "not a change"]}})
    b.close("c1", t + 2, 1000, "bye", "client")


def test_documented_frames_same_analysis_with_and_without_body_index(tmp_path):
    b = CaptureBuilder()
    documented_conversation(b)
    capture, older = tmp_path / "capture.jsonl", tmp_path / "older.jsonl"
    b.write(capture)
    without_body_index(capture, older)
    summary, _ = analysis.analyze(str(capture))
    rules = set(summary["violation_counts"])
    assert {"publish-after-close", "missing-accept"} & rules  # the scenario reaches the lifted fields' rules
    assert_same_analysis(capture, older)


@pytest.mark.parametrize("payload, lifted", [
    ({"kind": "req", "id": "1", "type": "ms.PublishEvent", "body": {
        "dialogId": "d1", "conversationId": "c1", "event": {"type": "AcceptStatusEvent", "status": "READ",
                                                            "sequenceList": 4}}},
     {"dialogId": "d1", "conversationId": "c1", "event": ["AcceptStatusEvent", "READ", [4]]}),
    ({"kind": "resp", "reqId": "1", "code": 200, "type": "ms.PublishEventResponse", "body": {"sequence": 7}},
     {"sequence": 7}),
    ({"kind": "notification", "type": "ms.MessagingEventNotification", "body": {"changes": {
        "sequence": 3, "dialogId": "d1", "conversationId": "c1", "originatorId": "a1", "serverTimestamp": 5,
        "originatorMetadata": {"role": "ASSIGNED_AGENT"}, "event": {"type": "ChatStateEvent", "chatState": "COMPOSING"}}}},
     {"events": [["d1", "c1", 3, "ChatStateEvent", "COMPOSING", "a1", "ASSIGNED_AGENT", 5]]}),
    ({"kind": "notification", "type": "ms.OnlineEventDistribution", "body": {
        "sequence": 1, "dialogId": "d2", "originatorPId": "p1", "event": {"type": "ContentEvent"}}},
     {"events": [["d2", None, 1, "ContentEvent", None, "p1", None, None]], "dialogId": "d2", "sequence": 1}),
    ({"kind": "notification", "type": "ms.MessagingEventNotification"}, {"events": []}),
    ({"kind": "req", "id": "2", "type": "GetClock"}, {}),
])
def test_message_record_lifts_the_documented_body_fields(payload, lifted):
    rec = message_record("c1", 1.0, 0, True, True, orjson.dumps(payload))
    assert {key: rec[key] for key in BODY_INDEX_FIELDS if key in rec} == lifted


@pytest.mark.parametrize("bad", [
    {"events": [["d9", None, "1", "ContentEvent", None, "agent-9", None, None]]},
    {"events": [[{"d": 1}, None, 1, "ContentEvent", None, "agent-9", None, None]]},
    {"events": [["d9", None, 1, ["ContentEvent"], None, {"id": 1}, None, None]]},
    {"events": [["d9"]]}, {"events": "d9"}, {"events": [None]},
    {"event": ["AcceptStatusEvent", "ACCEPT"]}, {"event": ["AcceptStatusEvent", "ACCEPT", [{"seq": 1}]]},
    {"event": {"type": "AcceptStatusEvent"}}, {"dialogId": ["d9"]}, {"conversationId": {"id": "d9"}},
    {"sequence": "7"}, {"sequence": True},
])
def test_malformed_body_index_fields_are_replaced_by_the_payloads(tmp_path, bad):
    """A damaged or hand-made capture may carry the fields with other shapes: the analysis then
    uses the payload, as for a capture without them (no crash, same results)."""
    b = CaptureBuilder()
    documented_conversation(b)
    capture, damaged, older = tmp_path / "capture.jsonl", tmp_path / "damaged.jsonl", tmp_path / "older.jsonl"
    b.write(capture)
    without_body_index(capture, older)
    with open(capture, "rb") as f, open(damaged, "wb") as out:
        for line in f:
            rec = orjson.loads(line)
            if rec.get("rec") == "msg" and any(key in rec for key in bad):
                rec.update(bad)
            out.write(dumps(rec))
    assert_same_analysis(damaged, older)
