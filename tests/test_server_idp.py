"""The built-in server's IDP over real HTTP (urllib and raw sockets) on the WebSocket's own port:
bodies, the JSONP and anonymous flows, CORS, and bad input answered with a 4xx."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

from websockets.asyncio.client import connect

from conftest import BIN, free_port, wait_port
from recorder.server import MessagingServer, ServerConfig
from test_server import FAST, RawClient, jwt_payload, new_conversation, run

ORIGIN = "http://page.example"


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, payload, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = http("POST", url, json.dumps(payload).encode(),
                           {"Content-Type": "application/json", **(headers or {})})
    return status, json.loads(body)


def raw_exchange(port: int, data: bytes) -> bytes:
    """Sends `data` on a fresh TCP connection and returns what the server answers before it closes
    the connection or falls silent for 5 s."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def test_signup_with_a_json_body_on_a_serve_process(procs):
    """The reported case: `POST …/signup` with Content-Type application/json and body `{}` was a
    dropped connection; on `mwtap serve` it is a token that opens the WebSocket on the same port."""
    port = free_port()
    proc = procs.start([str(BIN / "mwtap"), "serve", "--listen", f"127.0.0.1:{port}"], "serve")
    wait_port(port, proc=proc)
    status, body = post_json(f"http://127.0.0.1:{port}/api/account/mwtap/signup", {})
    assert status == 200 and jwt_payload(body["jwt"])["unauth"] is True

    async def clock():
        url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
        async with connect(url, proxy=None, additional_headers={"Authorization": f"jwt {body['jwt']}"}) as ws:
            await ws.send(json.dumps({"kind": "req", "id": 1, "type": "GetClock"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(clock())["code"] == 200


def test_idp_calls_as_documented():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            base = server.idp_url()
            empty = await asyncio.to_thread(http, "POST", base + "/signup")
            assert empty[0] == 200 and "jwt" in json.loads(empty[2])
            status, body = await asyncio.to_thread(post_json, base + "/signup", {})
            assert status == 200
            extended = await asyncio.to_thread(post_json, base + "/signup", {}, {"Authorization": f"jwt {body['jwt']}"})
            assert jwt_payload(extended[1]["jwt"])["sub"] == jwt_payload(body["jwt"])["sub"]

            status, headers, script = await asyncio.to_thread(http, "GET", base + "/signup.jsonp?callback=lp.cb_1")
            assert status == 200 and headers["Content-Type"].startswith("application/javascript")
            assert script.startswith(b"lp.cb_1({") and script.endswith(b"});")
            assert "jwt" in json.loads(script[len(b"lp.cb_1("):-2])
            injected = await asyncio.to_thread(http, "GET", base + "/signup.jsonp?callback=alert(1)//")
            assert injected[0] == 400

            alice = await asyncio.to_thread(post_json, base + "/authenticate", {"authCode": "alice"})
            again = await asyncio.to_thread(post_json, base + "/authenticate", {"authCode": "alice"})
            assert alice[0] == 200 and jwt_payload(alice[1]["jwt"])["sub"] == jwt_payload(again[1]["jwt"])["sub"]
            assert "unauth" not in jwt_payload(alice[1]["jwt"])
            assert (await asyncio.to_thread(post_json, base + "/authenticate", {}))[0] == 400

            status, authorized = await asyncio.to_thread(post_json, base + "/anonymous/authorize", {})
            assert status == 200
            id_token = authorized["token"]
            exchange = base + "/app/webConnector/authenticate?v=3.0"
            status, exchanged = await asyncio.to_thread(post_json, exchange, {"id_token": id_token})
            assert status == 200 and jwt_payload(exchanged["token"])["sub"] == jwt_payload(id_token)["sub"]
            assert (await asyncio.to_thread(post_json, exchange, {"id_token": body["jwt"]}))[0] == 401
            assert (await asyncio.to_thread(post_json, exchange, {"id_token": "x.y.z"}))[0] == 401

            # the exchanged token opens the socket; the id token itself does not
            client = await RawClient.open(server, exchanged["token"])
            await new_conversation(client)
            await client.close()
            refused = await RawClient.open(server, id_token)
            assert await refused.closed() == 4401

    run(scenario())


def test_cors_lets_a_page_on_another_origin_call_the_idp():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            url = server.idp_url() + "/authenticate"
            status, headers, _ = await asyncio.to_thread(http, "OPTIONS", url, None, {
                "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert status == 204
            assert headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
            assert "POST" in headers["Access-Control-Allow-Methods"]
            allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
            assert {"authorization", "content-type"} <= allowed
            for body in (b'{"authCode": "carol"}', b"{broken"):
                _, headers, _ = await asyncio.to_thread(http, "POST", url, body, {
                    "Origin": ORIGIN, "Content-Type": "application/json"})
                assert headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)  # errors are readable too

    run(scenario())


def test_bad_idp_input_gets_a_clear_4xx_never_a_dropped_connection():
    async def scenario():
        async with MessagingServer(ServerConfig(**FAST)) as server:
            base = server.idp_url()
            cases = [("POST", "/signup", b"{not json", 400, "not JSON"),
                     ("POST", "/signup", b"[1]", 400, "JSON object"),
                     ("POST", "/authenticate", b'{"authCode": 5}', 400, "authCode"),
                     ("POST", "/signup", b"{}" + b" " * 100_000, 413, "exceeded"),
                     ("GET", "/signup", None, 405, "Method Not Allowed"),
                     ("PUT", "/authenticate", b"{}", 405, "Method Not Allowed"),
                     ("POST", "/nothing/here", b"{}", 404, "Not Found")]
            for method, path, body, code, needle in cases:
                status, headers, answer = await asyncio.to_thread(
                    http, method, base + path, body, {"Content-Type": "application/json"})
                assert status == code and needle in json.loads(answer)["error"], (method, path, status, answer)
            plain_get = await asyncio.to_thread(http, "GET", server.url().replace("ws://", "http://"))
            assert plain_get[0] == 426

            # raw bytes: a body longer than announced is cut, a lying Content-Length gets an answer too
            port = server.port
            answer = await asyncio.to_thread(raw_exchange, port, (
                b"POST /api/account/mwtap/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 999999\r\n\r\n{}"))
            assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
            answer = await asyncio.to_thread(raw_exchange, port, b"NOT HTTP AT ALL\r\n\r\n")
            assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:80]

            # the server still answers both protocols
            assert (await asyncio.to_thread(post_json, base + "/signup", {}))[0] == 200
            client = await RawClient.open(server, (await asyncio.to_thread(post_json, base + "/signup", {}))[1]["jwt"])
            assert (await client.request({"id": 1, "type": "GetClock"}))["code"] == 200
            await client.close()

    run(scenario())
