"""Where a burst's memory goes in `mwtap record`: the recorder's proxy (RecordingProxy) runs in this
process, the echo server and the burst clients in subprocesses, so RSS and tracemalloc see the proxy
only. Prints RSS growth over a burst and over a second equal one; with --trace, what tracemalloc
holds at the RSS peak, by allocation site (tracing slows the proxy about 30x).

    python benchmarks/burst_memory.py [--connections 50] [--messages 400] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recorder.proxy import RecordingProxy  # noqa: E402

SIZE = 4096
SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), ping_interval=None, max_size=None, compression=None):
        await asyncio.Future()
asyncio.run(main())
"""
CLIENTS = """
import asyncio, sys
from websockets.asyncio.client import connect
connections, messages, size, port = map(int, sys.argv[1:5])
async def one(k):
    async with connect(f"ws://127.0.0.1:{port}/c{k}", proxy=None, ping_interval=None, max_size=None,
                       compression=None) as ws:
        async def read():
            for _ in range(messages):
                await ws.recv()
        reader = asyncio.create_task(read())
        for i in range(messages):  # all at once: no waiting for the echoes
            await ws.send(f"c{k} {i} " + "x" * size)
        await reader
async def main():
    await asyncio.gather(*(one(k) for k in range(connections)))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def burst(port: int, connections: int, messages: int, trace: bool) -> tuple[float, object]:
    """Run one burst; the peak RSS seen and, when tracing, the tracemalloc snapshot taken at it."""
    clients = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENTS, str(connections), str(messages),
                                                   str(SIZE), str(port))
    peak, snapshot = rss_mb(), None
    while clients.returncode is None:
        try:
            await asyncio.wait_for(clients.wait(), 0.25)
        except asyncio.TimeoutError:
            pass
        rss = rss_mb()
        if rss >= peak:
            peak = rss
            snapshot = tracemalloc.take_snapshot() if trace else None
    return peak, snapshot


async def main(connections: int, messages: int, trace: bool) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        time.sleep(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            async with RecordingProxy(f"ws://127.0.0.1:{port}", Path(tmp) / "burst.jsonl") as proxy:
                await burst(proxy.port, 5, 50, False)  # warm-up: first-connection costs out of the baseline
                if trace:
                    tracemalloc.start(12)
                start = rss_mb()
                peak, snapshot = await burst(proxy.port, connections, messages, trace)
                first = rss_mb()
                await burst(proxy.port, connections, messages, False)
                second = rss_mb()
                print(f"burst of {connections} x {messages} x {SIZE} B: RSS {start:.1f} MB, peak +{peak - start:.1f}, "
                      f"after it +{first - start:.1f}, after a second equal burst +{second - start:.1f}; "
                      f"{proxy.recorder.messages} messages recorded")
                if snapshot is not None:
                    for stat in snapshot.statistics("traceback")[:5]:
                        print(f"{stat.size / 2**20:.1f} MB in {stat.count} blocks, allocated at")
                        for line in stat.traceback.format()[-6:]:
                            print("   ", line)
    finally:
        server.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--trace", action="store_true", help="tracemalloc at the peak (slow)")
    args = parser.parse_args()
    asyncio.run(main(args.connections, args.messages, args.trace))
