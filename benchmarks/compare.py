"""mwtap against what a user would otherwise write, on the same synthetic capture, each in its own
subprocess, side by side in one run:

- pandas: `read_json(lines=True)`, then a merge of requests and responses on id/reqId and latency
  percentiles per type (what a notebook user writes first; docs/capture-format.md);
- DuckDB: the SQL self-join on the index fields with latency percentiles per type (what a data
  engineer writes; docs/capture-format.md), with DuckDB's default threads;
- jq: the pairing one-liner of docs/capture-format.md (`jq -s`, the whole file in memory);
- `mwtap analyze --format json`, which does ALL analyses (pairing, streams, sequences, keep-alive,
  reconnects, every rule), not only pairing.

A tool that is not installed is skipped with a note. pandas and jq hold the whole capture in memory,
so they are skipped above `--slurp-limit-mb` (pandas needs ~10x the file size in RSS), and jq,
which takes minutes on a 1M-frame capture, above `--jq-limit-mb`.

    python benchmarks/compare.py [--frames 1000000] [--capture FILE] [--smoke] [--slurp-limit-mb 600]
                                 [--jq-limit-mb 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile

from bench import PYTHON, Run, bare_loop, generate, line_count, measure, mwtap_analyze

PANDAS = """
import sys
import pandas as pd
df = pd.read_json(sys.argv[1], lines=True)
msgs = df[df.rec == "msg"]
req = msgs[msgs.kind == "req"][["conn", "id", "type", "t"]]
resp = msgs[msgs.kind == "resp"][["conn", "reqId", "code", "t"]]
pairs = req.merge(resp, left_on=["conn", "id"], right_on=["conn", "reqId"], suffixes=("_req", "_resp"))
pairs["latency_ms"] = (pairs.t_resp - pairs.t_req) * 1000
print(pairs.groupby("type").latency_ms.quantile([0.5, 0.99]))
"""

DUCKDB = """
import sys
import duckdb
print(duckdb.sql('''
WITH m AS (SELECT * FROM read_json(?, format='newline_delimited', union_by_name=true) WHERE rec = 'msg')
SELECT q.type, count(*) AS n, quantile_cont((r.t - q.t) * 1000, 0.5) AS p50_ms,
       quantile_cont((r.t - q.t) * 1000, 0.99) AS p99_ms
FROM m q JOIN m r ON r.conn = q.conn AND r.kind = 'resp' AND r.reqId = q.id
WHERE q.kind = 'req'
GROUP BY q.type ORDER BY n DESC
'''.replace("?", repr(sys.argv[1]))).fetchall())
"""

JQ = """[.[] | select(.rec=="msg")] as $m
  | ($m | map(select(.kind=="resp")) | INDEX(.conn + "/" + .reqId)) as $resp
  | $m[] | select(.kind=="req") | . as $q | $resp[$q.conn + "/" + $q.id]
  | select(.) | {type: $q.type, ms: ((.t - $q.t) * 1000)}"""


def missing_module(name: str) -> str | None:
    return None if importlib.util.find_spec(name) else f"python module {name} not installed"


def tools(size_mb: float, slurp_limit_mb: float, jq_limit_mb: float) -> list[tuple[str, str | None, list[str]]]:
    """(name, why it is skipped or None, command without the capture path)."""
    too_big = None if size_mb <= slurp_limit_mb else "capture above --slurp-limit-mb (holds the whole file in memory)"
    too_slow = None if size_mb <= jq_limit_mb else "capture above --jq-limit-mb (jq -s takes minutes)"
    return [
        ("pandas read_json + merge", missing_module("pandas") or too_big, [PYTHON, "-c", PANDAS]),
        ("DuckDB SQL self-join", missing_module("duckdb"), [PYTHON, "-c", DUCKDB]),
        ("jq -s pairing", (None if shutil.which("jq") else "jq not installed (apt-get install jq)") or too_big
         or too_slow,
         ["jq", "-s", "-c", JQ]),
    ]


def line(name: str, run: Run, mwtap: Run, bare: Run) -> str:
    return (f"{name:26} {run.wall_s:8.2f} s wall {run.cpu_s:8.2f} s cpu  peak RSS {run.rss_mb:8.1f} MB  "
            f"{run.wall_s / mwtap.wall_s:6.2f}x mwtap's time  ({bare.wall_s / run.wall_s:.2f}x the bare loop's speed)")


def compare(capture: str, slurp_limit_mb: float, jq_limit_mb: float) -> None:
    size_mb = os.path.getsize(capture) / 1e6
    print(f"capture: {line_count(capture):,} lines, {size_mb:.1f} MB")
    bare = bare_loop(capture)
    mwtap = mwtap_analyze(capture)
    print(line("bare orjson loop", bare, mwtap, bare))
    print(line("mwtap analyze (all)", mwtap, mwtap, bare))
    for name, skipped, command in tools(size_mb, slurp_limit_mb, jq_limit_mb):
        if skipped:
            print(f"{name:26} skipped: {skipped}")
            continue
        run = measure(command + [capture])
        print(line(name, run, mwtap, bare))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="1000000", help="comma-separated capture sizes, in frames")
    parser.add_argument("--capture", help="an existing capture instead of generated ones")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (10,000 frames) to check the script works")
    parser.add_argument("--slurp-limit-mb", type=float, default=600.0)
    parser.add_argument("--jq-limit-mb", type=float, default=100.0)
    args = parser.parse_args()
    if args.capture:
        compare(args.capture, args.slurp_limit_mb, args.jq_limit_mb)
        return
    for frames in [10_000] if args.smoke else [int(n) for n in args.frames.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            compare(generate(os.path.join(tmp, "capture.jsonl"), frames), args.slurp_limit_mb, args.jq_limit_mb)


if __name__ == "__main__":
    main()
