"""The scripted consumer against the built-in server (both real, on 127.0.0.1), and through the recorder."""

from __future__ import annotations

import asyncio
from collections import Counter

from analysis.capture import CaptureFile
from recorder.consumer import ConsumerConfig, ConsumerStats, idp_url_for, run_consumer, signup
from recorder.server import MessagingServer, ServerConfig
from test_server import FAST, run

QUICK = dict(message_interval=0.05, read_delay=0.05, reply_timeout=5.0, request_timeout=5.0)


async def consume(server_config: ServerConfig, **consumer) -> tuple[ConsumerStats, MessagingServer]:
    async with MessagingServer(server_config) as server:
        stats = await run_consumer(server.url(), server.idp_url(), ConsumerConfig(**{**QUICK, **consumer}))
        return stats, server


def consumer_events(server: MessagingServer, stats: ConsumerStats, conversation_id: str) -> list[dict]:
    changes = server.store.conversations[conversation_id].dialog.changes
    return [c["event"] for c in changes if c["originatorId"] == stats.consumer_id]


def test_full_session_against_the_built_in_server():
    stats, server = run(consume(ServerConfig(**FAST), messages=3))
    assert stats.completed and stats.close_codes == [1000] and stats.reconnects == 0
    [conversation_id] = stats.conversation_ids
    conversation = server.store.conversations[conversation_id]
    assert conversation.state == "CLOSE" and conversation.close_reason == "CONSUMER"
    assert conversation.csat["csatRate"] == 5 and stats.csat_sent == 1 and stats.conversations_closed == 1
    events = consumer_events(server, stats, conversation_id)
    texts = [e["message"] for e in events if e["type"] == "ContentEvent"]
    assert texts == [f"message {n} from the scripted consumer" for n in (1, 2, 3)]
    receipts = Counter(e["status"] for e in events if e["type"] == "AcceptStatusEvent")
    assert stats.agent_messages == 3 and receipts == {"ACCEPT": 3, "READ": 3}
    answers = [c for c in conversation.dialog.changes
               if c["originatorId"] != stats.consumer_id and c["event"]["type"] == "ContentEvent"]
    assert [a["event"]["message"] for a in answers] == [f"You said: {t}" for t in texts]
    assert stats.responses == stats.requests_sent and stats.error_responses == 0


def test_init_connection_auth_and_getclock_keepalive():
    stats, server = run(consume(ServerConfig(**FAST), auth="init", keepalive="getclock", keepalive_interval=0.1,
                                messages=3, message_interval=0.3))
    assert stats.completed and stats.keepalives_sent >= 3 and stats.error_responses == 0
    assert stats.responses == stats.requests_sent


def test_token_expiry_gives_4401_and_reconnect_with_a_new_token_for_the_same_identity():
    stats, server = run(consume(ServerConfig(**FAST, token_lifetime=1.5), messages=6, message_interval=0.4))
    assert stats.completed and 4401 in stats.close_codes and stats.close_codes[-1] == 1000
    assert stats.reconnects >= 1 and stats.tokens_fetched == stats.reconnects + 1
    assert len(stats.conversation_ids) == 1  # the conversation was continued after reconnecting
    conversation = server.store.conversations[stats.conversation_ids[0]]
    assert conversation.consumer == stats.consumer_id and conversation.state == "CLOSE"
    assert len([e for e in consumer_events(server, stats, conversation.id) if e["type"] == "ContentEvent"]) == 6


def test_identity_window_gives_4407_and_extension():
    stats, _ = run(consume(ServerConfig(**FAST, identity_window=1.5), messages=6, message_interval=0.4))
    assert stats.completed and 4407 in stats.close_codes and len(stats.conversation_ids) == 1


def test_reusing_the_old_token_after_4401_is_refused_again():
    stats, _ = run(consume(ServerConfig(**FAST, token_lifetime=1.5), messages=5, message_interval=0.4,
                           reuse_token_after_4401=True))
    assert stats.completed
    first = stats.close_codes.index(4401)
    assert stats.close_codes[first:first + 2] == [4401, 4401]
    assert stats.tokens_fetched == stats.reconnects  # one reconnect went out with the stale token


def test_other_closes_reconnect_with_backoff_or_immediately():
    async def connections_in(seconds: float, **consumer) -> ConsumerStats:
        async with MessagingServer(ServerConfig(**FAST, close_after=0.4, close_code=1011)) as server:
            return await run_consumer(server.url(), server.idp_url(), ConsumerConfig(
                **{**QUICK, "message_interval": 0.1}, messages=None, duration=seconds, reconnect_delay=0.5, **consumer))

    async def scenario():
        patient = await connections_in(3.0)
        hasty = await connections_in(3.0, reconnect_immediately=True)
        return patient, hasty

    patient, hasty = run(scenario())
    for stats in (patient, hasty):  # every connection closed by the fault, the last maybe by the consumer
        assert set(stats.close_codes[:-1]) == {1011} and stats.close_codes[-1] in (1011, 1000)
    assert patient.tokens_fetched == 1 and patient.connections <= 4
    assert hasty.connections >= patient.connections + 2


def test_keepalive_pings_prevent_the_idle_close_and_no_keepalive_does_not():
    server_config = ServerConfig(**FAST, idle_timeout=1.0, idle_close_code=4000)
    kept, _ = run(consume(server_config, messages=2, message_interval=2.0, keepalive_interval=0.3))
    assert kept.completed and kept.close_codes == [1000] and kept.keepalives_sent >= 4
    silent, _ = run(consume(server_config, messages=2, message_interval=2.0, keepalive_interval=0.3,
                            no_keepalive=True))
    assert silent.completed and 4000 in silent.close_codes and silent.keepalives_sent == 0


def test_skip_accept_sends_only_read_receipts():
    stats, server = run(consume(ServerConfig(**FAST), messages=2, skip_accept=True))
    receipts = Counter(e["status"] for e in consumer_events(server, stats, stats.conversation_ids[0])
                       if e["type"] == "AcceptStatusEvent")
    assert stats.completed and stats.accepts_sent == 0 and receipts == {"READ": stats.agent_messages}


def test_agent_closing_the_conversation_starts_a_new_one():
    stats, server = run(consume(ServerConfig(**FAST, agent_close_after_messages=2), messages=3))
    assert stats.completed and len(stats.conversation_ids) == 2 and stats.csat_sent == 2
    first, second = (server.store.conversations[c] for c in stats.conversation_ids)
    assert first.close_reason == "AGENT" and second.close_reason == "CONSUMER"


def test_stop_event_and_duration_end_the_session_cleanly():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(1.0, stop.set)
            stopped = await run_consumer(server.url(), server.idp_url(),
                                         ConsumerConfig(**QUICK, messages=None), stop=stop)
            started = asyncio.get_running_loop().time()
            timed = await run_consumer(server.url(), server.idp_url(),
                                       ConsumerConfig(**QUICK, messages=None, duration=1.0))
            return stopped, timed, asyncio.get_running_loop().time() - started

    stopped, timed, elapsed = run(scenario())
    for stats in (stopped, timed):
        assert stats.completed and stats.messages_sent >= 1 and stats.conversations_closed == 1
        assert stats.close_codes == [1000]
    assert 1.0 <= elapsed < 8.0


def test_consumer_through_the_recording_proxy(tmp_path):
    from recorder.proxy import RecordingProxy

    capture = tmp_path / "cap.jsonl"

    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            async with RecordingProxy(f"ws://127.0.0.1:{server.port}", capture) as proxy:
                url = server.url().replace(f":{server.port}/", f":{proxy.port}/")
                return await run_consumer(url, server.idp_url(),
                                          ConsumerConfig(**QUICK, messages=2, reuse_request_id=True))

    stats = run(scenario(), 60)
    assert stats.completed
    records = list(CaptureFile(str(capture)).records())
    requests = [r for r in records if r["rec"] == "msg" and r["dir"] == "c2s"]
    types = {r.get("type") for r in requests}
    assert {"cqm.SubscribeExConversations", "cm.ConsumerRequestConversation", "ms.SubscribeMessagingEvents",
            "ms.PublishEvent", "cm.UpdateConversationField"} <= types
    reused = [i for i, n in Counter(r["id"] for r in requests).items() if n > 1]
    assert len(reused) == 2  # each text went out with the id of its COMPOSING chat state
    responses = [r for r in records if r["rec"] == "msg" and r["dir"] == "s2c" and r.get("kind") == "resp"]
    assert len(responses) == len(requests) == stats.requests_sent
    assert [r["code"] for r in records if r["rec"] == "close"] == [1000]


def test_a_consumer_that_never_connects_gives_up_at_once_saying_why():
    """Nothing listens: the consumer returns within a second with the failed call in `error` (it
    used to retry ten times with backoff, about a minute, and kept no reason)."""
    from conftest import free_port

    port = free_port()

    async def scenario():
        started = asyncio.get_running_loop().time()
        stats = await run_consumer(f"ws://127.0.0.1:{port}/ws_api/account/a/messaging/consumer?v=3",
                                   f"http://127.0.0.1:{port}/api/account/a", ConsumerConfig(**QUICK))
        return stats, asyncio.get_running_loop().time() - started

    stats, elapsed = run(scenario())
    assert elapsed < 5 and stats.connections == 0 and stats.close_codes == [None] and not stats.completed
    assert stats.error.startswith(f"POST http://127.0.0.1:{port}/api/account/a/signup: ")


def test_tokens_from_a_token_fetch_with_the_refused_token_and_the_reason():
    """A TokenFetch instead of the IDP URL (what `mwtap consume --token-command` uses): asked once
    at first, then after each 4401 with the token the server refused."""
    calls = []

    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, token_lifetime=1.5)) as server:
            async def fetch(previous, reason):
                calls.append((previous, reason))
                return await asyncio.to_thread(signup, server.idp_url(), previous)
            return await run_consumer(server.url(), fetch, ConsumerConfig(**{**QUICK, "message_interval": 0.5}, messages=4))

    stats = run(scenario())
    assert stats.completed and 4401 in stats.close_codes and len(stats.conversation_ids) == 1
    assert calls[0] == (None, "initial") and len(calls) == stats.tokens_fetched >= 2
    assert all(reason == "4401" and previous for previous, reason in calls[1:])
    assert len({previous for previous, _ in calls[1:]}) == len(calls) - 1  # each refresh names the token refused


def test_idp_url_for_the_built_in_server_layout():
    assert idp_url_for("ws://127.0.0.1:8080/ws_api/account/A1/messaging/consumer?v=3") == \
        "http://127.0.0.1:8080/api/account/A1"
    assert idp_url_for("wss://[::1]:443/ws_api/account/A1/messaging/consumer") == "https://[::1]:443/api/account/A1"
    assert idp_url_for("http://127.0.0.1:8765/api/account/mwtap/signup") == "http://127.0.0.1:8765/api/account/mwtap"
    assert idp_url_for("http://127.0.0.1:8765/api/account/mwtap/") == "http://127.0.0.1:8765/api/account/mwtap"
    for no_account in ("ws://127.0.0.1:8080/", "http://127.0.0.1/api/account/a/authenticate", "ftp://h/api/account/a",
                       "ws:///ws_api/account/a/x"):
        assert idp_url_for(no_account) is None, no_account
