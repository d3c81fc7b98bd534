"""Instructions the proxy executes per relayed message, counted by valgrind's callgrind: a figure
that does not drift with the neighbours on a shared machine (two runs agree to 0.1–0.3 %),
unlike rates and CPU seconds.

Each configuration runs under `valgrind --tool=callgrind --instr-atstart=no` (started at near full
speed; counting is switched on with callgrind_control after a warm-up), relays `--trips` GetClock
round trips on one connection (one in flight), and the count over exactly those trips is divided
by the messages relayed (2 per trip). Configurations: plain `mitmdump`; `mitmdump -s trim` (a script
whose addon only trims the message list: what hosting any script costs); `mitmdump -s addon`
(the recorder, as a user runs it: mitmproxy keeps every message of a flow); `mitmdump -s addon
--trim` (the recorder trimming the list as the trim script does: the difference between the two
is the recorder's own work); `mwtap record`.

    python benchmarks/relay_instructions.py                # 500 round trips
    python benchmarks/relay_instructions.py --smoke        # 20 round trips: check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

from relay_setup import ServerCounts, captured, clean_environment, frames_lost, instructions, request, running

CONFIGURATIONS = ("mitmdump", "mitmdump -s trim", "mitmdump -s addon", "mitmdump -s addon --trim", "mwtap record")
WARM_UP = 100  # round trips before counting (first-use imports and caches)
START_TIMEOUT = 300.0  # seconds: mitmdump's start under valgrind takes ~10 s on an idle box


async def round_trips(port: int, trips: int) -> tuple[int, int]:
    from websockets.asyncio.client import connect
    received = 0
    async with connect(f"ws://127.0.0.1:{port}/bench", proxy=None, ping_interval=None, compression=None) as ws:
        for i in range(trips):
            await ws.send(request(i))
            await ws.recv()
            received += 1
    return trips, received


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


async def measure(kind: str, trips: int, workdir: Path) -> dict:
    counts = ServerCounts()
    stem = workdir / kind.replace(" ", "_").replace("-", "")
    valgrind = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={stem}.out")
    async with running(kind, workdir, counts, valgrind, START_TIMEOUT) as proxy:
        pid = str(proxy.proc.pid)
        await round_trips(proxy.port, WARM_UP)
        await asyncio.to_thread(callgrind_control, "--instr=on", pid)
        await round_trips(proxy.port, WARM_UP)  # what switching on left half-counted
        await asyncio.to_thread(callgrind_control, "--zero", pid)
        sent, received = await round_trips(proxy.port, trips)
        await asyncio.to_thread(callgrind_control, "--dump", pid)
    capture = captured(proxy.out) if proxy.out else None
    return {"per_message": instructions(Path(f"{stem}.out.1")) / (sent + received),
            "lost": frames_lost(2 * WARM_UP + sent, 2 * WARM_UP + received, counts, capture)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=500, help="counted round trips per configuration")
    parser.add_argument("--only", nargs="*", choices=CONFIGURATIONS, default=CONFIGURATIONS)
    parser.add_argument("--smoke", action="store_true", help="20 round trips: check that it runs")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (Debian package valgrind)")
    trips = 20 if args.smoke else args.trips
    print(f"instructions per relayed message: {trips} round trips on 1 connection ({clean_environment()})")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.only:
            results[kind] = await measure(kind, trips, Path(tmp))
    base = results.get("mitmdump", {}).get("per_message")
    for kind, result in results.items():
        versus = f"  {result['per_message'] / base - 1:+6.1%} vs mitmdump" if base and kind != "mitmdump" else ""
        print(f"  {kind:24} {result['per_message']:12,.0f} instructions/msg{versus}")
    if "mitmdump -s trim" in results and "mitmdump -s addon --trim" in results:
        own = results["mitmdump -s addon --trim"]["per_message"] - results["mitmdump -s trim"]["per_message"]
        print(f"  the recorder's own work (addon --trim minus trim): {own:,.0f} instructions/msg")
    print(f"  frames lost: {sum(r['lost'] for r in results.values())}")


if __name__ == "__main__":
    asyncio.run(main())
