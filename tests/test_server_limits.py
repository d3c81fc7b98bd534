"""The built-in server's limits, end to end: real `mwtap serve` processes (memory measured from
/proc) or in-process servers, and real clients — websockets, aiohttp's HTTP client, and a raw
socket that stops reading."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import threading
import time

import aiohttp
from websockets.asyncio.client import connect

from conftest import BIN, free_port, wait_port
from recorder.server import MessagingServer, ServerConfig
from test_server import FAST, RawClient, new_conversation, run, signup

MB = 1024 * 1024


def rss(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024


def start_serve(procs, *args: str):
    port = free_port()
    proc = procs.start([str(BIN / "mwtap"), "serve", "--listen", f"127.0.0.1:{port}", "--agent-reply-delay", "0.05",
                        *args], "serve")
    wait_port(port, proc=proc)
    return proc, port


async def signups(port: int, count: int) -> list[str]:
    url = f"http://127.0.0.1:{port}/api/account/mwtap/signup"
    async with aiohttp.ClientSession() as http:
        async def one() -> str:
            async with http.post(url, json={}) as reply:
                assert reply.status == 200
                return (await reply.json())["jwt"]
        tokens = []
        for start in range(0, count, 100):
            tokens += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
        return tokens


def test_issued_tokens_cost_no_memory(procs):
    """20,000 signups used to keep every token (+7 MB); tokens are now verified by signature."""
    proc, port = start_serve(procs)
    asyncio.run(signups(port, 2_000))  # warm up allocator pools and the HTTP stack
    before = rss(proc.pid)
    tokens = asyncio.run(signups(port, 20_000))
    grown = rss(proc.pid) - before
    assert grown < 2 * MB, f"RSS grew {grown / MB:.1f} MB over 20,000 signups"

    async def still_valid():  # the first token still opens a socket: nothing was forgotten either
        url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
        async with connect(url, proxy=None, additional_headers={"Authorization": f"jwt {tokens[0]}"}) as ws:
            await ws.send(json.dumps({"id": 1, "type": "GetClock"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))["code"]

    assert asyncio.run(still_valid()) == 200


async def open_and_leave(port: int, consumers: int, conversations: int) -> None:
    """`consumers` identities each open `conversations` conversations on one socket, then leave."""
    url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"

    async def consumer(token: str) -> None:
        async with connect(url, proxy=None, additional_headers={"Authorization": f"jwt {token}"},
                           ping_interval=None) as ws:
            for n in range(conversations):
                await ws.send(json.dumps({"id": n, "type": "cm.ConsumerRequestConversation"}))
            answered = 0
            while answered < conversations:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame.get("kind") == "resp":
                    assert frame["code"] == 200, frame
                    answered += 1

    await asyncio.gather(*(consumer(token) for token in await signups(port, consumers)))


def test_conversations_are_forgotten_after_their_consumer_left(procs):
    """5,000 conversations from clients that then left used to stay (+25 MB each time); now they are
    forgotten `--retention` seconds later, so doing it again and again does not grow the server."""
    proc, port = start_serve(procs, "--retention", "1")
    sizes = []
    for _ in range(5):
        asyncio.run(open_and_leave(port, consumers=50, conversations=100))
        time.sleep(3)  # retention, and the agent's join of the last conversations
        sizes.append(rss(proc.pid))
    # the first round sets the allocator's high-water mark; the next ones reuse what was freed
    # (kept conversations: about +25 MB a round)
    grown = sizes[-1] - sizes[1]
    assert grown < 10 * MB, f"RSS after each round of 5,000 conversations: {[round(s / MB, 1) for s in sizes]} MB"


def test_conversation_limit_and_retention():
    async def scenario():
        config = ServerConfig(**FAST, max_conversations=3, retention=0.5)
        async with MessagingServer(config) as server:
            token = await signup(server)
            client = await RawClient.open(server, token)
            await client.request({"id": "s", "type": "cqm.SubscribeExConversations", "body": {}})
            first, second, third = [await new_conversation(client, f"c{n}") for n in range(3)]
            refused = await client.request({"id": "c3", "type": "cm.ConsumerRequestConversation"})
            assert refused["code"] == 429 and "close one first" in refused["body"]
            await client.request({"id": "x", "type": "cm.UpdateConversationField", "body": {
                "conversationId": first, "conversationField": {"field": "ConversationStateField",
                                                               "conversationState": "CLOSE"}}})
            fourth = await new_conversation(client, "c4")  # the oldest closed one makes room
            deleted = await client.next(lambda f: "ExConversation" in f.get("type", "") and f["body"]["changes"]
                                        and f["body"]["changes"][0]["type"] == "DELETE")
            assert deleted["body"]["changes"][0]["result"]["convId"] == first
            assert set(server.store.conversations) == {second, third, fourth}
            await client.close()

            await asyncio.sleep(0.2)  # back before the retention ends: everything is still there
            again = await RawClient.open(server, token)
            assert set(server.store.conversations) == {second, third, fourth}
            await again.close()
            async with asyncio.timeout(10):
                while server.store.conversations or server.agent.tasks:
                    await asyncio.sleep(0.05)
            assert not server.store.dialogs and not server.agent.inboxes

    run(scenario())


def test_subscriptions_per_connection_are_limited_with_429():
    """20k subscriptions turned one conversation request into 40,001 notifications."""
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, max_subscriptions=5)) as server:
            client = await RawClient.open(server, await signup(server))
            for n in range(20):
                await client.send({"id": f"s{n}", "type": "cqm.SubscribeExConversations", "body": {}})
            answers = [await client.next(lambda f, n=n: f.get("reqId") == f"s{n}") for n in range(20)]
            assert [a["code"] for a in answers] == [200] * 5 + [429] * 15
            assert "limit 5" in answers[-1]["body"]
            kept = [a["body"]["subscriptionId"] for a in answers[:5]]
            await client.request({"id": "u", "type": "cqm.UnsubscribeExConversations",
                                  "body": {"subscriptionId": kept[0]}})
            assert (await client.request({"id": "s20", "type": "cqm.SubscribeExConversations"}))["code"] == 200
            other = await RawClient.open(server, await signup(server))  # the limit is per connection
            assert (await other.request({"id": 1, "type": "cqm.SubscribeExConversations"}))["code"] == 200
            await other.close()
            conversation_id = await new_conversation(client)
            await asyncio.sleep(0.3)
            created = [f for f in client.notifications("ExConversation") if f["body"]["changes"]
                       and f["body"]["changes"][0]["result"]["convId"] == conversation_id
                       and len(f["body"]["changes"][0]["result"]["conversationDetails"]["participants"]) == 1]
            assert len(created) == 5
            await client.close()

    run(scenario())


class NonReadingClient:
    """A WebSocket client on a raw socket with a tiny receive buffer that sends and never reads."""

    def __init__(self, port: int, token: str):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws_api/account/mwtap/messaging/consumer?v=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\nAuthorization: jwt {token}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, frame: dict) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        header = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126
                                  else bytes([0x80 | 126]) + len(payload).to_bytes(2, "big"))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def flood(self, conversation_id: str, stop: threading.Event) -> str:
        """Publishes typing states until the server ends the connection; returns how it ended."""
        self.sock.settimeout(30)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                self.send({"id": n, "type": "ms.PublishEvent", "body": {
                    "dialogId": conversation_id, "event": {"type": "ChatStateEvent", "chatState": "COMPOSING"}}})
        except OSError as e:  # reset by the server (aborted), or it stopped reading our frames
            return type(e).__name__
        return "stopped"


def test_a_client_that_does_not_read_is_closed_and_others_stay_fast(procs):
    """A client that never read had 90k notifications queued while another's GetClock took 2.7 s."""
    proc, port = start_serve(procs, "--max-outbox", "500")
    token, good_token = asyncio.run(signups(port, 2))
    before = rss(proc.pid)

    async def subscribed_conversation() -> str:
        url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
        async with connect(url, proxy=None, additional_headers={"Authorization": f"jwt {token}"}) as ws:
            await ws.send(json.dumps({"id": 1, "type": "cm.ConsumerRequestConversation"}))
            while (frame := json.loads(await ws.recv())).get("kind") != "resp":
                pass
            return frame["body"]["conversationId"]

    conversation_id = asyncio.run(subscribed_conversation())
    slow = NonReadingClient(port, token)
    slow.send({"id": "sub", "type": "ms.SubscribeMessagingEvents", "body": {"dialogId": conversation_id}})
    stop = threading.Event()
    ended: list[str] = []
    flooder = threading.Thread(target=lambda: ended.append(slow.flood(conversation_id, stop)), daemon=True)

    async def good_client() -> list[float]:
        url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
        latencies = []
        async with connect(url, proxy=None, additional_headers={"Authorization": f"jwt {good_token}"}) as ws:
            flooder.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not re.search(r"closed with 1013", proc.log_path.read_text()):
                started = time.monotonic()
                await ws.send(json.dumps({"id": len(latencies), "type": "GetClock"}))
                await asyncio.wait_for(ws.recv(), 10)
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.05)
        return latencies

    try:
        latencies = asyncio.run(good_client())
        flooder.join(30)  # the server ended the connection: the flooder's next send fails
    finally:
        stop.set()
        flooder.join(40)
        slow.sock.close()
    assert "closed with 1013" in proc.log_path.read_text(), proc.log_path.read_text()[-2000:]
    assert ended and ended[0] != "stopped"
    assert max(latencies) < 1.0, f"GetClock took up to {max(latencies):.2f} s during the flood"
    assert rss(proc.pid) - before < 30 * MB


def test_a_pipelining_client_that_reads_is_not_taken_for_one_that_does_not():
    """A burst of requests in one TCP read must not fill the outbox before the writer runs."""
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, max_outbox=50)) as server:
            client = await RawClient.open(server, await signup(server))
            for n in range(3001):
                await client.send({"id": n, "type": "GetClock"})
            async with asyncio.timeout(30):
                while len([f for f in client.frames if f.get("kind") == "resp"]) < 3001 and not client.reader.done():
                    client.arrived.clear()
                    await client.arrived.wait()
            assert not client.reader.done(), f"closed with {client.ws.close_code}"
            assert sum(1 for f in client.frames if f.get("code") == 200) == 3001
            await client.close()

    run(scenario())


def test_events_per_conversation_are_limited_with_429():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, max_events=5)) as server:
            client = await RawClient.open(server, await signup(server))
            conversation_id = await new_conversation(client)

            def publish(n: int, event: dict) -> dict:
                return {"id": n, "type": "ms.PublishEvent", "body": {"dialogId": conversation_id, "event": event}}

            text = {"type": "ContentEvent", "contentType": "text/plain", "message": "hi"}
            codes = [(await client.request(publish(n, text)))["code"] for n in range(5)]
            refused = await client.request(publish(5, text))
            assert codes == [200] * 5 and refused["code"] == 429 and "limit" in refused["body"]
            typing = await client.request(publish(6, {"type": "ChatStateEvent", "chatState": "COMPOSING"}))
            assert typing["code"] == 200
            await client.close()

    run(scenario())
