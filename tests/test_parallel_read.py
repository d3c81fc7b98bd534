"""One recording read on several threads (core/src/reader/parallel.rs: a reader, parsers, the
engine on the caller's thread) gives the result of reading it on one: every table, violation,
damage entry and count, on real traffic with damage spread over many blocks, gzip cut short,
rotated parts, through the CLI's `--jobs`, and on fuzzed captures. (Every block size down to one
byte is checked line for line by `cargo test`.)"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.config import Config
from analysis.engine import TABLES
from analysis.load import streamed
from analysis.native import ANALYZERS
from conftest import BIN, holds_jwt
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings
from test_fuzz_reader import HEADER, line

ROOT = Path(__file__).resolve().parents[1]
# A token in a payload, which tables that leave the machine carry redacted.
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjb25zdW1lciJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
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
            "text": json.dumps({"kind": "req", "id": "long", "type": "GetClock",
                                "body": {"pad": "x" * 200_000, "jwt": JWT}})}
    lines.insert(3, orjson.dumps(long) + b"\n")
    # Body index fields recorded malformed (lifted again from the payload) and well-formed.
    change = {"dialogId": "d-events", "sequence": 3, "event": {"type": "ContentEvent", "message": "hi"}}
    for events in ([["d-events", None, "three"]], [["d-events", None, 4, "ContentEvent", None, "p", "AGENT", 9]]):
        note = {"rec": "msg", "t": json.loads(lines[2])["t"], "conn": conn, "dir": "s2c", "op": "text",
                "kind": "notification", "type": "ms.MessagingEventNotification", "events": events,
                "text": json.dumps({"kind": "notification", "type": "ms.MessagingEventNotification",
                                    "body": {"changes": [change]}})}
        lines.insert(4, orjson.dumps(note) + b"\n")
    damaged = folder / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines))
    return damaged


def test_a_damaged_recording_gives_the_same_result_on_every_thread_count(traffic):
    result = assert_same_on_every_thread_count([str(traffic)])
    assert result["frames"] > 19_000 and len(result["frames_table"]["conn"]) == result["frames"]
    assert len(result["damage"]) >= 5
    assert result["unknown_records"] == {"future": traffic.read_bytes().count(DAMAGE[1])}


def test_tables_leave_alike_and_redacted_on_every_thread_count(traffic):
    """What `mwtap export` asks for (every table in batches, redacted): the payloads are decoded and
    redacted on the parsing threads, and the batches are the one-thread batches."""
    def batches(jobs: int) -> list:
        got = []
        streamed([str(traffic)], Config(), TABLES, lambda table, batch: got.append((table, batch)), jobs=jobs,
                 rows=5_000, dicts=["connections"], redact=True)
        return got
    one = batches(1)
    frames = [batch for table, batch in one if table == "frames"]
    assert sum(batch.num_rows for batch in frames) > 19_000
    texts = [text for batch in frames for text in batch.column("text").to_pylist() if text]
    assert any('"id": "long"' in text for text in texts) and not any(holds_jwt(text) for text in texts)
    for jobs in (2, 3):
        got = batches(jobs)
        assert [table for table, _ in got] == [table for table, _ in one]
        for (table, batch), (_, expected) in zip(got, one):
            assert batch == expected if isinstance(batch, list) else batch.equals(expected), (table, jobs)


def test_redacting_the_tables_does_not_change_what_the_rules_see(traffic, tmp_path):
    """The payloads redacted for the frames table are not what the analyzers read: a payload that
    is invalid JSON only until its token member is redacted is still invalid JSON to the rules."""
    lines = traffic.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"rec":"msg"' in line.replace(b" ", b""))
    rec = json.loads(lines[at])
    bare = {key: rec[key] for key in ("rec", "t", "conn", "n", "dir", "op")}  # no index fields: the rules parse it
    lines[at] = orjson.dumps({**bare, "text": '{"jwt":"\\q"}'}) + b"\n"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))

    def found(redact: bool) -> list:
        rows = []
        streamed([str(path)], Config(), ["frames", "violations"],
                 lambda table, batch: rows.extend((r["rule"], r["conn"], r["frame"]) for r in batch)
                 if table == "violations" else None, redact=redact)
        return rows
    plain = found(False)
    assert ("invalid-json", rec["conn"], rec["n"]) in plain
    assert found(True) == plain


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


def threads() -> int:
    """The core's reading threads alive in this process (named so by parallel.rs). Counting every
    thread would catch other tests' servers and executors starting or ending meanwhile."""
    alive = 0
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            alive += Path("/proc/self/task", task, "comm").read_text().strip() in ("mwtap-read", "mwtap-parse",
                                                                                  "mwtap-place")
    return alive


def no_threads_left() -> bool:
    """Whether the core's threads are gone, within a second: a scope returns once their work is
    done, an instant before the system has ended them."""
    deadline = time.monotonic() + 1.0
    while threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return threads() == 0


def test_a_consumer_error_stops_the_threads_and_is_raised(traffic):
    """The caller's error mid-file (here from the first batch of frames handed over) ends the pass:
    the reader and parsers stop instead of blocking on a full queue, and the error reaches the caller."""
    class Stop(Exception):
        pass
    handed = []

    def refuse(table, batch):
        handed.append((table, threads()))
        raise Stop
    for _ in range(3):
        with pytest.raises(Stop):
            streamed([str(traffic)], Config(), ["frames"], refuse, jobs=4, rows=100)
    # Each pass stopped at its first batch, a few blocks in, with the reader and parsers running.
    # (The second parser may not have named itself yet: at least the reader and one parser.)
    assert [table for table, _ in handed] == ["frames"] * 3 and all(alive >= 2 for _, alive in handed)
    assert no_threads_left()


def placed(paths: list[str], jobs: int) -> dict:
    """What `mwtap view`'s index pass places (core/src/locations.rs), on `jobs` cores."""
    locations = _core.Locations(1_000)
    streamed(paths, Config(), (), lambda table, batch: None, jobs=jobs, locations=locations)
    return locations.take()


@pytest.fixture(scope="module")
def long_traffic(tmp_path_factory) -> Path:
    """A capture of more records than the core packs before handing them to Python (65,536)."""
    generated = tmp_path_factory.mktemp("long") / "gen.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_capture.py"), str(generated), "--frames", "70000",
                    "--clients", "60"], check=True, capture_output=True)
    return generated


def test_the_view_index_is_placed_alike_on_every_thread_count(traffic, long_traffic):
    """Records are placed on the caller's thread with one core, else on a thread of their own once
    the engine is done with their block (the pairs it links arrive before some of their records
    are placed; the packed records reach Python from that thread, a chunk at a time): the same
    columns, connections, streams and pairs either way."""
    for capture in (traffic, long_traffic):
        one = placed([str(capture)], 1)
        assert len(one["fixed"]) == 38 * one["count"]
        peers = memoryview(one["peer"]).cast("q")
        assert sum(peer >= 0 for peer in peers) > one["count"] // 4  # both ends of the pairs
        assert len(one["connections"]) >= 40 and len(one["streams"]) > 40
        for jobs in (2, 3, 4):
            assert placed([str(capture)], jobs) == one, f"{capture.name}, {jobs} cores"
    assert one["count"] > 70_000  # more than one chunk


def test_a_consumer_error_stops_the_placing_thread_too(long_traffic):
    """An error raised once the placing thread has handed over a chunk (it took the GIL) ends the
    pass: no thread is left waiting, and the error reaches the caller."""
    class Stop(Exception):
        pass
    handed = []
    every = placed([str(long_traffic)], 1)["count"]

    def refuse_late(table, batch):
        handed.append(batch.num_rows)
        if sum(handed) > 69_000:
            raise Stop
    for jobs in (2, 4):
        handed.clear()
        locations, raised = _core.Locations(10), []

        def run():
            try:
                streamed([str(long_traffic)], Config(), ["frames"], refuse_late, jobs=jobs, rows=1_000,
                         locations=locations)
            except Stop as e:
                raised.append(e)
        running = threading.Thread(target=run, daemon=True)
        running.start()
        running.join(60)
        assert not running.is_alive(), "the pass hangs"
        assert raised
        # What was placed before the error reached Python whole: more than one chunk.
        found = locations.take()
        assert 65_536 < found["count"] < every and len(found["fixed"]) == 38 * found["count"]
    assert no_threads_left()


def test_several_recordings_merged_by_time_leave_redacted(traffic, tmp_path):
    """Recordings read side by side by time (not on the parsing threads) get their payloads made for
    the table as one recording does: redacted when the tables leave redacted."""
    lines = traffic.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    paths = []
    for number, part in enumerate([lines[1:][0::2], lines[1:][1::2]], 1):  # interleaved in time
        paths.append(tmp_path / f"rec{number}.jsonl")
        paths[-1].write_bytes(orjson.dumps({**header, "recording": f"r{number}"}) + b"\n" + b"".join(part))
    texts = []

    def keep(table, batch):
        texts.extend(text for text in batch.column("text").to_pylist() if text)
    streamed([str(p) for p in paths], Config(), ["frames"], keep, rows=5_000, redact=True)
    assert any('"id": "long"' in text for text in texts) and not any(holds_jwt(text) for text in texts)


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
