"""`mwtap replay --as-server` with live clients that authenticate by InitConnection (no Authorization
header): each plays the recorded connections of the consumer its mock-issued token names, as a
header-authenticated client does. Real processes (`mwtap serve`, `mwtap record`, the mock) and
real WebSocket clients, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from analysis.capture import CaptureFile
from analysis.frame import messaging_changes
from analysis.redact import jwt_sub, marker
from analysis.synth import T0, CaptureBuilder
from conftest import BIN, DATA, Processes, free_port, wait_port
from recorder.consumer import ConsumerConfig, run_consumer
from recorder.replay.plan import load_plan

MWTAP = str(BIN / "mwtap")
WS_PATH = "/ws_api/account/mwtap/messaging/consumer?v=3"
INIT_CONSUMER = ConsumerConfig(auth="init", messages=2, message_interval=0.1, read_delay=0.1)
DOCUMENTED_INIT = next(json.loads(line)["frame"] for line in (DATA / "documented_frames.jsonl").read_text().splitlines()
                       if '"InitConnection"' in line)


def documented_init(token: str) -> dict:
    """The documented InitConnection (ClientProperties and ConsumerAuthentication headers)."""
    frame = copy.deepcopy(DOCUMENTED_INIT)
    for header in frame["headers"]:
        if "jwt" in header:
            header["jwt"] = token
    return frame


def bare_init(token: str) -> dict:
    """Other documented variants: no `kind`, a numeric id, an empty body, one header object not in an array."""
    return {"id": 1, "type": "InitConnection", "body": {},
            "headers": {"type": ".ams.headers.ConsumerAuthentication", "jwt": token}}


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """Two scripted consumers authenticating by InitConnection, one after the other, recorded by
    `mwtap record` in front of `mwtap serve`."""
    tmp = tmp_path_factory.mktemp("recorded")
    out = tmp / "capture.jsonl"
    processes = Processes(tmp)
    try:
        server_port, proxy_port = free_port(), free_port()
        server = processes.start([MWTAP, "serve", "--listen", f"127.0.0.1:{server_port}", "--agent-reply-delay",
                                  "0.2"], "serve")
        wait_port(server_port, proc=server)
        recorder = processes.start([MWTAP, "record", "--upstream", f"ws://127.0.0.1:{server_port}",
                                    "--listen", f"127.0.0.1:{proxy_port}", "-o", str(out)], "record")
        wait_port(proxy_port, proc=recorder)
        for _ in range(2):
            stats = asyncio.run(asyncio.wait_for(run_consumer(
                f"ws://127.0.0.1:{proxy_port}{WS_PATH}", f"http://127.0.0.1:{server_port}/api/account/mwtap",
                INIT_CONSUMER), 30))
            assert stats.completed and stats.error_responses == 0
        assert processes.stop(recorder) == 0
    finally:
        processes.stop_all()
    return out


def start_mock(procs, recording: Path, out: Path) -> int:
    port = free_port()
    mock = procs.start([MWTAP, "replay", "--as-server", str(recording), "--listen", f"127.0.0.1:{port}",
                        "-o", str(out)], "mock")
    wait_port(port, proc=mock)
    return port


def signup(port: int) -> str:
    """A token from the mock's IDP (each signup gets the next recorded consumer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/account/mwtap/signup", method="POST", data=b"")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as answer:
        return json.load(answer)["jwt"]


async def live_session(port: int, sends: list[dict | str], *, first_after: float = 0.0,
                       quiet: float = 1.5, path: str = WS_PATH) -> list[tuple[float, dict]]:
    """Connects without an Authorization header, sends `sends` (the first after `first_after`
    seconds), and returns what the mock sent until `quiet` seconds passed without a frame, each
    with its seconds since the connection opened."""
    received = []
    async with connect(f"ws://127.0.0.1:{port}{path}", proxy=None, open_timeout=10) as ws:
        opened = time.monotonic()
        await asyncio.sleep(first_after)
        for frame in sends:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        try:
            while True:
                message = await asyncio.wait_for(ws.recv(), quiet)
                received.append((time.monotonic() - opened, json.loads(message)))
        except (TimeoutError, ConnectionClosed):
            pass
    return received


def consumers_shown(frames: list[tuple[float, dict]]) -> set[str]:
    """The consumer ids the messaging events name as originators."""
    return {change["originatorMetadata"]["id"] for _, frame in frames
            for change in messaging_changes(frame.get("type", ""), frame.get("body"))
            if change.get("originatorMetadata", {}).get("role") == "CONSUMER"}


def test_initconnection_clients_each_play_their_own_consumers_connections(recording, procs, tmp_path):
    plan = load_plan(str(recording))
    assert len(plan.connections) == 2
    assert all(c.header_token is None and c.init_tokens for c in plan.connections)
    assert len({c.identity for c in plan.connections}) == 2
    out = tmp_path / "live.jsonl"
    port = start_mock(procs, recording, out)
    tokens = [signup(port), signup(port)]  # the recorded consumers, in the order they connected

    # The second consumer connects first: it played the first consumer's connection before.
    for played, init in ((1, documented_init), (0, bare_init)):
        recorded_init, *later = [f for f in plan.connections[played].frames if f.is_text]
        assert recorded_init.payload["type"] == "InitConnection"
        live_init = init(tokens[played])
        frames = asyncio.run(asyncio.wait_for(
            live_session(port, [live_init, *(f.data.decode() for f in later)], first_after=0.3), 30))
        answers = [f["code"] for _, f in frames if f.get("reqId") == str(live_init["id"])]
        assert answers == [200]  # the InitConnection itself is answered
        assert consumers_shown(frames) == {jwt_sub(tokens[played])}

    records = list(CaptureFile(str(out)).records())
    opens = [r for r in records if r["rec"] == "open"]
    assert [r["replay_of"] for r in opens] == [plan.connections[1].id, plan.connections[0].id]
    for opened in opens:
        first_sent = next(r for r in records if r["rec"] == "msg" and r["conn"] == opened["conn"])
        assert first_sent["dir"] == "c2s" and first_sent["type"] == "InitConnection"
        assert first_sent["t"] - opened["t"] >= 0.25  # the open is stamped at the upgrade, not at the choice
    # The live tokens (redacted, with their JWT sub's fingerprint) are the recorded consumers' identities.
    live_identity = {c.id: c.identity for c in load_plan(str(out)).connections}
    recorded_identity = {c.id: c.identity for c in plan.connections}
    assert [live_identity[r["conn"]] for r in opens] == [recorded_identity[r["replay_of"]] for r in opens]


UNPROMPTED_AFTER = 1.5
"""Seconds after its open at which each synthetic recorded connection's server spoke unasked."""


def write_unprompted_capture(path: Path, consumers: list[str]) -> None:
    """One connection per consumer: the server sends an event naming the consumer UNPROMPTED_AFTER
    seconds after the open, before the client's InitConnection (then answered)."""
    builder = CaptureBuilder()
    for number, consumer in enumerate(consumers):
        conn, t = f"conn-{consumer}", T0 + 10 * number
        builder.open(conn, t, token=None)
        builder.s2c(conn, t + UNPROMPTED_AFTER, {"kind": "notification", "type": "ms.MessagingEventNotification",
                                                  "body": {"changes": [{"sequence": 0, "originatorMetadata": {
                                                      "id": consumer, "role": "CONSUMER"}}]}})
        builder.c2s(conn, t + UNPROMPTED_AFTER + 0.1, documented_init(marker(f"token-of-{consumer}")))
        builder.s2c(conn, t + UNPROMPTED_AFTER + 0.11, {"kind": "resp", "reqId": "0", "type": "StringResponse",
                                                         "code": 200, "body": "OK"})
        builder.close(conn, t + UNPROMPTED_AFTER + 1)
    builder.write(path)


def test_what_the_recording_sent_before_any_request_is_timed_from_the_upgrade(procs, tmp_path):
    """An InitConnection sent before the recorded server spoke still chooses the connection, which
    then sends what followed its open on time; a silent client is not kept waiting for a choice."""
    recording = tmp_path / "recorded.jsonl"
    write_unprompted_capture(recording, ["consumer-a", "consumer-b"])
    port = start_mock(procs, recording, tmp_path / "live.jsonl")
    signup(port)
    token_b = signup(port)

    frames = asyncio.run(asyncio.wait_for(live_session(port, [documented_init(token_b)], first_after=0.8), 30))
    assert [f["type"] for _, f in frames] == ["StringResponse", "ms.MessagingEventNotification"]
    assert consumers_shown(frames) == {"consumer-b"}
    unprompted_at = frames[1][0]
    assert UNPROMPTED_AFTER - 0.1 <= unprompted_at < UNPROMPTED_AFTER + 0.6  # from the upgrade, not the InitConnection

    silent = asyncio.run(asyncio.wait_for(live_session(port, [], quiet=UNPROMPTED_AFTER + 1.5), 30))
    assert consumers_shown(silent) == {"consumer-a"}
    assert UNPROMPTED_AFTER - 0.1 <= silent[0][0] < UNPROMPTED_AFTER + 0.6


def test_a_token_in_the_url_path_chooses_at_the_upgrade(procs, tmp_path):
    """A v2 consumer URL carries the token in its path: the mock chooses that token's consumer at
    the upgrade, with no first message to wait for."""
    recording = tmp_path / "recorded.jsonl"
    write_unprompted_capture(recording, ["consumer-a", "consumer-b"])
    port = start_mock(procs, recording, tmp_path / "live.jsonl")
    signup(port)
    token_b = signup(port)
    path = f"/ws_api/account/mwtap/messaging/consumer/{token_b}?v=2"
    frames = asyncio.run(asyncio.wait_for(live_session(port, [], quiet=UNPROMPTED_AFTER + 1.5, path=path), 30))
    assert consumers_shown(frames) == {"consumer-b"}


def test_a_client_that_leaves_before_speaking_takes_no_recording(procs, tmp_path):
    """A probe that opens the WebSocket and closes without a message (a health check, a client that
    gave up) leaves every recorded connection to the clients that speak."""
    recording = tmp_path / "recorded.jsonl"
    write_unprompted_capture(recording, ["consumer-a", "consumer-b"])
    out = tmp_path / "live.jsonl"
    port = start_mock(procs, recording, out)
    token_a = signup(port)
    signup(port)

    async def probe() -> None:
        async with connect(f"ws://127.0.0.1:{port}{WS_PATH}", proxy=None, open_timeout=10):
            pass

    asyncio.run(asyncio.wait_for(probe(), 30))
    frames = asyncio.run(asyncio.wait_for(live_session(port, [documented_init(token_a)], first_after=0.1), 30))
    assert consumers_shown(frames) == {"consumer-a"}
    procs.stop_all()  # the mock writes its capture as it stops
    opens = [r for r in CaptureFile(str(out)).records() if r["rec"] == "open"]
    assert [r["replay_of"] for r in opens] == [None, "conn-consumer-a"]
