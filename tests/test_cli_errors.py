"""Every mwtap command given bad input (a bad file, an output it cannot write, an address it cannot
listen on) or used wrongly: a one-line error naming it and exit status 2, never a traceback; exit
status 1 only when the check found something (each a real subprocess)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from analysis.capture import dumps
from analysis.synth import CaptureBuilder
from conftest import BIN, free_port, wait_port
from recorder.cli import COMMANDS

GET_CLOCK = {"kind": "req", "id": "1", "type": "GetClock"}


def good_capture(path: Path) -> Path:
    b = CaptureBuilder()
    b.open("c1", 1.0, token=None)
    b.c2s("c1", 1.1, GET_CLOCK)
    b.close("c1", 2.0)
    b.write(path)
    return path


def bad_input(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.jsonl"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-a-capture":
        path.write_bytes(b"id,name\n1,alice\n")
    elif kind == "newer-version":
        path.write_bytes(dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 99,
                                "recording": "r", "part": 1}))
    return path


INPUTS = ["missing", "directory", "empty", "not-a-capture", "newer-version"]

# How each command takes an input file: arguments around BAD (the file under test).
COMMAND_ARGS = {
    "analyze": lambda bad, good, tmp: ["analyze", bad],
    "analyze-second-file": lambda bad, good, tmp: ["analyze", good, bad],
    "report": lambda bad, good, tmp: ["report", bad, "-o", tmp / "report.html"],
    "replay": lambda bad, good, tmp: ["replay", bad, "--target", "ws://127.0.0.1:9", "-o", tmp / "replay.jsonl"],
    "replay-as-server": lambda bad, good, tmp: ["replay", "--as-server", bad, "--listen", "127.0.0.1:0"],
    "diff-recorded": lambda bad, good, tmp: ["diff", bad, good],
    "diff-replayed": lambda bad, good, tmp: ["diff", good, bad],
    "convert": lambda bad, good, tmp: ["convert", bad, "-o", tmp / "converted.jsonl"],
    "export": lambda bad, good, tmp: ["export", bad, "--parquet", tmp / "parquet"],
    "view": lambda bad, good, tmp: ["view", good, bad, "--no-browser", "--port", "0"],
}
AVAILABLE = [name for name in COMMAND_ARGS if name.split("-")[0] in COMMANDS
             and (Path(__file__).parent.parent / (COMMANDS[name.split("-")[0]].split(":")[0].replace(".", "/") + ".py")).exists()]


def run_mwtap(args: list) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mwtap"), *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(done: subprocess.CompletedProcess, name: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ") and name in lines[0], lines[0]


@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("command", AVAILABLE)
def test_bad_input_file_is_a_one_line_error(command, kind, tmp_path):
    bad = bad_input(kind, tmp_path)
    good = good_capture(tmp_path / "good.jsonl")
    assert_one_line_error(run_mwtap(COMMAND_ARGS[command](bad, good, tmp_path)), bad.name)


def test_every_file_command_is_covered():
    takes_no_file = {"serve", "demo", "record", "consume", "token"}  # record's output is tested below
    assert set(COMMANDS) - takes_no_file <= {name.split("-")[0] for name in COMMAND_ARGS}


@pytest.mark.parametrize("out_kind", ["exists", "directory", "missing-directory"])
def test_record_refuses_an_unusable_output_with_one_line(out_kind, tmp_path):
    out = {"exists": tmp_path / "old.jsonl", "directory": tmp_path / "dir.jsonl",
           "missing-directory": tmp_path / "nowhere" / "cap.jsonl"}[out_kind]
    if out_kind == "exists":
        good_capture(out)
    elif out_kind == "directory":
        out.mkdir()
    before = out.read_bytes() if out_kind == "exists" else None
    done = run_mwtap(["record", "--upstream", "ws://127.0.0.1:9", "--listen", "127.0.0.1:0", "-o", out])
    assert_one_line_error(done, out.name)
    if before is not None:
        assert out.read_bytes() == before


@pytest.fixture
def busy_port():
    """A loopback port something else already listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "view", "record", "replay-as-server"])
def test_an_address_that_cannot_be_listened_on_is_bad_input(command, busy_port, tmp_path):
    good = good_capture(tmp_path / "good.jsonl")
    listen = f"127.0.0.1:{busy_port}"
    args = {"serve": ["serve", "--listen", listen],
            "view": ["view", good, "--no-browser", "--port", busy_port],
            "record": ["record", "--upstream", "ws://127.0.0.1:9", "--listen", listen, "-o", tmp_path / "c.jsonl"],
            "replay-as-server": ["replay", "--as-server", good, "--listen", listen]}[command]
    done = run_mwtap(args)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("mwtap view: ")]  # its index
    assert done.returncode == 2 and "Traceback" not in done.stderr, done
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"listen on {listen}" in lines[0], done.stderr


def test_an_output_that_cannot_be_written_is_bad_input(tmp_path):
    out = tmp_path / "nowhere" / "report.html"
    assert_one_line_error(run_mwtap(["report", good_capture(tmp_path / "good.jsonl"), "-o", out]), out.name)


# Every command that writes a file: its output given existing, as (arguments, the file in the way).
def overwrite_case(command: str, good: Path, tmp: Path) -> tuple[list, Path]:
    listen = f"127.0.0.1:{free_port()}"
    out = tmp / "out.jsonl"
    return {
        "report": (["report", good, "-o", tmp / "r.html"], tmp / "r.html"),
        "convert": (["convert", good, "-o", out], out),
        "export": (["export", good, "--parquet", tmp], tmp / "pairs.parquet"),
        "replay": (["replay", good, "--target", "ws://127.0.0.1:9", "-o", out], out),
        "replay-as-server": (["replay", "--as-server", good, "--listen", listen, "-o", out], out),
        "record": (["record", "--upstream", "ws://127.0.0.1:9", "--listen", listen, "-o", out], out),
        "record-part": (["record", "--upstream", "ws://127.0.0.1:9", "--listen", listen, "-o", out],
                        tmp / "out.part2.jsonl"),
        "demo": (["demo", "-o", tmp, "--duration", "1"], tmp / "capture.jsonl"),
    }[command]


OVERWRITERS = ["report", "convert", "export", "replay", "replay-as-server", "record", "record-part", "demo"]
SERVING = {"replay-as-server", "record", "record-part"}  # run until stopped


@pytest.mark.parametrize("command", OVERWRITERS)
def test_an_existing_output_is_refused_and_kept(command, tmp_path):
    args, existing = overwrite_case(command, good_capture(tmp_path / "good.jsonl"), tmp_path)
    existing.write_bytes(b"earlier work\n")
    assert_one_line_error(run_mwtap(args), existing.name)
    assert "--force" in run_mwtap(args).stderr
    assert existing.read_bytes() == b"earlier work\n"


@pytest.mark.parametrize("command", OVERWRITERS)
def test_force_overwrites_an_existing_output(command, tmp_path, procs):
    args, existing = overwrite_case(command, good_capture(tmp_path / "good.jsonl"), tmp_path)
    existing.write_bytes(b"earlier work\n")
    if command in SERVING:
        proc = procs.start([str(BIN / "mwtap"), *map(str, args), "--force"], command)
        wait_port(int(args[args.index("--listen") + 1].rpartition(":")[2]), proc=proc, timeout=60)
        assert procs.stop(proc) == 0, proc.log_path.read_text()
    else:
        done = run_mwtap([*args, "--force"])
        assert done.returncode in ((1,) if command == "replay" else (0,)), done  # port 9: nothing to replay to
    if command == "record-part":
        assert not existing.exists()  # an earlier recording's part is not left to be read with the new one
    elif existing.suffix == ".jsonl":
        assert existing.read_bytes().startswith(b'{"rec":"header"')
    else:
        assert existing.read_bytes() != b"earlier work\n" and existing.stat().st_size > 100


# Bad usage of every command: one line naming the problem (click's usage errors add the usage line
# and a hint above it), exit status 2.
USAGE_ERRORS = {
    "analyze": (["analyze", "GOOD", "--format", "pdf"], "'pdf' is not one of"),
    "report": (["report", "GOOD", "--format", "pdf"], "'pdf' is not one of"),
    "export": (["export", "GOOD"], "Missing option '--parquet'"),
    "convert": (["convert", "GOOD"], "Missing option '-o'"),
    "diff": (["diff", "GOOD"], "Missing argument 'REPLAYED'"),
    "replay": (["replay", "GOOD", "-o", "OUT"], "--target URL is required"),
    "record": (["record", "-o", "OUT"], "give exactly one of --upstream URL"),
    "serve": (["serve", "--listen", "::1:8765"], "[IPV6]:PORT"),
    "view": (["view", "GOOD", "--host", "192.0.2.1"], "is not a loopback address"),
    "consume": (["consume", "http://127.0.0.1:9/"], "expected a ws:// or wss:// URL"),
    "token": (["token", "ws://127.0.0.1:9/nothing"], "names no account"),
    "demo": (["demo", "--duration", "soon"], "'soon' is not a valid float"),
}


@pytest.mark.parametrize("command", sorted(USAGE_ERRORS))
def test_bad_usage_is_exit_2_with_the_problem_on_the_error_line(command, tmp_path):
    args, problem = USAGE_ERRORS[command]
    given = {"GOOD": good_capture(tmp_path / "good.jsonl"), "OUT": tmp_path / "out.jsonl"}
    done = run_mwtap([given.get(a, a) for a in args])
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done
    assert len(errors) == 1 and problem in errors[0], done.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_every_command_has_a_bad_usage_case():
    assert set(USAGE_ERRORS) == set(COMMANDS)


def test_the_check_finding_something_is_exit_1(tmp_path):
    """analyze --fail-on with a finding at that severity, diff of sessions that differ (replay that
    could not send everything: tests/test_replay_fidelity.py; consume that could not connect:
    tests/test_consume_cli.py)."""
    answered = {"kind": "resp", "reqId": "1", "code": 200, "type": "GetClockResponse", "body": {"currentTime": 1}}
    captures = {}
    for name, code in (("ok", 200), ("failed", 500)):
        b = CaptureBuilder()
        b.open("c1", 1.0, token=None)
        b.c2s("c1", 1.1, GET_CLOCK)
        b.s2c("c1", 1.2, {**answered, "code": code})
        b.close("c1", 2.0)
        b.write(captures.setdefault(name, tmp_path / f"{name}.jsonl"))
    reused = CaptureBuilder()  # a request id sent again while in flight: a duplicate-request-id error
    reused.open("c1", 1.0, token=None)
    reused.c2s("c1", 1.1, GET_CLOCK)
    reused.c2s("c1", 1.15, GET_CLOCK)
    reused.s2c("c1", 1.2, answered)
    reused.close("c1", 2.0)
    reused.write(tmp_path / "reused.jsonl")
    assert run_mwtap(["analyze", captures["ok"], "--fail-on", "warning"]).returncode == 0
    assert run_mwtap(["analyze", tmp_path / "reused.jsonl", "--fail-on", "error"]).returncode == 1
    assert run_mwtap(["diff", captures["ok"], captures["ok"]]).returncode == 0
    differs = run_mwtap(["diff", captures["ok"], captures["failed"]])
    assert differs.returncode == 1 and "500" in differs.stdout, differs
