"""SIGTERM while traffic flows: every message the proxy relayed is in the capture (or counted in a
`drop` record), and the shutdown summary says what the file holds."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from analysis.capture import CaptureFile, payload_bytes
from test_record_e2e import RECORDERS, by_path, start_recorder

CONNECTIONS = 10
WINDOW = 10  # echoes each client may have outstanding
TRAFFIC_BEFORE_STOP = 1.5  # seconds
TIMEOUT = 30
SUMMARY = re.compile(r"stopped; (\d+) messages, (\d+) records written to .*; (\d+) dropped")


class Seen:
    """What the server received and what each client received, per connection path: what the proxy relayed."""

    def __init__(self) -> None:
        self.by_server: dict[str, list[str]] = defaultdict(list)
        self.by_client: dict[str, list[str]] = defaultdict(list)

    async def server(self, ws) -> None:
        path = ws.request.path.lstrip("/")
        try:
            async for message in ws:
                self.by_server[path].append(message)
                await ws.send(message)
        except ConnectionClosed:
            pass

    async def client(self, proxy_port: int, path: str) -> None:
        outstanding = asyncio.Semaphore(WINDOW)
        try:
            async with connect(f"ws://127.0.0.1:{proxy_port}/{path}", proxy=None, ping_interval=None,
                               close_timeout=1) as ws:
                async def read() -> None:
                    try:
                        async for message in ws:
                            self.by_client[path].append(message)
                            outstanding.release()
                    except ConnectionClosed:
                        pass
                    finally:
                        outstanding.release()  # wakes the sender, which then sees the end
                reader = asyncio.create_task(read())
                i = 0
                while not reader.done():
                    await asyncio.wait_for(outstanding.acquire(), TIMEOUT)
                    await ws.send(f"{path} {i}")
                    i += 1
        except ConnectionClosed:
            pass


def recorded(out: Path) -> tuple[list[dict], dict[str, dict[str, list[str]]]]:
    """Every record of the capture (all parts), and the payloads of its messages per path and direction."""
    records = []
    for part in sorted(out.parent.glob(out.stem + "*"), key=lambda p: (len(p.name), p.name)):
        capture = CaptureFile(str(part))
        records += list(capture.records())
        assert capture.damage == []
    paths = by_path(records)
    msgs: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["rec"] == "msg":
            msgs[paths[r["conn"]]][r["dir"]].append(payload_bytes(r).decode())
    return records, msgs


@pytest.mark.parametrize("kind", RECORDERS)
def test_sigterm_under_load_every_relayed_message_is_recorded_and_the_summary_matches(kind, procs, tmp_path):
    out = tmp_path / "term.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, kind, out)
    seen = Seen()

    async def session() -> None:
        async with serve(seen.server, "127.0.0.1", server_port, ping_interval=None):
            clients = [asyncio.create_task(seen.client(proxy_port, f"c{k}")) for k in range(CONNECTIONS)]
            started = time.monotonic()
            while time.monotonic() - started < TRAFFIC_BEFORE_STOP or sum(map(len, seen.by_client.values())) < 200:
                await asyncio.sleep(0.05)
            assert await asyncio.to_thread(procs.stop, proc) == 0
            await asyncio.wait_for(asyncio.gather(*clients), TIMEOUT)
    asyncio.run(session())
    log = proc.log_path.read_text()
    records, msgs = recorded(out)
    assert sorted(msgs) == sorted(seen.by_client)
    for path in msgs:  # what a peer received is what the capture holds (the proxy may have sent a
        # last frame the peer did not read before the connection went, never one left unrecorded)
        c2s, s2c = msgs[path]["c2s"], msgs[path]["s2c"]
        assert seen.by_server[path] == c2s[:len(seen.by_server[path])], path
        assert seen.by_client[path] == s2c[:len(seen.by_client[path])], path
    drops = sum(r["count"] for r in records if r["rec"] == "drop")
    assert drops == 0
    if kind == "mwtap":  # (mitmdump prints a CancelledError traceback of its own at a stop with open connections)
        assert "Traceback" not in log, log
        messages, written, dropped = map(int, SUMMARY.search(log).groups())
        assert (written, dropped) == (sum(r["rec"] != "drop" for r in records), drops), log
        assert messages == sum(r["rec"] == "msg" for r in records)
