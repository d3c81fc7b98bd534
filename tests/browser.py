"""Headless Chromium driven over the DevTools protocol (loopback only): open a page, collect its
console errors and uncaught exceptions, evaluate expressions, take screenshots."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1400,1000"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    screenshot: bytes = b""  # PNG of the first screen
    full_page: bytes = b""  # PNG of the whole page


def open_page(procs, tmp_path: Path, url: str, expressions: dict[str, str] | None = None,
              timeout: float = 45.0) -> PageResult:
    """Load `url` in a fresh headless Chromium (started with the `procs` fixture, so always stopped)."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = procs.start([chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"], "chromium")
    try:
        endpoint = _devtools_endpoint(profile, proc, timeout)
        return asyncio.run(asyncio.wait_for(_load(endpoint, url, expressions or {}), timeout))
    finally:
        procs.stop(proc)


def _devtools_endpoint(profile: Path, proc, timeout: float) -> str:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.log_path.read_text()[-2000:]}")
        lines = port_file.read_text().split("\n") if port_file.exists() else []
        if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
            return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        time.sleep(0.1)
    raise TimeoutError(f"chromium wrote no {port_file} in {timeout}s")


class _Session:
    """One DevTools connection; commands to a page go with its sessionId (flat mode)."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    async def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        msg_id = next(self.ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    async def wait_event(self, method: str) -> dict:
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(await self.ws.recv()))


async def _load(endpoint: str, url: str, expressions: dict[str, str]) -> PageResult:
    from websockets.asyncio.client import connect
    async with connect(endpoint, max_size=None, proxy=None) as ws:
        s = _Session(ws)
        target = (await s.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        page = (await s.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            await s.send(f"{domain}.enable", session=page)
        s.events.clear()
        await s.send("Page.navigate", {"url": url}, session=page)
        await s.wait_event("Page.loadEventFired")
        result = PageResult()
        for name, expression in expressions.items():
            reply = await s.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                 session=page)
            result.values[name] = reply.get("result", {}).get("value")
        result.screenshot = base64.b64decode((await s.send("Page.captureScreenshot", {"format": "png"},
                                                           session=page))["data"])
        result.full_page = base64.b64decode((await s.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True}, session=page))["data"])
        result.errors = _errors(s.events)
        return result


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + json.dumps(params.get("args", []))[:500])
    return errors
