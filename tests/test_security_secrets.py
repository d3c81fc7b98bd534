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
import pytest

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from analysis.capture import CaptureFile
from analysis.redact import marker
from conftest import BIN, free_port
from test_record_e2e import COOKIE, INIT, JWT, QUERY_TOKEN, SECRETS, TIMEOUT, start_recorder
from test_redact import pieces_in

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


# -- tokens written in another encoding --------------------------------------------------------------
# A JWT with JSON escapes in a payload, a percent-encoded JWT under a query parameter whose name says
# nothing, an opaque InitConnection token hidden from a JSON parser by a duplicated "headers" key or sent
# in a binary frame, and the bearer an agent (brand) connection carries in its URL path.

def jwt_for(sub: str, signature: str) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"sub": sub}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{claims}.{signature}"


ESCAPED_JWT = jwt_for("esc4ped-c0nsumer", "Hq7mK2vN9pXr4TzW8yB3cD6eF1gJ5aL0")
PERCENT_JWT = jwt_for("perc3nt-c0nsumer", "Rb5nM8wQ2kYt7UxZ1cE4dF9gH3jK6aP0")
DUP_TOKEN = "opaque-Dupl1cate-7Kq2Lm9Xv"
BINARY_TOKEN = "opaque-B1nary-4Rt8Wq1Zp3"
BRAND_BEARER = "agent-Bear3r-9Hd2Kf7Lq5Ws"
ENCODED_SECRETS = [ESCAPED_JWT, PERCENT_JWT, DUP_TOKEN, BINARY_TOKEN, BRAND_BEARER]

PERCENT_FORM = "%65" + PERCENT_JWT[1:].replace(".", "%2E")
CONSUMER_PATH = f"ws_api/account/123/messaging/consumer?v=3&ref={PERCENT_FORM}"
BRAND_PATH = f"ws_api/account/123/messaging/brand/{BRAND_BEARER}?v=2.1"
DUPLICATE_HEADERS_INIT = ('{"kind":"req","id":"0","type":"InitConnection","headers":[{"type":'
                          f'".ams.headers.ConsumerAuthentication","jwt":"{DUP_TOKEN}"}}],'
                          '"headers":[{"type":".ams.headers.ClientProperties","os":"LINUX"}]}')
BINARY_INIT = json.dumps({**INIT, "headers": [{"type": ".ams.headers.ConsumerAuthentication",
                                               "jwt": BINARY_TOKEN}]}).encode()
ESCAPED_PAYLOAD = ('{"kind":"req","id":"1","type":"Echo","body":{"token":"\\u0065'
                   + ESCAPED_JWT[1:].replace(".", "\\u002e") + '"}}')


async def echo(ws) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def encoded_session(port: int) -> None:
    """Each form through the proxy (or server) on `port`, every frame answered with its echo."""
    async with connect(f"ws://127.0.0.1:{port}/{CONSUMER_PATH}", proxy=None, ping_interval=None) as ws:
        for frame in (DUPLICATE_HEADERS_INIT, BINARY_INIT, ESCAPED_PAYLOAD):
            await ws.send(frame)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == frame
    async with connect(f"ws://127.0.0.1:{port}/{BRAND_PATH}", proxy=None, ping_interval=None) as ws:
        await ws.send('{"kind":"req","id":"a1","type":".ams.routing.SubscribeRoutingTasks","body":{}}')
        await asyncio.wait_for(ws.recv(), TIMEOUT)


async def record_encoded_session(server_port: int, proxy_port: int) -> None:
    async with serve(echo, "127.0.0.1", server_port, ping_interval=None):
        await encoded_session(proxy_port)


def encoded_leaks(artifacts: dict[str, bytes], secrets=ENCODED_SECRETS) -> dict:
    """Pieces of any secret in any artifact, written plainly, JSON-escaped, percent-encoded or base64."""
    return {(name, secret): found for name, data in artifacts.items() for secret in secrets
            if (found := pieces_in(secret, data))}


@pytest.mark.parametrize("kind", ["mwtap", "mitmdump"])
def test_escaped_encoded_duplicated_binary_and_path_tokens_never_land_in_clear(procs, tmp_path, kind):
    out = tmp_path / "encoded.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, kind, out)
    asyncio.run(record_encoded_session(server_port, proxy_port))
    assert procs.stop(proc) == 0
    analysis = mwtap("analyze", "--format", "json", out)
    html = mwtap("report", out, "-o", tmp_path / "report.html")
    md_report = mwtap("report", "--format", "markdown", out, "-o", tmp_path / "report.md")
    export = mwtap("export", out, "--parquet", tmp_path / "parquet")
    for done in (analysis, html, md_report, export):
        assert done.returncode == 0, done.stderr.decode()
    artifacts = {"capture": out.read_bytes(), "recorder log": proc.log_path.read_bytes(),
                 "analyze json": analysis.stdout + analysis.stderr,
                 "report.html": (tmp_path / "report.html").read_bytes(), "report.md": (tmp_path / "report.md").read_bytes()}
    tables = sorted((tmp_path / "parquet").glob("*.parquet"))
    assert {table.stem for table in tables} >= {"frames", "connections"}
    for table in tables:
        artifacts[str(table)] = table.read_bytes()
        artifacts[f"{table.stem} values"] = pq.read_table(table).to_pandas().to_csv().encode()
    assert not encoded_leaks(artifacts)
    assert len(json.loads(analysis.stdout)["connections"]) == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    payloads = [rec.get("text") or base64.b64decode(rec.get("b64", "")).decode() for rec in records if rec["rec"] == "msg"]
    for secret in ENCODED_SECRETS:  # each replaced by the marker its plain form gets
        assert any(marker(secret) in text for text in [*payloads, *(rec.get("url") or "" for rec in records)]), secret


def test_replay_of_a_capture_with_tokens_in_clear_keeps_none_in_its_capture_or_log(procs, tmp_path):
    raw = tmp_path / "raw.jsonl"  # recorded with --no-redact: the replay's input holds every token
    proc, server_port, proxy_port = start_recorder(procs, "mwtap", raw, "--no-redact")
    asyncio.run(record_encoded_session(server_port, proxy_port))
    assert procs.stop(proc) == 0
    assert all(secret in raw.read_text() for secret in (ESCAPED_JWT[1:20], DUP_TOKEN, BRAND_BEARER))

    replayed = tmp_path / "replay.jsonl"
    received: list = []

    async def run() -> tuple[int, bytes, bytes]:
        async def recording_echo(ws) -> None:
            received.append(ws.request.path)
            await echo(ws)

        target_port = free_port()
        async with serve(recording_echo, "127.0.0.1", target_port, ping_interval=None):
            replay = await asyncio.create_subprocess_exec(
                str(BIN / "mwtap"), "replay", str(raw), "--target", f"ws://127.0.0.1:{target_port}", "-o",
                str(replayed), "--timing", "fast", "--wait-timeout", "1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(replay.communicate(), 120)
        return replay.returncode, stdout, stderr

    code, stdout, stderr = asyncio.run(run())
    assert code == 0, stderr.decode()
    assert any(BRAND_BEARER in path for path in received)  # the replay sent the recorded tokens
    artifacts = {"replay capture": replayed.read_bytes(), "replay stdout": stdout, "replay stderr": stderr}
    assert not encoded_leaks(artifacts)
    records = [json.loads(line) for line in replayed.read_text().splitlines()]
    assert sum(rec.get("rec") == "msg" for rec in records) == 8  # 4 frames each way
