"""Progress of long commands on standard error: shown on a terminal (a pseudo-terminal here), never
when standard error is piped; `mwtap record`'s live status line. Real processes on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest

from analysis.synth import CaptureBuilder
from conftest import BIN, free_port, run_on_terminal, wait_port
from test_replay import recording, start_server, token_command  # noqa: F401  (recording: a fixture)

MWTAP = str(BIN / "mwtap")
REWRITE = "\r\033[K"  # how the status line is redrawn


def write_capture(path: Path, pairs: int, gz: bool = False) -> Path:
    b = CaptureBuilder()
    b.open("c1", 1.0, token=None)
    t = 1.0
    for i in range(pairs):
        t += 0.001
        b.c2s("c1", t, {"kind": "req", "id": str(i), "type": "GetClock"})
        b.s2c("c1", t + 0.0005, {"kind": "resp", "reqId": str(i), "code": 200, "type": "GetClockResponse",
                                 "body": {"currentTime": 1}})
    b.close("c1", t + 1)
    b.write(path, gz=gz)
    return path


def write_big_capture(path: Path, pairs: int) -> Path:
    """`write_capture`'s capture at a size the native core takes over a second to read (hundreds of
    MB), its request and response lines written from templates (CaptureBuilder would take minutes)."""
    header, open_, request, response, close = write_capture(path, 1).read_bytes().splitlines(keepends=True)
    request = request.replace(b'"t":1.001', b'"t":%(t)s').replace(b'"n":0', b'"n":%(n)d')
    request = request.replace(b'\\"id\\":\\"0\\"', b'\\"id\\":\\"%(id)d\\"').replace(b'"id":"0"', b'"id":"%(id)d"')
    response = response.replace(b'"t":1.0014999999999998', b'"t":%(t2)s').replace(b'"n":1', b'"n":%(n2)d')
    response = response.replace(b'\\"reqId\\":\\"0\\"', b'\\"reqId\\":\\"%(id)d\\"')
    response = response.replace(b'"reqId":"0"', b'"reqId":"%(id)d"')
    assert request.count(b"%(") == 4 and response.count(b"%(") == 4, "write_capture's lines changed"
    with path.open("wb") as f:
        f.write(header + open_)
        for i in range(pairs):
            t = 1.0 + i / 1000
            values = {b"t": repr(t).encode(), b"t2": repr(t + 0.0005).encode(), b"n": 2 * i, b"n2": 2 * i + 1, b"id": i}
            f.write(request % values + response % values)
        f.write(close.replace(b'"t":2.001', b'"t":%s' % repr(2.0 + pairs / 1000).encode()))
    return path


def piped(*args) -> subprocess.CompletedProcess:
    return subprocess.run([MWTAP, *map(str, args)], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_analyze_shows_bytes_read_of_the_size_rate_and_time_left_while_it_reads(tmp_path):
    """About 300 MB: the analysis takes over a second, long enough for the line to be redrawn midway."""
    capture = write_big_capture(tmp_path / "big.jsonl", 600_000)
    code, seen = run_on_terminal([MWTAP, "analyze", capture])
    assert code == 0, seen[-2000:]
    size = f"{capture.stat().st_size / 1e6:.1f} MB".encode()
    midway = re.findall(rb"analyze  ([\d.]+) MB of " + size + rb" \((\d+)%\), [\d.]+ MB/s, \d+ s left", seen)
    assert midway and all(int(percent) < 100 for _, percent in midway), seen[:2000]
    assert [float(done) for done, _ in midway] == sorted(float(done) for done, _ in midway)
    assert b"analyze  " + size + b" of " + size + b" (100%)" in seen

    quiet = piped("analyze", capture)
    assert quiet.returncode == 0 and quiet.stderr == "" and "analyze  " not in quiet.stdout


@pytest.mark.parametrize("command", ["analyze-gzip", "report", "export", "convert"])
def test_every_reading_command_shows_its_progress_on_a_terminal_and_nothing_when_piped(command, tmp_path):
    capture = write_capture(tmp_path / "cap.jsonl.gz", 2_000, gz=True)
    label, args = {
        "analyze-gzip": ("analyze", ["analyze", capture]),
        "report": ("report: reading", ["report", capture, "-o", tmp_path / "r.html"]),
        "export": ("export", ["export", capture, "--parquet", tmp_path / "pq"]),
        "convert": ("convert", ["convert", capture, "-o", tmp_path / "c.jsonl"]),
    }[command]
    code, seen = run_on_terminal([MWTAP, *args, "--force"] if command != "analyze-gzip" else [MWTAP, *args])
    assert code == 0, seen[-2000:]
    size = f"{capture.stat().st_size / 1e3:.1f} kB"  # a gzip file: its compressed bytes are counted
    assert f"{REWRITE}{label}  {size} of {size} (100%)".encode() in seen, seen[:2000]
    if command == "report":
        assert f"{REWRITE}report: building  frames (10 of 10)".encode() in seen

    quiet = piped(*args, *(["--force"] if command != "analyze-gzip" else []))
    assert quiet.returncode == 0, quiet.stderr
    assert REWRITE not in quiet.stderr and f"{label}  " not in quiet.stderr, quiet.stderr


def test_replay_shows_frames_sent_of_the_total(recording, procs, tmp_path):
    port = start_server(procs)
    total = sum(1 for line in recording.read_text().splitlines() if '"rec":"msg"' in line and '"dir":"c2s"' in line)
    args = [MWTAP, "replay", recording, "--target", f"ws://127.0.0.1:{port}", "--token-command", token_command(port)]
    code, seen = run_on_terminal([*args, "-o", tmp_path / "tty.jsonl"])
    assert code == 0, seen[-2000:]
    assert f"{REWRITE}replay  {total} frames of {total} frames (100%)".encode() in seen, seen[-3000:]
    quiet = subprocess.run([*map(str, args), "-o", str(tmp_path / "piped.jsonl")], capture_output=True, text=True,
                           timeout=120)
    assert quiet.returncode == 0 and REWRITE not in quiet.stderr and "replay  " not in quiet.stderr, quiet.stderr


def test_record_shows_connections_frames_drops_and_capture_size_while_it_runs(procs, tmp_path):
    server_port, proxy_port = start_server(procs), free_port()
    out = tmp_path / "cap.jsonl"
    shown: dict = {}
    recorder = threading.Thread(target=lambda: shown.update(zip(("code", "seen"), run_on_terminal(
        ["timeout", "--signal=TERM", "20", MWTAP, "record", "--upstream", f"ws://127.0.0.1:{server_port}",
         "--listen", f"127.0.0.1:{proxy_port}", "-o", out, "--live"]))))
    recorder.start()
    wait_port(proxy_port, timeout=60)
    consumer = piped("consume", f"ws://127.0.0.1:{proxy_port}/ws_api/account/mwtap/messaging/consumer?v=3",
                     "--idp", f"http://127.0.0.1:{server_port}/api/account/mwtap", "--messages", "1",
                     "--interval", "0.1", "--behaviour", "reuse-request-id")
    assert consumer.returncode == 0, consumer.stderr
    recorder.join(60)
    assert shown["code"] == 124, shown  # stopped by timeout's SIGTERM, as intended
    lines = re.findall(rb"record  (\d+) connection\(s\) open, (\d+) frames, (\d+) dropped, capture ([\d.]+ k?B)",
                       shown["seen"])
    assert any(int(frames) > 0 for _, frames, _, _ in lines), shown["seen"][-3000:]
    assert any(int(open_) == 1 for open_, _, _, _ in lines)  # while the consumer was connected
    assert lines[-1][0] == b"0" and lines[-1][2] == b"0"
    # --live's lines are printed above the status line (cleared first), never run into it; which rule
    # fires depends on whether the reused id was still in flight (duplicate- or reused-request-id)
    assert re.search(rb"\r\x1b\[Kmwtap live: .*(duplicate|reused)-request-id", shown["seen"]), shown["seen"][-3000:]
    assert not re.search(rb"[^\n\x1b]mwtap live: ", shown["seen"].replace(b"\r\x1b[K", b"\x1b"))

    quiet = subprocess.run(["timeout", "--signal=TERM", "3", MWTAP, "record", "--upstream", "ws://127.0.0.1:9",
                            "--listen", "127.0.0.1:0", "-o", str(tmp_path / "q.jsonl")], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    assert quiet.returncode == 124 and "mwtap record: stopped" in quiet.stdout, quiet
    assert "connection(s) open" not in quiet.stdout + quiet.stderr and REWRITE not in quiet.stderr


@pytest.mark.parametrize("gz", [False, True])
def test_a_capture_file_says_how_far_into_the_file_on_disk_it_has_read(tmp_path, gz):
    from analysis.capture import CaptureFile, watch_reads

    path = write_capture(tmp_path / ("cap.jsonl.gz" if gz else "cap.jsonl"), 20_000, gz=gz)
    seen = []
    with watch_reads(seen.append):
        capture = CaptureFile(str(path))
    assert seen == [capture] and capture.bytes_read == 0
    records = capture.records()
    positions = [capture.bytes_read for i, _ in enumerate(records) if i % 7_000 == 0]  # 0 … 35000 of 40001
    # read ahead a buffer at a time (gzip: up to 128 KiB of compressed bytes on Python 3.12)
    assert 0 < positions[0] < path.stat().st_size and positions == sorted(positions) and len(set(positions)) >= 3
    assert capture.bytes_read == path.stat().st_size
    assert CaptureFile(str(path)) not in seen  # outside the block nothing is watched
