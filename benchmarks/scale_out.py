"""Speed-up of `mwtap analyze --jobs N` over `--jobs 1` on a multi-file input: K synthetic
recordings (benchmarks/gen_capture.py) made independent (their own recording id, connection ids,
tokens and dialogs, two hours apart), so the analysis can run them in parallel. Checks that both
runs print the same JSON. Reports wall and CPU seconds; the CPU is that of the whole process tree
(worker processes are not the command's children), sampled every 20 ms with psutil, so each
process's last few milliseconds are missed.

    python benchmarks/scale_out.py [--files 4] [--frames 250000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import orjson

from bench import MWTAP, generate

GAP_S = 7200.0
_IDS = re.compile(rb"(conn-|dialog-|sub-conn-|consumer-)")
_MARKER = re.compile(rb"sha256:([0-9a-f]{12})")


def independent_copy(source: Path, target: Path, k: int) -> None:
    """`source` as recording k: times shifted by k gaps, ids and token fingerprints made its own."""
    prefix = f"r{k}-".encode()
    with open(source, "rb") as src, open(target, "wb") as out:
        for line in src:
            rec = orjson.loads(line)
            rec["t"] += k * GAP_S
            if rec["rec"] == "header":
                rec["recording"] = f"scale-out-{k}"
            elif "t_request" in rec:
                rec["t_request"] += k * GAP_S
            data = _IDS.sub(prefix + rb"\1", orjson.dumps(rec))
            data = _MARKER.sub(lambda m: b"sha256:" + hashlib.sha256(prefix + m.group(1)).hexdigest()[:12].encode(),
                               data)
            out.write(data + b"\n")


def timed(args: list[str]) -> tuple[float, float, bytes]:
    """Wall and CPU seconds (user + system of every process of the tree) and standard output."""
    import psutil

    start = time.perf_counter()
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(args, stdout=stdout, stderr=stderr)
        cpu: dict[int, float] = {}
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in [root, *root.children(recursive=True)]:
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
            except psutil.Error:  # a process ended between the listing and the reading
                pass
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode not in (0, 3):
            raise SystemExit(stderr.read().decode())
        return elapsed, sum(cpu.values()), stdout.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--frames", type=int, default=250_000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k in range(args.files):
            raw = Path(generate(f"{tmp}/raw{k}.jsonl", args.frames, "--seed", str(k + 1)))
            files.append(str(Path(tmp) / f"rec{k}.jsonl"))
            independent_copy(raw, Path(files[-1]), k)
            raw.unlink()
        command = [MWTAP, "analyze", "--format", "json"]
        load = os.getloadavg()[0]
        one, one_cpu, single = timed([*command, "--jobs", "1", *files])
        many, many_cpu, parallel = timed([*command, "--jobs", str(args.jobs), *files])
    same = "identical" if single == parallel else "DIFFERENT"
    print(f"{args.files} files x {args.frames:,} frames: --jobs 1 {one:.2f} s wall, {one_cpu:.2f} s CPU; "
          f"--jobs {args.jobs} {many:.2f} s wall, {many_cpu:.2f} s CPU; speed-up {one / many:.2f}x; JSON {same}; "
          f"load average before {load:.1f} on {os.cpu_count()} cores")
    if single != parallel:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
