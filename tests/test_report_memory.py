"""`mwtap report` in bounded memory: it never holds the per-frame table (payloads), reports what a
loaded capture reports, and says which plots it drew from a sample."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib
from pandas.testing import assert_frame_equal

from analysis import load
from analysis.config import Config
from analysis.load import streamed, to_frame
from analysis.report import build_report, render_markdown, stream
from analysis.report.content import PAYLOAD_CHARS
from analysis.report.stream import stream_capture
from analysis.synth import CaptureBuilder
from conftest import BIN, REPO
from sample_capture import generate

matplotlib.use("Agg")

PAYLOAD = 100_000  # characters of each agent message
MESSAGES = 3_000  # 300 MB of payloads: a report holding the per-frame table holds them all
PEAK_MB = 300  # the interpreter with pandas and matplotlib takes about 130 MB


def chat_capture(path, messages: int, payload: int) -> int:
    """One consumer receiving `messages` agent messages of `payload` characters, then requests that
    go unanswered (the report links them and shows the messages before them). Returns the length of
    the last message's text."""
    with open(path, "wb") as out:
        b = CaptureBuilder(out)
        b.open("conn-1", 1.0)
        for i in range(messages):
            last = b.s2c("conn-1", 2.0 + i * 0.01, {
                "kind": "notification", "type": "ms.MessagingEventNotification",
                "body": {"changes": [{"sequence": i, "dialogId": "d-1", "originatorId": "agent-1",
                                      "event": {"type": "ContentEvent", "message": "x" * payload}}]}})
        for i in range(3):
            b.c2s("conn-1", 40.0 + i, {"kind": "req", "id": f"q{i}", "type": "GetClock", "body": {}})
        b.close("conn-1", 100.0)
    return len(last["text"])


# Runs the command from a small Python process: Linux carries the RSS peak of the process that
# forked over exec, so a command forked straight from a big pytest process reports pytest's peak.
_MEASURE = ("import resource, subprocess, sys; "
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def peak_rss_mb(args: list[str]) -> float:
    """Peak RSS of the command `args` alone, in MB."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


def test_report_of_big_payloads_stays_small_and_shows_them_cut(tmp_path):
    capture, report = tmp_path / "big.jsonl", tmp_path / "report.html"
    chars = chat_capture(capture, MESSAGES, PAYLOAD)
    assert os.path.getsize(capture) > MESSAGES * PAYLOAD
    peak = peak_rss_mb([str(BIN / "mwtap"), "report", "-o", str(report), str(capture)])
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB for {MESSAGES * PAYLOAD / 1e6:.0f} MB of payloads"
    html = report.read_text()
    frames = html[html.index('<section id="frames">'):]
    assert "GetClock" in frames and f"{'x' * (PAYLOAD_CHARS // 2)}… ({chars} chars)" in frames


def test_streamed_report_says_what_a_loaded_capture_says(sample_capture):
    streamed = render_markdown(build_report(stream_capture(str(sample_capture))))
    assert streamed == render_markdown(build_report(load(str(sample_capture))))
    assert "Sampled" not in streamed


def test_plots_drawn_from_a_sample_say_so(tmp_path, monkeypatch):
    capture = tmp_path / "many.jsonl"
    chat_capture(capture, 300, 10)
    monkeypatch.setattr("analysis.report.stream.SAMPLE_ROWS", 64)
    cap = stream_capture(str(capture))
    kept, seen = cap.sampled["sequences"]
    assert seen == 300 and 32 <= kept < 64 and len(cap.sequences) == kept
    assert cap.sequences.frame.diff().dropna().nunique() == 1  # evenly spaced
    text = render_markdown(build_report(cap))
    assert f"Sampled: drawn from {kept} of the 300 messaging events" in text


def test_first_pass_keeps_the_same_rows_from_dicts_and_from_record_batches(tmp_path, monkeypatch):
    """The core hands the big tables to the report as RecordBatches, and as row dicts when it is fed
    records one at a time (HAR and flow files), which the first pass makes into batches of its own
    size (`_core.arrow_rows`): the samples, the listed requests and the silences kept whole are the
    same whatever the batches."""
    capture = tmp_path / "gen.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_capture.py"), str(capture), "--frames", "20000",
                    "--seed", "3"], check=True, timeout=120)
    monkeypatch.setattr(stream, "SAMPLE_ROWS", 256)
    monkeypatch.setattr(stream, "LISTED_REQUESTS", 5)
    config = Config(keepalive_limit_s=5.0)  # silences over the limit
    kept = []
    for as_dicts in (stream.WHOLE, ("pairs", "sequences", "silences")):
        keeper = stream._Kept(config.keepalive_limit_s)
        streamed(str(capture), config, keeper.keepers, keeper.add, dicts=[*stream.WHOLE, *as_dicts], rows=500)
        keeper.finish()
        kept.append(keeper)
    arrow, rows = kept
    for sample in ("latencies", "sequences", "silences"):
        assert getattr(arrow, sample).seen == getattr(rows, sample).seen > getattr(rows, sample).kept
        assert_frame_equal(getattr(arrow, sample).frame(), getattr(rows, sample).frame())
    assert len(rows.over_limit) and len(rows.longest) and len(rows.unanswered.rows()) == stream.LISTED_REQUESTS
    listed = lambda k: k.slowest.rows() + k.unanswered.rows()  # noqa: E731
    for table, of in (("pairs", listed), ("silences", stream._Kept.silence_rows)):
        assert_frame_equal(to_frame(table, of(arrow)), to_frame(table, of(rows)))


def test_first_pass_keeps_what_its_definitions_say(tmp_path, monkeypatch):
    """The first pass reads the big tables a column at a time; what it keeps, held against the tables
    in the order the engine made them: the slowest answered requests (ties to the earliest), the
    earliest unanswered, every silence over the limit, each connection's longest within it (the first
    of equal ones), and samples of every `every`-th row (the longest silences left out)."""
    import pyarrow as pa
    capture = tmp_path / "gen.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_capture.py"), str(capture), "--frames", "20000",
                    "--seed", "4"], check=True, timeout=120)
    monkeypatch.setattr(stream, "SAMPLE_ROWS", 300)
    monkeypatch.setattr(stream, "LISTED_REQUESTS", 7)
    keeper = stream._Kept(5.0)
    made: dict[str, list] = {table: [] for table in stream.BATCHED}

    def both(table, batch):
        keeper.add(table, batch)
        made.get(table, []).append(batch)
    streamed(str(capture), Config(keepalive_limit_s=5.0), keeper.keepers, both, dicts=list(stream.WHOLE), rows=700)
    keeper.finish()
    pairs, silences = (pa.Table.from_batches(made[table]).to_pandas() for table in ("pairs", "silences"))
    rows = lambda frame, names: list(frame[names].itertuples(index=False, name=None))  # noqa: E731

    answered = pairs[(pairs.status == "answered") & pairs.latency_ms.notna()]
    slowest = answered.sort_values(["latency_ms", "t"], ascending=[False, True], kind="stable").head(7)
    unanswered = pairs[pairs.status.isin(stream.UNANSWERED)].sort_values("t", kind="stable").head(7)
    for best, expected in ((keeper.slowest, slowest), (keeper.unanswered, unanswered)):
        assert [(row["conn"], row["frame"]) for row in best.rows()] == rows(expected, ["conn", "frame"])
    every = keeper.latencies.every
    assert every > 1 and keeper.latencies.seen == len(answered)
    assert keeper.latencies.rows == rows(answered.iloc[::every], ["type", "status", "latency_ms"])

    over = silences.silence_s > 5.0
    within = silences[~over]
    longest = within.loc[within.groupby("conn", sort=False).silence_s.idxmax()]  # idxmax: the first of equal ones
    names = ["conn", "t", "start", "silence_s"]
    assert over.any() and rows(silences[over], names) == [tuple(map(r.get, names)) for r in keeper.over_limit]
    assert sorted(rows(longest, names)) == sorted(tuple(map(r.get, names)) for r in keeper.longest.values())
    every = keeper.silences.every
    assert every > 1 and keeper.silences.seen == len(within) - len(longest)
    assert keeper.silences.rows == rows(within.iloc[::every].drop(index=longest.index, errors="ignore"), names)


def test_first_pass_ties_go_to_the_first_whatever_the_batches(monkeypatch):
    """Equal latencies list the earliest request first, then the one that came first; of equal
    silences the first stays a connection's longest: the same however the rows come in batches."""
    from analysis import _core
    monkeypatch.setattr(stream, "LISTED_REQUESTS", 3)
    times_latencies = [(5.0, 9.0), (6.0, 9.0), (3.0, 9.0), (3.0, 9.0), (1.0, 2.0), (0.5, 9.0)]
    pairs = [{"conn": "c", "t": t, "frame": frame, "status": "answered", "latency_ms": latency}
             for frame, (t, latency) in enumerate(times_latencies)]
    silences = [{"conn": conn, "t": float(t), "start": float(t) - 1, "silence_s": silence}
                for t, (conn, silence) in enumerate([("a", 2.0), ("b", 1.0), ("a", 3.0), ("a", 3.0), ("b", 1.0)])]
    for cut in range(1, 6):
        keeper = stream._Kept(10.0)
        for table, rows in (("pairs", pairs), ("silences", silences)):
            for part in (rows[:cut], rows[cut:]):
                keeper.add(table, _core.arrow_rows(table, part))
        keeper.finish()
        assert [row["frame"] for row in keeper.slowest.rows()] == [5, 2, 3]
        assert {conn: row["t"] for conn, row in keeper.longest.items()} == {"a": 2.0, "b": 1.0}


def test_second_pass_on_one_file_passes_over_lines_unparsed_and_misses_none(tmp_path, monkeypatch):
    """On one recording the core parses only the lines that may hold what the second pass wants (a
    wanted connection's id, `subscriptionId`, or a `\\u` escape): a connection id and a key spelled
    with escapes are still found, as the Python reader finds them."""
    import orjson
    path = tmp_path / "one.jsonl"
    generate(path, 3)
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    conn = next(r["conn"] for r in records if r["rec"] == "open")
    other = next(r["conn"] for r in records if r["rec"] == "open" and r["conn"] != conn)
    t = max(r["t"] for r in records)
    text = orjson.dumps({"kind": "req", "id": "x1", "type": "GetClock", "body": {"note": "caf\\u00e9"}}).decode()
    at = next(i for i, c in enumerate(conn) if c.isalpha())  # a digit's escape ends in the digit: \\u0032
    escaped_conn = conn[:at] + "\\u%04x" % ord(conn[at]) + conn[at + 1:]
    odd = [  # the id with a letter escaped; the key subscriptionId with an escaped o
        '{"rec":"msg","t":%r,"conn":"%s","n":90001,"dir":"c2s","op":"text","size":60,"text":%s,'
        '"kind":"req","type":"GetClock","id":"x1"}' % (t + 1, escaped_conn, orjson.dumps(text).decode()),
        '{"rec":"msg","t":%r,"conn":"%s","n":90002,"dir":"s2c","op":"text","size":40,"text":"{}",'
        '"kind":"notification","type":"cqm.ExConversationChangeNotification","subscripti\\u006fnId":"s-9"}'
        % (t + 2, other)]
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in odd))
    assert orjson.loads(odd[0])["conn"] == conn and "subscriptionId" in orjson.loads(odd[1])
    fetched = []
    for on_core in (True, False):
        monkeypatch.setattr(stream, "all_captures", lambda paths, on_core=on_core: on_core)
        cap = stream_capture(str(path))
        cap.fetch_frames(set(), [conn], 40)
        fetched.append(cap)
    core, python = fetched
    assert {90001, 90002} <= set(core.frames.frame.dropna())
    assert_frame_equal(core.frames, python.frames)
    assert_frame_equal(core.pings, python.pings)
    assert core.sampled == python.sampled


def test_benchmark_script_prints_its_figures():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report_export.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for command in ("mwtap analyze", "mwtap report", "mwtap export"):
        assert any(line.startswith(command) and "x analyze" in line and "peak RSS" in line
                   for line in proc.stdout.splitlines()), proc.stdout
    assert "targets: peak RSS < 400 MB" in proc.stdout


def test_second_pass_picks_the_same_frames_on_the_core_as_in_python(tmp_path, monkeypatch):
    """The core picks out the lines of the connections the report shows (`Analysis.select`); the
    Python reader, which HAR and flow files still need, reads every line: the same frames, pings,
    cut payloads and notification sample, over two recordings merged by time and a damaged line."""
    paths = []
    for seed in (2, 5):
        paths.append(tmp_path / f"sample{seed}.jsonl")
        generate(paths[-1], seed)
    lines = paths[0].read_bytes().splitlines(keepends=True)
    paths[0].write_bytes(b"".join(lines[:40]) + b"{damaged\n" + b"".join(lines[40:]))
    monkeypatch.setattr(stream, "SAMPLE_ROWS", 16)
    fetched = []
    for on_core in (True, False):
        monkeypatch.setattr(stream, "all_captures", lambda paths, on_core=on_core: on_core)
        cap = stream_capture([str(p) for p in paths])
        found = cap.violations.dropna(subset=["frame"])
        wanted = {(conn, int(frame) + d) for conn, frame in zip(found.conn, found.frame) for d in (-1, 0, 1)}
        cap.fetch_frames(wanted, list(cap.connections.conn[:3]), 40)
        fetched.append(cap)
    core, python = fetched
    assert len(core.frames) > 50 and len(core.pings) and core.payload_chars
    assert_frame_equal(core.frames, python.frames)
    assert_frame_equal(core.pings, python.pings)
    assert (core.payload_chars, core.sampled, core.timeline_stride) == \
        (python.payload_chars, python.sampled, python.timeline_stride)


def test_a_frame_linked_at_the_end_of_int64_is_shown(tmp_path):
    """A recorder's frame numbers fit int64, and a linked frame's context (two frames either side)
    steps past it: those numbers are no record's, and the report shows the frame it links."""
    b = CaptureBuilder()
    b.open("conn-1", 1.0)
    b.counters["conn-1"] = 2**63 - 1
    b.c2s("conn-1", 2.0, {"kind": "req", "id": "1", "type": "GetClock", "body": {}})  # never answered
    b.close("conn-1", 100.0)
    path = tmp_path / "edge.jsonl"
    b.write(path)
    cap = stream_capture([str(path)])
    assert 2**63 - 1 in set(cap.violations.frame)
    text = render_markdown(build_report(cap))
    assert f"#{2**63 - 1}" in text and '"type":"GetClock"' in text
