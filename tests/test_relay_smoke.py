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


def run_all(commands: dict[str, list[str]], timeout: float = TIMEOUT) -> dict[str, str]:
    """Runs the scripts side by side (the smoke sizes are tiny); their output by name."""
    running = {name: subprocess.Popen([sys.executable, str(BENCHMARKS / args[0]), *args[1:]], text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
               for name, args in commands.items()}
    outputs = {}
    try:
        for name, proc in running.items():
            outputs[name] = proc.communicate(timeout=timeout)[0]
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


def test_instruction_counts_are_printed_for_every_configuration():
    outputs = run_all({"relay": ["relay_instructions.py", "--smoke"], "addon": ["addon_cost.py", "--smoke",
                                                                            "--instructions"]}, timeout=300.0)
    out = outputs["relay"]
    per_message = {}
    for kind in ("mitmdump", "mitmdump -s trim", "mitmdump -s addon", "mitmdump -s addon --trim", "mwtap record"):
        found = re.search(rf"^  {re.escape(kind)} +([\d,]+) instructions/msg", out, re.M)
        assert found, out
        per_message[kind] = int(found.group(1).replace(",", ""))
    assert re.search(r"^  mitmdump -s addon .* [+-][\d.]+% vs mitmdump$", out, re.M), out
    assert per_message["mwtap record"] < per_message["mitmdump"], out  # the lean relay's whole point
    own = re.search(r"^  the recorder's own work \(addon --trim minus trim\): ([\d,-]+) instructions/msg$", out, re.M)
    difference = per_message["mitmdump -s addon --trim"] - per_message["mitmdump -s trim"]
    assert own and abs(int(own.group(1).replace(",", "")) - difference) <= 1, out  # figures rounded apart
    assert re.search(r"^\s*frames lost: 0$", out, re.M), out
    # the hook alone, in a loop: what the recorder adds to a counting addon
    counts = {name: int(value.replace(",", "")) for name, value in
              re.findall(r"^(counting|recorder) addon +([\d,]+) instructions/message$", outputs["addon"], re.M)}
    assert set(counts) == {"counting", "recorder"} and counts["recorder"] > counts["counting"] > 0, outputs["addon"]
    own_hook = re.search(r"^the recorder's own work: [\d,]+ instructions/message$", outputs["addon"], re.M)
    assert own_hook, outputs["addon"]
