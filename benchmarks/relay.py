"""Relay rate of every configuration (relay_setup.CONFIGURATIONS) in the same run, with the proxy's
CPU time per message, its memory at start, end and peak, and the frames lost.

Each of `--connections` WebSocket connections floods GetClock requests as fast as it can while the
server answers each at once; rate = messages relayed (requests + responses) / (start -> last
response). The configurations run in turn, `--rounds` times (interleaved); figures are medians.

    python benchmarks/relay.py                              # 20,000 messages, 1 connection, 3 rounds
    python benchmarks/relay.py --connections 20
    python benchmarks/relay.py --messages 100000 --rounds 1  # the memory figure: a 100k-message session
    python benchmarks/relay.py --smoke                       # 400 messages, 1 round: check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from relay_setup import CONFIGURATIONS, ServerCounts, captured, clean_environment, frames_lost, request, running

RECV_TIMEOUT = 30.0  # seconds without a response before a connection gives up (the rest counts as lost)


async def flood(port: int, requests: int, start: asyncio.Event) -> tuple[int, int]:
    """One connection: send `requests` requests without waiting; returns (sent, responses received)."""
    from websockets.asyncio.client import connect
    async with connect(f"ws://127.0.0.1:{port}/bench", proxy=None, ping_interval=None, compression=None,
                       max_queue=None) as ws:
        messages = [request(i) for i in range(requests)]
        await start.wait()

        async def send_all() -> None:
            for message in messages:
                await ws.send(message)

        sender = asyncio.create_task(send_all())
        received = 0
        try:
            while received < requests:
                await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
                received += 1
        except TimeoutError:
            pass
        await sender
        return requests, received


async def measure(kind: str, messages: int, connections: int, workdir: Path) -> dict:
    counts = ServerCounts()
    per_connection = messages // 2 // connections
    async with running(kind, workdir, counts) as proxy:
        start = asyncio.Event()
        clients = [asyncio.create_task(flood(proxy.port, per_connection, start)) for _ in range(connections)]
        await asyncio.sleep(0.5)  # all connected (the handshakes are not timed)
        before = proxy.status()
        t0 = time.perf_counter()
        start.set()
        results = await asyncio.gather(*clients)
        elapsed = time.perf_counter() - t0
        after = proxy.status()
    sent, received = sum(r[0] for r in results), sum(r[1] for r in results)
    capture = captured(proxy.out) if proxy.out else None
    result = {"rate": (sent + received) / elapsed,
              "lost": frames_lost(sent, received, counts, capture)}
    if after:
        result |= {"cpu_us": (after["cpu"] - before["cpu"]) / (sent + received) * 1e6,
                   "rss_start": proxy.start["VmRSS"], "rss_end": after["VmRSS"], "peak": after["VmHWM"]}
    return result


def report(kind: str, runs: list[dict]) -> str:
    line = f"  {kind:20} {statistics.median(r['rate'] for r in runs):9,.0f} msg/s"
    if "cpu_us" in runs[0]:
        growth = max(r["peak"] - r["rss_start"] for r in runs)
        line += (f"  {statistics.median(r['cpu_us'] for r in runs):6.0f} us CPU/msg"
                 f"  RSS {runs[-1]['rss_start']:5.1f} -> {runs[-1]['rss_end']:5.1f} MB,"
                 f" peak {runs[-1]['peak']:5.1f} (+{growth:.1f})")
    return line + f"  lost {sum(r['lost'] for r in runs)}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages relayed per configuration")
    parser.add_argument("--connections", type=int, default=1, choices=(1, 20))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=CONFIGURATIONS, default=CONFIGURATIONS)
    parser.add_argument("--smoke", action="store_true", help="400 messages, 1 round: check that it runs")
    args = parser.parse_args()
    messages, rounds = (400, 1) if args.smoke else (args.messages, args.rounds)
    print(f"relay rate: {messages} messages over {args.connections} connection(s), {rounds} round(s) "
          f"({clean_environment()})")
    runs: dict[str, list[dict]] = {kind: [] for kind in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for kind in args.only:
                runs[kind].append(await measure(kind, messages, args.connections, Path(tmp)))
    for kind in args.only:
        print(report(kind, runs[kind]))
    rate = {kind: statistics.median(r["rate"] for r in runs[kind]) for kind in args.only}
    cpu = {kind: statistics.median(r["cpu_us"] for r in runs[kind]) for kind in args.only if kind != "direct"}
    if {"mitmdump", "mitmdump -s addon"} <= rate.keys():
        print(f"  addon cost: rate {1 - rate['mitmdump -s addon'] / rate['mitmdump']:+.1%},"
              f" CPU/msg {cpu['mitmdump -s addon'] / cpu['mitmdump'] - 1:+.1%} (mitmdump -s addon vs mitmdump)")
    if {"mwtap record", "mitmdump -s addon"} <= rate.keys():
        print(f"  ratio mwtap record / mitmdump -s addon: {rate['mwtap record'] / rate['mitmdump -s addon']:.2f}")
    print(f"  frames lost: {sum(r['lost'] for kind in args.only for r in runs[kind])}")


if __name__ == "__main__":
    asyncio.run(main())
