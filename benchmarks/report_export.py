"""Time and peak memory of `analysis.load` (the notebooks' DataFrames), `mwtap report` and `mwtap
export --parquet` against `mwtap analyze --format json` on the same capture (benchmarks/gen_capture.py,
or your own), each in its own subprocess, in one run: the ratios are what to read on a shared machine.

    python benchmarks/report_export.py [--frames 1000000] [--capture FILE] [--smoke]

Targets (issue "Long work shows progress, and stays within memory"): report and export under 400 MB
of peak RSS at any size (load holds every table: it grows with the capture); each at most 2x analyze's
time.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench import MWTAP, PYTHON, Run, generate, line_count, measure, mwtap_analyze

TARGET_RSS_MB = 400
TARGET_TIME_RATIO = 2.0
LOAD = "import sys; from analysis.load import load; load(sys.argv[1])"


def row(name: str, run: Run, analyze: Run) -> str:
    return (f"{name:18} {run.wall_s:7.2f} s wall {run.cpu_s:7.2f} s cpu  {run.cpu_s / analyze.cpu_s:5.2f}x analyze "
            f"(cpu)  peak RSS {run.rss_mb:7.1f} MB")


def bench(capture: str, tmp: str) -> None:
    print(f"capture: {line_count(capture):,} lines, {os.path.getsize(capture) / 1e6:.1f} MB")
    analyze = mwtap_analyze(capture)
    load = measure([PYTHON, "-c", LOAD, capture])
    report = measure([MWTAP, "report", "-o", os.path.join(tmp, "report.html"), capture])
    export = measure([MWTAP, "export", "--parquet", os.path.join(tmp, "parquet"), capture])
    print(row("mwtap analyze", analyze, analyze))
    print(row("analysis.load", load, analyze))
    print(row("mwtap report", report, analyze))
    print(row("mwtap export", export, analyze))
    print(f"targets: peak RSS < {TARGET_RSS_MB} MB (report {report.rss_mb:.0f}, export {export.rss_mb:.0f}); "
          f"<= {TARGET_TIME_RATIO:g}x analyze (load {load.cpu_s / analyze.cpu_s:.2f}x, "
          f"report {report.cpu_s / analyze.cpu_s:.2f}x, export {export.cpu_s / analyze.cpu_s:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000, help="capture size, in frames")
    parser.add_argument("--capture", help="an existing capture instead of a generated one")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (10,000 frames) to check the script works")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        capture = args.capture or generate(os.path.join(tmp, "capture.jsonl"), 10_000 if args.smoke else args.frames)
        bench(capture, tmp)


if __name__ == "__main__":
    main()
