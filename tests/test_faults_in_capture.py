"""Each fault knob of the built-in server leaves its mark in a real capture: a scripted consumer
talks to the faulty server through the recorder, and the analysis of the capture shows the fault."""

from __future__ import annotations

import asyncio

import pytest

import analysis
from recorder.consumer import ConsumerConfig, run_consumer
from recorder.proxy import RecordingProxy
from recorder.server import MessagingServer, ServerConfig

CONSUMER = ConsumerConfig(messages=4, message_interval=0.1, read_delay=0.05, request_timeout=1.0,
                          reconnect_delay=0.2, max_reconnects=2)


def record_session(tmp_path, server_config: ServerConfig, consumer: ConsumerConfig = CONSUMER):
    out = tmp_path / "capture.jsonl"

    async def session():
        async with MessagingServer(server_config) as server:
            async with RecordingProxy(f"ws://127.0.0.1:{server.port}", out) as proxy:
                ws_url = server.url().replace(f":{server.port}/", f":{proxy.port}/", 1)
                return await asyncio.wait_for(run_consumer(ws_url, server.idp_url(), consumer), 60)

    stats = asyncio.run(session())
    return stats, analysis.load(out, response_timeout_s=2.0, keepalive_limit_s=1000)


def rules(cap) -> set[str]:
    return set(cap.violations[cap.violations.severity != "info"].rule)


def test_no_fault_no_violation(tmp_path):
    stats, cap = record_session(tmp_path, ServerConfig(agent_reply_delay=0.05))
    assert stats.completed and rules(cap) == set()
    assert (cap.pairs.status == "answered").all()


def test_response_delay_shows_in_that_type_latency(tmp_path):
    _, cap = record_session(tmp_path, ServerConfig(agent_reply_delay=0.05,
                                                   response_delays_ms={"cm.UpdateConversationField": 400}))
    latency = cap.pairs.groupby("type").latency_ms.min()
    assert latency["cm.UpdateConversationField"] >= 400
    assert latency.drop("cm.UpdateConversationField").max() < 400


def test_dropped_responses_are_unanswered_requests(tmp_path):
    _, cap = record_session(tmp_path, ServerConfig(agent_reply_delay=0.05, drop_rate=0.3, seed=3))
    unanswered = cap.pairs[cap.pairs.status != "answered"]
    assert len(unanswered) >= 1
    assert set(cap.violations.rule) >= {"unanswered-request"}
    assert not (cap.pairs.status == "orphan").any()


# A skipped sequence is info on a consumer's connection: it may be a message for agents only.
@pytest.mark.parametrize("fault, found", [("duplicate", ("sequence-duplicate", "warning")),
                                          ("skip", ("sequence-gap", "info"))])
def test_sequence_faults_show_as_sequence_violations(tmp_path, fault, found):
    _, cap = record_session(tmp_path, ServerConfig(agent_reply_delay=0.05, sequence_fault=fault,
                                                   sequence_fault_rate=0.5, seed=1))
    assert found in set(zip(cap.violations.rule, cap.violations.severity))


def test_unsolicited_close_with_the_chosen_code(tmp_path):
    consumer = ConsumerConfig(messages=None, duration=2.5, message_interval=0.2, reconnect_delay=0.2,
                              max_reconnects=3)
    _, cap = record_session(tmp_path, ServerConfig(agent_reply_delay=0.05, close_after=1.0, close_code=1011),
                            consumer)
    closes = cap.connections[cap.connections.close_code == 1011]
    assert len(closes) >= 1 and set(closes.closed_by) == {"server"}
    assert (cap.reconnects.prev_close_code == 1011).any()


def test_notifications_for_unknown_subscriptions(tmp_path):
    _, cap = record_session(tmp_path, ServerConfig(agent_reply_delay=0.05, unknown_subscription_rate=1.0, seed=2))
    assert "unknown-subscription" in rules(cap)
