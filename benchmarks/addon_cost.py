"""CPU cost of the recorder addon per message, with and without live protocol checking, on
mitmproxy's test flows (no sockets), next to a baseline addon that only counts, in the same run.

    python benchmarks/addon_cost.py [--messages N]
    python benchmarks/addon_cost.py --smoke    # 2,000 messages: check that it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from analysis.config import Config
from analysis.live import LiveChecker
from recorder.addon import Recorder
from relay_setup import captured

PAYLOAD = (b'{"kind":"req","id":"42","type":"ms.PublishEvent","body":{"dialogId":"d1","event":'
           b'{"type":"ContentEvent","contentType":"text/plain","message":"hello there"}}}')


class Counter:
    def __init__(self):
        self.messages = 0

    def websocket_message(self, flow) -> None:
        self.messages += 1
        del flow.websocket.messages[:-1]


def per_message_us(addon, n: int, configure: dict) -> float:
    """CPU per message of `addon`'s websocket_message hook (wall clock; one thread, no I/O wait)."""
    with taddons.context(addon) as tctx:
        if configure:
            tctx.configure(addon, **configure)
        flow = tflow.twebsocketflow(messages=False)
        messages = [WebSocketMessage(Opcode.TEXT, i % 2 == 0, PAYLOAD, time.time()) for i in range(n)]
        start = time.perf_counter()
        for message in messages:
            flow.websocket.messages.append(message)
            addon.websocket_message(flow)
        elapsed = time.perf_counter() - start
        if hasattr(addon, "done"):
            addon.done()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 messages: check that it runs")
    args = parser.parse_args()
    n = 2000 if args.smoke else args.messages
    with tempfile.TemporaryDirectory() as tmp:
        baseline = per_message_us(Counter(), n, {})
        recorder = per_message_us(Recorder(), n, {"mwtap_out": str(Path(tmp) / "c.jsonl")})
        checker = LiveChecker(Config(), lambda violation: None)
        live = per_message_us(Recorder(observers=[checker.feed]), n, {"mwtap_out": str(Path(tmp) / "live.jsonl")})
        counts = [captured(Path(tmp) / name) for name in ("c.jsonl", "live.jsonl")]
        lost = sum(n - count["c2s"] - count["s2c"] for count in counts)
    print(f"messages            {n}")
    print(f"counting addon      {baseline:6.1f} us/message")
    print(f"recorder addon      {recorder:6.1f} us/message  ({recorder / baseline:.1f}x the counting addon)")
    print(f"recorder + live     {live:6.1f} us/message  (+{live - recorder:.1f} us for live checking)")
    print(f"frames lost: {lost}")


if __name__ == "__main__":
    main()
