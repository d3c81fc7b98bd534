"""Property-based fuzzing of the built-in server: ONE MessagingServer (in a thread with its own
event loop) takes arbitrary frames, a connection per example, and arbitrary IDP requests; no
handler ever fails, every IDP request gets an HTTP answer below 500, and the server still answers
a GetClock after the run."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from recorder.server import MessagingServer, ServerConfig
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings, json_bytes, junk, maybe, protocol_frame

frame = st.one_of(protocol_frame.map(lambda f: json_bytes(f).decode()), protocol_frame.map(lambda f: json_bytes(f).decode()),
                  st.text(max_size=50), st.binary(max_size=30),
                  st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth))
frames = st.lists(frame, max_size=8)

IDP_PATHS = st.sampled_from(["signup", "signup.jsonp", "authenticate", "anonymous/authorize",
                             "app/webConnector/authenticate", "app//authenticate", "nothing"])
idp_request = st.fixed_dictionaries({
    "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    "path": IDP_PATHS | st.text(max_size=20),
    "query": st.dictionaries(st.sampled_from(["callback", "v", "authCode"]), st.text(max_size=12), max_size=2),
    "body": st.none() | st.binary(max_size=40) | junk.map(json_bytes) | st.fixed_dictionaries({}, optional={
        "authCode": maybe(st.text(max_size=12)), "id_token": maybe(st.text(max_size=12))}).map(json_bytes),
    "authorization": st.none() | st.sampled_from(["jwt ", "JWT x.y.z", "Bearer x", "jwt a.b.c"]) | st.text(
        st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
})


class Failures(logging.Handler):
    """Errors the server or websockets logged (a handler that raised, a failed process_request)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server():
    failures = Failures()
    for name in ("websockets", "aiohttp", "mwtap.serve", "asyncio"):
        logging.getLogger(name).addHandler(failures)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    async def main():
        async with MessagingServer(ServerConfig(agent_reply_delay=0.01, init_timeout=2.0)) as srv:
            holder["server"], holder["stop"] = srv, asyncio.Event()
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20)
    yield holder["server"], failures
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(20)
    for name in ("websockets", "aiohttp", "mwtap.serve", "asyncio"):
        logging.getLogger(name).removeHandler(failures)


def send_all(srv: MessagingServer, messages: list) -> None:
    with connect(srv.url(), proxy=None, open_timeout=10, close_timeout=2, max_size=None) as ws:
        try:
            for message in messages:
                ws.send(message)
            while True:
                ws.recv(timeout=0.05)
        except (TimeoutError, ConnectionClosed):
            pass


def check_still_answering(srv: MessagingServer, failures: Failures) -> None:
    with connect(srv.url(), proxy=None, open_timeout=10) as ws:
        ws.send(json.dumps({"kind": "req", "id": "clock", "type": "GetClock"}))
        response = json.loads(ws.recv(timeout=10))
    assert (response["reqId"], response["code"]) == ("clock", 200)
    assert [r.getMessage() for r in failures.records] == [], failures.format(failures.records[0])


def call_idp(srv: MessagingServer, call: dict) -> None:
    path = urllib.parse.quote(call["path"], safe="/.")
    url = f"{srv.idp_url()}/{path}?{urllib.parse.urlencode(call['query'])}"
    request = urllib.request.Request(url, method=call["method"], data=call["body"])
    if call["authorization"] is not None:
        request.add_header("Authorization", call["authorization"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as reply:
            status, text = reply.status, reply.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    assert status < 500, (call, status, text)
    if status >= 400:
        assert "error" in json.loads(text), (call, status, text)


@fuzz_settings(DEFAULT_EXAMPLES)
@given(frames)
def test_server_survives_arbitrary_frames(server, messages):
    send_all(server[0], messages)


@fuzz_settings(DEFAULT_EXAMPLES)
@given(idp_request)
def test_idp_answers_arbitrary_requests_below_500(server, call):
    call_idp(server[0], call)


def test_server_still_answers_after_the_fuzzing(server):
    check_still_answering(*server)


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES)
@given(frames)
def test_server_survives_arbitrary_frames_soak(server, messages):
    send_all(server[0], messages)


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES)
@given(idp_request)
def test_idp_answers_arbitrary_requests_below_500_soak(server, call):
    call_idp(server[0], call)


@pytest.mark.soak
def test_server_still_answers_after_the_soak_fuzzing(server):
    check_still_answering(*server)
