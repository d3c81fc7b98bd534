"""What the relay benchmarks share: the configurations, a GetClock server, starting and stopping
each proxy, the proxy's memory and CPU time from /proc, and counting the frames a capture holds.

Every configuration relays ws://127.0.0.1:PORT to a server in the benchmark's own process:
"direct" (no proxy, the limit), plain mitmdump, mitmdump with the mwtap addon, `mwtap record`,
`mwtap record --live`, and mitmdump saving flows with `-w FILE`; and, for relay_instructions.py,
"mitmdump -s trim": mitmdump hosting a script whose addon only trims the message list (what hosting
any script costs), and "mitmdump -s addon --trim": the recorder trimming the list too
(`mwtap_trim_messages`), so that the two differ only by the recorder's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import free_port, wait_port  # noqa: E402  (the tests' port helpers)

CONFIGURATIONS = ("direct", "mitmdump", "mitmdump -s addon", "mwtap record", "mwtap record --live",
                  "mitmdump -w FILE")
CAPTURING = ("mitmdump -s addon", "mitmdump -s addon --trim", "mwtap record", "mwtap record --live", "mitmdump -w FILE")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def request(i: int) -> str:
    return f'{{"kind":"req","id":"{i}","type":"GetClock"}}'


def response(req: str) -> str:
    """The GetClock response to `req` (a request built by `request`)."""
    req_id = req.split('"id":"', 1)[1].split('"', 1)[0]
    return (f'{{"kind":"resp","reqId":"{req_id}","code":200,"type":"GetClock$Response",'
            f'"body":{{"currentTime":{int(time.time() * 1000)}}}}}')


@dataclass
class ServerCounts:
    received: int = 0
    sent: int = 0


async def serve_getclock(counts: ServerCounts, ws) -> None:
    """Answers every request with its response at once."""
    async for message in ws:
        counts.received += 1
        await ws.send(response(message))
        counts.sent += 1


def proxy_command(kind: str, server_port: int, proxy_port: int, out: Path) -> list[str]:
    if kind.startswith("mwtap record"):
        live = ["--live"] if kind.endswith("--live") else []
        return [str(BIN / "mwtap"), "record", "--upstream", f"ws://127.0.0.1:{server_port}",
                "--listen", f"127.0.0.1:{proxy_port}", "-o", str(out), *live]
    extra = {"mitmdump": [], "mitmdump -s addon": ["-s", str(REPO / "recorder" / "addon.py"),
                                                   "--set", f"mwtap_out={out}"],
             "mitmdump -s addon --trim": ["-s", str(REPO / "recorder" / "addon.py"), "--set", f"mwtap_out={out}",
                                          "--set", "mwtap_trim_messages=true"],
             "mitmdump -s trim": ["-s", str(REPO / "benchmarks" / "trim_addon.py")],
             "mitmdump -w FILE": ["-w", str(out)]}[kind]
    return [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(proxy_port),
            "--mode", f"reverse:http://127.0.0.1:{server_port}", *extra]


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB, and its CPU time (user + system) in seconds."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            status[key] = int(value.split()[0]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status["cpu"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return status


@dataclass
class Proxy:
    """A running configuration: where clients connect, and (for a proxy) its process and capture."""
    port: int
    proc: subprocess.Popen | None = None
    out: Path | None = None
    start: dict = field(default_factory=dict)

    def status(self) -> dict[str, float]:
        return proc_status(self.proc.pid) if self.proc else {}


@contextlib.asynccontextmanager
async def running(kind: str, workdir: Path, counts: ServerCounts, wrapper: tuple[str, ...] = (),
                  start_timeout: float = 60.0):
    """Starts the GetClock server and the configuration's proxy (its command after `wrapper`, e.g.
    valgrind's); yields a Proxy; stops both."""
    server_port = free_port()
    from websockets.asyncio.server import serve
    async with serve(lambda ws: serve_getclock(counts, ws), "127.0.0.1", server_port, ping_interval=None,
                     compression=None, max_queue=None):
        if kind == "direct":
            yield Proxy(server_port)
            return
        proxy_port = free_port()
        name = kind.replace(" ", "_").replace("-", "") + f"_{time.monotonic_ns()}"  # a new capture every run
        out = workdir / (f"{name}.mitm" if kind == "mitmdump -w FILE" else f"{name}.jsonl")
        with open(workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([*wrapper, *proxy_command(kind, server_port, proxy_port, out)], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proxy = Proxy(proxy_port, proc, out if kind in CAPTURING else None)
        try:
            await asyncio.to_thread(wait_port, proxy_port, start_timeout, proc)
            proxy.start = proxy.status()
            yield proxy
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.to_thread(proc.wait, start_timeout)


def instructions(dump: Path) -> int:
    """The event total of a callgrind dump (its `summary:` line)."""
    with open(dump) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise ValueError(f"{dump}: no summary line")


def captured(out: Path) -> Counter:
    """Messages a capture (mwtap JSONL or mitmproxy flow file) holds, by direction: c2s, s2c."""
    counts: Counter = Counter()
    if out.suffix == ".mitm":
        from mitmproxy import io
        with open(out, "rb") as f:
            for flow in io.FlowReader(f).stream():
                for message in flow.websocket.messages if getattr(flow, "websocket", None) else ():
                    counts["c2s" if message.from_client else "s2c"] += 1
        return counts
    with open(out, "rb") as f:
        for line in f:
            rec = orjson.loads(line)
            if rec["rec"] == "msg":
                counts[rec["dir"]] += 1
            elif rec["rec"] == "drop":
                counts["dropped"] += rec["count"]
    return counts


def frames_lost(client_sent: int, client_received: int, server: ServerCounts, capture: Counter | None) -> int:
    """Frames sent by either side that did not reach the other, plus frames relayed but not captured."""
    lost = (client_sent - server.received) + (server.sent - client_received)
    if capture is not None:
        lost += (server.received - capture["c2s"]) + (client_received - capture["s2c"])
    return lost


def clean_environment() -> str:
    """Drops proxy variables (the clients talk to 127.0.0.1 directly); returns the versions line."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    from mitmproxy.version import VERSION
    return f"python {sys.version.split()[0]}, mitmproxy {VERSION}, load average {os.getloadavg()[0]:.2f}"
