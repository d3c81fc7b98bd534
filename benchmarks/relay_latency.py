"""Round-trip latency that each configuration (relay_setup.CONFIGURATIONS) adds, in the same run.

Each of `--connections` WebSocket connections sends a GetClock request, waits for its response,
and repeats; a sample is request -> response. Added latency = the configuration's p50/p99 minus
the direct connection's. The configurations run in turn, `--rounds` times (interleaved). With at
most one request in flight per connection nothing queues up in the proxy, so its memory at start,
end and peak (/proc VmRSS, VmHWM) shows what the recording itself keeps.

    python benchmarks/relay_latency.py                    # 2,000 round trips, 1 connection, 3 rounds
    python benchmarks/relay_latency.py --connections 20
    python benchmarks/relay_latency.py --connections 20 --trips 50000 --rounds 1   # memory over 100k messages
    python benchmarks/relay_latency.py --smoke            # 100 round trips, 1 round: check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from relay_setup import CONFIGURATIONS, ServerCounts, captured, clean_environment, frames_lost, request, running

RECV_TIMEOUT = 30.0


async def round_trips(port: int, count: int, start: asyncio.Event) -> list[float]:
    """One connection: `count` request -> response round trips, one at a time; their durations (s)."""
    from websockets.asyncio.client import connect
    async with connect(f"ws://127.0.0.1:{port}/bench", proxy=None, ping_interval=None, compression=None) as ws:
        await start.wait()
        samples = []
        for i in range(count):
            t0 = time.perf_counter()
            await ws.send(request(i))
            try:
                await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
            except TimeoutError:
                break
            samples.append(time.perf_counter() - t0)
        return samples


async def measure(kind: str, trips: int, connections: int, workdir: Path) -> tuple[list[float], int, str]:
    """All samples (s), the frames lost, and the proxy's memory: RSS at start and end, peak."""
    counts = ServerCounts()
    per_connection = trips // connections
    async with running(kind, workdir, counts) as proxy:
        start = asyncio.Event()
        clients = [asyncio.create_task(round_trips(proxy.port, per_connection, start)) for _ in range(connections)]
        await asyncio.sleep(0.5)  # all connected
        start.set()
        samples = [s for connection in await asyncio.gather(*clients) for s in connection]
        end = proxy.status()
    memory = (f"RSS {proxy.start['VmRSS']:5.1f} -> {end['VmRSS']:5.1f} MB, peak {end['VmHWM']:5.1f} "
              f"(+{end['VmHWM'] - proxy.start['VmRSS']:.1f})") if end else ""
    sent = per_connection * connections
    received = len(samples)
    return samples, frames_lost(sent, received, counts, captured(proxy.out) if proxy.out else None), memory


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=2000, help="round trips per configuration and round")
    parser.add_argument("--connections", type=int, default=1, choices=(1, 20))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="100 round trips, 1 round: check that it runs")
    args = parser.parse_args()
    trips, rounds = (100, 1) if args.smoke else (args.trips, args.rounds)
    print(f"round-trip latency: {trips} round trips over {args.connections} connection(s), {rounds} round(s) "
          f"({clean_environment()})")
    samples: dict[str, list[float]] = {kind: [] for kind in CONFIGURATIONS}
    memory: dict[str, str] = {}
    lost = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for kind in CONFIGURATIONS:
                kind_samples, kind_lost, memory[kind] = await measure(kind, trips, args.connections, Path(tmp))
                samples[kind] += kind_samples
                lost += kind_lost
    direct = {q: percentile(samples["direct"], q) for q in (50, 99)}
    print(f"  {'':20} {'p50':>8} {'p99':>8}   added p50   added p99  (ms)   proxy memory (last round)")
    for kind in CONFIGURATIONS:
        p50, p99 = percentile(samples[kind], 50), percentile(samples[kind], 99)
        print(f"  {kind:20} {p50 * 1e3:8.3f} {p99 * 1e3:8.3f}   {(p50 - direct[50]) * 1e3:9.3f}"
              f"   {(p99 - direct[99]) * 1e3:9.3f}        {memory[kind]}")
    print(f"  frames lost: {lost}")


if __name__ == "__main__":
    asyncio.run(main())
