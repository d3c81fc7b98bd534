"""The benchmark scripts still run: each with --smoke prints its figures and loses no frame."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"
CONFIGURATIONS = ("direct", "mitmdump", "mitmdump -s addon", "mwtap record", "mwtap record --live",
                  "mitmdump -w FILE")
TIMEOUT = 55.0


def run_all(commands: dict[str, list[str]]) -> dict[str, str]:
    """Runs the scripts side by side (the smoke sizes are tiny); their output by name."""
    running = {name: subprocess.Popen([sys.executable, str(BENCHMARKS / args[0]), *args[1:]], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
               for name, args in commands.items()}
    outputs = {}
    try:
        for name, proc in running.items():
            outputs[name] = proc.communicate(timeout=TIMEOUT)[0]
            assert proc.returncode == 0, f"{name} failed:\n{outputs[name]}"
    finally:
        for proc in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def test_benchmark_scripts_print_their_figures_and_lose_no_frame():
    out = run_all({"rate": ["relay.py", "--smoke", "--connections", "20"],
                   "latency": ["relay_latency.py", "--smoke"],
                   "cost": ["addon_cost.py", "--smoke"]})
    for name, text in out.items():
        assert re.search(r"^\s*frames lost: 0$", text, re.M), f"{name}:\n{text}"
    for kind in CONFIGURATIONS:
        rate = re.search(rf"^  {re.escape(kind)} +([\d,]+) msg/s", out["rate"], re.M)
        assert rate and int(rate.group(1).replace(",", "")) > 0, out["rate"]
        assert re.search(rf"^  {re.escape(kind)} +[\d.]+ +[\d.]+ ", out["latency"], re.M), out["latency"]
        if kind != "direct":
            assert re.search(rf"^  {re.escape(kind)} .*RSS +[\d.]+ -> +[\d.]+ MB", out["rate"], re.M), out["rate"]
    assert re.search(r"ratio mwtap record / mitmdump -s addon: [\d.]+$", out["rate"], re.M), out["rate"]
    assert re.search(r"^recorder addon +[\d.]+ us/message", out["cost"], re.M), out["cost"]
