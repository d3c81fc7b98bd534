"""mwtap over IPv6 loopback: `mwtap serve`, `mwtap record` and `mitmdump -s recorder/addon.py`,
`mwtap analyze` and `mwtap replay` (both sides) with literal `[::1]` addresses, as real
subprocesses; and the replay trying each checked loopback address of a name in order."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect

from analysis.capture import CaptureFile
from conftest import BIN, REPO, Processes, free_port, wait_port
from recorder.consumer import run_consumer
from recorder.replay.client import ReplayOptions, Replayer
from recorder.replay.mock_server import MockServer
from recorder.replay.plan import load_plan
from recorder.replay.recording import ReplayRecording
from recorder.replay.target import TargetError, check_target
from recorder.replay.tokens import TokenPool, TokenSource
from test_replay import HEADER_CONSUMER, mwtap, token_command
from test_replay_cli import write_capture
from test_security_replay import resolving_to
from test_server_cli import wait_for_line

V6 = "::1"
WS_PATH = "/ws_api/account/mwtap/messaging/consumer?v=3"
TIMEOUT = 30


def start_serve(procs: Processes, name: str = "serve") -> tuple[int, str, str, subprocess.Popen]:
    """`mwtap serve` on [::1]: its port and the WebSocket and IDP URLs it printed."""
    port = free_port(V6)
    proc = procs.start([str(BIN / "mwtap"), "serve", "--listen", f"[::1]:{port}", "--agent-reply-delay", "0.2"], name)
    wait_port(port, proc=proc, host=V6)
    ws_url = wait_for_line(proc.log_path, r"WebSocket (\S+)")[1]
    idp_url = wait_for_line(proc.log_path, r"IDP\s+POST (\S+)/signup")[1]
    return port, ws_url, idp_url, proc


def consume(ws_url: str, idp_url: str):
    stats = asyncio.run(asyncio.wait_for(run_consumer(ws_url, idp_url, HEADER_CONSUMER), TIMEOUT))
    assert stats.completed and stats.error_responses == 0, stats
    return stats


def open_records(path: Path) -> list[dict]:
    return [r for r in CaptureFile(str(path)).records() if r["rec"] == "open"]


def test_serve_prints_bracketed_urls_that_a_consumer_uses(procs):
    port, ws_url, idp_url, proc = start_serve(procs)
    assert ws_url == f"ws://[::1]:{port}{WS_PATH}"
    assert idp_url == f"http://[::1]:{port}/api/account/mwtap"
    consume(ws_url, idp_url)
    assert re.search(r"connection from \[::1\]:\d+ closed with 1000", proc.log_path.read_text())

    busy = subprocess.run([str(BIN / "mwtap"), "serve", "--listen", f"[::1]:{port}"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert busy.returncode == 2 and f"cannot listen on [::1]:{port}:" in busy.stderr, busy.stderr
    assert "Traceback" not in busy.stderr


@pytest.mark.parametrize("args, needle", [
    (["serve", "--listen", "::1:8765"], "[IPV6]:PORT"),          # without brackets the port is ambiguous
    (["serve", "--listen", "[localhost]:8765"], "[IPV6]:PORT"),
    (["record", "--upstream", "ws://::1:9", "--listen", "[::1]:0", "-o", "x.jsonl"], "ws://[::1]:PORT"),
])
def test_an_unbracketed_ipv6_address_is_one_line_error(tmp_path, args, needle):
    done = subprocess.run([str(BIN / "mwtap"), *args], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert done.returncode == 2 and len(errors) == 1 and needle in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.jsonl").exists()


def recorder_on_v6(procs: Processes, kind: str, server_port: int, out: Path) -> tuple[int, subprocess.Popen]:
    """The recorder on [::1] in front of the server on [::1]; returns the port clients connect to."""
    if kind == "mwtap":
        proc = procs.start([str(BIN / "mwtap"), "record", "--listen", "[::1]:0", "--upstream",
                            f"ws://[::1]:{server_port}", "-o", str(out)], kind)
        listening = wait_for_line(proc.log_path, r"listening on (\S+) -> (\S+);", timeout=TIMEOUT)
        assert listening[2] == f"ws://[::1]:{server_port}"
        pasteable = re.fullmatch(r"\[::1\]:(\d+)", listening[1])
        assert pasteable, f"not an address a user can paste: {listening[0]}"
        port = int(pasteable[1])
    else:
        port = free_port(V6)
        saving = (["-s", str(REPO / "recorder" / "addon.py"), "--set", f"mwtap_out={out}"] if kind == "mitmdump"
                  else ["-w", str(out.with_suffix(".flows"))])
        proc = procs.start([str(BIN / "mitmdump"), "-q", "--listen-host", V6, "--listen-port", str(port),
                            "--mode", f"reverse:http://[::1]:{server_port}", *saving,
                            "--set", "connection_strategy=lazy"], kind)
    wait_port(port, proc=proc, host=V6, timeout=TIMEOUT)
    return port, proc


@pytest.fixture(scope="module", params=["mwtap", "mitmdump", "mitmdump -w"])
def recorded(request, tmp_path_factory):
    """A scripted consumer session through the recorder, all on [::1]: (capture, server port, kind).
    With `mitmdump -w`, the capture is mitmproxy's flow file converted by `mwtap convert`."""
    tmp = tmp_path_factory.mktemp(f"v6-{request.param}")
    procs = Processes(tmp)
    try:
        server_port, _, idp_url, _ = start_serve(procs)
        out = tmp / "capture.jsonl"
        proxy_port, recorder = recorder_on_v6(procs, request.param, server_port, out)
        consume(f"ws://[::1]:{proxy_port}{WS_PATH}", idp_url)
        assert procs.stop(recorder) == 0, recorder.log_path.read_text()
        if request.param == "mitmdump -w":
            converted = mwtap("convert", out.with_suffix(".flows"), "-o", out)
            assert converted.returncode == 0, converted.stderr
        yield out, server_port, request.param
    finally:
        procs.stop_all()


def test_open_record_addresses_are_bracketed(recorded):
    out, server_port, kind = recorded
    [opened] = open_records(out)
    assert opened["url"] == f"ws://[::1]:{server_port}{WS_PATH}"
    assert opened["server"] == f"[::1]:{server_port}"
    assert re.fullmatch(r"\[::1\]:\d+", opened["client"])
    # mitmproxy's reverse mode writes the upstream's Host bare (`::1:PORT`); the recorder brackets it,
    # an imported flow file shows what mitmproxy sent
    host = f"[::1]:{server_port}" if kind != "mitmdump -w" else f"::1:{server_port}"
    assert dict(opened["request_headers"])["Host"] == host


def test_analyze_reads_the_ipv6_capture(recorded):
    out, server_port, _ = recorded
    done = mwtap("analyze", out, "--format", "json")
    assert done.returncode == 0, done.stderr
    [connection] = json.loads(done.stdout)["connections"]
    url = urlsplit(connection["url"])
    assert (url.hostname, url.port) == (V6, server_port)
    assert connection["close_code"] == 1000 and connection["frames_c2s"] > 0


def test_replay_to_an_ipv6_target(recorded, procs, tmp_path):
    out, _, _ = recorded
    port, _, _, _ = start_serve(procs, "target")
    replayed = tmp_path / "replayed.jsonl"
    done = mwtap("replay", out, "--target", f"ws://[::1]:{port}", "-o", replayed, "--token-command",
                 token_command(port, host=V6), "--format", "json", "--wait-timeout", "3")
    assert done.returncode == 0, done.stderr
    [connection] = json.loads(done.stdout)["connections"]
    # The server sends a notification a request causes only after its response, so one can come after
    # the consumer's close, there or here: replay says it left it out. Anything else is a difference.
    events = [e for e in connection["events"] if "after the recorded client's close" not in e]
    assert connection["frames_sent"] == connection["frames_total"] > 0 and events == [], connection
    assert f"-> ws://[::1]:{port}{WS_PATH}" in done.stderr
    [opened] = open_records(replayed)
    assert opened["url"] == f"ws://[::1]:{port}{WS_PATH}" and opened["server"] == f"[::1]:{port}"


def test_replay_as_server_on_ipv6(procs, tmp_path):
    capture = tmp_path / "recorded.jsonl"
    write_capture(capture)
    port = free_port(V6)
    mock = procs.start([str(BIN / "mwtap"), "replay", "--as-server", str(capture), "--listen", f"[::1]:{port}"],
                       "as-server")
    wait_port(port, proc=mock, host=V6)
    assert wait_for_line(mock.log_path, r"WebSocket (\S+)")[1].startswith(f"ws://[::1]:{port}/")
    done = mwtap("replay", capture, "--target", f"ws://[::1]:{port}", "-o", tmp_path / "replayed.jsonl",
                 "--token", "tok-v6", "--format", "json", "--wait-timeout", "2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["connections"][0]["frames_sent"] == 1


# -- every checked address, in order ------------------------------------------------------------

def test_checked_addresses_of_literals_and_names(monkeypatch):
    assert check_target("ws://[::1]:1", allow_remote=False) == [V6]
    assert check_target("ws://127.0.0.1:1", allow_remote=False) == ["127.0.0.1"]
    assert check_target("ws://[::1]:1", allow_remote=True) == []  # --allow-remote: resolved as usual
    resolving_to(monkeypatch, "::1", "127.0.0.1")
    assert check_target("ws://dual.test:1", allow_remote=False) == ["127.0.0.1", V6]
    for typo in ("ws://[::1:9", "ws://::1:9"):  # a lost bracket is one line that shows the form
        with pytest.raises(TargetError, match=re.escape("ws://[::1]:PORT")):
            check_target(typo, allow_remote=False)


def refused_on(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def one_frame_plan(tmp_path: Path):
    capture = tmp_path / "recorded.jsonl"
    write_capture(capture)
    return load_plan(capture)


async def replay(plan, tmp_path: Path, url: str, addresses: list[str]) -> tuple[dict, list[dict]]:
    """The client-side replay of `plan` to `url` at `addresses`: (its one connection, its open records)."""
    replayed = tmp_path / "replayed.jsonl"
    tokens = TokenPool(TokenSource(value="tok-v6-0001"))
    recording = ReplayRecording(replayed, lambda: tokens.secrets)
    result = await Replayer(plan, ReplayOptions(url, wait_timeout=2.0, addresses=addresses), tokens, recording).run()
    return result.to_json()["connections"][0], open_records(replayed)


def test_replay_tries_the_next_checked_address_when_one_refuses(tmp_path):
    """The addresses checked for a name resolving to both (see above) with the server on ::1 only:
    127.0.0.1 refuses, ::1 is tried next (`dual.test` is never resolved: it does not exist)."""
    plan = one_frame_plan(tmp_path)

    async def run():
        async with MockServer(plan, V6, 0) as server:
            assert refused_on("127.0.0.1", server.port)
            return await replay(plan, tmp_path, f"ws://dual.test:{server.port}", ["127.0.0.1", V6])

    connection, [opened] = asyncio.run(asyncio.wait_for(run(), TIMEOUT))
    assert connection["frames_sent"] == 1, connection
    assert re.fullmatch(r"\[::1\]:\d+", opened["server"])
    assert opened["url"].startswith("ws://dual.test:")


def test_replay_reports_every_checked_address_when_all_refuse(tmp_path):
    port = free_port(V6)
    assert refused_on("127.0.0.1", port) and refused_on(V6, port)
    connection, opened = asyncio.run(asyncio.wait_for(
        replay(one_frame_plan(tmp_path), tmp_path, f"ws://dual.test:{port}", ["127.0.0.1", V6]), TIMEOUT))
    assert connection["replayed"] == [] and opened == []
    [event] = connection["events"]
    assert "cannot connect" in event and f"('127.0.0.1', {port})" in event and f"('::1', {port}" in event, event


def test_regular_mode_records_an_ipv6_client_and_server(procs, tmp_path):
    """`--mode regular`: the client uses the recorder as its HTTP proxy, all on [::1]."""
    server_port, ws_url, _, _ = start_serve(procs)
    out = tmp_path / "capture.jsonl"
    recorder = procs.start([str(BIN / "mwtap"), "record", "--mode", "regular", "--listen", "[::1]:0", "-o", str(out)],
                           "record")
    listening = wait_for_line(recorder.log_path, r"listening on \[::1\]:(\d+)", timeout=TIMEOUT)
    proxy_port = int(listening[1])
    wait_port(proxy_port, proc=recorder, host=V6, timeout=TIMEOUT)

    async def get_clock() -> dict:
        async with connect(ws_url, proxy=f"http://[::1]:{proxy_port}", open_timeout=TIMEOUT) as ws:
            await ws.send(json.dumps({"kind": "req", "id": "1", "type": "GetClock"}))
            return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))

    assert asyncio.run(get_clock())["code"] == 200
    assert procs.stop(recorder) == 0, recorder.log_path.read_text()
    [opened] = open_records(out)
    assert opened["url"] == ws_url and opened["server"] == f"[::1]:{server_port}"
    assert re.fullmatch(r"\[::1\]:\d+", opened["client"])
    assert dict(opened["request_headers"])["Host"] == f"[::1]:{server_port}"  # as the client wrote it
    frames = [r for r in CaptureFile(str(out)).records() if r["rec"] == "msg"]
    assert [(f["dir"], f.get("id"), f.get("reqId")) for f in frames] == [("c2s", "1", None), ("s2c", None, "1")]
