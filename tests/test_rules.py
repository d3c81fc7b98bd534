"""Every violation rule: a capture that triggers it and one that must not (LivePerson's documented
example frames, tests/data/documented_frames.jsonl)."""

from __future__ import annotations

import copy
import json

import pytest

from analysis import Config, Engine, LiveChecker, RULES
from analysis.synth import CaptureBuilder
from conftest import DATA
from page_session import Tables

FIXTURES = [json.loads(line) for line in (DATA / "documented_frames.jsonl").read_text().splitlines()]


def fixture(source: str, type_: str | None = None, **changes) -> dict:
    """A documented frame (by source text and type), copied, with top-level keys changed."""
    for item in FIXTURES:
        frame = item["frame"]
        if source in item["source"] and (type_ is None or frame.get("type") == type_):
            return {**copy.deepcopy(frame), **changes}
    raise LookupError(source)


GET_CLOCK = fixture("D-PO keep-alive")                                     # id "1", ".GetClock"
SUBSCRIBE = fixture("D-TUT conversation-metadata.md", "cqm.SubscribeExConversations")  # id "33"
SUBSCRIBED = fixture("D-TUT conversation-metadata.md", "cqm.SubscribeExConversationsResponse", reqId="33")
SID = SUBSCRIBED["body"]["subscriptionId"]
CQM_NOTIFICATION = fixture("D-TUT conversation-metadata.md (participantsPId", body={"subscriptionId": SID,
                                                                                     "changes": []})
UNSUBSCRIBE = fixture("D-REF unsubscribe", body={"subscriptionId": SID}, id="40", kind="req")
STRING_OK = fixture("D-TUT post-conversation-survey-pcs.md", "StringResponse", reqId="40")
AGENT_MESSAGE = fixture("D-TUT get-messages.md", "ms.MessagingEventNotification")  # sequence 0 from an agent
DIALOG = AGENT_MESSAGE["body"]["changes"][0]["dialogId"]
SUBSCRIBE_EVENTS = fixture("D-TUT get-messages.md", "ms.SubscribeMessagingEvents")  # id "22", fromSeq 0
SUBSCRIBED_EVENTS = fixture("D-TUT get-messages.md", ".ams.GenericSubscribeResponse")  # reqId "22"
ACCEPT = fixture("D-TUT read-and-accept-events.md")                      # id 2, ACCEPT sequenceList [3]
PUBLISH_TEXT = fixture("D-GS", "ms.PublishEvent")                         # id 2
PUBLISHED = fixture("D-TUT post-conversation-survey-pcs.md", "ms.PublishEventResponse")  # reqId "4", sequence 4
TYPING = fixture("typing (no sequence")
CLOSE_CONVERSATION = fixture("D-REF close-conversation.md")              # id "0", conversationId "id"


def event(sequence: int | None, originator: str = "agent-1", role: str = "ASSIGNED_AGENT", dialog: str = DIALOG,
          event_type: str = "ContentEvent", **extra) -> dict:
    """A messaging notification shaped like the get-messages fixture."""
    frame = copy.deepcopy(AGENT_MESSAGE)
    change = frame["body"]["changes"][0]
    change.update(originatorId=originator, originatorMetadata={"id": originator, "role": role}, dialogId=dialog,
                  **extra)
    if sequence is None:
        del change["sequence"]
    else:
        change["sequence"] = sequence
    if event_type != "ContentEvent":
        change["event"] = {"type": event_type, "chatState": "COMPOSING"}
    return frame


def accept(seq, req_id: str, status: str = "ACCEPT", dialog: str = DIALOG) -> dict:
    frame = copy.deepcopy(ACCEPT)
    frame["id"] = req_id
    frame["body"]["dialogId"] = dialog
    frame["body"]["event"].update(status=status, sequenceList=seq)
    return frame


def response(req_id: str, code=200, type_: str = "StringResponse", **extra) -> dict:
    return {"kind": "resp", "reqId": req_id, "code": code, "type": type_, **extra}


def run(b: CaptureBuilder, **config) -> list:
    found = []
    engine = Engine(Config(**config), on_violation=found.append)
    for rec in b.records[1:]:
        engine.feed(rec)
    engine.finish()
    return found


def rules(b: CaptureBuilder, **config) -> list[str]:
    return [v.rule for v in run(b, **config)]


def session(token: str | None = "tok") -> CaptureBuilder:
    b = CaptureBuilder()
    b.open("c", 0.0, token=token)
    return b


def subscribed_to_events(b: CaptureBuilder, t: float = 0.1) -> None:
    b.c2s("c", t, SUBSCRIBE_EVENTS)
    b.s2c("c", t + 0.01, SUBSCRIBED_EVENTS)


def test_every_rule_has_a_test_here():
    source = open(__file__).read()
    assert [rule for rule in RULES if f"def test_{rule.replace('-', '_')}" not in source] == []


def test_invalid_json():
    b = session()
    b.c2s("c", 1, "{not json")
    b.c2s("c", 2, "[1, 2]")
    b.c2s("c", 3, GET_CLOCK)
    b.s2c("c", 3.1, response("1"))
    found = run(b)
    assert [(v.rule, v.frame) for v in found] == [("invalid-json", 0), ("invalid-json", 1)]
    assert "array" in found[1].message


def test_binary_frame():
    b = session()
    b.c2s("c", 1, b"\x00\x01", binary=True)
    b.c2s("c", 2, GET_CLOCK)
    b.s2c("c", 2.1, response("1"))
    assert rules(b) == ["binary-frame"]


def test_missing_kind():
    b = session()
    b.c2s("c", 1, fixture("D-REF close-conversationttr.md"))      # documented request without kind: info
    b.s2c("c", 1.1, {"reqId": "0", "code": 200, "type": "StringResponse"})  # server response without kind
    b.c2s("c", 2, {"type": "GetClock"})                           # no kind and no id
    found = [(v.rule, v.severity) for v in run(b)]
    assert found == [("missing-kind", "info"), ("missing-kind", "warning"), ("missing-kind", "warning"),
                     ("request-without-id", "error")]


def test_missing_kind_not_reported_with_kind():
    b = session()
    b.c2s("c", 1, GET_CLOCK)
    b.s2c("c", 1.1, response("1"))
    assert rules(b) == []


def test_unknown_kind():
    b = session()
    b.c2s("c", 1, {**GET_CLOCK, "kind": "request"})
    b.c2s("c", 2, {"kind": 5})
    b.c2s("c", 3, {**GET_CLOCK, "id": "2"})
    b.s2c("c", 3.1, response("2"))
    assert rules(b) == ["unknown-kind", "unknown-kind"]


def test_missing_type():
    b = session()
    b.c2s("c", 1, {"kind": "req", "id": "1"})
    b.s2c("c", 1.1, {"kind": "resp", "reqId": "1", "code": 200})
    assert [(v.rule, v.severity) for v in run(b)] == [("missing-type", "error"), ("missing-type", "warning")]


def test_request_without_id():
    b = session()
    b.c2s("c", 1, {"kind": "req", "type": "GetClock"})
    b.c2s("c", 2, {"kind": "req", "type": "GetClock", "id": ""})
    b.c2s("c", 3, fixture("D-GS getting-started.md"))  # numeric id 1 is an id
    b.s2c("c", 3.1, fixture("D-GS (request id was numeric 1)"))
    assert rules(b) == ["request-without-id", "request-without-id"]


def test_duplicate_request_id():
    b = session()
    b.c2s("c", 1, GET_CLOCK)
    b.c2s("c", 2, GET_CLOCK)
    b.s2c("c", 2.1, response("1"))
    b.s2c("c", 2.2, response("1"))
    assert rules(b) == ["duplicate-request-id"]  # both answered: no orphan, no unanswered


def test_reused_request_id():
    b = session()
    for t in (1, 2, 3):  # MWS sends every GetClock with id 1: reported once
        b.c2s("c", t, GET_CLOCK)
        b.s2c("c", t + 0.1, response("1"))
    assert [(v.rule, v.severity) for v in run(b)] == [("reused-request-id", "info")]


def test_reused_request_id_is_found_among_the_last_10000_answered_ids():
    b = session()
    for i in range(13_000):  # past the batch trim at 12,500
        b.c2s("c", 1 + i * 0.001, {**GET_CLOCK, "id": f"r{i}"})
        b.s2c("c", 1 + i * 0.001, response(f"r{i}"))
    b.c2s("c", 20, {**GET_CLOCK, "id": "r3000"})  # answered 10,000 requests ago
    b.s2c("c", 20.1, response("r3000"))
    assert rules(b) == ["reused-request-id"]


def test_orphan_response():
    b = session()
    b.s2c("c", 1, response("99"))
    b.c2s("c", 2, GET_CLOCK)
    b.s2c("c", 2.1, response("1"))
    b.s2c("c", 2.2, response("1"))  # answered twice
    found = run(b)
    assert [v.rule for v in found] == ["orphan-response", "orphan-response"]
    assert "never sent" in found[0].message and "second time" in found[1].message


def test_response_type_mismatch():
    b = session()
    b.c2s("c", 1, SUBSCRIBE_EVENTS)                                                 # id "22"
    b.s2c("c", 1.1, response("22", type_="ms.PublishEventResponse", body={"sequence": 1}))
    b.s2c("c", 1.2, SUBSCRIBED_EVENTS)                                              # the real answer
    found = run(b)
    assert [(v.rule, v.severity, v.frame) for v in found] == [("response-type-mismatch", "warning", 1)]
    assert "ms.PublishEventResponse (reqId '22') cannot answer request 0 (ms.SubscribeMessagingEvents)" in \
        found[0].message


def test_response_type_mismatch_not_reported_for_documented_variants_and_generic_types():
    b = session()
    answers = [(SUBSCRIBE_EVENTS, ".ams.GenericSubscribeResponse"), (SUBSCRIBE_EVENTS, "GenericSubscribeResponse"),
               (SUBSCRIBE, "cqm.SubscribeExConversationsResponse"), (GET_CLOCK, ".GetClock$Response"),
               (GET_CLOCK, "GetClockResponse"), (GET_CLOCK, "StringResponse"), (CLOSE_CONVERSATION, "StringResponse"),
               (CLOSE_CONVERSATION, ".ReqBody$StringResp"), (UNSUBSCRIBE, "StringResponse"),
               (PUBLISH_TEXT, ".ams.ms.PublishEvent$Response"), (PUBLISH_TEXT, "SomeUndocumentedResponse"),
               ({**PUBLISH_TEXT, "type": ".ams.ms.PublishEvent"}, "ms.PublishEventResponse"),
               ({"kind": "req", "id": "u", "type": "ms.GenerateURLForUploadFile"}, "ms.BaseGenerateURLResponse"),
               ({"kind": "req", "id": "u", "type": "routing.SubscribeRoutingTasks"}, ".ams.GenericSubscribe$Response"),
               ({"kind": "req", "id": "u", "type": "userprofile.SetUserProfile"}, "StringResponse")]
    for i, (request, type_) in enumerate(answers):
        b.c2s("c", i + 1, {**request, "id": f"r{i}"})
        b.s2c("c", i + 1.1, {"kind": "resp", "reqId": f"r{i}", "code": 200, "type": type_})
    b.c2s("c", 50, {**PUBLISH_TEXT, "id": "e"})
    b.s2c("c", 50.1, response("e", 400, body="Bad Request"))  # an error comes as a string response to anything
    assert rules(b) == []


def test_pairing_by_response_type_with_a_reused_id():
    """LivePerson's post-conversation-survey tutorial reuses id 2 for a subscription, a chat state
    publish and a dialog close: each response answers the request its type names."""
    b = session()
    b.c2s("c", 1, {**SUBSCRIBE_EVENTS, "id": "2"})                    # answered later
    chat_state = fixture("D-TUT post-conversation-survey-pcs.md", "ms.PublishEvent", id="2")
    b.c2s("c", 2, chat_state)
    b.s2c("c", 2.1, response("2", type_="ms.PublishEventResponse", body={"sequence": 0}))
    b.c2s("c", 3, fixture("D-TUT post-conversation-survey-pcs.md", "cm.UpdateConversationField", id="2"))
    b.s2c("c", 3.1, response("2"))                                    # StringResponse: the close
    b.s2c("c", 4, {**SUBSCRIBED_EVENTS, "reqId": "2"})
    pairs = []
    engine = Engine(Config(), sink=_Table("pairs", pairs), on_violation=(found := []).append)
    for rec in b.records[1:]:
        engine.feed(rec)
    engine.finish()
    assert [(v.rule, v.frame) for v in found] == [("duplicate-request-id", 1), ("duplicate-request-id", 3)]
    assert all("request 0 (ms.SubscribeMessagingEvents)" in v.message for v in found)
    assert [(p["type"], p["response_type"], round(p["latency_ms"])) for p in pairs] == [
        ("ms.PublishEvent", "ms.PublishEventResponse", 100), ("cm.UpdateConversationField", "StringResponse", 100),
        ("ms.SubscribeMessagingEvents", ".ams.GenericSubscribeResponse", 3000)]


class _Table:
    """A sink keeping the rows of one table."""

    def __init__(self, table: str, rows: list):
        self.table, self.kept = table, rows

    def adder(self, table: str):
        return self.kept.append if table == self.table else None


def test_numeric_ids_pair_with_string_req_ids():
    b = session()
    for t, id_ in ((1, 0), (2, 1)):                                   # a public client counts from 0
        b.c2s("c", t, {"kind": "req", "id": id_, "type": "GetClock"})
        b.s2c("c", t + 0.1, {"kind": "resp", "reqId": str(id_), "code": 200, "type": "GetClockResponse"})
    assert rules(b) == []


def test_capitalised_jwt_scheme_is_an_authorization_header():
    b = CaptureBuilder()
    b.open("c", 0.0, token=None)["request_headers"].append(["Authorization", "JWT [redacted sha256:0123456789ab]"])
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, SUBSCRIBED)
    assert rules(b) == []


def test_unanswered_request():
    b = session()
    b.c2s("c", 1, GET_CLOCK)
    b.c2s("c", 31.5, {**GET_CLOCK, "id": "2"})   # the capture's clock passes the 30 s deadline of id 1
    b.c2s("c", 40, {**GET_CLOCK, "id": "3"})
    b.close("c", 45, 1011, "", "server")          # ids 2 and 3 die with the connection the server closed
    found = run(b)
    assert [(v.rule, v.severity, v.frame, v.t) for v in found] == [
        ("unanswered-request", "error", 0, 31.0), ("unanswered-request", "warning", 1, 45),
        ("unanswered-request", "warning", 2, 45)]


def test_unanswered_request_is_info_when_the_client_hangs_up_without_waiting():
    """A client closing its conversation and its socket at once (a real client does): the close
    request is left unanswered by the client's own choice."""
    b = session()
    b.c2s("c", 1, CLOSE_CONVERSATION)
    b.close("c", 1.001)
    found = run(b)
    assert [(v.rule, v.severity, v.frame) for v in found] == [("unanswered-request", "info", 0)]
    assert "the client closed the connection 0.0 s after" in found[0].message


def test_unanswered_request_times_out_on_time_when_the_accept_timeout_is_the_same():
    """Both deadlines then share one queue; the second request's deadline (armed when the first one
    fires) is earlier than the accept deadline queued before it, and must not wait behind it."""
    b = session()
    subscribed_to_events(b)
    b.c2s("c", 1, {**GET_CLOCK, "id": "r1"})
    b.c2s("c", 3, {**GET_CLOCK, "id": "r2"})
    b.s2c("c", 5, event(0))                               # wants an ACCEPT by 15
    b.c2s("c", 5.5, accept([0], "a1"))
    b.s2c("c", 5.6, response("a1", type_="ms.PublishEventResponse", body={"sequence": 1}))
    b.c2s("c", 14, GET_CLOCK)                            # the clock passes r2's deadline, 13
    b.s2c("c", 14.5, response("r2"))                     # late
    b.s2c("c", 14.6, response("1"))
    found = run(b, response_timeout_s=10, accept_timeout_s=10, keepalive_limit_s=1000)
    assert [(v.rule, v.t) for v in found] == [("unanswered-request", 11), ("unanswered-request", 13)]

def test_unanswered_request_at_capture_end_is_marked():
    b = session()
    b.c2s("c", 1, GET_CLOCK)
    found = run(b)
    assert [(v.rule, v.severity, v.at_capture_end) for v in found] == [("unanswered-request", "info", True)]
    assert "capture ended" in found[0].message


def test_unanswered_request_when_the_recorder_stopped_is_as_at_capture_end():
    """The close the recorder writes for a connection still open when it stops (SIGTERM) is not a
    close by either side: a request pending then is open at the end, not dropped by the server."""
    b = session()
    b.c2s("c", 1, GET_CLOCK)
    b.record({"rec": "close", "t": 2, "conn": "c", "code": 1006, "reason": None, "by": None,
              "recorder_stopped": True})
    found = run(b)
    assert [(v.rule, v.severity, v.at_capture_end) for v in found] == [("unanswered-request", "info", True)]


def test_unanswered_request_not_reported_when_answered_in_time_or_keepalive():
    b = session()
    b.c2s("c", 1, GET_CLOCK)
    b.s2c("c", 29, response("1"))
    b.c2s("c", 30, {"kind": "req", "id": "2", "type": "KeepAlive"})  # documented as "do nothing"
    b.close("c", 31)
    assert rules(b) == []


def test_invalid_response_code():
    b = session()
    for i, code in enumerate(["200", 700, None, True, 200.0, 404]):
        b.c2s("c", i + 1, {**GET_CLOCK, "id": str(i)})
        resp = response(str(i), code)
        if code is None:
            del resp["code"]
        b.s2c("c", i + 1.1, resp)
    found = run(b)
    assert [v.rule for v in found] == ["invalid-response-code"] * 5  # 404 is a valid (error) code
    assert "no code" in found[2].message


def test_unknown_subscription():
    b = session()
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, SUBSCRIBED)
    b.s2c("c", 1.2, CQM_NOTIFICATION)
    b.s2c("c", 1.3, {**CQM_NOTIFICATION, "type": "aam.ExConversationChangeNotification"})
    b.s2c("c", 1.4, {**CQM_NOTIFICATION, "type": ".ams.aam.ExConversationChangeNotification"})
    b.s2c("c", 2, {**CQM_NOTIFICATION, "body": {"subscriptionId": "other", "changes": []}})
    b.s2c("c", 3, {**CQM_NOTIFICATION, "body": {"subscriptionId": "other", "changes": []}})
    b.s2c("c", 4, event(0, dialog="never-subscribed"))
    found = [(v.rule, v.severity) for v in run(b) if v.rule != "missing-accept"]
    assert found == [("unknown-subscription", "warning"), ("unknown-subscription", "info")]


def test_notification_after_unsubscribe():
    b = session()
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, SUBSCRIBED)
    b.c2s("c", 2, UNSUBSCRIBE)
    b.s2c("c", 2.05, CQM_NOTIFICATION)  # in flight before the unsubscribe response: fine
    b.s2c("c", 2.1, STRING_OK)
    b.s2c("c", 3, CQM_NOTIFICATION)
    b.s2c("c", 4, CQM_NOTIFICATION)
    found = run(b)
    assert [(v.rule, v.frame) for v in found] == [("notification-after-unsubscribe", 5)]


def test_keepalive_gap():
    b = session()
    b.c2s("c", 10, GET_CLOCK)
    b.s2c("c", 10.1, response("1"))
    b.ping("c", 80)                       # 70 s of client silence: the server's messages do not count
    b.ping("c", 100, from_client=False)   # a server ping is not client activity
    b.close("c", 170, 1000, "idle", "server")
    found = run(b)
    assert [(v.rule, round(v.t)) for v in found] == [("keepalive-gap", 80), ("keepalive-gap", 170)]
    assert "server closed" in found[1].message


def test_keepalive_gap_when_server_enforces_limit_on_its_own_clock():
    # The server closes at its limit; the capture sees the silence a little shorter.
    b = session()
    b.c2s("c", 10, GET_CLOCK)
    b.s2c("c", 10.1, response("1"))
    b.close("c", 10 + 59.5, 1000, "idle", "server")
    assert [v.rule for v in run(b)] == ["keepalive-gap"]


def test_keepalive_gap_not_reported_for_client_close_just_under_limit():
    b = session()
    b.c2s("c", 10, GET_CLOCK)
    b.s2c("c", 10.1, response("1"))
    b.close("c", 10 + 59.5)
    assert rules(b) == []


def test_keepalive_gap_not_reported_with_pings_and_get_clock():
    b = session()
    for i, t in enumerate(range(50, 400, 50)):
        if i % 2:
            b.ping("c", t)
        else:
            b.c2s("c", t, {**GET_CLOCK, "id": str(i)})
            b.s2c("c", t + 0.1, response(str(i)))
    b.close("c", 400)
    assert rules(b) == []


INIT = fixture("D-TUT avoid-websocket-headers.md")  # id "0"


def test_request_before_init():
    """The verdict follows what the server did with the early request: refused or never answered
    is an error; answered 2xx (LivePerson's browser SDK subscribes 0.6 ms after its InitConnection
    and the server answers) a warning that the documentation allows rejecting it."""
    b = session(token=None)
    b.c2s("c", 1, INIT)
    b.c2s("c", 1.0006, SUBSCRIBE)         # not allowed, answered 200 below: warning
    b.c2s("c", 1.01, GET_CLOCK)           # allowed before the InitConnection response
    b.c2s("c", 1.02, {**SUBSCRIBE, "id": "35"})  # refused: error
    b.s2c("c", 1.1, response("0"))
    b.s2c("c", 1.2, response("1"))
    b.s2c("c", 1.3, SUBSCRIBED)
    b.s2c("c", 1.4, response("35", 401, body="not authenticated"))
    b.c2s("c", 2, {**SUBSCRIBE, "id": "34"})  # after the response: fine
    b.s2c("c", 2.1, {**SUBSCRIBED, "reqId": "34"})
    found = run(b)
    assert [(v.rule, v.severity, v.frame) for v in found] == [("request-before-init", "warning", 1),
                                                              ("request-before-init", "error", 3)]
    assert "answered it 200" in found[0].message and "refused with 401" in found[1].message


def test_request_before_init_never_answered_is_an_error_at_the_timeout_and_at_the_close():
    b = session(token=None)
    b.c2s("c", 1, INIT)
    b.c2s("c", 1.001, fixture("D-TUT post-conversation-survey-pcs.md", "cm.ConsumerRequestConversation"))
    b.c2s("c", 1.05, {**SUBSCRIBE, "id": "0x"})
    b.s2c("c", 1.1, response("0"))
    b.c2s("c", 31.03, GET_CLOCK)          # the clock passes the timeout of the request conversation
    b.close("c", 31.04, 1011, "", "server")  # and the connection ends under the subscribe
    b.open("d", 50, token=None)
    b.c2s("d", 51, INIT)
    b.c2s("d", 51.001, SUBSCRIBE)         # the capture ends before the answer: info
    found = [(v.rule, v.severity, v.frame, v.at_capture_end) for v in run(b) if v.rule == "request-before-init"]
    assert found == [("request-before-init", "error", 1, False), ("request-before-init", "error", 2, False),
                     ("request-before-init", "info", 1, True)]


def test_request_before_init_without_init_connection_names_a_token_sent_in_another_header():
    b = CaptureBuilder()
    b.open("c", 0.0, token=None)["request_headers"].append(["X-LP-Token", "[redacted sha256:0123456789ab]"])
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, response("33", 401, body="not authenticated"))
    found = run(b)
    assert [(v.rule, v.severity) for v in found] == [("request-before-init", "error")]
    assert "without InitConnection" in found[0].message and "'X-LP-Token'" in found[0].message


def test_request_before_init_not_reported_with_authorization_header():
    b = session(token="tok")
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, SUBSCRIBED)
    assert rules(b) == []


def _reconnect(code: int, by: str, delay: float, token_after: str) -> CaptureBuilder:
    b = CaptureBuilder()
    b.open("a", 0.0, token="tok-1", client="10.0.0.1:5000")
    b.c2s("a", 1, GET_CLOCK)
    b.s2c("a", 1.1, response("1"))
    b.close("a", 2, code, "x", by)
    b.open("b", 2 + delay, token=token_after, client="10.0.0.1:5001")
    b.close("b", 3 + delay)
    return b


def test_token_not_refreshed():
    assert rules(_reconnect(4401, "server", 5, "tok-1")) == ["token-not-refreshed"]
    assert rules(_reconnect(4407, "server", 5, "tok-1")) == ["token-not-refreshed"]


def test_token_not_refreshed_not_reported_with_fresh_token():
    assert rules(_reconnect(4401, "server", 0.1, "tok-2")) == []  # fast, but with a fresh token: fine


def test_fast_reconnect():
    found = run(_reconnect(1006, "server", 0.2, "tok-1"))
    assert [v.rule for v in found] == ["fast-reconnect"] and found[0].conn == "b"
    assert rules(_reconnect(1011, "server", 0.5, "tok-1"), min_reconnect_delay_s=0.4) == []


def test_fast_reconnect_not_reported_after_a_wait_or_client_close():
    assert rules(_reconnect(1006, "server", 2.0, "tok-1")) == []
    assert rules(_reconnect(1000, "client", 0.1, "tok-1")) == []


def test_fast_reconnect_after_the_proxy_failed_the_connection():
    """mitmproxy closing on a peer's protocol error (by: proxy) is no client close: reconnecting at
    once is too fast, and the connection row says the proxy closed."""
    b = _reconnect(1002, "proxy", 0.2, "tok-1")
    assert rules(b) == ["fast-reconnect"]
    tables = Tables("connections")
    engine = Engine(Config(), sink=tables)
    for rec in b.records[1:]:
        engine.feed(rec)
    engine.finish()
    assert [r["closed_by"] for r in tables.rows["connections"]] == ["proxy", "client"]


def test_sequence_gap():
    """A conversation numbers all its events, and a message for agents only (`messageAudience`
    AGENTS_AND_MANAGERS: "never shown to the consumer") is not sent to the consumer: a gap on a
    consumer's connection may be one, so it is info. An agent's connection receives them all."""
    for begin, severity in ((session, "info"), (agent_session, "warning")):
        b = begin()
        subscribed_to_events(b)
        for t, seq in ((1, 0), (2, 1), (2.5, None), (3, 4)):  # a chat-state event carries no sequence
            b.s2c("c", t, event(seq, originator="me", role="CONSUMER"))
        found = [v for v in run(b) if v.rule.startswith("sequence")]
        assert [(v.rule, v.severity) for v in found] == [("sequence-gap", severity)]
        assert "missing 2-3" in found[0].message
        assert ("a message for agents only" in found[0].message) == (severity == "info")


def test_sequence_duplicate():
    b = session()
    subscribed_to_events(b)
    for t, seq in ((1, 0), (2, 1), (3, 1)):
        b.s2c("c", t, event(seq, originator="me", role="CONSUMER"))
    assert rules(b) == ["sequence-duplicate"]


def test_sequence_replay_after_resubscribe_is_not_a_duplicate():
    b = session()
    subscribed_to_events(b)
    for t, seq in ((1, 0), (2, 1), (3, 2)):
        b.s2c("c", t, event(seq, originator="me", role="CONSUMER"))
    b.c2s("c", 4, {**SUBSCRIBE_EVENTS, "id": "23", "body": {"dialogId": DIALOG, "fromSeq": 1}})
    b.s2c("c", 4.1, {**SUBSCRIBED_EVENTS, "reqId": "23"})
    for t, seq in ((5, 1), (5.1, 2), (6, 3)):
        b.s2c("c", t, event(seq, originator="me", role="CONSUMER"))
    assert rules(b) == []


def test_sequence_regression():
    b = session()
    subscribed_to_events(b)
    for t, seq in ((1, 5), (2, 6), (3, 4)):
        b.s2c("c", t, event(seq, originator="me", role="CONSUMER"))
    assert rules(b) == ["sequence-regression"]


def test_missing_accept():
    b = session()
    subscribed_to_events(b)
    b.s2c("c", 1, event(0))
    b.s2c("c", 2, event(1))
    b.c2s("c", 3, accept(1, "a1"))     # a single sequence sent bare, not as [1]: still counts
    b.s2c("c", 3.1, response("a1", type_="ms.PublishEventResponse", body={"sequence": 2}))
    b.c2s("c", 20, GET_CLOCK)          # the capture's clock passes 1 + 10 s
    b.s2c("c", 20.1, response("1"))
    found = run(b)
    assert [(v.rule, v.t) for v in found] == [("missing-accept", 11.0)]
    assert "sequence 0" in found[0].message


def test_missing_accept_when_read_comes_without_accept():
    b = session()
    subscribed_to_events(b, t=100.0)
    b.s2c("c", 101, event(0))
    b.c2s("c", 101.5, accept([0], "r1", status="READ"))
    b.s2c("c", 101.6, response("r1", type_="ms.PublishEventResponse", body={"sequence": 1}))
    b.close("c", 130)
    found = run(b, keepalive_limit_s=1000)
    assert [(v.rule, v.severity, v.frame) for v in found] == [("missing-accept", "warning", 3)]  # the READ frame
    assert "without an ACCEPT" in found[0].message


def test_missing_accept_is_info_when_client_closes_within_the_timeout():
    b = session()
    subscribed_to_events(b, t=100.0)
    b.s2c("c", 101, event(0))
    b.close("c", 102)
    found = run(b, keepalive_limit_s=1000)
    assert [(v.rule, v.severity) for v in found] == [("missing-accept", "info")]


def closing_dialog(dialog: str) -> dict:
    """The conversation notification that closes the conversation (and MAIN dialog) `dialog`."""
    closing = fixture("D-TUT conversation-metadata.md (participantsPId")
    closing["body"]["changes"][0]["result"].update(convId=dialog)
    closing["body"]["changes"][0]["result"]["conversationDetails"]["state"] = "CLOSE"
    return {**closing, "body": {**closing["body"], "subscriptionId": SID}}


def test_missing_accept_is_info_when_the_dialog_closes_before_the_deadline():
    """An ACCEPT after the close would be a publish to a closed dialog (the server refuses it with
    400): a client that stops acknowledging when the conversation closes is right, not late."""
    b = session()
    subscribed_to_events(b, t=100.0)
    b.c2s("c", 100.5, SUBSCRIBE)
    b.s2c("c", 100.6, SUBSCRIBED)
    b.s2c("c", 101, event(0))
    b.s2c("c", 101.2, closing_dialog(DIALOG))
    b.s2c("c", 102, event(1))                            # arrives in the closed dialog
    b.s2c("c", 103, event(0, dialog="d2"))
    b.s2c("c", 104, event(0, dialog="pcs", conversationId="conv-9"))
    b.s2c("c", 104.5, closing_dialog("conv-9"))          # the conversation of dialog pcs
    b.s2c("c", 115, closing_dialog("d2"))                # after d2's deadline: the client had its 10 s
    b.c2s("c", 130, GET_CLOCK)
    b.s2c("c", 130.1, response("1"))
    found = [(v.severity, v.frame, v.message) for v in run(b, keepalive_limit_s=1000) if v.rule == "missing-accept"]
    assert found == [
        ("info", 4, f"dialog '{DIALOG}' closed 0.2 s after sequence 0 arrived, before any ACCEPT"),
        ("info", 6, f"sequence 1 of dialog '{DIALOG}' arrived 0.8 s after the dialog closed, and was not "
                    "acknowledged"),
        ("warning", 7, "no ACCEPT for sequence 0 of dialog 'd2' from agent-1 within 10 s"),
        ("info", 8, "conversation 'conv-9' closed 0.5 s after sequence 0 of dialog 'pcs' arrived, before any ACCEPT"),
    ]


def test_history_is_told_on_the_servers_clock_from_getclock():
    """`serverTimestamp` is the server's clock, the subscribe's time the capture's: with the server
    5 s ahead, a message stamped 3 s before the subscribe looked 2 s after it, so live, and its
    missing ACCEPT was reported. A GetClock answer's `currentTime` against the middle of its round
    trip gives the difference; an answer that took over a second, or is a day off, is not taken."""
    def replayed(*answers) -> list:
        b = session()
        for asked, answered, now_ms in answers:
            b.c2s("c", asked, GET_CLOCK)
            b.s2c("c", answered, response("1", type_="GetClockResponse", body={"currentTime": now_ms}))
        subscribed_to_events(b, t=100.0)
        b.s2c("c", 100.5, event(0, serverTimestamp=102_000))    # history: 97 s on the capture's clock
        b.s2c("c", 101, event(1, serverTimestamp=105_990))      # live
        b.c2s("c", 130, GET_CLOCK)
        b.s2c("c", 130.1, response("1"))
        return [(v.severity, v.message) for v in run(b, keepalive_limit_s=1000) if v.rule == "missing-accept"]

    live = ("warning", f"no ACCEPT for sequence 1 of dialog '{DIALOG}' from agent-1 within 10 s")
    history = ("warning", f"no ACCEPT for sequence 0 of dialog '{DIALOG}' from agent-1 within 10 s")
    ahead = (50, 50.05, 55_025)                                  # 5 s ahead, a 50 ms round trip
    a_day_off = (60, 60.01, 60_005 + 86_401_000)                 # a shorter round trip, but no clock
    assert replayed(ahead, a_day_off) == [live]
    assert replayed() == [history, live]  # without an answer the capture's clock is taken for the server's
    assert replayed((50, 53, 56_500)) == [history, live]        # 5 s ahead too, but a 3 s round trip


def test_missing_accept_not_reported_for_own_or_history_or_acknowledged():
    b = session()
    subscribed_to_events(b, t=100.0)
    b.s2c("c", 101, event(0, serverTimestamp=50_000))   # history replay: sent before the subscribe
    b.s2c("c", 102, event(1, originator="me", role="CONSUMER"))
    b.c2s("c", 103, PUBLISH_TEXT)                        # own text: learned from the publish response
    b.s2c("c", 103.1, response("2", type_="ms.PublishEventResponse", body={"sequence": 2}))
    b.s2c("c", 103.2, event(2, originator="me-unmarked", role=None))
    b.s2c("c", 104, event(3))
    b.c2s("c", 104.4, accept([3], "r0"))
    b.s2c("c", 104.45, response("r0", type_="ms.PublishEventResponse", body={"sequence": 4}))
    b.c2s("c", 104.5, accept([3], "r1", status="READ"))
    b.s2c("c", 104.6, response("r1", type_="ms.PublishEventResponse", body={"sequence": 5}))
    b.s2c("c", 104.7, event(4, originator="me", role="CONSUMER", event_type="AcceptStatusEvent"))
    b.s2c("c", 105, event(None, event_type="ChatStateEvent"))
    b.close("c", 130)
    assert rules(b, keepalive_limit_s=1000) == []


def test_missing_accept_explicit_role_wins_over_the_published_sequence():
    """The PCS tutorial: the consumer's publish is answered with sequence 4, and the agent's ACCEPT
    carries sequence 4. The agent stays the agent: its unacknowledged messages are reported."""
    b = session()
    subscribed_to_events(b)
    b.s2c("c", 1, event(0))
    b.c2s("c", 2, fixture("D-TUT post-conversation-survey-pcs.md", "ms.PublishEvent", id="4",
                          body={**PUBLISH_TEXT["body"], "dialogId": DIALOG}))
    b.s2c("c", 2.1, fixture("D-TUT post-conversation-survey-pcs.md", "ms.PublishEventResponse"))  # sequence 4
    b.s2c("c", 2.2, event(3, originator="me", role="CONSUMER"))
    b.s2c("c", 2.3, event(4, event_type="AcceptStatusEvent"))     # the agent's, at the published sequence
    b.c2s("c", 20, GET_CLOCK)
    b.s2c("c", 20.1, response("1"))
    found = [(v.rule, v.t) for v in run(b) if v.rule == "missing-accept"]
    assert found == [("missing-accept", 11.0)]


def test_messaging_events_while_the_subscription_is_unanswered_belong_to_it():
    b = session()
    b.c2s("c", 0.1, SUBSCRIBE_EVENTS)
    b.s2c("c", 0.2, event(0, originator="me", role="CONSUMER"))  # replayed before the response
    b.s2c("c", 0.3, SUBSCRIBED_EVENTS)
    b.s2c("c", 0.4, event(1, originator="me", role="CONSUMER"))
    streams = []
    engine = Engine(Config(), sink=_Table("streams", streams), on_violation=(found := []).append)
    for rec in b.records[1:]:
        engine.feed(rec)
    engine.finish()
    assert found == []
    assert [(s["dialog_id"], s["notifications"], s["request_frame"], s["t_confirmed"]) for s in streams] == [
        (DIALOG, 2, 0, 0.3)]



def test_messaging_events_of_a_refused_subscription_are_not_subscribed_after_its_answer():
    b = session()
    b.c2s("c", 0.1, SUBSCRIBE_EVENTS)
    b.s2c("c", 0.2, event(0, originator="me", role="CONSUMER"))  # before the answer: belongs to the request
    b.s2c("c", 0.3, {**SUBSCRIBED_EVENTS, "code": 403, "type": "StringResponse", "body": "forbidden"})
    b.s2c("c", 0.4, event(1, originator="me", role="CONSUMER"))
    assert [(v.rule, v.severity, v.frame) for v in run(b)] == [("unknown-subscription", "info", 3)]


def test_publish_after_close():
    b = session()
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, SUBSCRIBED)
    b.s2c("c", 2, closing_dialog(DIALOG))
    publish = copy.deepcopy(PUBLISH_TEXT)
    publish["body"]["dialogId"] = DIALOG
    b.c2s("c", 3, publish)
    b.s2c("c", 3.1, response("2", 400))
    found = run(b)
    assert [(v.rule, v.frame) for v in found] == [("publish-after-close", 3)]


def test_publish_crossing_the_close_is_info_and_later_ones_warn():
    """Seen with node-agent-sdk: the bot ACCEPTs a message 5 ms after the proxy passed the close
    notification, before the notification can have reached it. Judged per connection: a publish less
    than a second after the close reached its connection (or, never told there, after the close) is
    info; later ones, and any after the connection's own close request, are the client's fault."""
    b = session()
    b.open("d", 0.5, token="tok-d")                      # a second client, never told of the close
    b.c2s("c", 1, SUBSCRIBE)
    b.s2c("c", 1.1, SUBSCRIBED)
    b.s2c("c", 2, closing_dialog(DIALOG))
    b.c2s("c", 2.005, accept([3], "a1"))
    b.s2c("c", 2.1, response("a1", 400))
    text = copy.deepcopy(PUBLISH_TEXT)
    text["body"]["dialogId"] = DIALOG
    b.c2s("d", 2.3, {**text, "id": "d1"})
    b.s2c("d", 2.4, response("d1", 400))
    b.c2s("c", 2.6, {**text, "id": "t1"})
    b.s2c("c", 2.7, response("t1", 400))
    b.c2s("d", 3.2, {**text, "id": "d2"})
    b.s2c("d", 3.3, response("d2", 400))
    b.c2s("c", 3.5, {**text, "id": "t2"})
    b.s2c("c", 3.6, response("t2", 400))
    # its own close request, the notification passing before the answer: it knew since it asked
    b.c2s("c", 4, CLOSE_CONVERSATION)
    b.s2c("c", 4.05, closing_dialog("id"))
    b.s2c("c", 4.1, response("0"))
    own = copy.deepcopy(PUBLISH_TEXT)
    own["body"].update(dialogId="id", conversationId="id")
    b.c2s("c", 4.2, {**own, "id": "t3"})
    b.s2c("c", 4.3, response("t3", 400))
    found = [(v.conn, v.frame, v.severity, v.message) for v in run(b) if v.rule == "publish-after-close"]
    crossed = "it may have crossed the close in flight"
    assert found == [
        ("c", 3, "info", f"AcceptStatusEvent published to dialog '{DIALOG}' 0.005 s after its close notification: "
                         f"{crossed}"),
        ("d", 0, "info", f"ContentEvent published to dialog '{DIALOG}' 0.300 s after it closed, before this "
                         f"connection was told: {crossed}"),
        ("c", 5, "info", f"ContentEvent published to dialog '{DIALOG}' 0.600 s after its close notification: "
                         f"{crossed}"),
        ("d", 2, "warning", f"ContentEvent published to dialog '{DIALOG}' closed 1.2 s earlier"),
        ("c", 7, "warning", f"ContentEvent published to dialog '{DIALOG}' closed 1.5 s earlier"),
        ("c", 12, "warning", "ContentEvent published to dialog 'id' closed 0.2 s earlier"),
    ]


def test_publish_after_close_request_and_not_for_chat_state_or_survey_dialog():
    b = session()
    b.c2s("c", 1, CLOSE_CONVERSATION)   # conversationField as an array
    b.s2c("c", 1.1, response("0"))
    chat_state = fixture("D-TUT post-conversation-survey-pcs.md", "ms.PublishEvent", id="7")
    chat_state["body"].update(dialogId="id", conversationId="id",
                              event={"type": "ChatStateEvent", "chatState": "GONE"})
    b.c2s("c", 2, chat_state)
    b.s2c("c", 2.1, response("7", type_="ms.PublishEventResponse", body={"sequence": 0}))
    text = copy.deepcopy(PUBLISH_TEXT)
    text["body"]["dialogId"] = "id"
    b.c2s("c", 3, text)
    b.s2c("c", 3.1, response("2", 400))
    # PCS: the MAIN dialog closes (DialogChange sent bare, not in an array), the survey dialog stays open
    b.c2s("c", 4, fixture("D-TUT post-conversation-survey-pcs.md", "cm.UpdateConversationField", id="8"))
    b.s2c("c", 4.1, response("8"))
    survey = fixture("D-TUT post-conversation-survey-pcs.md", "ms.PublishEvent", id="9")
    survey["body"]["dialogId"] = "__YOUR_POST_SURVEY_DIALOG_ID__"
    b.c2s("c", 5, survey)
    b.s2c("c", 5.1, response("9", type_="ms.PublishEventResponse", body={"sequence": 5}))
    found = run(b)
    assert [(v.rule, v.frame) for v in found] == [("publish-after-close", 4)]


def test_live_checker_reports_when_detected_not_at_the_end():
    b = session()
    b.c2s("c", 1, "garbage")
    b.c2s("c", 2, GET_CLOCK)
    b.c2s("c", 40, {**GET_CLOCK, "id": "2"})
    seen = []
    checker = LiveChecker(Config(), seen.append)
    fed = []
    for rec in b.records[1:]:
        checker.feed(rec)
        fed.append([v.rule for v in seen])
    assert fed[1] == ["invalid-json"]                                  # right after the bad frame
    assert fed[3] == ["invalid-json", "unanswered-request"]            # once the clock passes 2 + 30 s
    checker.finish()
    assert [v.at_capture_end for v in seen] == [False, False, True]


def test_live_checker_judges_an_early_request_when_its_answer_or_its_deadline_comes():
    b = session(token=None)
    b.c2s("c", 1, INIT)
    b.c2s("c", 1.0006, SUBSCRIBE)
    b.c2s("c", 1.001, {**SUBSCRIBE, "id": "never"})
    b.s2c("c", 1.1, response("0"))
    b.s2c("c", 1.2, SUBSCRIBED)
    seen = []
    checker = LiveChecker(Config(), seen.append)
    verdicts = []
    for rec in b.records[1:]:
        checker.feed(rec)
        verdicts.append([(v.rule, v.severity) for v in seen])
    assert verdicts[3] == []                                           # not judged when sent
    assert verdicts[5] == [("request-before-init", "warning")]         # judged by its answer
    checker.advance(31.002)                                           # no record: the clock alone passes 1.001 + 30 s
    assert [(v.rule, v.severity) for v in seen[1:]] == [("unanswered-request", "error"),
                                                        ("request-before-init", "error")]


def test_severity_override_and_unknown_rule():
    b = session()
    b.c2s("c", 1, "garbage")
    assert [v.severity for v in run(b, severity={"invalid-json": "warning"})] == ["warning"]
    with pytest.raises(ValueError):
        Config(severity={"no-such-rule": "error"})


def test_every_rule_is_documented_with_its_default_severity():
    from conftest import REPO
    doc = (REPO / "docs" / "analysis.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2] for line in doc.splitlines()
            if line.startswith("| `") and line.split("|")[1].strip(" `") in RULES}
    assert set(rows) == set(RULES)
    assert [rule for rule, severity in RULES.items() if not rows[rule].strip().startswith(severity)] == []


# -- agent connections (LivePerson's Messaging Agent API — Getting Started frames) -----------------

AGENT_FRAMES = [json.loads(line)["frame"] for line in (DATA / "agent_getting_started.jsonl").read_text().splitlines()]
BRAND_URL = "ws://127.0.0.1:9000/ws_api/account/qa20971604/messaging/brand/0a1b2c3d4e5f?v=2.1"
RING = AGENT_FRAMES[7]  # .ams.routing.RoutingTaskNotification, a ring WAITING with ringExpiration 72000 (ms)
RING_ID = RING["body"]["changes"][0]["result"]["ringsDetails"][0]["ringId"]


def agent_session() -> CaptureBuilder:
    """A brand connection subscribed to routing tasks (the page's step 5)."""
    b = CaptureBuilder()
    b.open("c", 0.0, token=None, url=BRAND_URL)
    b.c2s("c", 0.1, AGENT_FRAMES[4])
    b.s2c("c", 0.2, AGENT_FRAMES[5])
    return b


def answer_ring(state: str = "ACCEPTED") -> dict:
    frame = copy.deepcopy(AGENT_FRAMES[8])  # .ams.routing.UpdateRingState (the page reuses id 4)
    frame["body"].update(ringId=RING_ID, ringState=state)
    frame["id"] = 5
    return frame


def test_ring_not_answered():
    b = agent_session()
    b.s2c("c", 1.0, RING)
    b.ping("c", 50.0)
    b.ping("c", 100.0)
    b.close("c", 101.0)
    found = run(b)
    assert [(v.rule, v.severity, round(v.t)) for v in found] == [("ring-not-answered", "warning", 73)]
    assert RING_ID in found[0].message and "72 s" in found[0].message


@pytest.mark.parametrize("state", ["ACCEPTED", "REJECTED"])
def test_ring_answered_in_time_is_not_reported(state):
    b = agent_session()
    b.s2c("c", 1.0, RING)
    b.c2s("c", 2.0, answer_ring(state))
    b.s2c("c", 2.1, {**AGENT_FRAMES[9], "reqId": "5"})
    b.ping("c", 50.0)
    b.ping("c", 100.0)
    b.close("c", 101.0)
    assert rules(b) == []


def test_ring_answered_too_late_is_reported():
    b = agent_session()
    b.s2c("c", 1.0, RING)
    b.ping("c", 50.0)
    b.c2s("c", 80.0, answer_ring())
    b.s2c("c", 80.1, {**AGENT_FRAMES[9], "reqId": "5"})
    b.close("c", 81.0)
    assert rules(b) == ["ring-not-answered"]


def test_keepalive_gap_allows_the_agent_sdks_60_s_ping_timer():
    """node-agent-sdk pings every 60 s on a timer that fires a few ms late: no gap on an agent
    connection until the limit plus 10 %; a consumer's 60.05 s silence is still a gap."""
    b = agent_session()
    for i in range(1, 4):
        b.ping("c", 60.05 * i)
    b.ping("c", 60.05 * 3 + 67.0)
    b.close("c", 60.05 * 3 + 68.0)
    found = run(b)
    assert [(v.rule, round(v.t)) for v in found] == [("keepalive-gap", 247)]
    assert "+ 10% for an agent" in found[0].message
    consumer = session()
    consumer.ping("c", 60.05)
    consumer.close("c", 61.0)
    assert rules(consumer) == ["keepalive-gap"]
