"""What the analysis benchmarks share: generating a capture, timing a subprocess (wall and CPU
seconds, peak RSS), and the bare loop every figure is a ratio to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
MWTAP = str(Path(PYTHON).parent / "mwtap")
BARE_LOOP = "import orjson, sys\nfor line in open(sys.argv[1], 'rb'):\n    orjson.loads(line)\n"


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # user + system of the child: steadier than wall time on a shared machine
    rss_mb: float


def measure(args: list[str], ok_codes: tuple[int, ...] = (0,)) -> Run:
    """Run one subprocess (output discarded); its wall and CPU seconds and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in ok_codes:
        raise SystemExit(f"{' '.join(args[:3])} … failed with exit status {code}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0)


def bare_loop(capture: str) -> Run:
    return measure([PYTHON, "-c", BARE_LOOP, capture])


def mwtap_analyze(capture: str, *options: str) -> Run:
    return measure([MWTAP, "analyze", "--format", "json", *options, capture], ok_codes=(0, 3))


def generate(path: str, frames: int, *extra: str) -> str:
    subprocess.run([PYTHON, str(HERE / "gen_capture.py"), path, "--frames", str(frames), *extra], check=True)
    return path


def line_count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)
