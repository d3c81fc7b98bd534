"""The analysis benchmarks still run and print their figures (tiny `--smoke` sizes; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import orjson

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_analyze_benchmark_prints_its_figures():
    out = run("analyze.py", "--smoke")
    assert "bare orjson loop" in out and "mwtap analyze (older fmt)" in out
    assert "native reader + Framing" in out
    assert "speed ratio analyze/bare:" in out and "peak RSS" in out


def test_compare_benchmark_prints_every_tool_or_why_it_is_skipped():
    out = run("compare.py", "--smoke")
    assert "mwtap analyze (all)" in out
    for tool in ("pandas read_json + merge", "DuckDB SQL self-join", "jq -s pairing"):
        line = next(line for line in out.splitlines() if line.startswith(tool))
        assert "x mwtap's time" in line or "skipped:" in line, line


def test_compare_skips_what_would_not_fit_in_memory():
    out = run("compare.py", "--smoke", "--slurp-limit-mb", "0")
    assert "pandas read_json + merge" in out and "skipped: capture above --slurp-limit-mb" in out


def test_generated_captures_are_in_time_order_as_a_recorder_writes(tmp_path):
    """The benchmarks measure captures as recorders write them: records in time order, each
    connection's frames numbered in that order, nothing after its close (the generator builds
    answers ahead of the clock; `--as-built` keeps its older order). Both hold the same records."""
    records = {}
    for extra in ([], ["--as-built"]):
        path = tmp_path / f"gen{len(extra)}.jsonl"
        run("gen_capture.py", str(path), "--frames", "5000", "--clients", "30", *extra)
        records[bool(extra)] = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    ordered = records[False]
    numbers: dict[str, list] = {}
    closed, after_close = set(), 0
    for rec in ordered:
        after_close += rec.get("conn") in closed
        if rec["rec"] == "msg":
            numbers.setdefault(rec["conn"], []).append(rec["n"])
        elif rec["rec"] == "close":
            closed.add(rec["conn"])
    times = [rec["t"] for rec in ordered]
    assert len(ordered) > 5000 and times == sorted(times) and after_close == 0
    assert all(n == list(range(len(n))) for n in numbers.values())
    as_built = [rec["t"] for rec in records[True]]
    assert as_built != sorted(as_built)  # answers ahead of the next request, as built

    def content(rec: dict) -> bytes:  # a record but for what the ordering sets: frame number, close time
        return orjson.dumps({k: v for k, v in rec.items() if k != "n" and not (rec["rec"] == "close" and k == "t")},
                            option=orjson.OPT_SORT_KEYS)
    assert Counter(map(content, ordered)) == Counter(map(content, records[True]))
