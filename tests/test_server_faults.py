"""Each fault-injection knob of the built-in server has an observable effect (real sockets, 127.0.0.1)."""

from __future__ import annotations

import asyncio

from recorder.server import MessagingServer, ServerConfig
from test_server import FAST, RawClient, conversation_update, new_conversation, publish, run, signup, text


async def open_client(server: MessagingServer) -> RawClient:
    return await RawClient.open(server, await signup(server))


def test_response_delay_holds_back_only_that_type():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, response_delays_ms={"ms.PublishEvent": 600})) as server:
            client = await open_client(server)
            conversation_id = await new_conversation(client)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.send(publish("slow", conversation_id, text("hi")))
            clock = await client.request({"id": "fast", "type": "GetClock"})
            assert clock["code"] == 200 and not any(f.get("reqId") == "slow" for f in client.frames)
            slow = await client.next(lambda f: f.get("reqId") == "slow")
            assert slow["code"] == 200 and loop.time() - started >= 0.55
            await client.close()

    run(scenario())


async def answered_ids(seed: int, drop_rate: float, count: int = 40) -> set[str]:
    async with MessagingServer(ServerConfig(**FAST, drop_rate=drop_rate, seed=seed)) as server:
        client = await open_client(server)
        for n in range(count):
            await client.send({"id": n, "type": "GetClock"})
        await asyncio.sleep(1.0)  # on loopback all answers arrive well within this
        await client.close()
        return {f["reqId"] for f in client.frames if f.get("kind") == "resp"}


def test_drop_rate_drops_a_seeded_share_of_responses():
    async def scenario():
        some = await answered_ids(seed=7, drop_rate=0.5)
        assert 5 <= len(some) <= 35
        assert await answered_ids(seed=7, drop_rate=0.5) == some
        assert await answered_ids(seed=7, drop_rate=1.0) == set()
        assert len(await answered_ids(seed=7, drop_rate=0.0)) == 40

    run(scenario(), 60)


async def sequences_with(fault: str) -> list[int]:
    config = ServerConfig(**FAST, sequence_fault=fault, sequence_fault_rate=1.0)
    async with MessagingServer(config) as server:
        client = await open_client(server)
        conversation_id = await new_conversation(client)
        await client.request({"id": "sub", "type": "ms.SubscribeMessagingEvents",
                              "body": {"dialogId": conversation_id, "fromSeq": 0}})
        for n in range(3):
            await client.request(publish(f"t{n}", conversation_id, text(f"message {n}")))
        await client.close()
        return [c["sequence"] for f in client.notifications("MessagingEvent")
                for c in f["body"]["changes"] if "sequence" in c]


def test_sequence_faults_duplicate_or_skip_numbers():
    async def scenario():
        duplicated = await sequences_with("duplicate")
        assert len(duplicated) >= 3 and set(duplicated) == {0}
        skipped = await sequences_with("skip")
        assert len(skipped) >= 3 and skipped == list(range(0, 2 * len(skipped), 2))

    run(scenario())


def test_close_after_closes_unsolicited_with_the_chosen_code():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, close_after=1.0, close_code=4123)) as server:
            client = await open_client(server)
            started = asyncio.get_running_loop().time()
            assert (await client.request({"id": 1, "type": "GetClock"}))["code"] == 200
            assert await client.closed(5) == 4123
            assert asyncio.get_running_loop().time() - started >= 0.8

    run(scenario())


def test_unknown_subscription_notifications():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, unknown_subscription_rate=1.0)) as server:
            client = await open_client(server)
            subscribed = await client.request({"id": 1, "type": "cqm.SubscribeExConversations", "body": {}})
            await new_conversation(client)
            await conversation_update(client)
            await client.request({"id": 2, "type": "GetClock"})
            ids = [f["body"]["subscriptionId"] for f in client.notifications("ExConversation")]
            issued = subscribed["body"]["subscriptionId"]
            assert ids.count(issued) >= 2 and len([i for i in ids if i != issued]) == ids.count(issued)
            await client.close()

    run(scenario())


def test_agent_closes_after_configured_time():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, agent_close_after_seconds=0.5)) as server:
            client = await open_client(server)
            await client.request({"id": 1, "type": "cqm.SubscribeExConversations", "body": {}})
            await new_conversation(client)
            closed = await conversation_update(client, lambda details: details["state"] == "CLOSE")
            assert closed["closeReason"] == "AGENT"
            await client.close()

    run(scenario())
