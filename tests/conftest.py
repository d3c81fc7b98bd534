"""Shared helpers for tests that run real processes on loopback (127.0.0.1, and ::1 where asked)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.redact import JWT_RE

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"  # LivePerson's documented example frames, kept with the tests
BIN = Path(sys.executable).parent


def holds_jwt(text: str | bytes) -> bool:
    """Whether a JWT (three segments) or a JWT's header segment (base64 of '{"alg":' or '{"typ":')
    is in `text`.
    Not a bare "eyJ": a random base64 value such as a Sec-WebSocket-Key holds it by chance (about
    one capture in a hundred, with a few dozen connections)."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return JWT_RE.search(text) is not None or "eyJhbGciOi" in text or "eyJ0eXAiOi" in text


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` (a loopback address: 127.0.0.1 or ::1)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None,
              host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host} port {port} after {timeout}s")


def run_on_terminal(args: list, timeout: float = 90.0) -> tuple[int, bytes]:
    """Runs `args` with stdout and stderr on a pseudo-terminal: (exit status, what it showed)."""
    import select

    leader, follower = os.openpty()
    proc = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            start_new_session=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            seen += chunk
    os.close(leader)
    return proc.wait(30), seen


class Processes:
    """Starts subprocesses and always stops them (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], name: str, **kw) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(var, None)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, **kw)
        proc.log_path = self.tmp_path / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception:
                pass


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture(scope="session")
def sample_capture(tmp_path_factory) -> Path:
    """The synthetic capture of tests/sample_capture.py, made once per test run."""
    from sample_capture import generate
    path = tmp_path_factory.mktemp("sample") / "sample.jsonl"
    generate(path)
    return path


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    # websockets >= 15 follows HTTP(S)_PROXY; every test talks to 127.0.0.1 directly.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
