"""Substitution of server-assigned values in client frames (recorder/replay/substitution.py), on
frames shaped like the catalog's: what a replay rewrites and what it leaves byte for byte."""

from __future__ import annotations

import orjson

from recorder.replay.substitution import SubstitutionStore, echoed, learnable

NOTIFICATION = {"kind": "notification", "type": "ms.MessagingEventNotification",
                "body": {"changes": [{"sequence": 5, "dialogId": "dialog-1", "originatorId": "agent",
                                      "event": {"type": "ContentEvent", "message": "hi"}}]}}
SOURCE = ("recorded-conn", 7)


def store_where_the_target_numbered(recorded: int, replayed: int) -> tuple[SubstitutionStore, dict]:
    """A store that learned: the recorded notification's sequence `recorded` is `replayed` now."""
    note = {**NOTIFICATION, "body": {"changes": [{**NOTIFICATION["body"]["changes"][0], "sequence": recorded}]}}
    record = {"kind": "notification", "type": note["type"]}
    values = learnable(record, note)
    store = SubstitutionStore()
    replayed_note = {**note, "body": {"changes": [{**note["body"]["changes"][0], "sequence": replayed}]}}
    store.learn(SOURCE, values, replayed_note)
    return store, {key: SOURCE for key in values.values()}


def rewritten(store: SubstitutionStore, known: dict, frame: dict) -> dict:
    text = orjson.dumps(frame).decode()
    return orjson.loads(store.rewrite(text, echoed(frame, known), "conn", 3, frame.get("type")))


def test_a_resubscription_from_the_next_sequence_follows_the_targets_numbering():
    store, known = store_where_the_target_numbered(recorded=5, replayed=3)
    frame = {"kind": "req", "id": "9", "type": "ms.SubscribeMessagingEvents",
             "body": {"dialogId": "dialog-1", "conversationId": "dialog-1", "fromSeq": 6}}
    assert rewritten(store, known, frame)["body"]["fromSeq"] == 4
    assert [(s.kind, s.recorded, s.replayed) for s in store.made] == [("sequence", 5, 3)]


def test_newer_than_sequence_and_receipts_follow_it_too():
    store, known = store_where_the_target_numbered(recorded=5, replayed=3)
    frame = {"kind": "req", "id": "9", "type": "ms.SubscribeMessagingEvents",
             "body": {"dialogId": "dialog-1", "newerThanSequence": 5}}
    assert rewritten(store, known, frame)["body"]["newerThanSequence"] == 3
    receipt = {"kind": "req", "id": "10", "type": "ms.PublishEvent",
               "body": {"dialogId": "dialog-1", "event": {"type": "AcceptStatusEvent", "status": "ACCEPT",
                                                          "sequenceList": [5]}}}
    assert rewritten(store, known, receipt)["body"]["event"]["sequenceList"] == [3]


def test_a_sequence_the_client_never_saw_is_left_as_recorded():
    store, known = store_where_the_target_numbered(recorded=5, replayed=3)
    frame = {"kind": "req", "id": "9", "type": "ms.SubscribeMessagingEvents",
             "body": {"dialogId": "dialog-1", "fromSeq": 0}}
    text = orjson.dumps(frame).decode()
    assert store.rewrite(text, echoed(frame, known), "conn", 3, frame["type"]) == text
    assert store.made == []


def test_sequences_count_per_dialog():
    """Two dialogs may both have a recorded sequence 5, numbered differently by the target."""
    store = SubstitutionStore()
    known = {}
    for dialog, replayed in (("dialog-1", 3), ("dialog-2", 7)):
        change = {**NOTIFICATION["body"]["changes"][0], "dialogId": dialog}
        note = {**NOTIFICATION, "body": {"changes": [change]}}
        values = learnable({"kind": "notification", "type": note["type"]}, note)
        store.learn((dialog, 1), values, {**note, "body": {"changes": [{**change, "sequence": replayed}]}})
        known.update({key: (dialog, 1) for key in values.values()})
    for dialog, expected in (("dialog-1", 3), ("dialog-2", 7)):
        receipt = {"kind": "req", "id": "10", "type": "ms.PublishEvent",
                   "body": {"dialogId": dialog, "event": {"type": "AcceptStatusEvent", "status": "ACCEPT",
                                                          "sequenceList": [5]}}}
        assert rewritten(store, known, receipt)["body"]["event"]["sequenceList"] == [expected]
