"""`mwtap analyze` as a user runs it: a subprocess on real files, good and bad."""

from __future__ import annotations

import gzip
import json
import subprocess
import zlib

import orjson
import pytest

from analysis.capture import CaptureFile, dumps
from analysis.synth import CaptureBuilder
from conftest import BIN

GET_CLOCK = {"kind": "req", "id": "1", "type": "GetClock"}


def mwtap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mwtap"), "analyze", *args], capture_output=True, text=True, timeout=60)


def small_capture(b: CaptureBuilder | None = None) -> CaptureBuilder:
    b = b or CaptureBuilder()
    b.open("c1", 1.0)
    b.c2s("c1", 1.1, GET_CLOCK)
    b.s2c("c1", 1.15, {"kind": "resp", "reqId": "1", "code": 200, "type": "GetClock$Response"})
    b.c2s("c1", 2.0, {"kind": "req", "id": "2", "type": "GetClock"})
    b.s2c("c1", 2.5, {"kind": "resp", "reqId": "2", "code": 500, "type": "GetClock$Response"})
    b.s2c("c1", 3.0, {"kind": "resp", "reqId": "77", "code": 200, "type": "X"})
    b.close("c1", 4.0, 1000, "bye", "client")
    return b


def test_json_has_the_documented_keys(tmp_path):
    path = tmp_path / "cap.jsonl"
    small_capture().write(path)
    result = mwtap(str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["capture"]["frames"] == 5 and out["capture"]["connections"] == 1
    assert out["capture"]["damaged_lines"] == 0 and out["capture"]["files"] == [str(path)]
    conn = out["connections"][0]
    assert {k: conn[k] for k in ("conn", "opened_at", "closed_at", "close_code", "close_reason", "closed_by",
                                 "frames_c2s", "frames_s2c", "pings_c2s", "max_client_gap_s")} == {
        "conn": "c1", "opened_at": 1.0, "closed_at": 4.0, "close_code": 1000, "close_reason": "bye",
        "closed_by": "client", "frames_c2s": 2, "frames_s2c": 3, "pings_c2s": 0, "max_client_gap_s": 2.0}
    assert conn["url"].startswith("ws://")
    assert out["requests"] == {"total": 2, "answered": 2, "unanswered": 0, "open_at_end": 0, "late": 0,
                               "orphan_responses": 1, "error_responses": 1}
    latency = out["latency"]["GetClock"]
    assert latency["count"] == 2 and latency["max_ms"] == pytest.approx(500, rel=0.01)
    assert latency["p50_ms"] == pytest.approx(50, rel=0.01)
    assert [(v["rule"], v["severity"], v["conn"], v["frame"]) for v in out["violations"]] == [
        ("orphan-response", "warning", "c1", 4)]
    assert out["subscriptions"] == []


def test_fail_on_sets_the_exit_status(tmp_path):
    path = tmp_path / "cap.jsonl"
    small_capture().write(path)  # one warning, no error
    assert mwtap(str(path)).returncode == 0
    assert mwtap(str(path), "--fail-on", "error").returncode == 0
    assert mwtap(str(path), "--fail-on", "warning").returncode == 1


def test_text_and_markdown_reports(tmp_path):
    path = tmp_path / "cap.jsonl"
    small_capture().write(path)
    text = mwtap(str(path)).stdout
    assert "orphan-response" in text and "GetClock" in text and "Connections (1" in text
    markdown = mwtap(str(path), "--format", "markdown").stdout
    assert markdown.startswith("# mwtap analysis") and "| orphan-response | warning | 1 |" in markdown


def test_threshold_options(tmp_path):
    path = tmp_path / "cap.jsonl"
    small_capture().write(path)
    out = json.loads(mwtap(str(path), "--format", "json", "--keepalive-limit", "1.5").stdout)
    assert [v["rule"] for v in out["violations"]].count("keepalive-gap") == 1  # the 2 s silence before close


def test_damaged_lines_are_skipped_and_reported(tmp_path):
    path = tmp_path / "cap.jsonl"
    lines = [dumps(r) for r in small_capture().records]
    lines.insert(3, b"this is garbage\n")
    path.write_bytes(b"".join(lines) + b'{"rec":"msg","t":5,')  # truncated last line
    result = mwtap(str(path), "--format", "json")
    assert result.returncode == 0
    damage = result.stderr.splitlines()
    assert len(damage) == 2
    assert damage[0].startswith(f"{path}:4: invalid JSON")
    assert damage[1] == f"{path}:{len(lines) + 1}: truncated line"
    out = json.loads(result.stdout)
    assert out["capture"]["damaged_lines"] == 2 and out["requests"]["total"] == 2


def test_gzip_and_truncated_gzip(tmp_path):
    data = b"".join(dumps(r) for r in small_capture().records)
    whole = tmp_path / "cap.jsonl.gz"
    whole.write_bytes(gzip.compress(data))
    assert json.loads(mwtap(str(whole), "--format", "json").stdout)["requests"]["total"] == 2
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(data)[:-30])
    result = mwtap(str(cut), "--format", "json")
    assert result.returncode == 0 and "compressed stream damaged" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_gzip_gives_every_line_before_the_damage(tmp_path):
    b = CaptureBuilder()
    b.open("c1", 1.0)
    for i in range(20_000):  # ~2.5 MB of lines: many reads of the reader's buffer
        b.c2s("c1", 1.0 + i / 1000, {"kind": "req", "id": str(i), "type": "GetClock"})
    data = b"".join(dumps(r) for r in b.records)
    compressed = gzip.compress(data)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(compressed[:len(compressed) * 2 // 3])
    decompressible = zlib.decompressobj(wbits=31).decompress(cut.read_bytes())
    complete_lines = decompressible.count(b"\n")
    assert 1000 < complete_lines < len(b.records) - 1000
    capture = CaptureFile(str(cut))
    records = list(capture.records())
    assert len(records) == complete_lines - 1  # every whole line but the header, nothing lost
    assert records[-1] == orjson.loads(decompressible.split(b"\n")[complete_lines - 1])
    [damage] = capture.damage
    assert damage.line == complete_lines + 1 and "compressed stream damaged" in damage.problem


def test_unknown_records_and_drop_are_noted(tmp_path):
    b = small_capture()
    b.record({"rec": "future-thing", "t": 5})
    b.record({"rec": "drop", "t": 6, "count": 12, "reason": "disk full"})
    path = tmp_path / "cap.jsonl"
    b.write(path)
    capture = json.loads(mwtap(str(path), "--format", "json").stdout)["capture"]
    assert capture["incomplete"] is True and capture["dropped_records"] == 12
    assert capture["unknown_records"] == {"future-thing": 1}
    assert any("incomplete" in note for note in capture["notes"])


@pytest.mark.parametrize("content, problem", [
    (b"hello world\n", "not an mwtap capture"),
    (b'{"some": "json"}\n', "not an mwtap capture"),
    (b"", "empty file"),
    (b'{"rec":"header","t":1,"format":"mwtap-capture","version":99}\n', "newer than this mwtap reads"),
])
def test_foreign_files_give_a_one_line_error(tmp_path, content, problem):
    path = tmp_path / "foreign.jsonl"
    path.write_bytes(content)
    result = mwtap(str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and problem in result.stderr
    assert result.stderr.startswith("Error: ") and str(path) in result.stderr


def test_directory_and_missing_file(tmp_path):
    for path, problem in ((tmp_path, "is a directory"), (tmp_path / "nope.jsonl", "cannot open")):
        result = mwtap(str(path))
        assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr


def test_text_opens_with_the_verdict_and_ids_print_as_protocol_values(tmp_path):
    conn = "5b1d0a6e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    b = CaptureBuilder()
    b.open(conn, 1.0, url="ws://127.0.0.1:9000/ws_api/account/1/messaging/consumer?v=3")
    for i in range(1200):  # counts past a thousand: no thousands separator
        b.c2s(conn, 1.0 + i * 0.001, {"kind": "req", "id": str(i), "type": "GetClock"})
        b.s2c(conn, 1.0005 + i * 0.001, {"kind": "resp", "reqId": str(i), "code": 200, "type": "GetClockResponse"})
    b.s2c(conn, 3.0, {"kind": "resp", "reqId": "no-such", "code": 200, "type": "X"})
    b.close(conn, 4.0, 4401, "token expired", "server")
    path = tmp_path / "cap.jsonl"
    b.write(path)
    text = mwtap(str(path)).stdout
    lines = text.splitlines()
    assert lines[0] == "Verdict: 1 finding (by consumer and rule, worst first)"
    assert "receives responses that answer no waiting request: once since" in lines[1]
    assert "2401 frames" in text and "1200 sent" in text and "4,401" not in text and "1,200" not in text
    row = next(line for line in lines if line.strip().startswith("5b1d0a6e…"))
    assert row.split()[1] == "consumer" and "4401" in row.split()  # the side column, the close code
    assert conn not in text and conn in mwtap(str(path), "--full-ids").stdout
    markdown = mwtap(str(path), "--format", "markdown").stdout
    assert markdown.splitlines()[2].startswith("Verdict: 1 finding")
    assert "| conn | side | opened |" in markdown
