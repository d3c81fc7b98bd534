"""Property-based fuzzing of the protocol engine: arbitrary sequences of valid-looking records
(random kinds, ids, reqIds, types, codes, subscription ids, dialog events, sequences, closes,
pings; records of unknown connections; time going backwards; index fields of a message that
disagree with its payload; any scalar as code, dir, op, n, size) never raise, and the summary and its text
rendering are still made. Arrays or objects in identifier fields and times beyond any calendar
never reach the engine: the reader reports such lines (test_fuzz_reader.py).
The strategies here also feed the built-in server's fuzzing."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import Config, Engine, LiveChecker
from analysis.capture import message_record
from analysis.render import render
from analysis.summary import Summary
from test_reliability_load import soak_size

DEFAULT_EXAMPLES = 300
SOAK_EXAMPLES = soak_size(1_000, 10_000)


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


# What a JSON reader can hand over (orjson reads integers beyond 64 bits as floats).
scalar = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=20)
junk = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def maybe(strategy, junk_share: int = 8):
    """Mostly `strategy`, sometimes any JSON value (a wrong type)."""
    return st.one_of(*[strategy] * junk_share, junk)


IDS = st.sampled_from(["1", "2", "3", "x", "", "0"]) | st.integers(-2, 5)
DIALOGS = st.sampled_from(["d1", "d2", "c1"])
SUBSCRIPTIONS = st.sampled_from(["s1", "s2", "sub-?"])
TYPES = st.sampled_from([
    "InitConnection", "GetClock", ".GetClock", "GetClock$Response", "KeepAlive", "SubscribeExConversations",
    "UnsubscribeExConversations", "GenericSubscribeResponse", "cqm.ExConversationChangeNotification",
    ".ams.aam.ExConversationChangeNotification", "ms.SubscribeMessagingEvents", "ms.PublishEvent",
    ".ams.ms.PublishEvent", "ms.MessagingEventNotification", "ms.OnlineEventDistribution",
    "cm.ConsumerRequestConversation", "cm.UpdateConversationField", "StringResponse", "Unknown.Type"])
EVENT_TYPES = st.sampled_from(["ContentEvent", "AcceptStatusEvent", "ChatStateEvent", "RichContentEvent", "?"])
STATUSES = st.sampled_from(["ACCEPT", "READ", "COMPOSING", "PAUSE", "CLOSE", "OPEN"])

event = st.fixed_dictionaries({}, optional={
    "type": maybe(EVENT_TYPES), "status": maybe(STATUSES), "chatState": maybe(STATUSES),
    "sequenceList": maybe(st.lists(st.integers(-1, 20), max_size=4)), "message": maybe(st.text(max_size=10)),
    "contentType": st.just("text/plain")})
change = st.fixed_dictionaries({}, optional={
    "sequence": maybe(st.integers(-1, 20)), "dialogId": maybe(DIALOGS), "conversationId": maybe(DIALOGS),
    "originatorId": maybe(st.sampled_from(["me", "agent", "other"])),
    "originatorMetadata": maybe(st.fixed_dictionaries({"role": st.sampled_from(["CONSUMER", "ASSIGNED_AGENT"])})),
    "serverTimestamp": maybe(st.integers(0, 10**13)), "event": maybe(event),
    "type": maybe(st.sampled_from(["UPSERT", "DELETE"])),
    "result": maybe(st.fixed_dictionaries({"convId": maybe(DIALOGS), "conversationDetails": maybe(
        st.fixed_dictionaries({"state": maybe(STATUSES), "dialogs": maybe(st.lists(st.fixed_dictionaries(
            {"dialogId": maybe(DIALOGS), "state": maybe(STATUSES)}), max_size=2))}))}))})
body = st.fixed_dictionaries({}, optional={
    "subscriptionId": maybe(SUBSCRIPTIONS), "changes": maybe(st.lists(change, max_size=3) | change),
    "dialogId": maybe(DIALOGS), "conversationId": maybe(DIALOGS), "event": maybe(event),
    "fromSeq": maybe(st.integers(-1, 20)), "sequence": maybe(st.integers(-1, 20)),
    "conversationField": maybe(st.lists(st.fixed_dictionaries(
        {"field": st.sampled_from(["ConversationStateField", "DialogChange"]),
         "conversationState": maybe(STATUSES)}), max_size=2)),
    "currentTime": maybe(st.integers(0, 10**13))})
def json_bytes(value) -> bytes:
    """JSON as any encoder may write it: integers beyond 64 bits, NaN and Infinity included."""
    return json.dumps(value).encode()


protocol_frame = st.fixed_dictionaries({}, optional={
    "kind": maybe(st.sampled_from(["req", "resp", "notification", "other"])), "id": maybe(IDS),
    "reqId": maybe(IDS), "type": maybe(TYPES), "code": maybe(st.sampled_from([200, 201, 400, 401, 500, 99, 600])),
    "body": maybe(body), "huge": st.integers(10**20, 10**400),
    "headers": maybe(st.lists(st.fixed_dictionaries({
        "type": st.sampled_from([".ams.headers.ConsumerAuthentication", ".ams.headers.ClientProperties"]),
        "jwt": maybe(st.sampled_from(["[redacted sha256:0123456789ab]", "opaque-token"]))}), max_size=2))})
payload_bytes = st.one_of(protocol_frame.map(json_bytes), protocol_frame.map(json_bytes),
                          st.binary(max_size=40), st.text(max_size=40).map(str.encode))

CONNS = st.sampled_from(["c1", "c2", "c3", "never-opened"])
TIMES = st.floats(0, 200, allow_nan=False) | st.sampled_from([math.nan, math.inf, -1.0]) | scalar


@st.composite
def message(draw) -> dict:
    content = draw(payload_bytes)
    rec = message_record(draw(CONNS), draw(TIMES), draw(st.integers(0, 50)), draw(st.booleans()),
                         draw(st.booleans()), content, max_payload=draw(st.sampled_from([1 << 20, 8])))
    for key in draw(st.lists(st.sampled_from(["kind", "type", "id", "reqId", "subscriptionId"]), max_size=2)):
        rec[key] = draw(st.text(max_size=12))  # index fields that disagree with the payload
    for key in draw(st.lists(st.sampled_from(["code", "dir", "op", "n", "size"]), max_size=2)):
        rec[key] = draw(scalar)
    return rec


def other_record(kind: str):
    fields = {
        "open": {"url": st.just("ws://127.0.0.1/ws_api/account/1/messaging/consumer?v=3"),
                 "client": st.sampled_from(["127.0.0.1:1", "127.0.0.1:2"]),
                 "request_headers": st.sampled_from([[], [["Authorization", "jwt [redacted sha256:0123456789ab]"]],
                                                     [["Authorization", "jwt [redacted sha256:ba9876543210]"]]])},
        "refused": {"status": st.sampled_from([403, 502, None]), "error": st.none() | st.text(max_size=8)},
        "close": {"code": st.sampled_from([1000, 1006, 1007, 4401, 4407, None]),
                  "reason": st.none() | st.text(max_size=8), "by": st.sampled_from(["client", "server", None])},
        "ping": {"dir": st.sampled_from(["c2s", "s2c"]), "payload": st.just("b''")},
        "pong": {"dir": st.sampled_from(["c2s", "s2c"]), "payload": st.just("b''")},
        "drop": {"count": st.integers(0, 5), "reason": st.text(max_size=8)},
        "future-kind": {"anything": junk},
    }[kind]
    return st.fixed_dictionaries({"rec": st.just(kind), "t": TIMES, "conn": CONNS}, optional=fields)


record = st.one_of(message(), message(), *[other_record(k) for k in
                                            ("open", "open", "close", "refused", "ping", "pong", "drop",
                                             "future-kind")])
records = st.lists(record, max_size=40)


def check_engine(recs: list[dict]) -> None:
    summary = Summary(50)
    engine = Engine(Config(), sink=summary)
    live = LiveChecker(Config(), on_violation=lambda v: None)
    for rec in recs:
        engine.feed(dict(rec))
        live.feed(dict(rec))
    live.advance(10_000.0)
    engine.finish()
    live.finish()
    result = summary.result(engine)
    orjson.dumps(result)  # what `mwtap analyze --format json` prints
    render(result, markdown=False)
    render(result, markdown=True)


@fuzz_settings(DEFAULT_EXAMPLES)
@given(records)
def test_engine_survives_any_record_sequence(recs):
    check_engine(recs)


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES)
@given(records)
def test_engine_survives_any_record_sequence_soak(recs):
    check_engine(recs)
