"""recorder.writer.CaptureWriter: private file, header first, flush timing, rotation, write failures."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from analysis.capture import CaptureFile, dumps
from conftest import REPO
from recorder.writer import BUFFER_BYTES, CaptureWriter, part_path


def header(part: int) -> dict:
    return {"rec": "header", "t": 0.0, "format": "mwtap-capture", "version": 1, "recording": "r1", "part": part}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_file_is_created_private_and_never_overwritten(tmp_path):
    old_umask = os.umask(0)
    try:
        writer = CaptureWriter(tmp_path / "c.jsonl", header)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "c.jsonl").st_mode) == 0o600
    writer.close()
    with pytest.raises(FileExistsError):
        CaptureWriter(tmp_path / "c.jsonl", header)


def test_header_first_then_records_and_flush_interval(tmp_path):
    clock = Clock()
    path = tmp_path / "c.jsonl"
    writer = CaptureWriter(path, header, clock=clock)
    writer.write({"rec": "msg", "n": 0})
    assert path.read_bytes() == b""  # buffered
    clock.now = 0.1
    writer.write({"rec": "msg", "n": 1})
    assert path.read_bytes() == b"" and writer.pending
    clock.now = 0.25
    writer.write({"rec": "msg", "n": 2})
    assert [r.get("n") for r in lines(path)] == [None, 0, 1, 2] and lines(path)[0]["rec"] == "header"
    assert not writer.pending
    writer.write({"rec": "msg", "n": 3})
    writer.flush()
    assert lines(path)[-1] == {"rec": "msg", "n": 3} and writer.written == 4


def test_full_buffer_is_written_at_once(tmp_path):
    path = tmp_path / "c.jsonl"
    writer = CaptureWriter(path, header, clock=Clock())  # the clock stands still: only size flushes
    queued = 0
    while path.stat().st_size == 0:
        record = {"rec": "msg", "n": queued, "text": "x" * 4096}
        writer.write(record)
        queued += 1
    line = len(dumps({"rec": "msg", "n": queued, "text": "x" * 4096}))
    assert queued * line >= BUFFER_BYTES > (queued - 1) * line
    assert len(lines(path)) == queued + 1
    writer.close()


def test_close_writes_the_header_even_without_records(tmp_path):
    writer = CaptureWriter(tmp_path / "c.jsonl", header)
    writer.close()
    writer.close()
    capture = CaptureFile(str(tmp_path / "c.jsonl"))
    assert list(capture.records()) == [] and capture.header["recording"] == "r1"


def test_rotation_parts_each_with_header_and_no_record_lost(tmp_path):
    path = tmp_path / "c.jsonl"
    writer = CaptureWriter(path, header, rotate_bytes=10_000)
    for i in range(300):
        writer.write({"rec": "msg", "t": 1.0, "conn": "c", "dir": "c2s", "n": i, "text": "y" * 100})
    writer.close()
    assert writer.paths == [part_path(path, n) for n in range(1, len(writer.paths) + 1)]
    assert len(writer.paths) >= 3 and writer.paths[1].name == "c.part2.jsonl"
    seen = []
    for n, part in enumerate(writer.paths, 1):
        records = lines(part)
        assert records[0] == header(n) and stat.S_IMODE(os.stat(part).st_mode) == 0o600
        assert part.stat().st_size < 10_000 + 200
        seen += [r["n"] for r in records[1:]]
    assert seen == list(range(300)) and writer.written == 300 and writer.dropped == 0


def test_unencodable_record_is_counted_and_reported(tmp_path):
    writer = CaptureWriter(tmp_path / "c.jsonl", header)
    writer.write({"rec": "msg", "n": 0})
    writer.write({"rec": "msg", "bad": {1, 2}})
    writer.write({"rec": "msg", "n": 2})
    writer.close()
    writer.write({"rec": "msg", "n": 3})
    records = lines(tmp_path / "c.jsonl")
    assert [r["rec"] for r in records] == ["header", "drop", "msg", "msg"]
    assert records[1]["count"] == 1 and "cannot encode" in records[1]["reason"]
    assert (writer.written, writer.dropped) == (2, 2)


FAILING_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    from recorder.writer import CaptureWriter
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceeding the limit gives EFBIG instead of killing us
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    writer = CaptureWriter(sys.argv[1], lambda part: {"rec": "header", "format": "mwtap-capture",
                                                       "version": 1, "part": part})
    for i in range(20):
        writer.write({"rec": "msg", "t": 1.0, "conn": "c", "dir": "c2s", "n": i, "text": "z" * 100})
    writer.flush()
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))  # the disk is "full" from 4000 bytes on
    for i in range(20, 80):
        writer.write({"rec": "msg", "t": 1.0, "conn": "c", "dir": "c2s", "n": i, "text": "z" * 100})
        writer.flush()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    for i in range(80, 90):
        writer.write({"rec": "msg", "t": 1.0, "conn": "c", "dir": "c2s", "n": i, "text": "z" * 100})
    writer.close()
    print(json.dumps({"written": writer.written, "dropped": writer.dropped}))
""")


def test_write_failure_drops_counts_and_reports_once(tmp_path):
    out = tmp_path / "c.jsonl"
    proc = subprocess.run([sys.executable, "-c", FAILING_DISK, str(out)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)
    assert proc.stderr.count("failed: [Errno 27]") == 1  # reported once, not per record
    assert "works again" in proc.stderr
    capture = CaptureFile(str(out))
    records = list(capture.records())
    drops = [r for r in records if r["rec"] == "drop"]
    msgs = [r["n"] for r in records if r["rec"] == "msg"]
    assert len(drops) == 1 and drops[0]["count"] == counts["dropped"] > 0
    assert "File too large" in drops[0]["reason"]
    assert len(msgs) == counts["written"] == 90 - counts["dropped"]
    assert msgs[:20] == list(range(20)) and msgs[-10:] == list(range(80, 90))
    assert len(capture.damage) <= 1  # at most the one line the failure cut in two


def test_rotation_never_overwrites_or_follows_a_link_it_skips_to_a_free_name(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    victim = tmp_path / "older-capture.jsonl"
    victim.write_bytes(b"an older capture\n")
    part_path(path, 2).symlink_to(victim)  # a link planted where part 2 goes
    part_path(path, 3).write_bytes(b"a file of someone else\n")
    writer = CaptureWriter(path, header, rotate_bytes=10_000)
    for i in range(300):
        writer.write({"rec": "msg", "t": 1.0, "conn": "c", "dir": "c2s", "n": i, "text": "y" * 100})
    writer.close()
    assert victim.read_bytes() == b"an older capture\n" and part_path(path, 2).is_symlink()
    assert part_path(path, 3).read_bytes() == b"a file of someone else\n"
    assert writer.paths[:2] == [path, part_path(path, 4)] and len(writer.paths) >= 3
    seen = []
    for part in writer.paths:
        records = lines(part)
        number = int(part.name.split(".part")[1].split(".")[0]) if part != path else 1
        assert records[0] == header(number) and stat.S_IMODE(os.stat(part).st_mode) == 0o600
        seen += [r["n"] for r in records[1:]]
    assert seen == list(range(300)) and writer.dropped == 0
    skipped = [r.getMessage() for r in caplog.records if "never overwritten" in r.getMessage()]
    assert len(skipped) == 1 and "c.part2.jsonl" in skipped[0] and "c.part3.jsonl" in skipped[0]
