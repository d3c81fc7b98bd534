"""Replay reproduces what the recording showed, or says it did not (all real processes on 127.0.0.1):
* the default `--timing wait` keeps the recorded client's concurrency: a client that reuses a
  request id while it is in flight still does so in the replay, against a real `mwtap serve`;
* `mwtap replay --as-server -o` records live messages a client must ACCEPT: a client that never
  does gets the same `missing-accept` findings as against `mwtap serve`, even when the capture was
  recorded an hour earlier;
* a replay that could not send everything exits 1;
* what the target sends after the replay's close frame is left out, as mitmproxy leaves it out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from analysis.capture import CaptureFile, dumps, header_record, message_record
from analysis.diff import is_volatile
from analysis.redact import redaction_info
from conftest import free_port, wait_port
from recorder.consumer import ConsumerConfig, run_consumer
from recorder.proxy import RecordingProxy
from test_replay import MWTAP, mwtap, replay, start_server

# Eight texts, each sent with the id of its COMPOSING event while that one is in flight: a replay that
# let in the answer between the two (as `--timing wait` did, depending on timing) loses some of them.
REUSES_IDS = ConsumerConfig(auth="header", messages=8, message_interval=0.05, read_delay=0.05, reuse_request_id=True)
ACCEPTS = ConsumerConfig(auth="header", messages=3, message_interval=0.3, read_delay=0.3)
NEVER_ACCEPTS = ConsumerConfig(auth="header", messages=3, message_interval=0.3, read_delay=0.3, skip_accept=True)
ACCEPT_TIMEOUT = "0.1"  # the READ each agent message still gets comes read_delay (0.3 s) later


async def _record_against(port: int, out: Path, consumer: ConsumerConfig):
    """`consumer` against the `mwtap serve` at `port`, recorded through the recorder."""
    async with RecordingProxy(f"ws://127.0.0.1:{port}", out) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/ws_api/account/mwtap/messaging/consumer?v=3"
        return await asyncio.wait_for(run_consumer(url, f"http://127.0.0.1:{port}/api/account/mwtap", consumer), 60)


def record_against(port: int, out: Path, consumer: ConsumerConfig):
    stats = asyncio.run(_record_against(port, out, consumer))
    assert stats.completed and stats.close_codes == [1000], stats
    return stats


def findings(capture: Path, *options: str) -> dict[str, int]:
    done = mwtap("analyze", capture, "--format", "json", *options)
    assert done.returncode == 0, done.stderr
    return {rule: sum(by_severity.values()) for rule, by_severity in json.loads(done.stdout)["violation_counts"].items()}


def test_wait_timing_keeps_a_request_id_reused_while_in_flight(procs, tmp_path):
    recording = tmp_path / "recorded.jsonl"
    stats = record_against(start_server(procs), recording, REUSES_IDS)
    recorded = findings(recording)
    assert recorded.get("duplicate-request-id") == stats.messages_sent == 8

    out = tmp_path / "replay.jsonl"
    done = replay(recording, start_server(procs), out)  # the default timing: wait
    assert done.returncode == 0, done.stderr
    replayed = findings(out)
    assert replayed.get("duplicate-request-id") == 8 and "reused-request-id" not in replayed
    compared = mwtap("diff", recording, out)
    assert compared.returncode == 0 and "no differences" in compared.stdout, compared.stdout


def test_diff_says_when_the_replay_did_not_reproduce_a_finding(procs, tmp_path):
    """The same client without its reused ids, taken for a replay: the diff reports the finding
    that changed (the frames alone compare equal, ids being masked) and exits 1."""
    recording = tmp_path / "recorded.jsonl"
    record_against(start_server(procs), recording, REUSES_IDS)
    serialised = tmp_path / "serialised.jsonl"
    record_against(start_server(procs), serialised, replace(REUSES_IDS, reuse_request_id=False))
    compared = mwtap("diff", recording, serialised, "--format", "json")
    assert compared.returncode == 1
    rules = {d["detail"]["rule"]: (d["detail"]["recorded"], d["detail"]["replayed"])
             for d in json.loads(compared.stdout)["differences"] if d["kind"] == "finding"}
    assert rules["duplicate-request-id"] == (8, 0)


def aged(capture: Path, out: Path, seconds: float) -> None:
    """A copy of `capture` as if recorded `seconds` earlier: record times and every epoch-millisecond
    timestamp in the payloads moved back (decoded and re-encoded, not by the replay's own code)."""
    def back(value, key=None):
        if isinstance(value, dict):
            return {k: back(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [back(v, key) for v in value]
        if key and is_volatile(key) and isinstance(value, int) and value > 10 ** 12:
            return value - int(seconds * 1000)
        return value

    recorded = CaptureFile(str(capture))
    records = list(recorded.records())
    lines = [dumps(recorded.header)]
    for rec in records:
        for field in ("t", "t_request"):
            if isinstance(rec.get(field), (int, float)):
                rec[field] -= seconds
        if rec.get("rec") == "msg":
            payload = back(orjson.loads(rec["text"]))
            rec = message_record(rec["conn"], rec["t"], rec["n"], rec["dir"] == "c2s", True, orjson.dumps(payload))
        lines.append(dumps(rec))
    out.write_bytes(b"".join(lines))


def test_as_server_capture_checks_the_client_under_test_against_every_rule(procs, tmp_path):
    serve_port = start_server(procs)
    against_serve = tmp_path / "against-serve.jsonl"
    stats = record_against(serve_port, against_serve, NEVER_ACCEPTS)
    expected = findings(against_serve, "--accept-timeout", ACCEPT_TIMEOUT).get("missing-accept", 0)
    assert expected == stats.agent_messages > 0 and stats.accepts_sent == 0

    # The server side the mock plays: a client that accepts, recorded an hour ago.
    recording = tmp_path / "recorded.jsonl"
    record_against(serve_port, recording, ACCEPTS)
    old = tmp_path / "recorded-an-hour-ago.jsonl"
    aged(recording, old, 3600)
    assert "missing-accept" not in findings(old, "--accept-timeout", ACCEPT_TIMEOUT)

    mock_port = free_port()
    live = tmp_path / "live.jsonl"
    mock = procs.start([MWTAP, "replay", "--as-server", str(old), "--listen", f"127.0.0.1:{mock_port}", "-o",
                        str(live)], "mock")
    wait_port(mock_port, proc=mock)
    url = f"ws://127.0.0.1:{mock_port}/ws_api/account/mwtap/messaging/consumer?v=3"
    live_stats = asyncio.run(asyncio.wait_for(
        run_consumer(url, f"http://127.0.0.1:{mock_port}/api/account/mwtap", NEVER_ACCEPTS), 60))
    assert live_stats.completed and live_stats.agent_messages > 0 and live_stats.accepts_sent == 0
    assert procs.stop(mock) == 0
    # As against `mwtap serve`: every agent message the client did not accept is a finding. (The
    # mock plays what followed the recorded client's requests: a message that followed an ACCEPT
    # this client never sends is not played, so the counts need not be equal.)
    assert findings(live, "--accept-timeout", ACCEPT_TIMEOUT).get("missing-accept") == live_stats.agent_messages


@pytest.fixture
def closes_after_first_message(procs) -> int:
    """A real WebSocket server that closes (1011) as soon as the client's first message arrives."""
    port = free_port()
    code = ("import asyncio\n"
            "from websockets.asyncio.server import serve\n"
            "async def handler(ws):\n"
            "    await ws.recv()\n"
            "    await ws.close(1011, 'gone')\n"
            "async def main():\n"
            f"    async with serve(handler, '127.0.0.1', {port}):\n"
            "        await asyncio.Future()\n"
            "asyncio.run(main())\n")
    proc = procs.start([sys.executable, "-c", code], "closer")
    wait_port(port, proc=proc)
    return port


def test_replay_that_could_not_send_everything_exits_1(procs, tmp_path, closes_after_first_message):
    recording = tmp_path / "recorded.jsonl"
    record_against(start_server(procs), recording, REUSES_IDS)
    total = sum(1 for r in CaptureFile(str(recording)).records() if r.get("dir") == "c2s")

    cut_short = mwtap("replay", recording, "--target", f"ws://127.0.0.1:{closes_after_first_message}", "-o",
                      tmp_path / "cut.jsonl", "--token", "tok-RECOGNISABLE-1", "--wait-timeout", "1")
    assert cut_short.returncode == 1, cut_short.stderr
    assert "Traceback" not in cut_short.stderr
    assert cut_short.stderr.strip().splitlines()[-1].startswith(
        f"mwtap replay: could not send everything: {total - 1} of {total} frame(s) unsent, 0 of 1 connection(s) not made")

    nobody = tmp_path / "nobody.jsonl"
    not_made = mwtap("replay", recording, "--target", f"ws://127.0.0.1:{free_port()}", "-o", nobody,
                     "--token", "tok-RECOGNISABLE-1")
    assert not_made.returncode == 1 and "Traceback" not in not_made.stderr
    assert f"{total} of {total} frame(s) unsent, 1 of 1 connection(s) not made" in not_made.stderr
    assert [r["rec"] for r in CaptureFile(str(nobody)).records()] == ["refused"]


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


LATE_NOTIFICATION = server_frame(0x1, b'{"kind":"notification","type":"cqm.ExConversationChangeNotification",'
                                       b'"body":{"subscriptionId":"s1","changes":[]}}')


def late_frame_server(sock: socket.socket, answered: threading.Event, after_close: bool) -> None:
    """A WebSocket server written out by hand, one connection: it answers the request with one more
    text frame right behind the answer (in the same write), or, `after_close`, before its own close
    frame once the client's came. A conversation's change notification, say: the recorded client
    that closed on its answer never saw it (a capture through mitmproxy ends at the first close
    frame)."""
    conn, _ = sock.accept()
    with conn, conn.makefile("rb") as f:
        headers = list(iter(f.readline, b"\r\n"))
        key = next(line for line in headers if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key.split(b":", 1)[1].strip() + WS_GUID).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while True:
            first, second = f.read(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(f.read(2), "big")
            mask = f.read(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(length)))
            if first & 0x0F == 0x8:  # the client's close
                conn.sendall((LATE_NOTIFICATION if after_close else b"") + server_frame(0x8, payload))
                return
            request = orjson.loads(payload)
            conn.sendall(server_frame(0x1, orjson.dumps({"kind": "resp", "reqId": request["id"], "code": 200,
                                                         "type": "GenericResponse", "body": {"currentTime": 1}}))
                         + (b"" if after_close else LATE_NOTIFICATION))
            answered.set()


@pytest.mark.parametrize("after_close", [False, True])
def test_frames_the_recorded_client_closed_before_are_left_out(tmp_path, after_close):
    """The recorded client closed right after its answer; the target sends one more frame right
    behind the answer, or after the replay's close frame. Either way the replay's capture leaves it
    out, as the capture through mitmproxy did, and says so: the diff finds no difference (such a
    notification made one, now and then, in the test above)."""
    url = "ws://127.0.0.1:9/ws_api/account/mwtap/messaging/consumer?v=3"
    recorded = tmp_path / "recorded.jsonl"
    recorded.write_bytes(b"".join(dumps(r) for r in [
        header_record(1.0, mwtap_version="0.1.0", mitmproxy_version=None, redaction=redaction_info(True),
                      recording_id="r"),
        {"rec": "open", "t": 1.0, "conn": "c1", "url": url, "request_headers": [], "status": 101},
        message_record("c1", 1.1, 0, True, True, b'{"kind":"req","id":"1","type":"GetClock"}'),
        message_record("c1", 1.11, 1, False, True,
                       b'{"kind":"resp","reqId":"1","code":200,"type":"GenericResponse","body":{"currentTime":1}}'),
        {"rec": "close", "t": 1.12, "conn": "c1", "code": 1000, "reason": "", "by": "client"}]))
    with socket.create_server(("127.0.0.1", 0)) as sock:
        answered = threading.Event()
        server = threading.Thread(target=late_frame_server, args=(sock, answered, after_close), daemon=True)
        server.start()
        out = tmp_path / "replay.jsonl"
        done = mwtap("replay", recorded, "--target", f"ws://127.0.0.1:{sock.getsockname()[1]}", "-o", out,
                     "--format", "json")
        server.join(10)
    assert answered.is_set() and not server.is_alive()
    assert done.returncode == 0, done.stderr
    (conn,) = json.loads(done.stdout)["connections"]
    assert conn["responses"] == 1 and conn["notifications"] == 0 and conn["close_codes"] == [1000]
    assert conn["events"] == ["1 frame(s) the target sent after the recorded client's close (or the replay's close "
                              "frame) left out, as a capture through mitmproxy ends at the first close frame"]
    assert [r["dir"] for r in CaptureFile(str(out)).records() if r["rec"] == "msg"] == ["c2s", "s2c"]
    compared = mwtap("diff", recorded, out)
    assert compared.returncode == 0 and "no differences" in compared.stdout, compared.stdout
