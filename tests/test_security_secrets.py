"""Tokens never leak: a session carrying tokens everywhere the protocol puts them (Authorization
header, Cookie, InitConnection jwt, the URL path of older API versions, the query string, a binary
frame), recorded
with rotation, then analysed and reported: no 8 consecutive characters of any token appear in any
capture part, the HTML and Markdown reports, the analysis JSON or the Parquet export, while the fingerprints still let
`token-not-refreshed` be found (a reconnect with the same token after a 4401)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess

import pyarrow.parquet as pq

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from analysis.capture import CaptureFile
from conftest import BIN
from test_record_e2e import COOKIE, INIT, JWT, QUERY_TOKEN, SECRETS, TIMEOUT, start_recorder

URL_PATH = f"ws_api/account/123/messaging/consumer/{JWT}?v=3&access_token={QUERY_TOKEN}"
HEADERS = {"Authorization": f"jwt {JWT}", "Cookie": f"session={COOKIE}; theme=dark"}
PADDING = "p" * 200_000
BINARY = b"\x00\x01token " + JWT.encode() + b" \xff\xfe"


async def expiring_echo(ws) -> None:
    try:
        async for message in ws:
            if message == "EXPIRE":
                await ws.close(4401, "token expired")
                return
            await ws.send(message)
    except ConnectionClosed:
        pass


async def session(server_port: int, proxy_port: int) -> None:
    async with serve(expiring_echo, "127.0.0.1", server_port, ping_interval=None, max_size=None):
        for attempt in range(2):  # the second connection reuses the token the server expired
            async with connect(f"ws://127.0.0.1:{proxy_port}/{URL_PATH}", proxy=None, ping_interval=None,
                               additional_headers=HEADERS, max_size=None) as ws:
                await ws.send(json.dumps(INIT))
                await asyncio.wait_for(ws.recv(), TIMEOUT)
                await ws.send(BINARY)  # a binary frame carrying the token, echoed back
                await asyncio.wait_for(ws.recv(), TIMEOUT)
                for i in range(8 if attempt == 0 else 1):  # enough for several 1 MiB parts
                    await ws.send(json.dumps({"kind": "req", "id": f"e{i}", "type": "Echo",
                                              "body": {"token": JWT, "pad": PADDING}}))
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                if attempt == 0:
                    await ws.send("EXPIRE")
                    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)


def leaks(data: bytes) -> dict[str, set[str]]:
    found = {}
    for secret in SECRETS:
        pieces = {secret[i:i + 8] for i in range(len(secret) - 7) if secret[i:i + 8].encode() in data}
        if pieces:
            found[secret] = pieces
    return found


def mwtap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mwtap"), *map(str, args)], capture_output=True, timeout=120)


def test_no_token_substring_anywhere_and_token_not_refreshed_still_found(procs, tmp_path):
    out = tmp_path / "secret.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, "mwtap", out, "--rotate-mb", "1")
    asyncio.run(session(server_port, proxy_port))
    assert procs.stop(proc) == 0
    parts = sorted(tmp_path.glob("secret*.jsonl"))
    assert len(parts) >= 3, parts

    analysis = mwtap("analyze", "--format", "json", *parts)
    markdown = mwtap("analyze", "--format", "markdown", *parts)
    html = mwtap("report", *parts, "-o", tmp_path / "report.html")
    md_report = mwtap("report", "--format", "markdown", *parts, "-o", tmp_path / "report.md")
    export = mwtap("export", *parts, "--parquet", tmp_path / "parquet")
    for done in (analysis, markdown, html, md_report, export):
        assert done.returncode == 0, done.stderr.decode()
    artifacts = {str(p): p.read_bytes() for p in parts}
    artifacts.update({"analyze json": analysis.stdout, "analyze markdown": markdown.stdout,
                      "report.html": (tmp_path / "report.html").read_bytes(),
                      "report.md": (tmp_path / "report.md").read_bytes(),
                      "recorder log": proc.log_path.read_bytes()})
    tables = sorted((tmp_path / "parquet").glob("*.parquet"))
    assert {p.stem for p in tables} >= {"frames", "pairs", "connections", "violations"}
    artifacts.update({str(p): p.read_bytes() for p in tables})
    artifacts.update({f"{p.stem} values": pq.read_table(p).to_pandas().to_csv().encode() for p in tables})
    for name, data in artifacts.items():
        assert not leaks(data), (name, leaks(data))
    binary = [rec for p in parts for rec in CaptureFile(str(p)).records() if rec.get("op") == "binary"]
    assert len(binary) == 4 and all(rec["redacted"] and rec["size"] == len(BINARY) for rec in binary)
    for rec in binary:  # base64 in the capture: looked at decoded
        assert not leaks(base64.b64decode(rec["b64"])), rec

    summary = json.loads(analysis.stdout)
    assert summary["violation_counts"]["token-not-refreshed"]
    assert summary["reconnects"]["same_token"] == 1 and summary["reconnects"]["after_token_close"] == 1
    assert [c["close_code"] for c in summary["connections"]] == [4401, 1000]
