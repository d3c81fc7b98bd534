"""Speed and memory of `mwtap analyze --format json` against a bare loop that only `orjson.loads`
each line of the same capture. Each measurement runs in its own subprocess (peak RSS from
ru_maxrss).

    python benchmarks/analyze.py [--frames 1000000] [--capture FILE] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BARE_LOOP = "import orjson, sys\nfor line in open(sys.argv[1], 'rb'):\n    orjson.loads(line)\n"


def measure(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one subprocess."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        raise SystemExit(f"{args[0]} failed with status {status}")
    return elapsed, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--capture", help="an existing capture instead of a generated one")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (10,000 frames) to check the script works")
    args = parser.parse_args()
    frames = 10_000 if args.smoke else args.frames
    python = sys.executable
    mwtap = str(Path(python).parent / "mwtap")
    with tempfile.TemporaryDirectory() as tmp:
        capture = args.capture
        if capture is None:
            capture = os.path.join(tmp, "capture.jsonl")
            subprocess.run([python, str(HERE / "gen_capture.py"), capture, "--frames", str(frames)], check=True)
        lines = sum(1 for _ in open(capture, "rb"))
        size_mb = os.path.getsize(capture) / 1e6
        bare_s, bare_rss = measure([python, "-c", BARE_LOOP, capture])
        analyze_s, analyze_rss = measure([mwtap, "analyze", "--format", "json", capture])
    print(f"capture: {lines} lines, {size_mb:.1f} MB")
    print(f"bare orjson loop : {lines / bare_s:12,.0f} lines/s  {bare_s:7.2f} s  peak RSS {bare_rss:6.1f} MB")
    print(f"mwtap analyze    : {lines / analyze_s:12,.0f} lines/s  {analyze_s:7.2f} s  peak RSS {analyze_rss:6.1f} MB")
    print(f"speed ratio analyze/bare: {bare_s / analyze_s:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
