"""Relay rate of one WebSocket connection: direct, through `mitmdump -s recorder/addon.py`, and
through `mwtap record` (the lean in-process Master), measured in the same run.

The client sends N small JSON requests client->server as fast as it can, then "END"; the server
counts them and answers with the count. Rate = N / (time from first send to the answer).

    python benchmarks/relay.py            # 8000 messages per configuration
    python benchmarks/relay.py --smoke    # 300 messages, a quick check that everything runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import free_port, wait_port  # noqa: E402  (the tests' port helpers)


async def count_until_end(ws) -> None:
    count = 0
    async for message in ws:
        if message == "END":
            await ws.send(str(count))
            return
        count += 1


async def relay_rate(port: int, n: int) -> float:
    async with connect(f"ws://127.0.0.1:{port}/bench", proxy=None, ping_interval=None,
                       compression=None, max_queue=None) as ws:
        messages = [json.dumps({"kind": "req", "id": str(i), "type": "GetClock"}) for i in range(n)]
        start = time.perf_counter()
        for message in messages:
            await ws.send(message)
        await ws.send("END")
        received = int(await ws.recv())
        elapsed = time.perf_counter() - start
    if received != n:
        raise RuntimeError(f"server counted {received} of {n} messages")
    return n / elapsed


def proxy_command(kind: str, server_port: int, proxy_port: int, out: Path) -> list[str]:
    if kind.startswith("mwtap record"):
        live = ["--live"] if kind.endswith("--live") else []
        return [str(BIN / "mwtap"), "record", "--upstream", f"ws://127.0.0.1:{server_port}",
                "--listen", f"127.0.0.1:{proxy_port}", "-o", str(out), *live]
    return [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(proxy_port),
            "--mode", f"reverse:http://127.0.0.1:{server_port}", "-s", str(REPO / "recorder" / "addon.py"),
            "--set", f"mwtap_out={out}"]


async def measure(kind: str, n: int, workdir: Path) -> float:
    server_port = free_port()
    async with serve(count_until_end, "127.0.0.1", server_port, ping_interval=None, compression=None,
                     max_queue=None):
        if kind == "direct":
            return await relay_rate(server_port, n)
        proxy_port = free_port()
        name = kind.replace(" ", "-")
        out = workdir / f"{name}.jsonl"
        with open(workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(proxy_command(kind, server_port, proxy_port, out), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            await asyncio.to_thread(wait_port, proxy_port, 30.0, proc)
            return await relay_rate(proxy_port, n)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=8000)
    parser.add_argument("--smoke", action="store_true", help="300 messages: check that it runs")
    args = parser.parse_args()
    n = 300 if args.smoke else args.messages
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    from mitmproxy.version import VERSION
    print(f"relay rate, 1 connection, {n} small JSON messages client->server "
          f"(python {sys.version.split()[0]}, mitmproxy {VERSION})")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("direct", "mitmdump + addon", "mwtap record", "mwtap record --live"):
            rates[kind] = await measure(kind, n, Path(tmp))
            print(f"  {kind:18} {rates[kind]:10,.0f} msg/s")
    print(f"  ratio mwtap record / mitmdump + addon: {rates['mwtap record'] / rates['mitmdump + addon']:.2f}")
    print(f"  ratio mwtap record --live / mwtap record: {rates['mwtap record --live'] / rates['mwtap record']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
