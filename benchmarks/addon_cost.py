"""CPU cost of the recorder addon per message, with and without live protocol checking, on
mitmproxy's test flows (no sockets), next to a baseline addon that only counts, in the same run.

With `--instructions`, the recorder's own work per message counted by valgrind's callgrind instead
(a figure that does not drift with the machine): each addon's loop runs in a process of its own
twice, over N messages and over none, and the difference is divided by N; the recorder trims the
message list there as the counting addon does, so the two differ only by the recorder's work.

    python benchmarks/addon_cost.py [--messages N]
    python benchmarks/addon_cost.py --instructions [--messages N]
    python benchmarks/addon_cost.py --smoke [--instructions]    # a few messages: check that it runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from analysis.config import Config
from analysis.live import LiveChecker
from recorder.addon import Recorder
from relay_setup import captured, instructions

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
    return elapsed / max(n, 1) * 1e6


def positive(text: str) -> int:
    n = int(text)
    if n <= 0:
        raise argparse.ArgumentTypeError("a positive number")
    return n


def loop_instructions(addon: str, n: int) -> int:
    """Instructions of a whole process running `addon`'s loop over `n` messages (callgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               __file__, "--loop", addon, *(["--messages", str(n)] if n else [])],  # 0: none
                              capture_output=True, text=True,
                              timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict layouts
        if done.returncode != 0:
            raise SystemExit(f"the {addon} loop failed under valgrind:\n{done.stderr[-2000:]}")
        return instructions(out)


def run_loop(addon: str, n: int) -> None:
    """One addon's loop, for `loop_instructions` (the recorder trims as the counting addon does)."""
    with tempfile.TemporaryDirectory() as tmp:
        if addon == "counting":
            per_message_us(Counter(), n, {})
        else:
            recorder = Recorder()
            per_message_us(recorder, n, {"mwtap_out": str(Path(tmp) / "c.jsonl"), "mwtap_trim_messages": True})
            if recorder.messages != n or recorder.dropped:  # counted, not read back (that would be counted too)
                raise SystemExit(f"the recorder took {recorder.messages} of {n} messages, dropped {recorder.dropped}")


def print_instructions(n: int) -> None:
    per_message = {addon: (loop_instructions(addon, n) - loop_instructions(addon, 0)) / n
                   for addon in ("counting", "recorder")}
    print(f"messages            {n} (each loop also builds its messages: only the difference is the recorder's)")
    print(f"counting addon      {per_message['counting']:8,.0f} instructions/message")
    print(f"recorder addon      {per_message['recorder']:8,.0f} instructions/message")
    print(f"the recorder's own work: {per_message['recorder'] - per_message['counting']:,.0f} instructions/message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=positive)
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind) instead of time")
    parser.add_argument("--smoke", action="store_true", help="a few messages: check that it runs")
    parser.add_argument("--loop", choices=("counting", "recorder"), help=argparse.SUPPRESS)  # loop_instructions'
    args = parser.parse_args()
    if args.loop:
        run_loop(args.loop, args.messages or 0)
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            parser.error("valgrind is not installed (Debian package valgrind)")
        print_instructions(args.messages or (200 if args.smoke else 4000))
        return
    n = args.messages or (2000 if args.smoke else 50_000)
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
