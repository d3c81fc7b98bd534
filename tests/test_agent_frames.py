"""LivePerson's "Messaging Agent API — Getting Started" frames (16 frames on a brand connection,
kept in tests/data/agent_getting_started.jsonl with the step each comes from), analysed as a
capture: the bearer in the URL path authenticates the connection, the routing-task subscription is
known, the agent's acknowledgements are judged as an agent's, and the connection says it is an
agent's."""

from __future__ import annotations

import json

import pytest

from analysis.redact import redact_url
from conftest import DATA
from page_session import analyse_page

FRAMES = [json.loads(line) for line in (DATA / "agent_getting_started.jsonl").read_text().splitlines()]
BEARER = "4d7c2a9e1f0b83c6e5a7d9f1b2c4e6a8f0d2b4c6e8a0f2d4b6c8e0a2f4d6b8c"  # opaque, as the login returns
BRAND_URL = f"ws://127.0.0.1:9000/ws_api/account/qa20971604/messaging/brand/{BEARER}?v=2"


def analyse(url: str, frames=FRAMES, token: str | None = None):
    return analyse_page(frames, ("connections", "streams", "sequences"), url=url, token=token)


def test_the_capture_is_the_pages_session():
    assert len(FRAMES) == 16
    assert all(line["source"].startswith("LivePerson developer center, Messaging Agent API — Getting Started, ")
               for line in FRAMES)
    documented = [json.loads(line)["frame"] for line in (DATA / "documented_frames.jsonl").read_text().splitlines()
                  if "agent-int-getting-started" in line]
    assert len(documented) == 4 and all(frame in [line["frame"] for line in FRAMES] for frame in documented)


EXPECTED = [
    ("reused-request-id", "info", 8),       # UpdateRingState reuses id 4 (numeric) of SubscribeRoutingTasks
    ("reused-request-id", "info", 11),      # the publish reuses id 2 of GetUserProfile
    # The page shows no answer to the publish; its "get consumer profile" example reuses id 2 after it.
    ("duplicate-request-id", "error", 15),
    ("unanswered-request", "info", 11),
    ("unanswered-request", "info", 15),
    ("unanswered-request", "info", 12),
    ("unanswered-request", "info", 13),
    ("unanswered-request", "info", 14),
    ("missing-accept", "info", None),       # the session ends 3 s after the consumer's message
]


@pytest.mark.parametrize("url", [BRAND_URL, redact_url(BRAND_URL)], ids=["as-sent", "redacted"])
def test_getting_started_verdicts(url):
    """No `request-before-init` (the bearer in the path authenticates, JWT-shaped or not), no
    `unknown-subscription` (the routing-task subscription id comes from `.ams.GenericSubscribe$Response`,
    the consumer's messages come without a subscription on the brand side)."""
    found, _ = analyse(url)
    assert [(v.rule, v.severity, v.frame) for v in found] == EXPECTED
    assert "before the agent's ACCEPT or READ" in found[-1].message


def test_the_bearer_is_redacted_and_keeps_its_fingerprint():
    assert BEARER not in redact_url(BRAND_URL)
    _, raw = analyse(BRAND_URL)
    _, redacted = analyse(redact_url(BRAND_URL))
    assert raw["connections"][0]["token"] == redacted["connections"][0]["token"] is not None


def test_the_connection_row_says_agent_and_url_auth():
    _, tables = analyse(BRAND_URL)
    [row] = tables["connections"]
    assert (row["side"], row["auth"]) == ("agent", "url")


def test_an_agent_connection_whose_url_does_not_tell_is_known_by_its_request_types():
    _, tables = analyse("ws://127.0.0.1:9000/rewritten", token="tok")
    assert tables["connections"][0]["side"] == "agent"


def test_a_consumer_connection_is_a_consumer():
    _, tables = analyse_page([], ("connections",), token=None,
                             url="ws://127.0.0.1:9000/ws_api/account/a/messaging/consumer?v=3")
    assert tables["connections"][0]["side"] == "consumer"


def test_the_routing_task_subscription_is_a_stream_with_its_notifications():
    _, tables = analyse(BRAND_URL)
    routing = [s for s in tables["streams"] if s["kind"] == "routing-tasks"]
    assert [(s["subscription_id"], s["request_type"], s["notifications"]) for s in routing] == [
        ("36267a8d-adf9-4dd9-994c-e1fd73fc3735", ".ams.routing.SubscribeRoutingTasks", 2)]


def test_the_consumers_message_is_from_another_participant_for_the_agent():
    _, tables = analyse(BRAND_URL)
    [row] = tables["sequences"]
    assert (row["sequence"], row["own"], row["originator_id"]) == (2, False, "3b5b7ec6-2b0f-53af-9afd-11d4072c85a7")


def _agent_reads(status: str) -> list[dict]:
    """The page's session up to the consumer's message, then the agent's acknowledgement."""
    ack = {"source": "test", "dir": "c2s", "frame": {
        "kind": "req", "id": "ack", "type": "ms.PublishEvent", "body": {
            "dialogId": "__YOUR_CONVERSATION_ID__", "event": {"type": "AcceptStatusEvent", "status": status,
                                                             "sequenceList": [2]}}}}
    answer = {"source": "test", "dir": "s2c", "frame": {"kind": "resp", "reqId": "ack", "code": 200,
                                                        "type": "ms.PublishEventResponse", "body": {"sequence": 3}}}
    return FRAMES[:11] + [ack, answer]


@pytest.mark.parametrize("status", ["READ", "ACCEPT"])
def test_an_agent_acknowledges_with_read_or_accept(status):
    """The agent SDK's bots publish READ alone: on an agent connection that acknowledges the
    message (on a consumer connection READ without ACCEPT is `missing-accept`)."""
    found, _ = analyse(BRAND_URL, _agent_reads(status))
    assert [v.rule for v in found if v.rule == "missing-accept"] == []
