"""`mwtap view` on a generated capture: index build time next to `mwtap analyze` on the same file,
the latency of what the page asks for its first screen, of opening frames, scrolling and filtering,
and the server's RSS (/proc VmRSS and peak VmHWM).

    python benchmarks/view.py                    # 1M frames, generated and deleted after
    python benchmarks/view.py --frames 100000
    python benchmarks/view.py --capture FILE     # your own capture
    python benchmarks/view.py --smoke            # 10k frames, checks the script works
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from bench import MWTAP, generate, line_count, mwtap_analyze
from relay_setup import proc_status


def get(url: str):
    with urllib.request.urlopen(url, timeout=120) as r:
        return orjson.loads(r.read())


def timed(url: str) -> tuple[float, object]:
    start = time.perf_counter()
    answer = get(url)
    return (time.perf_counter() - start) * 1000, answer


def start_view(capture: str) -> tuple[subprocess.Popen, str, float, float, float]:
    """The server, its URL, the time from start to URL (s), the index time it reports (s) and its
    CPU seconds by then, all its threads (startup included, as in analyze's)."""
    start = time.perf_counter()
    proc = subprocess.Popen([MWTAP, "view", "--no-browser", capture], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    ready = time.perf_counter() - start
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"mwtap view did not start: {proc.stderr.read()[-2000:]}")
    cpu = cpu_seconds(proc.pid)
    indexed = float(re.search(r"indexed in ([\d.]+) s", proc.stderr.readline())[1])
    return proc, url, ready, indexed, cpu


def cpu_seconds(pid: int) -> float:
    """User + system seconds of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def first_screen(url: str) -> tuple[float, int]:
    """What the page asks before its first screen, in order (ms), and the biggest connection."""
    total = 0.0
    ms, _ = timed(url + "api/summary")
    total += ms
    ms, answer = timed(url + "api/consumers")
    consumers = answer["consumers"]
    total += ms
    ms, _ = timed(url + "api/violations")
    total += ms
    first = consumers[0]["chains"][0][0]["number"]
    for path in (f"api/frames?conn={first}&start=0&count=100", f"api/timeline?conn={first}&buckets=300"):
        ms, _ = timed(url + path)
        total += ms
    biggest = max((c for group in consumers for chain in group["chains"] for c in chain), key=lambda c: c["records"])
    return total, biggest["number"]


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    return (f"p50 {statistics.median(values):.1f} ms, p99 {values[int(len(values) * 0.99) - 1]:.1f} ms, "
            f"max {values[-1]:.1f} ms")


def run(capture: str, samples: int) -> None:
    lines = line_count(capture)
    size = os.path.getsize(capture) / 1e6
    analyze = mwtap_analyze(capture)
    proc, url, ready, indexed, cpu = start_view(capture)
    try:
        rss_indexed = proc_status(proc.pid)
        screen_ms, biggest = first_screen(url)
        summary = get(url + "api/summary")
        rng = random.Random(1)
        opened = [timed(url + f"api/frame?g={rng.randrange(summary['records'])}")[0] for _ in range(samples)]
        records = get(url + f"api/frames?conn={biggest}&count=1")["total"]
        scrolled = [timed(url + f"api/frames?conn={biggest}&start={rng.randrange(records)}&count=100")[0]
                    for _ in range(samples)]
        type_ms, typed = timed(url + f"api/frames?conn={biggest}&type=PublishEvent&count=100")
        text_ms, texts = timed(url + f"api/frames?conn={biggest}&text=ACCEPT&count=100")
        rss = proc_status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"capture: {lines:,} lines, {size:.0f} MB, {summary['connections']:,} connections, "
          f"{summary['violations_total']:,} violations")
    print(f"mwtap analyze: {analyze.wall_s:.2f} s wall, {analyze.cpu_s:.2f} s cpu, peak RSS {analyze.rss_mb:.1f} MB")
    print(f"mwtap view: URL printed after {ready:.2f} s wall ({ready / analyze.wall_s:.2f}× analyze), "
          f"{cpu:.2f} s cpu ({cpu / analyze.cpu_s:.2f}×); index pass {indexed:.2f} s")
    print(f"first screen (summary, consumers, violations, 100 rows, timeline): {screen_ms:.0f} ms")
    print(f"open a frame ({samples} random): {percentiles(opened)}")
    print(f"scroll to a random row of the biggest connection ({records:,} records): {percentiles(scrolled)}")
    print(f"filter biggest connection: type {type_ms:.0f} ms ({typed['total']:,} rows), "
          f"text {text_ms:.0f} ms ({texts['total']:,} rows)")
    print(f"server RSS: {rss_indexed['VmRSS']:.0f} MB after indexing, {rss['VmRSS']:.0f} MB after the queries, "
          f"peak {rss['VmHWM']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--capture", help="an existing capture (not deleted)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="10k frames, 20 samples")
    args = parser.parse_args()
    if args.capture:
        run(args.capture, args.samples)
        return
    frames, samples = (10_000, 20) if args.smoke else (args.frames, args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        run(generate(str(Path(tmp) / "capture.jsonl"), frames), samples)


if __name__ == "__main__":
    main()
