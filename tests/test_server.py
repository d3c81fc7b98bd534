"""The built-in Messaging Window server, in-process, driven by a real websockets client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import DATA
from recorder.server import MessagingServer, ServerConfig
from recorder.server.agent import AGENT_ID

FAST = dict(agent_join_delay=0.0, agent_receipt_delay=0.01, agent_reply_delay=0.05, agent_greeting=None)


def run(coroutine, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def http_post(url: str, authorization: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="POST", data=b"" if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if authorization:
        request.add_header("Authorization", authorization)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


async def signup(server: MessagingServer, previous: str | None = None) -> str:
    status, body = await asyncio.to_thread(http_post, server.idp_url() + "/signup",
                                           previous and f"jwt {previous}")
    assert status == 200, body
    return body["jwt"]


def jwt_payload(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class RawClient:
    """A websockets client that keeps every frame it receives, for asserting on them."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict | str] = []
        self.taken: set[int] = set()
        self.arrived = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, server: MessagingServer, token: str | None = None, **kwargs) -> RawClient:
        headers = {"Authorization": f"jwt {token}"} if token else None
        ws = await connect(server.url(), proxy=None, additional_headers=headers, ping_interval=None, **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.frames.append(json.loads(message))
                self.arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.arrived.set()

    async def send(self, frame: dict | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def next(self, predicate, timeout: float = 5.0) -> dict:
        """The first frame not yet returned that matches `predicate`."""
        async with asyncio.timeout(timeout):
            while True:
                for index, frame in enumerate(self.frames):
                    if index not in self.taken and predicate(frame):
                        self.taken.add(index)
                        return frame
                if self.reader.done():
                    raise ConnectionError(f"closed with {self.ws.close_code} while waiting")
                self.arrived.clear()
                await self.arrived.wait()

    async def request(self, frame: dict, timeout: float = 5.0) -> dict:
        await self.send(frame)
        return await self.next(lambda f: f.get("kind") == "resp" and f.get("reqId") == str(frame["id"]), timeout)

    async def closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        return self.ws.close_code

    def notifications(self, kind: str) -> list[dict]:
        return [f for f in self.frames if f.get("kind") == "notification" and kind in f.get("type", "")]

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


async def new_conversation(client: RawClient, request_id: str = "setup-conv") -> str:
    response = await client.request({"kind": "req", "id": request_id, "type": "cm.ConsumerRequestConversation"})
    assert response["code"] == 200, response
    return response["body"]["conversationId"]


async def conversation_update(client: RawClient, predicate=lambda details: True) -> dict:
    """The `conversationDetails` of the next conversation UPSERT whose details match `predicate`."""
    frame = await client.next(lambda f: "ExConversation" in f.get("type", "") and f["body"]["changes"]
                              and predicate(f["body"]["changes"][0]["result"]["conversationDetails"]))
    return frame["body"]["changes"][0]["result"]["conversationDetails"]


def publish(request_id, conversation_id: str, event: dict) -> dict:
    return {"kind": "req", "id": request_id, "type": "ms.PublishEvent",
            "body": {"dialogId": conversation_id, "event": event}}


def text(message: str) -> dict:
    return {"type": "ContentEvent", "contentType": "text/plain", "message": message}


# -- documented request shapes -----------------------------------------------------------------

STRING_RESPONSES = {"StringResponse", ".ReqBody$StringResp"}
DOCUMENTED_RESPONSE_TYPES = {
    "cm.ConsumerRequestConversation": {"cm.RequestConversationResponse"},
    "ms.PublishEvent": {"ms.PublishEventResponse"},
    "ms.SubscribeMessagingEvents": {"GenericSubscribeResponse", ".ams.GenericSubscribeResponse"},
    "cqm.SubscribeExConversations": {"cqm.SubscribeExConversationsResponse"},
    "cqm.UnsubscribeExConversations": STRING_RESPONSES,
    "cm.UpdateConversationField": STRING_RESPONSES,
    "InitConnection": STRING_RESPONSES,
    ".GetClock": {".GetClock$Response"},
    "ms.GenerateURLForUploadFile": {"ms.GenerateURLResponse", "ms.BaseGenerateURLResponse"},
    "ms.GenerateURLForDownloadFile": {"ms.GenerateURLResponse", "ms.BaseGenerateURLResponse"},
}


def documented_requests() -> list[dict]:
    lines = (DATA / "documented_frames.jsonl").read_text().splitlines()
    return [json.loads(line)["frame"] for line in lines if json.loads(line)["group"] == "requests"]


def substitute(frame: dict, values: dict[str, str]) -> dict:
    text_form = json.dumps(frame)
    for placeholder, value in values.items():
        text_form = text_form.replace(json.dumps(placeholder), json.dumps(value))
    return json.loads(text_form)


def check_documented_body(request: dict, response: dict) -> None:
    body = response.get("body")
    request_type = request["type"]
    if request_type == "cm.ConsumerRequestConversation":
        assert isinstance(body["conversationId"], str)
    elif request_type == "ms.PublishEvent":
        assert isinstance(body["sequence"], int)
        if request["body"]["event"]["type"] == "ChatStateEvent":
            assert body["sequence"] == 0
    elif request_type == "cqm.SubscribeExConversations":
        assert isinstance(body["subscriptionId"], str)
    elif request_type == ".GetClock":
        assert isinstance(body["currentTime"], int)
    elif request_type.startswith("ms.GenerateURL"):
        assert body["relativePath"].startswith("/") and "temp_url_sig" in body["queryParams"]
    elif DOCUMENTED_RESPONSE_TYPES[request_type] is STRING_RESPONSES:
        assert isinstance(body, str)


def test_documented_requests_get_documented_responses():
    frames = documented_requests()
    assert len(frames) >= 15 and {f["type"] for f in frames} == set(DOCUMENTED_RESPONSE_TYPES)

    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            token = await signup(server)
            for frame in frames:
                if frame["type"] == "InitConnection":
                    client = await RawClient.open(server)
                    request = substitute(frame, {"__YOUR_JWT__": token})
                else:
                    client = await RawClient.open(server, token)
                    conversation_id = await new_conversation(client)
                    subscribed = await client.request({"id": "setup-sub", "type": "cqm.SubscribeExConversations",
                                                       "body": {"convState": ["OPEN"]}})
                    upload = await client.request({"id": "setup-upload", "type": "ms.GenerateURLForUploadFile",
                                                   "body": {"fileSize": 1000, "fileType": "PNG"}})
                    values = {name: conversation_id for name in
                              ("__YOUR_CONVERSATION_ID__", "__CONVERSATION_ID__", "__DIALOG_ID__",
                               "__YOUR_POST_SURVEY_DIALOG_ID__", "hello")}
                    request = substitute(frame, {**values, "__relative_path__": upload["body"]["relativePath"]})
                    body = request.get("body") or {}
                    if body.get("conversationId") == "id":
                        body["conversationId"] = conversation_id
                    if body.get("subscriptionId") == "id":
                        body["subscriptionId"] = subscribed["body"]["subscriptionId"]
                response = await client.request(request)
                assert response["kind"] == "resp" and response["code"] == 200, (request, response)
                assert response["reqId"] == str(frame["id"])
                assert response["type"] in DOCUMENTED_RESPONSE_TYPES[frame["type"]], (request, response)
                check_documented_body(request, response)
                await client.close()

    run(scenario(), 60)


def test_getclock_variants_and_pipelined_numeric_ids():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            client = await RawClient.open(server, await signup(server))
            for request_id, request_type in [(7, "GetClock"), ("8", ".GetClock"), (9, "KeepAlive")]:
                await client.send({"id": request_id, "type": request_type})
            responses = [await client.next(lambda f, i=i: f.get("reqId") == i) for i in ("7", "8", "9")]
            assert [r["type"] for r in responses] == ["GetClockResponse", ".GetClock$Response", "StringResponse"]
            assert all(r["code"] == 200 for r in responses)
            assert abs(responses[0]["body"]["currentTime"] / 1000 - time.time()) < 5
            await client.close()

    run(scenario())


# -- conversation flow -------------------------------------------------------------------------

def test_conversation_lifecycle_with_agent():
    async def scenario():
        async with MessagingServer(ServerConfig(**{**FAST, "agent_greeting": "hi there"})) as server:
            token = await signup(server)
            consumer = jwt_payload(token)["sub"]
            client = await RawClient.open(server, token)
            subscribed = await client.request({"id": 1, "type": "cqm.SubscribeExConversations",
                                               "body": {"convState": ["OPEN"]}})
            subscription_id = subscribed["body"]["subscriptionId"]
            listing = await client.next(lambda f: f.get("type") == "cqm.ExConversationChangeNotification")
            assert listing["body"] == {"subscriptionId": subscription_id, "changes": []}

            conversation_id = await new_conversation(client)
            upsert = await client.next(lambda f: "ExConversation" in f.get("type", "") and f["body"]["changes"])
            assert upsert["body"]["subscriptionId"] == subscription_id
            assert upsert["body"]["changes"][0]["result"]["convId"] == conversation_id
            joined = await client.next(lambda f: "ExConversation" in f.get("type", "") and {
                "id": AGENT_ID, "role": "ASSIGNED_AGENT"} in f["body"]["changes"][0]["result"]
                ["conversationDetails"]["participants"])
            assert joined["body"]["changes"][0]["type"] == "UPSERT"

            response = await client.request({"id": 2, "type": "ms.SubscribeMessagingEvents",
                                             "body": {"dialogId": conversation_id, "fromSeq": 0}})
            assert response["type"] == "GenericSubscribeResponse"
            sent = await client.request(publish(3, conversation_id, text("hello agent")))
            my_sequence = sent["body"]["sequence"]
            echo = await client.next(lambda f: f.get("type") == "ms.MessagingEventNotification"
                                     and f["body"]["changes"][0]["originatorId"] == consumer)
            assert echo["body"]["changes"][0]["sequence"] == my_sequence

            def agent_event(predicate):
                return lambda f: f.get("type") == "ms.MessagingEventNotification" and \
                    f["body"]["changes"][0]["originatorId"] == AGENT_ID and predicate(f["body"]["changes"][0])

            answer = await client.next(agent_event(lambda c: c["event"].get("message", "").startswith("You said")))
            agent_changes = [f["body"]["changes"][0] for f in client.notifications("MessagingEvent")
                             if f["body"]["changes"][0]["originatorId"] == AGENT_ID]
            events = [(c["event"]["type"], c["event"].get("status") or c["event"].get("chatState"))
                      for c in agent_changes]
            assert events[-5:] == [("AcceptStatusEvent", "ACCEPT"), ("AcceptStatusEvent", "READ"),
                                   ("ChatStateEvent", "COMPOSING"), ("ChatStateEvent", "PAUSE"),
                                   ("ContentEvent", None)]
            assert agent_changes[-5]["event"]["sequenceList"] == [my_sequence]
            assert all("sequence" not in c for c in agent_changes if c["event"]["type"] == "ChatStateEvent")
            sequences = [c["sequence"] for f in client.notifications("MessagingEvent")
                         for c in f["body"]["changes"] if "sequence" in c]
            assert sequences == sorted(set(sequences)) and answer["body"]["changes"][0]["sequence"] == sequences[-1]

            closed = await client.request({"id": 4, "type": "cm.UpdateConversationField", "body": {
                "conversationId": conversation_id,
                "conversationField": {"field": "ConversationStateField", "conversationState": "CLOSE"}}})
            assert closed["code"] == 200
            state = await conversation_update(client, lambda details: details["state"] == "CLOSE")
            assert state["closeReason"] == "CONSUMER"
            refused = await client.request(publish(5, conversation_id, text("too late")))
            assert refused["code"] == 400 and isinstance(refused["body"], str)
            csat = await client.request({"id": 6, "type": "cm.UpdateConversationField", "body": {
                "conversationId": conversation_id, "conversationField": [
                    {"field": "CSATRate", "csatRate": 4, "csatResolutionConfirmation": True, "status": "FILLED"}]}})
            assert csat["code"] == 200
            rated = await conversation_update(client, lambda details: "csat" in details)
            assert rated["csat"]["csatRate"] == 4
            await client.close()

            # a new connection of the same identity sees the conversation and its history from fromSeq
            again = await RawClient.open(server, await signup(server, previous=token))
            await again.request({"id": 1, "type": "cqm.SubscribeExConversations", "body": {"convState": ["CLOSE"]}})
            listing = await again.next(lambda f: "ExConversation" in f.get("type", ""))
            assert [c["result"]["convId"] for c in listing["body"]["changes"]] == [conversation_id]
            await again.request({"id": 2, "type": "ms.SubscribeMessagingEvents",
                                 "body": {"dialogId": conversation_id, "fromSeq": my_sequence + 1}})
            history = await again.next(lambda f: f.get("type") == "ms.MessagingEventNotification")
            replayed = [c["sequence"] for c in history["body"]["changes"]]
            assert replayed == [s for s in sequences if s > my_sequence]
            await again.close()

    run(scenario())


def test_agent_closes_after_configured_messages():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, agent_close_after_messages=2)) as server:
            client = await RawClient.open(server, await signup(server))
            await client.request({"id": "s", "type": "cqm.SubscribeExConversations", "body": {}})
            conversation_id = await new_conversation(client)
            await client.request({"id": "m", "type": "ms.SubscribeMessagingEvents",
                                  "body": {"dialogId": conversation_id, "fromSeq": 0}})
            for n in (1, 2):
                await client.request(publish(f"t{n}", conversation_id, text(f"message {n}")))
                await client.next(lambda f: f.get("type") == "ms.MessagingEventNotification"
                                  and f["body"]["changes"][0]["event"].get("message", "").startswith("You said"))
            closed = await conversation_update(client, lambda details: details["state"] == "CLOSE")
            assert closed["closeReason"] == "AGENT"
            await client.close()

    run(scenario())


# -- authentication ----------------------------------------------------------------------------

def test_idp_endpoints_issue_jwt_shaped_tokens():
    async def scenario():
        async with MessagingServer(ServerConfig(token_lifetime=120)) as server:
            token = await signup(server)
            header, payload, signature = token.split(".")
            claims = jwt_payload(token)
            assert round(claims["exp"] - claims["iat"]) == 120 and len(claims["sub"]) == 36
            extended = await signup(server, previous=token)
            assert extended != token and jwt_payload(extended)["sub"] == claims["sub"]
            base = server.idp_url()
            status, _ = await asyncio.to_thread(http_post, base + "/signup", "jwt not-a-token")
            assert status == 401
            status, body = await asyncio.to_thread(http_post, base + "/authenticate", None, {"authCode": "alice"})
            again = await asyncio.to_thread(http_post, base + "/authenticate", None, {"authCode": "alice"})
            assert status == 200 and jwt_payload(body["jwt"])["sub"] == jwt_payload(again[1]["jwt"])["sub"]
            assert "unauth" not in jwt_payload(body["jwt"])
            status, _ = await asyncio.to_thread(http_post, base + "/authenticate")
            assert status == 400
            status, _ = await asyncio.to_thread(http_post, f"http://127.0.0.1:{server.port}/nothing/here")
            assert status == 404

    run(scenario())


def test_init_connection_authenticates_and_earlier_requests_are_refused():
    async def scenario():
        config = ServerConfig(**FAST, response_delays_ms={"InitConnection": 300})
        async with MessagingServer(config) as server:
            token = await signup(server)
            client = await RawClient.open(server)
            early = await client.request({"id": "a", "type": "cm.ConsumerRequestConversation"})
            assert early["code"] == 401 and isinstance(early["body"], str)
            clock = await client.request({"id": "b", "type": "GetClock"})
            assert clock["code"] == 200
            await client.send({"kind": "req", "id": "init", "type": "InitConnection", "headers": [
                {"type": ".ams.headers.ConsumerAuthentication", "jwt": token}]})
            pipelined = await client.request({"id": "c", "type": "cm.ConsumerRequestConversation"})
            assert pipelined["code"] == 401
            init = await client.next(lambda f: f.get("reqId") == "init")
            assert init["code"] == 200
            accepted = await client.request({"id": "d", "type": "cm.ConsumerRequestConversation"})
            assert accepted["code"] == 200
            await client.close()

            no_jwt = await RawClient.open(server)
            refused = await no_jwt.request({"id": "x", "type": "InitConnection", "headers": []})
            assert refused["code"] == 401
            await no_jwt.close()

    run(scenario())


@pytest.mark.parametrize("how", ["header", "init"])
def test_unknown_token_closes_with_4401(how):
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            if how == "header":
                client = await RawClient.open(server, "bogus.token.value")
            else:
                client = await RawClient.open(server)
                await client.send({"id": 1, "type": "InitConnection", "headers": [
                    {"type": ".ams.headers.ConsumerAuthentication", "jwt": "bogus"}]})
            assert await client.closed() == 4401

    run(scenario())


def test_header_scheme_is_case_insensitive_and_missing_init_times_out():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, init_timeout=0.5)) as server:
            token = await signup(server)
            ws = await connect(server.url(), proxy=None, additional_headers={"Authorization": f"JWT {token}"})
            client = RawClient(ws)
            assert (await client.request({"id": 1, "type": "cm.ConsumerRequestConversation"}))["code"] == 200
            await client.close()
            silent = await RawClient.open(server)
            assert await silent.closed() == 4401

    run(scenario())


def test_token_expiry_closes_with_4401_and_identity_window_with_4407():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, token_lifetime=1.0)) as server:
            client = await RawClient.open(server, await signup(server))
            assert await client.closed(5) == 4401
        async with MessagingServer(ServerConfig(**FAST, token_lifetime=60, identity_window=1.0)) as server:
            token = await signup(server)
            client = await RawClient.open(server, token)
            assert await client.closed(5) == 4407
            stale = await RawClient.open(server, token)
            assert await stale.closed(5) == 4407
            extended = await RawClient.open(server, await signup(server, previous=token))
            assert (await extended.request({"id": 1, "type": "GetClock"}))["code"] == 200
            await extended.close()
            authenticated = (await asyncio.to_thread(http_post, server.idp_url() + "/authenticate", None,
                                                     {"authCode": "bob"}))[1]
            client = await RawClient.open(server, authenticated["jwt"])
            await asyncio.sleep(1.5)
            assert (await client.request({"id": 2, "type": "GetClock"}))["code"] == 200
            await client.close()

    run(scenario())


# -- idle timeout ------------------------------------------------------------------------------

def test_idle_client_is_closed_but_pinging_client_is_not():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, idle_timeout=1.5)) as server:
            token = await signup(server)
            idle = await RawClient.open(server, token)
            pinging = await RawClient.open(server, token)
            clocking = await RawClient.open(server, token)
            started = asyncio.get_running_loop().time()
            for n in range(8):
                await asyncio.sleep(0.5)
                await pinging.ws.ping()
                if n % 2:
                    await clocking.send({"id": n, "type": "GetClock"})
            assert idle.reader.done() and idle.ws.close_code == 1000 and idle.ws.close_reason == "idle timeout"
            assert not pinging.reader.done() and not clocking.reader.done()
            assert asyncio.get_running_loop().time() - started >= 3.5
            await pinging.close()
            await clocking.close()

    run(scenario())


# -- bad input ---------------------------------------------------------------------------------

def test_bad_input_gets_errors_and_the_server_stays_up():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST, max_message_size=64 * 1024)) as server:
            token = await signup(server)
            client = await RawClient.open(server, token)
            cases = ["{not json", "[1, 2]", '"text"', json.dumps({"type": "GetClock"}),
                     json.dumps({"id": {"x": 1}, "type": "GetClock"})]
            for case in cases:
                await client.send(case)
                error = await client.next(lambda f: f.get("kind") == "resp")
                assert error["code"] == 400 and "reqId" not in error and isinstance(error["body"], str), case
            for frame, code in [({"id": "u", "type": "no.SuchRequest"}, 400),
                                ({"id": "k", "kind": "notification", "type": "GetClock"}, 400),
                                ({"id": "t", "type": 5}, 400),
                                ({"id": "b", "type": "ms.PublishEvent", "body": "nope"}, 400),
                                ({"id": "d", "type": "ms.PublishEvent", "body": {"dialogId": "nope", "event": {}}}, 404),
                                ({"id": "f", "type": "cm.UpdateConversationField",
                                  "body": {"conversationId": "nope", "conversationField": []}}, 404),
                                ({"id": "q", "type": "cqm.UnsubscribeExConversations",
                                  "body": {"subscriptionId": "nope"}}, 404)]:
                error = await client.request(frame)
                assert error["code"] == code and error["reqId"] == frame["id"] and isinstance(error["body"], str)
            conversation_id = await new_conversation(client)
            for frame in [publish("e1", conversation_id, {"no": "type"}),
                          {"id": "e2", "type": "ms.SubscribeMessagingEvents",
                           "body": {"dialogId": conversation_id, "fromSeq": "zero"}},
                          {"id": "e3", "type": "cm.UpdateConversationField", "body": {
                              "conversationId": conversation_id, "conversationField": {"field": "Bogus"}}},
                          {"id": "e4", "type": "cm.UpdateConversationField", "body": {
                              "conversationId": conversation_id, "conversationField": {"field": "CSATRate",
                                                                                       "csatRate": 9}}}]:
                assert (await client.request(frame))["code"] == 400, frame
            await client.send(b"\x00\x01binary")
            assert await client.closed() == 1003

            huge = await RawClient.open(server, token, max_size=None)
            await huge.send(json.dumps({"id": 1, "type": "GetClock", "pad": "x" * 100_000}))
            assert await huge.closed() == 1009

            fresh = await RawClient.open(server, token)
            assert (await fresh.request({"id": "alive", "type": "GetClock"}))["code"] == 200
            await fresh.close()
            assert not any(code == 1011 for code in server.close_codes)

    run(scenario())


def test_other_accounts_conversations_are_not_reachable():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            alice = await RawClient.open(server, await signup(server))
            bob = await RawClient.open(server, await signup(server))
            conversation_id = await new_conversation(alice)
            stolen = await bob.request(publish(1, conversation_id, text("not mine")))
            assert stolen["code"] == 404
            await bob.request({"id": 2, "type": "cqm.SubscribeExConversations", "body": {}})
            listing = await bob.next(lambda f: "ExConversation" in f.get("type", ""))
            assert listing["body"]["changes"] == []
            await alice.close()
            await bob.close()

    run(scenario())


def test_conversation_details_carry_back_what_the_consumer_asked_for():
    """LivePerson's browser SDK compares `conversationDetails.skillId` with the skill it asked for."""
    asked = {"skillId": "1234", "campaignInfo": {"campaignId": 418732213, "engagementId": 425842913},
             "conversationContext": {"type": "SharkContext", "lang": "en-US", "visitorId": "v1"},
             "channelType": "MESSAGING", "ttrDefName": None}

    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            client = await RawClient.open(server, await signup(server))
            await client.request({"id": 1, "type": "cqm.SubscribeExConversations", "body": {"convState": ["OPEN"]}})
            created = await client.request({"id": 2, "type": "cm.ConsumerRequestConversation", "body": asked})
            assert created["code"] == 200
            details = await conversation_update(client)
            assert details["skillId"] == "1234" and details["campaignInfo"] == asked["campaignInfo"]
            assert details["context"] == asked["conversationContext"]
            joined = await conversation_update(client, lambda d: len(d["participants"]) == 2)
            assert joined["skillId"] == "1234"  # every later change of the conversation carries it too
            numeric = await client.request({"id": 3, "type": "cm.ConsumerRequestConversation", "body": {"skillId": 77}})
            assert numeric["code"] == 200
            assert (await conversation_update(client, lambda d: d.get("skillId") == "77"))["skillId"] == "77"
            for bad in ({"skillId": ["x"]}, {"campaignInfo": "x"}, {"conversationContext": 5}):
                refused = await client.request({"id": "bad", "type": "cm.ConsumerRequestConversation", "body": bad})
                assert refused["code"] == 400 and isinstance(refused["body"], str), bad
            await client.close()

    run(scenario())


def test_the_clients_close_code_is_echoed():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            client = await RawClient.open(server, await signup(server))
            await client.ws.close(4000, "bye")
            await client.reader
            assert client.ws.protocol.close_rcvd.code == 4000
            nocode = await RawClient.open(server, await signup(server))
            await nocode.ws.close(1000)
            await nocode.reader
            assert nocode.ws.protocol.close_rcvd.code == 1000
            async with asyncio.timeout(5):
                while server.close_codes.total() < 2:
                    await asyncio.sleep(0.05)
            assert server.close_codes == {4000: 1, 1000: 1}

    run(scenario())
