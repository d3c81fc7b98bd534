"""The analysis benchmarks still run and print their figures (tiny `--smoke` sizes; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys

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
