"""One recording read on several threads (core/src/reader/parallel.rs: a reader, parsers, the
engine on the caller's thread) gives the result of reading it on one: every table, violation,
damage entry and count, on real traffic with damage spread over many blocks, gzip cut short,
rotated parts, through the CLI's `--jobs`, and on fuzzed captures. (Every block size down to one
byte is checked line for line by `cargo test`.)"""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.config import Config
from analysis.engine import TABLES
from analysis.native import ANALYZERS
from conftest import BIN
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings
from test_fuzz_reader import HEADER, line

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dataclasses.asdict(Config())
# What the reader tells apart besides records, spread through the traffic.
DAMAGE = [b'{"rec":"msg", broken\n', b'{"rec":"future","t":5}\n', b"[1,2]\n",
          b'{"rec":"ping","t":1e400,"conn":"c","n":1}\n', b"\xff\xfe not utf-8\n", b"\n",
          b'{"rec":"header","format":"mwtap-capture","version":1}\n']


def analysed(paths: list[str], parsers: int) -> dict:
    return _core.analyze_native(paths, CONFIG, list(ANALYZERS), list(TABLES), parsers=parsers)


def assert_same_on_every_thread_count(paths: list[str]) -> dict:
    one = analysed(paths, 0)
    for parsers in (1, 2, 3):
        assert analysed(paths, parsers) == one, f"{parsers} parsers"
    return one


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> Path:
    """A benchmarks/gen_capture.py capture of 20,000 frames (~9 MB: over a hundred blocks), with a
    damaged or unknown line every 97 lines and a long payload line bigger than a block."""
    folder = tmp_path_factory.mktemp("traffic")
    generated = folder / "gen.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_capture.py"), str(generated), "--frames", "20000",
                    "--clients", "40"], check=True, capture_output=True)
    lines = generated.read_bytes().splitlines(keepends=True)
    for at in range(len(lines) - 1, 0, -97):
        lines.insert(at, DAMAGE[at % len(DAMAGE)])
    conn = json.loads(lines[1])["conn"]
    long = {"rec": "msg", "t": json.loads(lines[2])["t"], "conn": conn, "dir": "c2s", "op": "text",
            "text": json.dumps({"kind": "req", "id": "long", "type": "GetClock", "body": {"pad": "x" * 200_000}})}
    lines.insert(3, orjson.dumps(long) + b"\n")
    damaged = folder / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines))
    return damaged


def test_a_damaged_recording_gives_the_same_result_on_every_thread_count(traffic):
    result = assert_same_on_every_thread_count([str(traffic)])
    assert result["frames"] > 19_000 and len(result["frames_table"]["conn"]) == result["frames"]
    assert len(result["damage"]) >= 5
    assert result["unknown_records"] == {"future": traffic.read_bytes().count(DAMAGE[1])}


def test_gzip_cut_short_and_rotated_parts(traffic, tmp_path):
    data = traffic.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(data)[:-20_000])
    result = assert_same_on_every_thread_count([str(cut)])
    assert result["damage"][-1][2].startswith("compressed stream damaged")
    # Two parts of one recording, read one after the other (the second has its own header).
    lines = data.splitlines(keepends=True)
    header = json.loads(lines[0])
    parts = []
    for number, part_lines in enumerate([lines[1:len(lines) // 2], lines[len(lines) // 2:]], 1):
        parts.append(tmp_path / f"part{number}.jsonl.gz")
        head = orjson.dumps({**header, "recording": "r1", "part": number}) + b"\n"
        parts[-1].write_bytes(gzip.compress(head + b"".join(part_lines)))
    result = assert_same_on_every_thread_count([str(p) for p in reversed(parts)])
    assert [f["path"] for f in result["files"]] == [str(p) for p in reversed(parts)]


def test_the_cli_gives_the_same_json_and_damage_for_any_jobs(traffic):
    def run(jobs: int) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "mwtap"), "analyze", "--format", "json", "--jobs", str(jobs), str(traffic)],
                              capture_output=True, check=True, timeout=120)
    one = run(1)
    assert json.loads(one.stdout)["capture"]["frames"] > 19_000 and b"invalid JSON" in one.stderr
    for jobs in (2, 4):
        got = run(jobs)
        assert (got.stdout, got.stderr) == (one.stdout, one.stderr), f"--jobs {jobs}"


def test_a_consumer_error_stops_the_threads_and_is_raised(traffic):
    """The caller's error mid-file (here from the violations callback) ends the pass: the reader and
    parsers stop instead of blocking on a full queue, and the error reaches the caller."""
    class Stop(Exception):
        pass

    def refuse(rows):
        raise Stop
    for _ in range(3):
        analysis = _core.Analysis([str(traffic)], False, 2)
        with pytest.raises(Stop):
            analysis.run(CONFIG, list(ANALYZERS), [], refuse)


def check_fuzzed(lines: list[bytes], gz: bool, pad: bool) -> None:
    data = HEADER + b"".join(lin + b"\n" for lin in lines)
    if pad:  # past one block (64 KiB), so the lines fall in several
        data += b"".join(b'{"rec":"future","pad":"%s"}\n' % (b"x" * 1000) for _ in range(70))
        data += b"".join(lin + b"\n" for lin in lines)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("f.jsonl.gz" if gz else "f.jsonl")
        path.write_bytes(gzip.compress(data) if gz else data)
        assert analysed([str(path)], 1) == analysed([str(path)], 0)


@given(st.lists(line, max_size=40), st.booleans(), st.booleans())
@fuzz_settings(DEFAULT_EXAMPLES)
def test_fuzzed_captures_read_alike(lines, gz, pad):
    check_fuzzed(lines, gz, pad)


@pytest.mark.soak
@given(st.lists(line, max_size=40), st.booleans(), st.booleans())
@fuzz_settings(SOAK_EXAMPLES)
def test_fuzzed_captures_read_alike_soak(lines, gz, pad):
    check_fuzzed(lines, gz, pad)
