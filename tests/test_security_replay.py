"""Replay safety: a host name is judged by every address it resolves to (loopback only without
--allow-remote), and the token printed by --token-command never appears in the replay's output,
its log lines or its capture."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading

import orjson
import pytest

from conftest import BIN, free_port, wait_port
from recorder.replay.target import TargetError, check_target
from test_replay_cli import write_capture

TOKEN = "tok-RECOGNISABLE-5d1f0a9e7c31"


def resolving_to(monkeypatch, *addresses: str) -> None:
    infos = [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in addresses]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kw: infos)


@pytest.mark.parametrize("addresses, allowed", [
    (["127.0.0.1", "::1"], True),
    (["127.0.0.5"], True),
    (["127.0.0.1", "10.1.2.3"], False),   # loopback only for some answers: refused
    (["192.0.2.7"], False),
])
def test_a_name_is_judged_by_every_address_it_resolves_to(monkeypatch, addresses, allowed):
    resolving_to(monkeypatch, *addresses)
    if allowed:
        check_target("ws://service.internal:8765", allow_remote=False)
    else:
        with pytest.raises(TargetError, match="--allow-remote"):
            check_target("ws://service.internal:8765", allow_remote=False)
    check_target("ws://service.internal:8765", allow_remote=True)  # allowed: never resolved


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "[::ffff:10.0.0.1]", "10.0.0.1"])
def test_addresses_that_are_not_loopback_are_refused(host):
    with pytest.raises(TargetError, match="--allow-remote"):
        check_target(f"ws://{host}:8765", allow_remote=False)


def test_token_command_output_never_appears_anywhere(procs, tmp_path):
    capture = tmp_path / "recorded.jsonl"
    write_capture(capture)
    port = free_port()
    server = procs.start([str(BIN / "mwtap"), "replay", "--as-server", str(capture), "--listen", f"127.0.0.1:{port}"],
                         "as-server")
    wait_port(port, proc=server)
    out = tmp_path / "replayed.jsonl"
    done = subprocess.run([str(BIN / "mwtap"), "replay", str(capture), "--target", f"ws://127.0.0.1:{port}", "-o",
                           str(out), "--token-command", f"echo {TOKEN}", "--wait-timeout", "2"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert b"[redacted sha256:" in out.read_bytes()  # the token was used, as its marker
    for name, data in {"stdout": done.stdout, "stderr": done.stderr, "capture": out.read_bytes()}.items():
        pieces = [TOKEN[i:i + 8] for i in range(len(TOKEN) - 7) if TOKEN[i:i + 8].encode() in data]
        assert not pieces, (name, pieces)


def test_replay_connects_to_the_checked_address_and_never_resolves_the_name_again(monkeypatch, tmp_path):
    """A name that resolves to loopback at the check cannot redirect the replay later (DNS rebinding)."""
    import asyncio

    from recorder.replay.client import ReplayOptions, Replayer
    from recorder.replay.mock_server import MockServer
    from recorder.replay.plan import load_plan
    from recorder.replay.recording import ReplayRecording
    from recorder.replay.tokens import TokenPool, TokenSource

    capture = tmp_path / "recorded.jsonl"
    write_capture(capture)
    plan = load_plan(capture)
    resolving_to(monkeypatch, "127.0.0.1")
    addresses = check_target("ws://rebinding.test:1", allow_remote=False)
    assert addresses == ["127.0.0.1"]

    def no_more_lookups(host, *args, **kw):
        if host == "rebinding.test":
            raise socket.gaierror(socket.EAI_NONAME, "looked up again")
        return real_getaddrinfo(host, *args, **kw)
    monkeypatch.undo()
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", no_more_lookups)

    async def run():
        async with MockServer(plan) as server:
            target = f"ws://rebinding.test:{server.port}"
            tokens = TokenPool(TokenSource(value="tok-pinned-0001"))
            recording = ReplayRecording(tmp_path / "replayed.jsonl", lambda: tokens.secrets)
            return await Replayer(plan, ReplayOptions(target, wait_timeout=2.0, addresses=addresses), tokens,
                                  recording).run()

    result = asyncio.run(asyncio.wait_for(run(), 30))
    replayed = result.to_json()
    assert "looked up again" not in str(replayed)
    assert replayed["connections"][0]["frames_sent"] == 1, replayed


class Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers every request (the WebSocket upgrade) with a redirect; counts them."""
    protocol_version = "HTTP/1.1"  # websockets reads no HTTP/1.0 answer
    status = 302
    location = "ws://elsewhere.example:8765/ws"
    requests: list[str] = []

    def do_GET(self):
        self.requests.append(self.path)
        self.send_response(self.status)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, location", [
    (302, "ws://elsewhere.example:8765/ws"),      # another host: once a traceback and a 0-byte capture
    (301, "ws://127.0.0.1:{port}/other/path"),    # the same host and port: websockets would follow it
])
def test_a_redirect_answering_the_upgrade_is_refused_never_followed(tmp_path, status, location):
    capture = tmp_path / "recorded.jsonl"
    write_capture(capture)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    port = server.server_address[1]
    Redirecting.status, Redirecting.location, Redirecting.requests = status, location.format(port=port), []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "replayed.jsonl"
        done = subprocess.run([str(BIN / "mwtap"), "replay", str(capture), "--target", f"ws://127.0.0.1:{port}",
                               "-o", str(out), "--token", TOKEN], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (refusal,) = [line for line in done.stderr.splitlines() if "cannot connect" in line]
    assert f"HTTP {status}" in refusal and "not followed" in refusal
    assert done.stderr.strip().splitlines()[-1].startswith("mwtap replay: could not send everything")
    assert len(Redirecting.requests) == 1  # the redirect was not followed, even to the same host
    header, refused = (orjson.loads(line) for line in out.read_bytes().splitlines())
    assert header["rec"] == "header" and header["source"] == "replay"
    assert refused["rec"] == "refused" and refused["status"] == status
    assert location.format(port=port) in refused["error"]
