"""Files and sockets: captures, reports and converted captures are created 0600 whatever the umask;
the recorder refuses a world-writable directory (/tmp included) unless forced; the built-in server
binds 127.0.0.1 unless told otherwise and warns when told otherwise."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time

import pytest

from conftest import BIN, free_port, wait_port
from test_cli_errors import good_capture
from test_record_e2e import recorder_command

WORLD_WRITABLE = "writable by every user"


def umask_zero() -> None:
    os.umask(0)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def shared_dir(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: world-writable, sticky
    return shared


def start(procs, kind: str, out, *extra: str):
    server_port, proxy_port = free_port(), free_port()
    proc = procs.start(recorder_command(kind, server_port, proxy_port, out, *extra), kind, preexec_fn=umask_zero)
    return proc, proxy_port


@pytest.mark.parametrize("kind", ["mwtap", "mitmdump"])
def test_recorder_refuses_a_world_writable_directory(procs, shared_dir, kind):
    out = shared_dir / "cap.jsonl"
    proc, _ = start(procs, kind, out)
    assert proc.wait(30) != 0
    log = proc.log_path.read_text()
    assert WORLD_WRITABLE in log and "--allow-shared-dir" in log and "mwtap_force" in log
    assert "Traceback" not in log
    assert not out.exists()


def test_recorder_refuses_tmp_itself():
    done = subprocess.run([str(BIN / "mwtap"), "record", "--upstream", "ws://127.0.0.1:9", "--listen",
                           "127.0.0.1:0", "-o", f"/tmp/mwtap-never-{os.getpid()}.jsonl"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and f"/tmp is {WORLD_WRITABLE}" in done.stderr
    assert not os.path.exists(f"/tmp/mwtap-never-{os.getpid()}.jsonl")


@pytest.mark.parametrize("kind, force", [("mwtap", "--allow-shared-dir"), ("mitmdump", "mwtap_force=true")])
def test_force_writes_there_anyway_and_the_capture_is_private(procs, shared_dir, kind, force):
    out = shared_dir / "cap.jsonl"
    proc, proxy_port = start(procs, kind, out, force)
    wait_port(proxy_port, proc=proc)
    assert procs.stop(proc) == 0
    assert mode(out) == 0o600


def test_report_and_converted_capture_are_private_whatever_the_umask(tmp_path):
    capture = good_capture(tmp_path / "c.jsonl")
    outputs = {"report.html": ["report", capture, "-o"], "report.md": ["report", "--format", "markdown", capture, "-o"],
               "converted.jsonl": ["convert", capture, "-o"]}
    for name, args in outputs.items():
        done = subprocess.run([str(BIN / "mwtap"), *map(str, args), str(tmp_path / name)], capture_output=True,
                              text=True, timeout=120, preexec_fn=umask_zero)
        assert done.returncode == 0, done.stderr
        assert mode(tmp_path / name) == 0o600, name


def test_server_binds_loopback_by_default_and_warns_otherwise(procs):
    default_port = free_port()
    default = procs.start([str(BIN / "mwtap"), "serve", "--listen", f"127.0.0.1:{default_port}"], "serve-default")
    wait_port(default_port, proc=default)
    exposed = procs.start([str(BIN / "mwtap"), "serve", "--listen", "0.0.0.0:0"], "serve-exposed")
    deadline = time.monotonic() + 20
    while not re.search(r"WebSocket ws://0\.0\.0\.0:(\d+)/", exposed.log_path.read_text()):
        assert time.monotonic() < deadline and exposed.poll() is None, exposed.log_path.read_text()
        time.sleep(0.1)
    port = int(re.search(r"WebSocket ws://0\.0\.0\.0:(\d+)/", exposed.log_path.read_text())[1])
    wait_port(port, proc=exposed)  # connect only via 127.0.0.1
    log = exposed.log_path.read_text()
    assert "warning: listening on 0.0.0.0, which is not a loopback address" in log
    assert "warning" not in default.log_path.read_text()
    help_text = subprocess.run([str(BIN / "mwtap"), "serve", "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    assert "127.0.0.1:8765" in help_text
