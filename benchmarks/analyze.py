"""Speed and memory of `mwtap analyze --format json` (the native core, every analysis) against a
bare loop that only `orjson.loads` each line of the same capture, and against the core's reader
and engine running Framing alone (`analysis._core.analyze_native`: the floor of reading and
classifying), on synthetic captures (benchmarks/gen_capture.py) with and without the body index
fields (docs/capture-format.md). `mwtap analyze` parses the lines on threads beside the engine's
(all the cores it may use); `--jobs 1` is the one-thread figure. Each measurement runs in its own subprocess; the ratios compare
runs made side by side (absolute times drift on shared machines, ratios hold). The target (issue
"The protocol core in Rust"): at least 2x the bare loop's speed, peak RSS under 100 MB.

    python benchmarks/analyze.py [--frames 100000,1000000,5000000] [--capture FILE] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench import PYTHON, Run, bare_loop, generate, line_count, measure, mwtap_analyze

TARGET_RATIO = 2.0
TARGET_RSS_MB = 100
NATIVE_FRAMING = "import sys\nfrom analysis import _core\n_core.analyze_native([sys.argv[1]], tables=())\n"


def native_framing(capture: str) -> Run:
    return measure([PYTHON, "-c", NATIVE_FRAMING, capture])


def row(name: str, lines: int, run: Run, bare: Run) -> str:
    return (f"{name:26} {lines / run.wall_s:11,.0f} lines/s {run.wall_s:7.2f} s wall {run.cpu_s:7.2f} s cpu  "
            f"ratio to bare {bare.wall_s / run.wall_s:5.2f} wall {bare.cpu_s / run.cpu_s:5.2f} cpu  "
            f"peak RSS {run.rss_mb:6.1f} MB")


def bench(capture: str, older: str | None) -> None:
    lines = line_count(capture)
    print(f"capture: {lines:,} lines, {os.path.getsize(capture) / 1e6:.1f} MB"
          + (f" ({os.path.getsize(older) / 1e6:.1f} MB without body index fields)" if older else ""))
    bare = bare_loop(capture)
    analyze = mwtap_analyze(capture)
    print(row("bare orjson loop", lines, bare, bare))
    print(row("mwtap analyze", lines, analyze, bare))
    print(row("mwtap analyze --jobs 1", lines, mwtap_analyze(capture, "--jobs", "1"), bare))
    print(row("native reader + Framing", lines, native_framing(capture), bare))
    if older:
        bare_older = bare_loop(older)
        print(row("mwtap analyze (older fmt)", lines, mwtap_analyze(older), bare_older))
    print(f"speed ratio analyze/bare: {bare.wall_s / analyze.wall_s:.2f} wall, {bare.cpu_s / analyze.cpu_s:.2f} cpu "
          f"(target >= {TARGET_RATIO}); peak RSS {analyze.rss_mb:.1f} MB (target < {TARGET_RSS_MB})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="1000000", help="comma-separated capture sizes, in frames")
    parser.add_argument("--capture", help="an existing capture instead of generated ones")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (10,000 frames) to check the script works")
    args = parser.parse_args()
    if args.capture:
        bench(args.capture, None)
        return
    sizes = [10_000] if args.smoke else [int(n) for n in args.frames.split(",")]
    for frames in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            capture = generate(os.path.join(tmp, "capture.jsonl"), frames)
            older = generate(os.path.join(tmp, "older.jsonl"), frames, "--no-body-index")
            bench(capture, older)


if __name__ == "__main__":
    main()
