"""Property-based fuzzing of the built-in server: ONE MessagingServer (in a thread with its own
event loop) takes arbitrary frames, a connection per example; no handler ever fails, and the
server still answers a GetClock after the run."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from recorder.server import MessagingServer, ServerConfig
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings, json_bytes, protocol_frame

frame = st.one_of(protocol_frame.map(lambda f: json_bytes(f).decode()), protocol_frame.map(lambda f: json_bytes(f).decode()),
                  st.text(max_size=50), st.binary(max_size=30),
                  st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth))
frames = st.lists(frame, max_size=8)


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


@fuzz_settings(DEFAULT_EXAMPLES)
@given(frames)
def test_server_survives_arbitrary_frames(server, messages):
    send_all(server[0], messages)


def test_server_still_answers_after_the_fuzzing(server):
    check_still_answering(*server)


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES)
@given(frames)
def test_server_survives_arbitrary_frames_soak(server, messages):
    send_all(server[0], messages)


@pytest.mark.soak
def test_server_still_answers_after_the_soak_fuzzing(server):
    check_still_answering(*server)
