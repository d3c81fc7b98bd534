"""The brand (agent) side of `mwtap serve`, in-process, driven by real HTTP and WebSocket clients on
127.0.0.1: the domain lookup, login and refresh node-agent-sdk calls, the brand WebSocket with its
`.ams.*` requests, rings, the consumer's conversation reaching a bot, and 4401 when the agent's
session expires. (tests/test_agent_sdk.py runs LivePerson's own SDK against it.)"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import ssl
import subprocess
import urllib.request

import pytest
from websockets.asyncio.client import connect

from conftest import BIN
from recorder.server import MessagingServer, ServerConfig
from recorder.server.tls import server_context
from test_server import FAST, RawClient, http_post, new_conversation, run, signup


def http_get(url: str, context: ssl.SSLContext | None = None) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(url, timeout=5) as reply:
        return json.load(reply)


async def login(server: MessagingServer, username: str = "bot") -> dict:
    status, body = await asyncio.to_thread(http_post, server.idp_url() + "/login?v=1.3", None,
                                           {"username": username, "password": "secret"})
    assert status == 200, body
    return body


async def open_bot(server: MessagingServer, bearer: str) -> RawClient:
    url = f"ws://127.0.0.1:{server.port}/ws_api/account/mwtap/messaging/brand/{bearer}?v=2.1"
    return RawClient(await connect(url, proxy=None, ping_interval=None))


async def ready_bot(server: MessagingServer) -> tuple[RawClient, dict]:
    """A bot logged in, ONLINE and subscribed to routing tasks and to its conversations."""
    account = await login(server)
    bot = await open_bot(server, account["bearer"])
    state = await bot.request({"kind": "req", "id": "1", "type": ".ams.routing.SetAgentState",
                               "body": {"availability": "ONLINE"}})
    assert (state["code"], state["type"]) == (202, ".ReqBody$StringResp")
    routing = await bot.request({"kind": "req", "id": "2", "type": ".ams.routing.SubscribeRoutingTasks", "body": {}})
    assert routing["type"] == ".ams.GenericSubscribe$Response"
    await bot.next(lambda f: f.get("type") == ".ams.routing.RoutingTaskNotification"
                   and f["body"] == {"subscriptionId": routing["body"]["subscriptionId"], "changes": []})
    conversations = await bot.request({"kind": "req", "id": "3", "type": ".ams.aam.SubscribeExConversations",
                                       "body": {"convState": ["OPEN"]}})
    assert conversations["code"] == 200
    return bot, account


def test_domain_lookup_names_this_server_or_the_advertised_address():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            services = await asyncio.to_thread(http_get, server.idp_url() + "/service/baseURI.json?version=1.0")
        async with MessagingServer(ServerConfig(advertise="127.0.0.1:9999", **FAST)) as advertised:
            named = await asyncio.to_thread(http_get, advertised.idp_url() + "/service/baseURI.json?version=1.0")
        return server.port, services, named
    port, services, named = run(scenario())
    assert {(s["service"], s["baseURI"]) for s in services["baseURIs"]} == {
        ("agentVep", f"127.0.0.1:{port}"), ("asyncMessagingEnt", f"127.0.0.1:{port}")}
    assert {s["baseURI"] for s in named["baseURIs"]} == {"127.0.0.1:9999"}


def test_login_gives_an_opaque_bearer_and_refresh_needs_the_session_cookie_and_csrf():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            first, again = await login(server, "bot"), await login(server, "bot")
            bad = await asyncio.to_thread(http_post, server.idp_url() + "/refresh?v=1.3", None, {"csrf": first["csrf"]})
            refused = await asyncio.to_thread(http_post, server.idp_url() + "/login", None, {"username": "bot"})
            return first, again, bad, refused
    first, again, (bad_status, _), (refused_status, refused) = run(scenario())
    assert "." not in first["bearer"] and first["bearer"] != again["bearer"]  # not JWT-shaped; fresh per login
    assert first["config"]["userId"] == again["config"]["userId"]  # the same agent
    assert bad_status == 401  # no session cookie
    assert refused_status == 400 and "password" in refused["error"]


def test_an_unknown_bearer_is_closed_with_4401():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            bot = await open_bot(server, "not-a-bearer-of-this-server")
            return await bot.closed()
    assert run(scenario()) == 4401


def test_a_consumer_and_a_bot_talk_through_one_serve_and_the_built_in_agent_steps_aside():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            bot, account = await ready_bot(server)
            consumer = await RawClient.open(server, await signup(server))
            conversation = await new_conversation(consumer)
            ring = await bot.next(lambda f: f.get("type") == ".ams.routing.RoutingTaskNotification"
                                  and f["body"]["changes"])
            [details] = ring["body"]["changes"][0]["result"]["ringsDetails"]
            assert (details["convId"], details["ringState"]) == (conversation, "WAITING")
            accepted = await bot.request({"kind": "req", "id": "4", "type": ".ams.routing.UpdateRingState",
                                          "body": {"ringId": details["ringId"], "ringState": "ACCEPTED"}})
            assert accepted["code"] == 202
            await bot.next(lambda f: f.get("type") == ".ams.aam.ExConversationChangeNotification" and any(
                account["config"]["userPid"] in c["result"]["conversationDetails"]["participantsPId"].get(
                    "ASSIGNED_AGENT", []) for c in f["body"]["changes"]))
            await consumer.request({"kind": "req", "id": "s", "type": "ms.SubscribeMessagingEvents",
                                    "body": {"dialogId": conversation, "fromSeq": 0}})
            await consumer.request({"kind": "req", "id": "p", "type": "ms.PublishEvent", "body": {
                "dialogId": conversation, "event": {"type": "ContentEvent", "contentType": "text/plain",
                                                    "message": "hello bot"}}})
            heard = await bot.next(lambda f: f.get("type") == ".ams.ms.OnlineEventDistribution"
                                   and f["body"]["event"].get("message") == "hello bot")
            answer = await bot.request({"kind": "req", "id": "5", "type": ".ams.ms.PublishEvent", "body": {
                "dialogId": conversation, "event": {"type": "ContentEvent", "contentType": "text/plain",
                                                    "message": "hello consumer"}}})
            got = await consumer.next(lambda f: "MessagingEventNotification" in f.get("type", "") and any(
                c["event"].get("message") == "hello consumer" for c in f["body"]["changes"]))
            await asyncio.sleep(0.3)  # the built-in agent (join delay 0) would have spoken by now
            spoken_by_builtin = [c for f in consumer.notifications("MessagingEventNotification")
                                 for c in f["body"]["changes"] if c["originatorId"] not in (
                                     account["config"]["userPid"], heard["body"]["originatorPId"])]
            await consumer.close()
            await bot.close()
            return heard, answer, got, spoken_by_builtin, account
    heard, answer, got, spoken_by_builtin, account = run(scenario())
    assert heard["body"]["originatorMetadata"]["role"] == "CONSUMER"
    assert answer["type"] == ".ams.ms.PublishEvent$Response" and answer["body"]["sequence"] == 1
    [change] = [c for c in got["body"]["changes"] if c["event"].get("message") == "hello consumer"]
    assert (change["originatorId"], change["originatorMetadata"]["role"]) == (account["config"]["userPid"],
                                                                             "ASSIGNED_AGENT")
    assert spoken_by_builtin == []


def test_a_rejected_ring_goes_to_the_built_in_agent():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            bot, _ = await ready_bot(server)
            consumer = await RawClient.open(server, await signup(server))
            await consumer.request({"kind": "req", "id": "c", "type": "cqm.SubscribeExConversations", "body": {}})
            await new_conversation(consumer)
            ring = await bot.next(lambda f: f.get("type") == ".ams.routing.RoutingTaskNotification"
                                  and f["body"]["changes"])
            ring_id = ring["body"]["changes"][0]["result"]["ringsDetails"][0]["ringId"]
            await bot.request({"kind": "req", "id": "4", "type": ".ams.routing.UpdateRingState",
                               "body": {"ringId": ring_id, "ringState": "REJECTED"}})
            details = await consumer.next(lambda f: "ExConversation" in f.get("type", "") and any(
                p["role"] == "ASSIGNED_AGENT" for c in f["body"]["changes"]
                for p in c["result"]["conversationDetails"]["participants"]))
            await consumer.close()
            await bot.close()
            return details
    assert run(scenario())


def test_a_refreshed_session_outlives_its_lifetime_and_expires_once_refreshes_stop():
    """As the SDK does it: the login's cookie and csrf, POST refresh before the lifetime ends."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar))

    def post(url: str, body: dict) -> dict:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with opener.open(request, timeout=5) as reply:
            return json.load(reply)

    async def scenario():
        async with MessagingServer(ServerConfig(agent_session_lifetime=1.0, **FAST)) as server:
            account = await asyncio.to_thread(post, server.idp_url() + "/login?v=1.3",
                                              {"username": "bot", "password": "secret"})
            bot = await open_bot(server, account["bearer"])
            for _ in range(4):
                await asyncio.sleep(0.5)
                await asyncio.to_thread(post, server.idp_url() + "/refresh?v=1.3", {"csrf": account["csrf"]})
            open_after_2s = not bot.reader.done()
            return open_after_2s, await bot.closed(timeout=5)
    assert run(scenario()) == (True, 4401)


def test_the_agent_session_expires_with_4401_unless_refreshed():
    async def scenario():
        async with MessagingServer(ServerConfig(agent_session_lifetime=1.0, **FAST)) as server:
            account = await login(server)
            bot = await open_bot(server, account["bearer"])
            code = await bot.closed(timeout=5)
            again = await open_bot(server, account["bearer"])  # the expired bearer is refused at once
            return code, await again.closed(timeout=5)
    assert run(scenario()) == (4401, 4401)


def test_tls_serves_https_and_wss_with_the_written_certificate(tmp_path):
    cert = tmp_path / "serve.pem"

    async def scenario():
        tls = server_context(cert, "127.0.0.1")
        async with MessagingServer(ServerConfig(**FAST), tls=tls) as server:
            trusted = ssl.create_default_context(cafile=str(cert))
            services = await asyncio.to_thread(http_get, server.idp_url() + "/service/baseURI.json", trusted)
            async with connect(server.url(), ssl=trusted, proxy=None) as ws:
                await ws.send(json.dumps({"kind": "req", "id": "1", "type": "GetClock"}))
                clock = json.loads(await ws.recv())
            return server.url(), services, clock
    url, services, clock = run(scenario())
    assert url.startswith("wss://") and services["baseURIs"] and clock["reqId"] == "1"


def test_a_bot_pinging_every_idle_timeout_is_not_closed_as_idle():
    """node-agent-sdk pings on a timer of exactly 60 s (the idle timeout), which fires a few ms late:
    a bot gets 10 % slack, a consumer none."""
    async def scenario():
        async with MessagingServer(ServerConfig(idle_timeout=4.0, **FAST)) as server:
            account = await login(server)
            bot = await open_bot(server, account["bearer"])
            consumer = await RawClient.open(server, await signup(server))
            for _ in range(2):
                await asyncio.sleep(4.2)
                for client in (bot, consumer):
                    if not client.reader.done():
                        await client.ws.ping()
            return bot.reader.done(), await consumer.closed()
    assert run(scenario()) == (False, 1000)


def test_every_brand_request_with_a_bad_body_gets_a_4xx_and_the_socket_keeps_working():
    from recorder.server.brand import BRAND_HANDLERS

    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            bot, _ = await ready_bot(server)
            answers = {}
            for i, (request_type, body) in enumerate(
                    [(t, b) for t in BRAND_HANDLERS for b in ([1, 2], "text", {"dialogId": {"x": 1}, "ringId": 5,
                                                                               "conversationId": None})]):
                answers[(request_type, json.dumps(body))] = await bot.request(
                    {"kind": "req", "id": f"bad-{i}", "type": request_type, "body": body})
            clock = await bot.request({"kind": "req", "id": "clock", "type": ".GetClock", "body": {}})
            await bot.close()
            return answers, clock
    answers, clock = run(scenario())
    assert clock["code"] == 200
    assert all(a["code"] < 500 for a in answers.values()), answers
    refused = {key for key, a in answers.items() if a["code"] >= 400}
    for request_type in (".ams.ms.PublishEvent", ".ams.routing.UpdateRingState", ".ams.cm.UpdateConversationField",
                         ".ams.ms.QueryMessages", ".ams.routing.SetAgentState"):
        assert {key for key in refused if key[0] == request_type} == {
            key for key in answers if key[0] == request_type}, request_type


@pytest.mark.parametrize("args, named", [
    (["--tls", "/nonexistent/dir/serve.pem"], "--tls"),
    (["--advertise", "no-port"], "--advertise"),
])
def test_serve_refuses_a_bad_tls_path_or_advertised_address_with_exit_2(args, named):
    done = subprocess.run([str(BIN / "mwtap"), "serve", "--listen", "127.0.0.1:0", *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and f"Invalid value for {named}" in done.stderr, done.stderr
