"""Faults around `mwtap record`: SIGKILL, a full disk, failing writes that recover, an upstream that
dies, refuses, cannot be reached or is slow, and stopping with connections open. Nothing the
clients exchange is lost by the relay, and what the recorder could not write is counted and said."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

import recorder.writer
from analysis.capture import CaptureFile, payload_bytes
from conftest import BIN, free_port, wait_port
from recorder.proxy import RecordingProxy
from test_record_e2e import by_path, recorder_command, start_recorder
from test_reliability_load import EchoServer, converse

TIMEOUT = 20
FLUSH_BOUND = 1.0  # seconds of frames a SIGKILL may cost (the recorder flushes every 0.25 s)

ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), ping_interval=None):
        await asyncio.Future()

asyncio.run(main())
"""


def analyze_json(path: Path) -> dict:
    done = subprocess.run([str(BIN / "mwtap"), "analyze", "--format", "json", str(path)], capture_output=True,
                          timeout=60)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()
    return json.loads(done.stdout)


def records_of(path: Path) -> tuple[CaptureFile, list[dict]]:
    capture = CaptureFile(str(path))
    return capture, list(capture.records())


def test_sigkill_loses_at_most_the_last_flush_interval_and_analyze_reports_the_cut(procs, tmp_path):
    out = tmp_path / "killed.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, "mwtap", out)
    server = EchoServer()
    echoed: list[tuple[float, str]] = []  # (when the client had the echo, message)

    async def session() -> float:
        async with server.serve(server_port):
            async with connect(f"ws://127.0.0.1:{proxy_port}/k", proxy=None, ping_interval=None) as ws:
                started = time.time()
                i = 0
                try:
                    while True:
                        if time.time() - started > 2.5 and proc.poll() is None:
                            killed_at = time.time()
                            os.killpg(proc.pid, signal.SIGKILL)
                        await ws.send(f"m{i}")
                        echoed.append((time.time(), await asyncio.wait_for(ws.recv(), TIMEOUT)))
                        i += 1
                except ConnectionClosed:
                    return killed_at
    killed_at = asyncio.run(session())
    proc.wait(TIMEOUT)
    confirmed = [m for t, m in echoed if t < killed_at - FLUSH_BOUND]
    assert len(confirmed) > 100
    capture, records = records_of(out)
    assert all(d.line == capture.lines for d in capture.damage)  # at most the last line is cut
    msgs = [r for r in records if r["rec"] == "msg"]
    for direction in ("c2s", "s2c"):
        texts = [payload_bytes(r).decode() for r in msgs if r["dir"] == direction]
        assert texts[:len(confirmed)] == confirmed
    summary = analyze_json(out)
    assert [c["state"] for c in summary["connections"]] == ["open-at-end"]
    assert summary["capture"]["damaged_lines"] == len(capture.damage)
    if capture.damage:
        assert summary["capture"]["damage"] == [f"{out}:{capture.lines}: truncated line"]


def limit_file_size(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    return preexec


def test_full_disk_relays_everything_reports_once_and_counts_the_loss(procs, tmp_path):
    limit = 256 * 1024
    out = tmp_path / "full.jsonl"
    server_port, proxy_port = free_port(), free_port()
    proc = procs.start(recorder_command("mwtap", server_port, proxy_port, out), "mwtap",
                       preexec_fn=limit_file_size(limit))
    wait_port(proxy_port, proc=proc)
    server = EchoServer()

    async def session():
        async with server.serve(server_port):
            return await converse(proxy_port, "full", 1000, pad=1024, window=20)
    sent, received = asyncio.run(session())
    assert received == sent  # the proxy relayed every frame although the capture could not grow
    assert procs.stop(proc) == 0
    log = proc.log_path.read_text()
    assert "Traceback" not in log
    assert len(re.findall(r"writing .*full\.jsonl failed", log)) == 1, log
    summary = re.search(r"(\d+) messages, (\d+) records written to .*; (\d+) dropped", log)
    messages, written, dropped = map(int, summary.groups())
    assert messages == 2000 and dropped > 0 and written + dropped == messages + 2  # + open and close
    capture, records = records_of(out)
    assert out.stat().st_size <= limit and len(records) == written
    assert [payload_bytes(r).decode() for r in records if r["rec"] == "msg" and r["dir"] == "c2s"] == \
        sent[:sum(r["rec"] == "msg" and r["dir"] == "c2s" for r in records)]


class FailingWrites:
    """os.write that fails with ENOSPC `failures` times for the capture file once armed."""

    def __init__(self, path: Path, failures: int):
        self.path = str(path)
        self.failures = failures
        self.armed = False
        self.write = os.write

    def __call__(self, fd: int, data) -> int:
        if self.armed and self.failures and os.readlink(f"/proc/self/fd/{fd}") == self.path:
            self.failures -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.write(fd, data)


def test_failed_writes_recover_with_a_drop_record(tmp_path, monkeypatch, caplog):
    out = tmp_path / "recover.jsonl"
    failing = FailingWrites(out, failures=3)
    monkeypatch.setattr(recorder.writer.os, "write", failing)
    server = EchoServer()
    received: list[str] = []

    async def session():
        async with server.serve(0) as upstream:
            port = upstream.sockets[0].getsockname()[1]
            async with RecordingProxy(f"ws://127.0.0.1:{port}", out) as proxy:
                async with connect(f"ws://127.0.0.1:{proxy.port}/r", proxy=None, ping_interval=None) as ws:
                    for i in range(30):
                        failing.armed = i >= 5
                        await ws.send(f"m{i}")
                        received.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
                        await asyncio.sleep(0.05)
                        if i == 4:
                            await asyncio.sleep(0.5)  # the first records are written before the failures
        return proxy.recorder
    rec = asyncio.run(session())
    assert received == [f"m{i}" for i in range(30)] and failing.failures == 0
    _, records = records_of(out)
    drops = [r for r in records if r["rec"] == "drop"]
    assert len(drops) == 1 and drops[0]["count"] == rec.dropped > 0
    assert "No space left on device" in drops[0]["reason"]
    after_drop = records[records.index(drops[0]) + 1:]
    assert after_drop and after_drop[-1]["rec"] == "close"
    msgs = [r for r in records if r["rec"] == "msg"]
    assert len(msgs) + rec.dropped == 60  # every message is either recorded or counted as lost
    assert [r["n"] for r in msgs] == sorted(r["n"] for r in msgs)
    messages = [r.getMessage() for r in caplog.records if r.name == "recorder.writer"]
    assert len(messages) == 2 and "No space left on device" in messages[0] and "works again" in messages[1]


def test_upstream_that_dies_gets_1006_and_the_recorder_keeps_serving(procs, tmp_path):
    out = tmp_path / "dies.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, "mwtap", out)
    upstream = procs.start([sys.executable, "-c", ECHO_SERVER, str(server_port)], "upstream")
    wait_port(server_port, proc=upstream)

    async def doomed():
        async with connect(f"ws://127.0.0.1:{proxy_port}/doomed", proxy=None, ping_interval=None) as ws:
            await ws.send("before the crash")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "before the crash"
            procs.stop(upstream, signal.SIGKILL)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
    asyncio.run(doomed())
    restarted = procs.start([sys.executable, "-c", ECHO_SERVER, str(server_port)], "upstream2")
    wait_port(server_port, proc=restarted)
    sent, received = asyncio.run(converse(proxy_port, "survivor", 20))
    assert received == sent
    assert procs.stop(proc) == 0
    _, records = records_of(out)
    paths = by_path(records)
    closes = {paths[r["conn"]]: (r["code"], r["by"]) for r in records if r["rec"] == "close"}
    assert closes == {"doomed": (1006, "server"), "survivor": (1000, "client")}
    assert sum(r["rec"] == "msg" and paths[r["conn"]] == "survivor" for r in records) == 40


async def slow_or_forbidden(connection, request):
    if request.path.startswith("/forbidden"):
        return connection.respond(403, "forbidden\n")
    if request.path.startswith("/slow"):
        await asyncio.sleep(5)
    return None


def test_refused_and_slow_upgrades_while_others_keep_flowing(procs, tmp_path):
    out = tmp_path / "refused.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, "mwtap", out)
    server = EchoServer()

    async def session():
        async with serve(server.handler, "127.0.0.1", server_port, process_request=slow_or_forbidden,
                         ping_interval=None):
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{proxy_port}/forbidden", proxy=None, open_timeout=TIMEOUT)
            assert refused.value.response.status_code == 403
            slow = asyncio.create_task(converse(proxy_port, "slow", 3))
            started = time.monotonic()
            fast = await converse(proxy_port, "fast", 50)
            fast_took = time.monotonic() - started
            assert not slow.done()
            return fast, fast_took, await asyncio.wait_for(slow, TIMEOUT)
    (sent, received), fast_took, (slow_sent, slow_received) = asyncio.run(session())
    assert received == sent and slow_received == slow_sent and fast_took < 4.5
    assert procs.stop(proc) == 0
    _, records = records_of(out)
    paths = by_path(records)
    refused = [(paths[r["conn"]], r["status"]) for r in records if r["rec"] == "refused"]
    assert refused == [("forbidden", 403)]
    opened = [paths[r["conn"]] for r in records if r["rec"] == "open"]
    assert opened == ["fast", "slow"]  # in the order the upgrades completed
    assert sum(r["rec"] == "msg" and paths[r["conn"]] == "fast" for r in records) == 100


def test_unreachable_upstream_is_a_refused_record_with_the_error(procs, tmp_path):
    out = tmp_path / "unreachable.jsonl"
    proc, _, proxy_port = start_recorder(procs, "mwtap", out)  # nothing listens on the upstream port

    async def attempt():
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{proxy_port}/nowhere", proxy=None, open_timeout=TIMEOUT)
        return refused.value.response.status_code
    assert asyncio.run(attempt()) == 502
    assert procs.stop(proc) == 0
    _, records = records_of(out)
    assert [(r["rec"], r["status"]) for r in records] == [("refused", None)]
    assert "refused" in records[0]["error"].lower() or "connect" in records[0]["error"].lower()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_with_open_connections_prints_no_traceback(procs, tmp_path, sig):
    out = tmp_path / "stop.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, "mwtap", out)
    server = EchoServer()

    async def session():
        async with server.serve(server_port):
            clients = [await connect(f"ws://127.0.0.1:{proxy_port}/open{k}", proxy=None, ping_interval=None)
                       for k in range(3)]
            for ws in clients:
                await ws.send("still here")
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert await asyncio.to_thread(procs.stop, proc, sig) == 0
            for ws in clients:
                await ws.close()
    asyncio.run(session())
    log = proc.log_path.read_text()
    assert "Traceback" not in log and "CancelledError" not in log and "ERROR" not in log, log
    assert "mwtap record: stopped; 6 messages, 12 records written" in log
    _, records = records_of(out)
    assert [(r["code"], r["by"]) for r in records if r["rec"] == "close"] == [(1006, None)] * 3
