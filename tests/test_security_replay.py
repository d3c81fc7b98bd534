"""Replay safety: a host name is judged by every address it resolves to (loopback only without
--allow-remote), and the token printed by --token-command never appears in the replay's output,
its log lines or its capture."""

from __future__ import annotations

import socket
import subprocess

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
