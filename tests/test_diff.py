"""analysis.diff on hand-built sessions: what counts as a difference and what is masked."""

from __future__ import annotations

import orjson

from analysis.capture import message_record
from analysis.diff import Masker, diff_sessions

CONV_A, CONV_B = "11111111-2222-3333-4444-555555555555", "99999999-8888-7777-6666-555555555555"


def session(conv: str, *, code: int = 200, t0: float = 100.0, latency: float = 0.01, ts: int = 1, note_count: int = 1,
            close: int = 1000, extra_request: bool = False, message: str = "hi", replay_of: str | None = None) -> list:
    frames = [
        (True, {"kind": "req", "id": "1", "type": "cm.ConsumerRequestConversation"}),
        (False, {"kind": "resp", "reqId": "1", "type": "cm.RequestConversationResponse", "code": 200,
                 "body": {"conversationId": conv}}),
    ]
    if extra_request:
        frames += [(True, {"kind": "req", "id": "9", "type": "GetClock"}),
                   (False, {"kind": "resp", "reqId": "9", "type": "GetClockResponse", "code": 200,
                            "body": {"currentTime": ts}})]
    frames += [(True, {"kind": "req", "id": "2", "type": "ms.PublishEvent",
                       "body": {"dialogId": conv, "event": {"type": "ContentEvent", "message": message}}}),
               (False, {"kind": "resp", "reqId": "2", "type": "ms.PublishEventResponse", "code": code,
                        "body": {"sequence": 4}})]
    frames += [(False, {"kind": "notification", "type": "ms.MessagingEventNotification",
                        "body": {"changes": [{"sequence": 4, "serverTimestamp": ts, "dialogId": conv,
                                              "event": {"type": "ContentEvent", "message": message}}]}})] * note_count
    open_rec = {"rec": "open", "t": t0, "conn": f"conn-{conv[:4]}", "url": "ws://x/"}
    if replay_of:
        open_rec["replay_of"] = replay_of
    records, t = [open_rec], t0
    for n, (from_client, payload) in enumerate(frames):
        t += 0.001 if from_client else latency
        records.append(message_record(open_rec["conn"], t, n, from_client, True, orjson.dumps(payload)))
    records.append({"rec": "close", "t": t + 0.01, "conn": open_rec["conn"], "code": close, "by": "client"})
    return records


def kinds(report) -> list[str]:
    return sorted(d.kind for d in report.differences)


def test_same_session_with_other_ids_and_timestamps_matches():
    report = diff_sessions(session(CONV_A, ts=1), session(CONV_B, ts=2, latency=0.2))
    assert not report.differs and report.requests_compared == 2
    assert [l.type for l in report.latency] == ["cm.ConsumerRequestConversation", "ms.PublishEvent"]


def test_response_code_body_notifications_and_close_are_reported():
    report = diff_sessions(session(CONV_A), session(CONV_B, code=500, note_count=0, close=1011, message="other"))
    assert kinds(report) == ["close-code", "finding", "finding", "notifications", "response-code"]
    (notes,) = [d for d in report.differences if d.kind == "notifications"]
    assert notes.detail == {"type": "ms.MessagingEventNotification", "stream": "dialog <id#1>", "recorded": 1,
                            "replayed": 0}
    # The message that did not come is the one the recorded client never accepted.
    assert {d.detail["rule"]: (d.detail["recorded"], d.detail["replayed"])
            for d in report.differences if d.kind == "finding"} == {"missing-accept": (1, 0),
                                                                    "unknown-subscription": (1, 0)}


def two_publishes(conn: str, second_sent_after_first_answered: bool, replay_of: str | None = None) -> list:
    """Two ms.PublishEvent requests with the same id, the second sent while the first is in flight
    or after its answer: the frames are the same, only their order differs."""
    def publish(n: int) -> tuple:
        return True, {"kind": "req", "id": "7", "type": "ms.PublishEvent", "body": {"dialogId": CONV_A, "n": n}}
    answer = (False, {"kind": "resp", "reqId": "7", "type": "ms.PublishEventResponse", "code": 200, "body": {}})
    frames = [publish(1), answer, publish(2), answer] if second_sent_after_first_answered else \
        [publish(1), publish(2), answer, answer]
    open_rec = {"rec": "open", "t": 100.0, "conn": conn, "url": "ws://x/", "replay_of": replay_of}
    records = [open_rec] + [message_record(conn, 100.0 + 0.001 * (n + 1), n, from_client, True, orjson.dumps(p))
                            for n, (from_client, p) in enumerate(frames)]
    return records + [{"rec": "close", "t": 100.1, "conn": conn, "code": 1000, "by": "client"}]


def test_a_rule_that_fired_only_in_the_recording_is_a_difference():
    recorded = two_publishes("rec", second_sent_after_first_answered=False)
    report = diff_sessions(recorded, two_publishes("rep", second_sent_after_first_answered=True, replay_of="rec"))
    findings = [d for d in report.differences if d.kind == "finding"]
    assert [(d.conn, d.detail["rule"], d.detail["recorded"], d.detail["replayed"]) for d in findings] == [
        ("rec", "duplicate-request-id", 1, 0), ("rec", "reused-request-id", 0, 1)]
    assert report.differs and kinds(report) == ["finding", "finding"]
    assert not diff_sessions(recorded, two_publishes("rep", False, replay_of="rec")).differs


def test_extra_request_is_aligned_by_type():
    report = diff_sessions(session(CONV_A), session(CONV_B, extra_request=True))
    assert kinds(report) == ["extra-request"] and report.requests_compared == 2


def test_latency_beyond_tolerance_differs():
    assert kinds(diff_sessions(session(CONV_A), session(CONV_B, latency=0.9))) == ["latency", "latency"]
    assert not diff_sessions(session(CONV_A), session(CONV_B, latency=0.9), latency_tolerance_ms=2000).differs


def test_replayed_connections_are_paired_by_replay_of():
    recorded = session(CONV_A)
    replayed = session(CONV_B, replay_of=recorded[0]["conn"])
    report = diff_sessions(recorded, replayed)
    assert report.pairs == [(recorded[0]["conn"], [replayed[0]["conn"]])] and not report.differs


def test_masking_and_ignore_fields():
    masker = Masker(["event.message"])
    masked = masker.mask({"body": {"conversationId": CONV_A, "other": CONV_B, "again": CONV_A, "startTs": 5,
                                   "sequenceList": [3, 4], "event": {"message": "x", "type": "T"}, "state": "OPEN"}})
    assert masked == {"body": {"conversationId": "<id#1>", "other": "<id#2>", "again": "<id#1>",
                               "startTs": "<volatile>", "sequenceList": ["<seq>", "<seq>"],
                               "event": {"message": "<ignored>", "type": "T"}, "state": "OPEN"}}
