"""Time and peak memory of `analysis.load` (the notebooks' DataFrames), `mwtap report` and `mwtap
export --parquet` against `mwtap analyze --format json` on the same capture (benchmarks/gen_capture.py,
or your own), each in its own subprocess, in one run: the ratios are what to read on a shared machine.

    python benchmarks/report_export.py [--frames 1000000] [--capture FILE] [--repeat N] [--smoke]

Each of the three runs between two runs of analyze of its own, and its ratio is to their mean: on
a machine whose speed drifts by a third from one minute to the next, a baseline measured a minute
earlier can put a ratio on either side of a target. `--repeat N` makes N such rounds and gives each
ratio as the median of the rounds'.

Targets (issue "Long work shows progress, and stays within memory"): report and export under 400 MB
of peak RSS at any size (load holds every table: it grows with the capture); each at most 2x analyze's
time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from dataclasses import astuple

from bench import MWTAP, PYTHON, Run, generate, line_count, measure, mwtap_analyze

TARGET_RSS_MB = 400
TARGET_TIME_RATIO = 2.0
LOAD = "import sys; from analysis.load import load; load(sys.argv[1])"


def row(name: str, run: Run, analyze: Run) -> str:
    return (f"{name:18} {run.wall_s:7.2f} s wall {run.cpu_s:7.2f} s cpu  {run.cpu_s / analyze.cpu_s:5.2f}x analyze "
            f"(cpu)  peak RSS {run.rss_mb:7.1f} MB")


COMMANDS = {
    "analysis.load": lambda capture, out: measure([PYTHON, "-c", LOAD, capture]),
    "mwtap report": lambda capture, out: measure([MWTAP, "report", "-o", os.path.join(out, "report.html"), capture]),
    "mwtap export": lambda capture, out: measure([MWTAP, "export", "--parquet", os.path.join(out, "parquet"),
                                                  capture])}


def round_of(capture: str, out: str) -> dict[str, tuple[Run, Run]]:
    """Each command (its output in `out`, a new directory) and the mean of the runs of analyze just
    before and just after it."""
    runs = {}
    for name, command in COMMANDS.items():
        before, run, after = mwtap_analyze(capture), command(capture, out), mwtap_analyze(capture)
        runs[name] = (Run(*((a + b) / 2 for a, b in zip(astuple(before), astuple(after)))), run)
    return runs


def bench(capture: str, tmp: str, repeat: int) -> None:
    print(f"capture: {line_count(capture):,} lines, {os.path.getsize(capture) / 1e6:.1f} MB")
    rounds = []
    for n in range(repeat):
        out = os.path.join(tmp, f"round-{n}")
        os.mkdir(out)
        runs = round_of(capture, out)
        if repeat > 1:
            print(f"round {n + 1} of {repeat}")
        for name, (analyze, run) in runs.items():
            print(row("mwtap analyze", analyze, analyze) + " (mean of the runs before and after)")
            print(row(name, run, analyze))
        rounds.append(runs)

    def ratio(name: str) -> float:
        return statistics.median(runs[name][1].cpu_s / runs[name][0].cpu_s for runs in rounds)

    def rss(name: str) -> float:
        return max(runs[name][1].rss_mb for runs in rounds)
    median = f"the median of {repeat} rounds' " if repeat > 1 else ""
    print(f"targets: peak RSS < {TARGET_RSS_MB} MB (report {rss('mwtap report'):.0f}, "
          f"export {rss('mwtap export'):.0f}); "
          f"<= {TARGET_TIME_RATIO:g}x analyze, {median}CPU (load {ratio('analysis.load'):.2f}x, "
          f"report {ratio('mwtap report'):.2f}x, export {ratio('mwtap export'):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000, help="capture size, in frames")
    parser.add_argument("--capture", help="an existing capture instead of a generated one")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each ratio is the median of theirs")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (10,000 frames) to check the script works")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        capture = args.capture or generate(os.path.join(tmp, "capture.jsonl"), 10_000 if args.smoke else args.frames)
        bench(capture, tmp, args.repeat)


if __name__ == "__main__":
    main()
