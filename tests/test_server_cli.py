"""`mwtap serve` as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import pytest
from websockets.asyncio.client import connect

from conftest import BIN, free_port, wait_port
from recorder.cli.serve import is_loopback, parse_delay, parse_listen
from test_server import http_post


def wait_for_line(path, pattern: str, timeout: float = 10.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text())
        if match:
            return match
        time.sleep(0.05)
    raise TimeoutError(f"{pattern!r} not in {path.read_text()!r}")


def test_serve_answers_signup_and_websocket_then_stops_on_sigterm(procs):
    port = free_port()
    proc = procs.start([str(BIN / "mwtap"), "serve", "--listen", f"127.0.0.1:{port}", "--idle-timeout", "30",
                        "--delay", "GetClock=10", "--seed", "3"], "serve")
    wait_port(port, proc=proc)
    url = wait_for_line(proc.log_path, r"WebSocket (ws://\S+)")[1]
    assert url == f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
    status, body = http_post(f"http://127.0.0.1:{port}/api/account/mwtap/signup")
    assert status == 200

    async def one_request():
        async with connect(url, proxy=None, additional_headers={"Authorization": f"jwt {body['jwt']}"}) as ws:
            await ws.send(json.dumps({"kind": "req", "id": 1, "type": "GetClock"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    reply = asyncio.run(one_request())
    assert reply["reqId"] == "1" and reply["code"] == 200 and reply["type"] == "GetClockResponse"
    assert procs.stop(proc) == 0
    log = proc.log_path.read_text()
    assert "stopped" in log and "Traceback" not in log


def test_serve_rejects_bad_options_with_one_line_errors():
    for args, needle in [(["--listen", "127.0.0.1:notaport"], "HOST:PORT"),
                         (["--delay", "ms.PublishEvent"], "REQUEST_TYPE=MILLISECONDS"),
                         (["--drop-rate", "2"], "drop-rate"),
                         (["--sequence-fault", "reverse"], "sequence-fault")]:
        result = subprocess.run([str(BIN / "mwtap"), "serve", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr


def test_serve_reports_a_busy_port_without_traceback(procs):
    port = free_port()
    first = procs.start([str(BIN / "mwtap"), "serve", "--listen", f"127.0.0.1:{port}"], "first")
    wait_port(port, proc=first)
    result = subprocess.run([str(BIN / "mwtap"), "serve", "--listen", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr  # bad input
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("192.168.1.4", False),
                                            ("example.org", False)])
def test_non_loopback_addresses_are_recognised(host, loopback):
    assert is_loopback(host) is loopback


def test_option_parsers():
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_delay(("ms.PublishEvent=500", "GetClock=0")) == {"ms.PublishEvent": 500, "GetClock": 0}


def test_importing_the_command_does_not_load_websockets():
    code = ("import sys, recorder.cli.serve; "
            "print('websockets' in sys.modules, 'recorder.server.app' in sys.modules)")
    result = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == ["False", "False"], result.stderr
