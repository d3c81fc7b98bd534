"""Live protocol checking while recording: `mwtap record --live` and `mitmdump --set mwtap_live=true`
report each violation the moment it happens, while the proxy keeps relaying."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import pytest
from test_record_e2e import RECORDERS, TIMEOUT, client_through, start_recorder

from analysis.capture import message_record
from analysis.config import Config
from analysis.live import LiveChecker
from analysis.synth import CaptureBuilder


def live_option(kind: str) -> list[str]:
    return ["--live"] if kind == "mwtap" else ["mwtap_live=true"]


def wait_for_line(log_path, needle: str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no line with {needle!r} in {log_path}:\n{log_path.read_text(errors='replace')}")


@pytest.mark.parametrize("kind", RECORDERS)
def test_violations_are_reported_while_the_connection_is_open(procs, tmp_path, kind):
    out = tmp_path / "cap.jsonl"
    # mitmdump -q would hide the live lines (warnings of the `mwtap.live` logger).
    proc, server_port, proxy_port = start_recorder(procs, kind, out, *live_option(kind), quiet=False)

    async def session() -> None:
        async with client_through(server_port, proxy_port, "live") as ws:
            await ws.send("hello, not json")
            await ws.recv()  # the test server echoes what it does not know
            # Reported before the client does anything else: the connection is still open.
            wait_for_line(proc.log_path, "invalid-json")
            await ws.send(json.dumps({"kind": "req", "id": "d", "type": "NeverAnswered"}))
            await ws.recv()
            await ws.send(json.dumps({"kind": "req", "id": "d", "type": "NeverAnswered"}))
            await ws.recv()
            wait_for_line(proc.log_path, "duplicate-request-id")
            await ws.send(json.dumps({"kind": "req", "id": "7", "type": "GetClock"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["reqId"] == "7"  # still relaying

    asyncio.run(session())
    assert procs.stop(proc) == 0
    line = wait_for_line(proc.log_path, "invalid-json")
    assert " error   invalid-json: text message is not JSON" in line
    if kind == "mwtap":
        assert "protocol violation(s) reported live" in proc.log_path.read_text()


def test_deadlines_fire_as_time_passes_without_records():
    b = CaptureBuilder()
    b.open("c", 100.0)
    b.c2s("c", 100.5, {"kind": "req", "id": "1", "type": "GetClock"})
    found = []
    checker = LiveChecker(Config(response_timeout_s=30.0), found.append)
    for rec in b.records[1:]:
        checker.feed(rec)
    checker.advance(120.0)
    assert found == []
    checker.advance(131.0)
    assert [(v.rule, v.conn) for v in found] == [("unanswered-request", "c")]


def test_answered_requests_leave_no_state_behind_while_an_unanswered_one_still_times_out():
    """A proxy checks live for days: memory must follow the requests still open, not all requests
    of the last 30 s (the response timeout)."""
    found = []
    checker = LiveChecker(Config(response_timeout_s=30.0), found.append)
    b = CaptureBuilder()
    b.open("c", 100.0)
    for rec in b.records[1:]:
        checker.feed(rec)
    checker.feed(message_record("c", 100.0, 0, True, True, b'{"kind":"req","id":"lost","type":"GetClock"}'))

    def answered_requests(first: int, last: int) -> None:
        for i in range(first, last):
            t = 100.0 + i * 0.0005  # 60,000 requests in 30 s: all inside the timeout
            checker.feed(message_record("c", t, 2 * i + 1, True, True,
                                        b'{"kind":"req","id":"%d","type":"GetClock"}' % i))
            checker.feed(message_record("c", t, 2 * i + 2, False, True,
                                        b'{"kind":"resp","reqId":"%d","code":200,"type":"GetClockResponse",'
                                        b'"body":{"currentTime":1}}' % i))

    tracemalloc.start()
    try:
        answered_requests(0, 20_000)  # past the answered ids kept per connection (10,000)
        before = tracemalloc.get_traced_memory()[0]
        answered_requests(20_000, 60_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert found == []
    assert grown < 1_000_000, f"{grown:,} bytes kept for 40,000 answered requests"  # before: 19 MB
    checker.advance(131.0)
    assert [(v.rule, v.t, v.frame) for v in found] == [("unanswered-request", 130.0, 0)]


def test_closed_connections_leave_bounded_state_behind():
    """What a closed connection leaves for later rules (its id, its client keys for reconnect
    linking) is bounded: a live check of short connections, each with its own token, for days."""
    checker = LiveChecker(Config(), lambda violation: None)
    b = CaptureBuilder()

    def connections(first: int, last: int) -> None:
        for i in range(first, last):
            checker.feed(b.open(f"c{i}", 100.0 + i * 0.01, token=f"token-{i}"))
            checker.feed(b.close(f"c{i}", 100.005 + i * 0.01))
            b.records.clear()

    tracemalloc.start()  # from the start: what is freed later must have been traced
    try:
        connections(0, 140_000)  # past the 100,000 ids and client keys kept (trimmed at 125,000)
        before = tracemalloc.get_traced_memory()[0]
        connections(140_000, 170_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A 30,000-connection window holds one batch trim: at most 5,000 more entries net (~110 B per
    # connection); unbounded, every closed connection kept ~380 B.
    assert grown / 30_000 < 200, f"{grown / 30_000:.0f} bytes kept per closed connection"


def test_live_and_offline_agree_on_a_client_that_pipelines_after_init_connection(procs, tmp_path):
    """`mwtap record --live` in front of `mwtap serve`, LivePerson's browser SDK subscribing 0.6 ms
    after its InitConnection: the live line (printed once the subscription is answered) says what
    `mwtap analyze` of the same capture says."""
    import subprocess

    from conftest import BIN, free_port, wait_port
    from test_conformance import pipelined, run_clients, sdk_subscribes_0_6_ms_after_init_connection

    mwtap = str(BIN / "mwtap")
    for attempt in range(3):  # a capture where the recorder saw the answer first shows no pipelining
        serve_port, record_port = free_port(), free_port()
        serve = procs.start([mwtap, "serve", "--listen", f"127.0.0.1:{serve_port}"], f"serve{attempt}")
        wait_port(serve_port, proc=serve)
        out = tmp_path / f"cap{attempt}.jsonl"
        record = procs.start([mwtap, "record", "--live", "--upstream", f"ws://127.0.0.1:{serve_port}", "--listen",
                              f"127.0.0.1:{record_port}", "-o", str(out)], f"record{attempt}")
        wait_port(record_port, proc=record)
        asyncio.run(run_clients(serve_port, record_port, [sdk_subscribes_0_6_ms_after_init_connection]))
        assert procs.stop(record) == 0
        procs.stop(serve)
        if pipelined(out, "sdk-subscribes-0-6-ms-after-init-connection"):
            break
    else:
        pytest.fail("the recorder never saw the subscription before the InitConnection answer")
    live = wait_for_line(record.log_path, "request-before-init")
    analysis = subprocess.run([mwtap, "analyze", str(out), "--format", "json"], capture_output=True, text=True,
                              timeout=60)
    offline = json.loads(analysis.stdout)["violations"]
    assert [(v["rule"], v["severity"]) for v in offline] == [("request-before-init", "warning")]
    assert f" warning request-before-init: {offline[0]['message']}" in live
