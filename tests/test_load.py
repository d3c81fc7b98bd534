"""`analysis.load`: typed pandas tables over one or several files, and the same summary as the CLI."""

from __future__ import annotations

import pandas as pd
import pytest

import analysis
from analysis.synth import CaptureBuilder
from analysis.tables import COLUMNS

AGENT = {"id": "agent-1", "role": "ASSIGNED_AGENT"}


def conversation(b: CaptureBuilder, conn: str, t: float) -> None:
    """Subscribe, one agent message acknowledged with ACCEPT and READ, a conversation stream."""
    b.c2s(conn, t, {"kind": "req", "id": "1", "type": "cqm.SubscribeExConversations",
                    "body": {"convState": ["OPEN"]}})
    b.s2c(conn, t + 0.02, {"kind": "resp", "reqId": "1", "code": 200, "type": "cqm.SubscribeExConversationsResponse",
                           "body": {"subscriptionId": "s1"}})
    b.s2c(conn, t + 0.05, {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                           "body": {"subscriptionId": "s1", "changes": []}})
    b.c2s(conn, t + 0.1, {"kind": "req", "id": "2", "type": "ms.SubscribeMessagingEvents",
                          "body": {"dialogId": "d1", "fromSeq": 0}})
    b.s2c(conn, t + 0.12, {"kind": "resp", "reqId": "2", "code": 200, "type": ".ams.GenericSubscribeResponse"})
    b.s2c(conn, t + 1, {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {"changes": [
        {"sequence": 0, "originatorId": "agent-1", "originatorMetadata": AGENT, "dialogId": "d1",
         "event": {"type": "ContentEvent", "contentType": "text/plain", "message": "hi"}}]}})
    for i, (status, dt) in enumerate((("ACCEPT", 1.25), ("READ", 3.0))):
        b.c2s(conn, t + dt, {"kind": "req", "id": str(3 + i), "type": "ms.PublishEvent", "body": {
            "dialogId": "d1", "event": {"type": "AcceptStatusEvent", "status": status, "sequenceList": [0]}}})
        b.s2c(conn, t + dt + 0.01, {"kind": "resp", "reqId": str(3 + i), "code": 200,
                                    "type": "ms.PublishEventResponse", "body": {"sequence": 1 + i}})


@pytest.fixture
def two_recordings(tmp_path):
    """Recording A in two rotated parts (a connection spans them) and recording B, interleaved in time."""
    part1 = CaptureBuilder(recording="A", part=1)
    part1.open("a1", 10.0, token="tok-a", client="10.0.0.1:1")
    conversation(part1, "a1", 10.5)
    part2 = CaptureBuilder(recording="A", part=2)
    part2.close("a1", 20.0, 4401, "expired", "server")
    part2.open("a2", 21.0, token="tok-a2", client="10.0.0.1:2")
    part2.ping("a2", 22.0)
    part2.close("a2", 23.0, 1000, "bye", "client")
    other = CaptureBuilder(recording="B")
    other.open("b1", 15.0, token="tok-b", client="10.0.0.2:1")
    other.c2s("b1", 15.5, "not json")
    other.close("b1", 16.0, 1006, None, "server")
    paths = [tmp_path / "a-2.jsonl", tmp_path / "b.jsonl.gz", tmp_path / "a-1.jsonl"]  # parts out of order
    part2.write(paths[0])
    other.write(paths[1], gz=True)
    part1.write(paths[2])
    return [str(p) for p in paths]


def test_tables_have_the_documented_columns_and_types(two_recordings):
    cap = analysis.load(two_recordings)
    for table, columns in COLUMNS.items():
        df = getattr(cap, table)
        assert list(df.columns) == [name for name, _ in columns], table
        for name, kind in columns:
            if kind == "time":
                assert isinstance(df[name].dtype, pd.DatetimeTZDtype) and str(df[name].dt.tz) == "UTC"
            elif kind == "float":
                assert df[name].dtype == "float64"
    assert len(cap.frames) == 11 and cap.frames.t.is_monotonic_increasing
    assert cap.frames.t.iloc[0] == pd.Timestamp(10.5, unit="s", tz="UTC")


def test_connections_span_parts_and_reconnects_are_chained(two_recordings):
    cap = analysis.load(two_recordings)
    conns = cap.connections.set_index("conn")
    assert conns.loc["a1", "frames_c2s"] == 4 and conns.loc["a1", "close_code"] == 4401
    assert conns.loc["a1", "duration_s"] == pytest.approx(10.0)
    assert conns.loc["a2", "prev_conn"] == "a1" and conns.loc["a2", "chain"] == "a1"
    assert conns.loc["a2", "pings_c2s"] == 1
    reconnect = cap.reconnects.iloc[0]
    assert (reconnect.conn, reconnect.prev_conn, reconnect.linked_by, reconnect.fresh_token) == ("a2", "a1", "host",
                                                                                                True)
    assert reconnect.delay_s == pytest.approx(1.0) and reconnect.prev_close_code == 4401
    assert list(cap.violations.rule) == ["invalid-json"]


def test_pairs_streams_and_sequences(two_recordings):
    cap = analysis.load(two_recordings)
    pairs = cap.pairs
    assert list(pairs.status) == ["answered"] * 4
    assert list(pairs.type) == ["cqm.SubscribeExConversations", "ms.SubscribeMessagingEvents",
                                "ms.PublishEvent", "ms.PublishEvent"]
    assert pairs.latency_ms.tolist() == pytest.approx([20.0, 20.0, 10.0, 10.0])
    streams = cap.streams.set_index("kind")
    assert streams.loc["conversations", "subscription_id"] == "s1"
    assert streams.loc["conversations", "first_notification_delay_ms"] == pytest.approx(50.0)
    assert streams.loc["messaging-events", "dialog_id"] == "d1"
    assert streams.loc["messaging-events", "notifications"] == 1
    seq = cap.sequences.iloc[0]
    assert (seq.dialog_id, seq.sequence, seq.event_type, seq.own) == ("d1", 0, "ContentEvent", False)
    assert seq.accept_ms == pytest.approx(250.0) and seq.read_ms == pytest.approx(2000.0)


def test_summary_is_what_the_cli_prints(two_recordings):
    cap = analysis.load(two_recordings)
    summary, damage = analysis.analyze(two_recordings)
    assert cap.summary() == summary and damage == []
    assert summary["capture"]["connections"] == 3
    assert summary["messaging"]["accepted"] == 1 and summary["reconnects"]["fresh_token"] == 1


def test_load_takes_config_keywords(two_recordings):
    cap = analysis.load(two_recordings, keepalive_limit_s=0.5)
    assert "keepalive-gap" in set(cap.violations.rule)
    with pytest.raises(TypeError):
        analysis.load(two_recordings, no_such_option=1)


def test_every_column_is_documented():
    from conftest import REPO
    doc = (REPO / "docs" / "analysis.md").read_text()
    for table, columns in COLUMNS.items():
        section = doc.split(f"### `{table}`")[1].split("###")[0]
        assert [name for name, _ in columns if f"`{name}`" not in section] == [], table


def test_silences_and_pings_tables(tmp_path):
    b = CaptureBuilder()
    b.open("c", 0.0)
    b.c2s("c", 10.0, {"kind": "req", "id": "1", "type": "GetClock"})
    b.s2c("c", 10.1, {"kind": "resp", "reqId": "1", "code": 200, "type": "GetClockResponse"})
    b.ping("c", 80.0)
    b.ping("c", 80.01, from_client=False, pong=True)
    b.close("c", 100.0, by="server")
    b.write(tmp_path / "c.jsonl")
    cap = analysis.load(tmp_path / "c.jsonl", keepalive_limit_s=60)
    silences = cap.silences
    assert list(silences.silence_s.round(2)) == [10.0, 70.0, 20.0]
    assert list(silences.over_limit) == [False, True, False]
    assert list(silences.ended_by) == ["activity", "activity", "close"]
    assert silences.start.iloc[1] == pd.Timestamp(10.0, unit="s", tz="UTC")
    assert list(zip(cap.pings.rec, cap.pings.dir)) == [("ping", "c2s"), ("pong", "s2c")]
    assert cap.config.keepalive_limit_s == 60
    assert cap.keepalive.gaps_over_limit.iloc[0] == silences.over_limit.sum()
