"""Imports of files written by mitmproxy itself: a HAR (`--set hardump=`) and a flow file (`-w`),
recorded by one mitmdump while a second one (chained behind it) runs the mwtap addon, so all three
saw the same traffic of the scripted consumer and the built-in server. Their analyses must agree."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import tracemalloc
from collections import Counter

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import analysis
from analysis.capture import CaptureFile
from analysis.imports import open_capture
from conftest import BIN, REPO, Processes, free_port, holds_jwt, wait_port
from recorder.consumer import ConsumerConfig, run_consumer
from recorder.server import MessagingServer, ServerConfig
from test_server import FAST

QUICK = dict(message_interval=0.05, read_delay=0.05, reply_timeout=5.0, request_timeout=5.0)
TIMEOUT = 40


async def traffic(server_port: int, proxy_port: int) -> list[list[int | None]]:
    """Two consumers (header and InitConnection auth) and one refused upgrade, then a consumer whose
    connections the server closes with 1011 (it reconnects), all through the proxy chain; returns the
    consumers' close codes."""
    async with MessagingServer(ServerConfig(**FAST), port=server_port) as server:
        ws_url = server.url().replace(f":{server_port}/", f":{proxy_port}/")
        header = run_consumer(ws_url, server.idp_url(), ConsumerConfig(**QUICK, messages=2, auth="header"))
        init = run_consumer(ws_url, server.idp_url(), ConsumerConfig(**QUICK, messages=2, auth="init",
                                                                     keepalive="getclock", keepalive_interval=0.2))
        stats = list(await asyncio.gather(header, init))
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{proxy_port}/no/such/endpoint", proxy=None):
                pass
    async with MessagingServer(ServerConfig(**FAST, close_after=0.6, close_code=1011), port=server_port) as server:
        stats.append(await run_consumer(ws_url, server.idp_url(), ConsumerConfig(
            **QUICK, messages=None, duration=2.0, reconnect_delay=0.3)))
        await asyncio.sleep(0.5)  # let the consumer's close reach the inner proxy before the server goes away
    return [s.close_codes for s in stats]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    procs = Processes(tmp)
    server_port, inner_port, outer_port = free_port(), free_port(), free_port()
    mitmdump = [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1"]
    inner = procs.start([*mitmdump, "--listen-port", str(inner_port), "--mode", f"reverse:http://127.0.0.1:{server_port}",
                         "-s", str(REPO / "recorder" / "addon.py"), "--set", f"mwtap_out={tmp / 'cap.jsonl'}"], "inner")
    outer = procs.start([*mitmdump, "--listen-port", str(outer_port), "--mode", f"reverse:http://127.0.0.1:{inner_port}",
                         "-w", str(tmp / "flows.mitm"), "--set", f"hardump={tmp / 'traffic.har'}"], "outer")
    try:
        wait_port(inner_port, proc=inner)
        wait_port(outer_port, proc=outer)
        codes = asyncio.run(asyncio.wait_for(traffic(server_port, outer_port), TIMEOUT))
    finally:
        procs.stop(outer)  # the HAR is written when mitmdump exits
        procs.stop(inner)
        procs.stop_all()
    return tmp, codes


def pairs_of(cap, status: str = "answered") -> Counter:
    p = cap.pairs[cap.pairs.status == status]
    return Counter(zip(p.id.fillna(""), p.type.fillna(""), p.code.astype("float").fillna(-1)))


def agree_on_pairs(imported, capture) -> None:
    """Same answered pairs and orphans. A request the consumer sent while the server was closing reaches
    the outer proxy (the import) but not the inner one (the capture): the import may have more unanswered.
    A HAR has no close records: its connections end with the capture, so a request left unanswered by a
    close is one still open at the end there."""
    assert pairs_of(imported) == pairs_of(capture) and sum(pairs_of(capture).values()) > 10
    assert pairs_of(imported, "orphan") == pairs_of(capture, "orphan")
    assert pairs_of(imported, "unanswered") + pairs_of(imported, "open-at-end") >= pairs_of(capture, "unanswered")


def test_flow_file_analysis_agrees_with_the_mwtap_capture(recorded):
    tmp, codes = recorded
    capture, flows = analysis.load(tmp / "cap.jsonl"), analysis.load(tmp / "flows.mitm")
    agree_on_pairs(flows, capture)
    conns = lambda cap: sorted(zip(cap.connections.state, cap.connections.close_code.astype("float").fillna(-1),
                                   cap.connections.closed_by.fillna("")))
    assert conns(flows) == conns(capture)
    assert sorted(c for c in flows.connections.close_code.dropna()) == sorted(c for cs in codes for c in cs if c)
    assert (flows.connections.state == "refused").sum() == 1
    # Each proxy sees client and server messages interleaved as they pass it: a publish crossing the
    # conversation's CLOSE notification, or a request crossing the server's close, is seen on either
    # side of it depending on the proxy's position in the chain.
    crossing = {"unanswered-request", "publish-after-close"}
    violations = lambda cap: Counter((rule, severity) for rule, severity in zip(cap.violations.rule,
                                                                                cap.violations.severity)
                                     if rule not in crossing)
    assert violations(flows) == violations(capture) and violations(capture)[("fast-reconnect", "warning")] == 2
    notes = flows.summary()["capture"]["notes"]
    assert any("pings not available (flows" in n for n in notes)


def test_har_analysis_agrees_on_pairs_and_says_what_it_cannot_know(recorded):
    tmp, _ = recorded
    capture, har = analysis.load(tmp / "cap.jsonl"), analysis.load(tmp / "traffic.har")
    agree_on_pairs(har, capture)
    assert (har.connections.state == "open-at-end").sum() == (capture.connections.state == "closed").sum()
    assert har.connections.close_code.isna().all()
    assert (har.connections.state == "refused").sum() == 1
    assert har.reconnects.empty and not capture.reconnects.empty  # no close codes: no reconnect chains
    assert "fast-reconnect" in set(capture.violations.rule) and "fast-reconnect" not in set(har.violations.rule)
    assert set(har.frames.op) == set(capture.frames.op) == {"text"}
    out = subprocess.run([str(BIN / "mwtap"), "analyze", str(tmp / "traffic.har")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "close codes and pings not available (HAR" in out.stdout


def test_convert_writes_private_captures_without_tokens(recorded):
    tmp, _ = recorded
    raw = (tmp / "traffic.har").read_bytes()
    assert holds_jwt(raw)  # the consumer's JWTs are in the HAR as mitmproxy wrote it
    for name, source in (("traffic.har", "har"), ("flows.mitm", "flows")):
        out = tmp / f"{name}.jsonl"
        run = subprocess.run([str(BIN / "mwtap"), "convert", str(tmp / name), "-o", str(out)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        data = out.read_bytes()
        assert not holds_jwt(data) and b"[redacted sha256:" in data
        capture = CaptureFile(str(out))
        records = list(capture.records())
        assert capture.header["source"] == source and capture.header["version"] == 1
        assert (capture.header["mitmproxy"] is None) == (source == "har") or capture.header["mitmproxy"]
        assert any(r["rec"] == "msg" and r.get("redacted") for r in records)
        assert pairs_of(analysis.load(out)) == pairs_of(analysis.load(tmp / name))
        again = subprocess.run([str(BIN / "mwtap"), "convert", str(tmp / name), "-o", str(out)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
        forced = subprocess.run([str(BIN / "mwtap"), "convert", str(tmp / name), "-o", str(out), "--force"],
                                capture_output=True, text=True, timeout=60)
        assert forced.returncode == 0 and out.read_bytes() == data


@pytest.mark.parametrize("name", ["flows.mitm", "traffic.har"])
def test_truncated_files_are_read_up_to_the_damage(recorded, tmp_path, name):
    tmp, _ = recorded
    whole = (tmp / name).read_bytes()
    cut = tmp_path / ("cut-" + name)
    cut.write_bytes(whole[:len(whole) * 2 // 3])
    full, part = analysis.load(tmp / name), analysis.load(cut)
    assert 0 < len(part.connections) < len(full.connections) + 1 and len(part.frames) < len(full.frames)
    assert [d.path for d in part.damage] == [str(cut)]
    out = subprocess.run([str(BIN / "mwtap"), "analyze", "--format", "json", str(cut)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"{cut}:") and "damaged" in out.stderr
    assert orjson.loads(out.stdout)["capture"]["damaged_lines"] == 1


def write_flow_file(path, flows: int, messages: int, padding: int) -> None:
    """`flows` WebSocket flows one after another (10 s apart), each with `messages` messages."""
    from mitmproxy import io
    from mitmproxy.test import tflow
    from mitmproxy.websocket import WebSocketMessage
    from wsproto.frame_protocol import Opcode

    pad = b"x" * padding
    with open(path, "wb") as f:
        writer = io.FlowWriter(f)
        for i in range(flows):
            flow = tflow.twebsocketflow(messages=False, close_code=1000)
            t = 1_795_544_000.0 + i * 10.0
            flow.request.timestamp_start, flow.response.timestamp_end = t, t + 0.001
            flow.websocket.messages = [
                WebSocketMessage(Opcode.TEXT, j % 2 == 0, b'{"kind":"req","id":"%d","pad":"%s"}' % (j, pad),
                                 t + 0.01 * (j + 1)) for j in range(messages)]
            flow.websocket.timestamp_end = t + 1.0
            writer.add(flow)


def test_a_flow_file_is_read_flow_by_flow_not_whole(tmp_path):
    path = tmp_path / "many.mitm"
    write_flow_file(path, flows=400, messages=25, padding=1000)  # ~10 MB of payloads
    tracemalloc.start()
    try:
        capture = open_capture(str(path))
        times: list[float] = []
        opens = 0
        for rec in capture.records():
            times.append(rec["t"])
            opens += rec["rec"] == "open"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert opens == 400 and len(times) == 400 * 27 and times == sorted(times)
    assert capture.damage == []
    assert peak < 4_000_000, f"peak {peak:,} bytes"  # read whole, the records alone take ~13 MB
