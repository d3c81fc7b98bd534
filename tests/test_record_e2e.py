"""End to end: a real websockets server and client, the real recorder as `mwtap record` and as
`mitmdump -s recorder/addon.py` (subprocesses), then the capture file checked record by record."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import stat
from http import HTTPStatus
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from analysis.capture import CaptureFile, payload_bytes
from analysis.redact import marker
from conftest import BIN, REPO, Processes, free_port, wait_port

RECORDERS = ["mwtap", "mitmdump"]
TIMEOUT = 20

# Secrets: a JWT (header, path and payload), an opaque query token, an opaque InitConnection jwt, a cookie.
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
       + base64.urlsafe_b64encode(b'{"sub":"c0nsum3r-9f1e","exp":1879957364}').decode().rstrip("=")
       + ".Zq8vK3mN1pLr7TxW4yB6cD0eF2gH5jA9sU")
QUERY_TOKEN = "q7Rt2Lm9Xv4Kp8Wz3Bn6"
INIT_JWT = "opaque-Init-5Hs8Jd2Kf7Lq"
COOKIE = "ck-Ua93bVx71Qm"
SECRETS = [JWT, QUERY_TOKEN, INIT_JWT, COOKIE]

INIT = {"kind": "req", "id": "0", "type": "InitConnection",
        "headers": [{"type": ".ams.headers.ClientProperties", "os": "LINUX"},
                    {"type": ".ams.headers.ConsumerAuthentication", "jwt": INIT_JWT}]}
BIG = json.dumps({"kind": "req", "id": "big", "type": "Echo", "body": {"pad": "abc" * 70_000}})


def recorder_command(kind: str, server_port: int, proxy_port: int, out: Path, *extra: str,
                     quiet: bool = True) -> list[str]:
    if kind == "mwtap":
        return [str(BIN / "mwtap"), "record", "--upstream", f"ws://127.0.0.1:{server_port}",
                "--listen", f"127.0.0.1:{proxy_port}", "-o", str(out), *extra]
    sets = [arg for option in extra for arg in ("--set", option)]
    return [str(BIN / "mitmdump"), *(["-q"] if quiet else []), "--listen-host", "127.0.0.1", "--listen-port", str(proxy_port),
            "--mode", f"reverse:http://127.0.0.1:{server_port}", "-s", str(REPO / "recorder" / "addon.py"),
            "--set", f"mwtap_out={out}", *sets]


def rotate_option(kind: str, mb: int) -> list[str]:
    return ["--rotate-mb", str(mb)] if kind == "mwtap" else [f"mwtap_rotate_mb={mb}"]


async def server_handler(ws) -> None:
    try:
        async for message in ws:
            if message == "CLOSE 4407":
                await ws.close(4407, "identity expired")
                return
            request = json.loads(message) if isinstance(message, str) and message.startswith("{") else {}
            if request.get("type") == "GetClock":
                await ws.send(json.dumps({"kind": "resp", "reqId": str(request["id"]), "code": 200,
                                          "type": "GetClockResponse", "body": {"currentTime": 1}}))
            elif request.get("type") == "SubscribeExConversations":
                await ws.send(json.dumps({"kind": "resp", "reqId": request["id"], "code": 200,
                                          "type": "GenericSubscribeResponse", "body": {"subscriptionId": "sub-1"}}))
                await ws.send(json.dumps({"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                                          "body": {"subscriptionId": "sub-1", "changes": []}}))
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass


def refuse_forbidden(connection, request):
    if request.path.startswith("/forbidden"):
        return connection.respond(HTTPStatus.FORBIDDEN, "forbidden\n")
    return None


class Session:
    """What the clients sent and received, per connection path, in order."""

    def __init__(self, proxy_port: int):
        self.base = f"ws://127.0.0.1:{proxy_port}"
        self.frames: dict[str, list[tuple[str, bytes]]] = {}

    async def exchange(self, ws, path: str, message: str | bytes | list[str], replies: int = 1) -> None:
        log = self.frames.setdefault(path, [])
        await ws.send(message)
        sent = "".join(message) if isinstance(message, list) else message
        log.append(("c2s", sent.encode() if isinstance(sent, str) else sent))
        for _ in range(replies):
            reply = await asyncio.wait_for(ws.recv(), TIMEOUT)
            log.append(("s2c", reply.encode() if isinstance(reply, str) else reply))


async def run_session(server_port: int, proxy_port: int) -> Session:
    session = Session(proxy_port)
    async with serve(server_handler, "127.0.0.1", server_port, process_request=refuse_forbidden,
                     ping_interval=None):
        main = "ws_api"
        url = f"{session.base}/ws_api/account/123/messaging/consumer/{JWT}?v=3&access_token={QUERY_TOKEN}"
        headers = {"Authorization": f"jwt {JWT}", "Cookie": f"session={COOKIE}; theme=dark"}
        async with connect(url, proxy=None, ping_interval=None, additional_headers=headers) as ws:
            await session.exchange(ws, main, json.dumps(INIT))
            await session.exchange(ws, main, json.dumps({"kind": "req", "id": "1", "type": "Echo",
                                                         "body": {"token": JWT}}))
            await session.exchange(ws, main, json.dumps({"kind": "req", "id": 7, "type": "GetClock"}))
            await session.exchange(ws, main, json.dumps({"kind": "req", "id": "s1",
                                                         "type": "SubscribeExConversations", "body": {}}), 2)
            await asyncio.wait_for(await ws.ping(b"keepalive-1"), TIMEOUT)
            await session.exchange(ws, main, ["frag-a|", "frag-b|", "frag-c"])
            await session.exchange(ws, main, BIG)
            await session.exchange(ws, main, b"\x00\x01\xffbin")
            await session.exchange(ws, main, "hello, not json")
            await ws.close(4401, "unauthorized")
        async with connect(f"{session.base}/server-closes", proxy=None, ping_interval=None) as ws:
            await ws.send("CLOSE 4407")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        async with connect(f"{session.base}/bad-utf8", proxy=None, ping_interval=None, compression=None) as ws:
            await ws.send(b"ok\xff\xfe", text=True)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        async with connect(f"{session.base}/aborted", proxy=None, ping_interval=None) as ws:
            await session.exchange(ws, "aborted", "last words")
            ws.transport.abort()
        with pytest.raises(InvalidStatus):
            await connect(f"{session.base}/forbidden", proxy=None, open_timeout=TIMEOUT)
        await asyncio.sleep(0.5)  # let the proxy see the abort before it is stopped
    return session


def start_recorder(procs: Processes, kind: str, out: Path, *extra: str, quiet: bool = True):
    server_port, proxy_port = free_port(), free_port()
    proc = procs.start(recorder_command(kind, server_port, proxy_port, out, *extra, quiet=quiet), kind)
    wait_port(proxy_port, proc=proc)
    return proc, server_port, proxy_port


@contextlib.asynccontextmanager
async def client_through(server_port: int, proxy_port: int, path: str, **client_options):
    """The test server on `server_port` and a client connected to it through the recorder."""
    async with serve(server_handler, "127.0.0.1", server_port, ping_interval=None):
        async with connect(f"ws://127.0.0.1:{proxy_port}/{path}", proxy=None, ping_interval=None,
                           **client_options) as ws:
            yield ws


def by_path(records: list[dict]) -> dict[str, str]:
    """conn id -> first segment of the URL path of its open/refused record."""
    return {r["conn"]: r["url"].split("://", 1)[1].split("/")[1].split("?")[0]
            for r in records if r["rec"] in ("open", "refused")}


def as_redacted(payload: bytes) -> bytes:
    for secret in SECRETS:
        payload = payload.replace(secret.encode(), marker(secret).encode())
    return payload


@pytest.fixture(scope="module", params=RECORDERS)
def recorded(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    procs = Processes(tmp)
    try:
        out = tmp / "capture.jsonl"
        proc, server_port, proxy_port = start_recorder(procs, request.param, out)
        session = asyncio.run(run_session(server_port, proxy_port))
        assert procs.stop(proc) == 0, proc.log_path.read_text()
        capture = CaptureFile(str(out))
        records = list(capture.records())
        yield request.param, out, capture, records, session, proc.log_path.read_text()
    finally:
        procs.stop_all()


def test_every_frame_in_order_with_exact_payloads(recorded):
    _, _, capture, records, session, _ = recorded
    assert capture.damage == [] and capture.header["redaction"]["enabled"] is True
    conns = {path: conn for conn, path in by_path(records).items()}
    for path, frames in session.frames.items():
        msgs = [r for r in records if r["rec"] == "msg" and r["conn"] == conns[path]]
        assert [r["n"] for r in msgs] == list(range(len(frames)))
        assert [(r["dir"], payload_bytes(r)) for r in msgs] == [(d, as_redacted(p)) for d, p in frames]
        assert [r["size"] for r in msgs] == [len(p) for _, p in frames]
        assert [bool(r.get("redacted")) for r in msgs] == [as_redacted(p) != p for _, p in frames]


def test_index_fields_binary_fragments_and_deflate(recorded):
    _, _, _, records, _, _ = recorded
    msgs = [r for r in records if r["rec"] == "msg"]
    clock = next(r for r in msgs if r.get("type") == "GetClock")
    assert (clock["kind"], clock["id"], clock["dir"]) == ("req", "7", "c2s")
    resp = next(r for r in msgs if r.get("type") == "GetClockResponse")
    assert (resp["kind"], resp["reqId"], resp["code"], resp["dir"]) == ("resp", "7", 200, "s2c")
    note = next(r for r in msgs if r.get("kind") == "notification")
    assert note["subscriptionId"] == "sub-1"
    assert next(r for r in msgs if r.get("type") == "GenericSubscribeResponse")["subscriptionId"] == "sub-1"
    binary = [r for r in msgs if r["op"] == "binary"]
    assert [base64.b64decode(r["b64"]) for r in binary] == [b"\x00\x01\xffbin"] * 2 and "text" not in binary[0]
    assert sum(r.get("text") == "frag-a|frag-b|frag-c" for r in msgs) == 2
    assert sum(r.get("text") == BIG and r["size"] == len(BIG) for r in msgs) == 2
    plain = [r for r in msgs if r.get("text") == "hello, not json"]
    assert len(plain) == 2 and "kind" not in plain[0]
    main_open = next(r for r in records if r["rec"] == "open" and "/messaging/consumer/" in r["url"])
    assert "permessage-deflate" in main_open["extensions"]
    assert main_open["url"].startswith("ws://127.0.0.1:") and main_open["status"] == 101
    assert main_open["client"].startswith("127.0.0.1:") and main_open["tls"] is False


def test_pings_and_close_codes(recorded):
    _, _, _, records, _, _ = recorded
    paths = by_path(records)
    main = next(c for c, p in paths.items() if p == "ws_api")
    controls = [(r["rec"], r["dir"], r["payload"]) for r in records if r["rec"] in ("ping", "pong")]
    assert controls == [("ping", "c2s", "b'keepalive-1'"), ("pong", "s2c", "b'keepalive-1'")]
    assert all(r["conn"] == main for r in records if r["rec"] in ("ping", "pong"))
    closes = {paths[r["conn"]]: (r["code"], r["by"]) for r in records if r["rec"] == "close"}
    assert closes[paths[main]] == (4401, "client")
    assert closes["server-closes"] == (4407, "server")
    assert closes["aborted"] == (1006, "client")
    # mitmproxy (wsproto) rejects a text frame that is not UTF-8: no msg, a 1007 close instead
    assert closes["bad-utf8"][0] == 1007
    bad = next(c for c, p in paths.items() if p == "bad-utf8")
    assert not [r for r in records if r["rec"] == "msg" and r["conn"] == bad]
    refused = [r for r in records if r["rec"] == "refused"]
    assert [(paths[r["conn"]], r["status"]) for r in refused] == [("forbidden", 403)]


def test_tokens_redacted_with_fingerprints(recorded):
    kind, out, _, records, _, log = recorded
    data = out.read_bytes()
    for secret in SECRETS:
        leaks = {secret[i:i + 8] for i in range(len(secret) - 7) if secret[i:i + 8].encode() in data}
        assert not leaks, (secret, leaks)
    main_open = next(r for r in records if r["rec"] == "open" and "/messaging/consumer/" in r["url"])
    headers = dict(main_open["request_headers"])
    assert headers["Authorization"] == f"jwt {marker(JWT)}"
    assert f"session={marker(COOKIE)}" in headers["Cookie"]
    assert f"consumer/{marker(JWT)}?" in main_open["url"]
    assert f"access_token={marker(QUERY_TOKEN)}" in main_open["url"]
    redacted = [r for r in records if r.get("redacted")]
    init = [r for r in redacted if r.get("type") == "InitConnection"]
    assert len(init) == 2 and marker(INIT_JWT) in init[0]["text"]
    assert init[0]["size"] == len(json.dumps(INIT))
    echo = [r for r in redacted if r.get("type") == "Echo"]
    assert len(echo) == 2 and marker(JWT) in echo[0]["text"]


def test_capture_file_is_private_and_summary_printed(recorded):
    kind, out, _, records, _, log = recorded
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    if kind == "mwtap":
        msgs = sum(r["rec"] == "msg" for r in records)
        assert f"{msgs} messages, {len(records)} records written" in log and "0 dropped" in log


@pytest.mark.parametrize("kind", RECORDERS)
def test_rotation_keeps_every_record(kind, procs, tmp_path):
    out = tmp_path / "rot.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, kind, out, *rotate_option(kind, 1))
    payloads = [base64.b64encode(os.urandom(48_000)).decode() for _ in range(40)]

    async def session():
        async with client_through(server_port, proxy_port, "rot", max_size=None) as ws:
            for payload in payloads:
                await ws.send(payload)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == payload
    asyncio.run(session())
    assert procs.stop(proc) == 0
    parts = sorted(tmp_path.glob("rot*.jsonl"), key=lambda p: (len(p.name), p.name))
    assert len(parts) >= 3, parts
    headers, msgs = [], []
    for part in parts:
        capture = CaptureFile(str(part))
        msgs += [r for r in capture.records() if r["rec"] == "msg"]
        headers.append(capture.header)
        assert capture.damage == [] and stat.S_IMODE(os.stat(part).st_mode) == 0o600
    assert [h["part"] for h in headers] == list(range(1, len(parts) + 1))
    assert len({h["recording"] for h in headers}) == 1
    assert [r["n"] for r in msgs] == list(range(80))
    assert [r["text"] for r in msgs] == [p for p in payloads for _ in (0, 1)]


@pytest.mark.parametrize("kind", RECORDERS)
def test_sigkill_leaves_readable_capture(kind, procs, tmp_path):
    out = tmp_path / "killed.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, kind, out)

    async def session():
        async with client_through(server_port, proxy_port, "k") as ws:
            for i in range(50):
                await ws.send(f"before {i}")
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            await asyncio.sleep(1.0)  # idle: the recorder's periodic flush must have written all of it
            assert recorded_texts(out.read_bytes()).count("before 49") == 2
            sending = asyncio.create_task(flood(ws))
            await asyncio.sleep(0.3)
            os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(sending, TIMEOUT)

    async def flood(ws):
        try:
            for i in range(100_000):
                await ws.send(f"during {i}")
                await ws.recv()
        except ConnectionClosed:
            pass
    asyncio.run(session())
    proc.wait(TIMEOUT)
    lines = out.read_bytes().split(b"\n")
    assert len(lines) > 103  # the flood reached the file too
    assert [json.loads(line)["rec"] for line in lines[:1]] == ["header"]
    before = [t for t in recorded_texts(out.read_bytes()) if t.startswith("before")]
    assert before == [f"before {i}" for i in range(50) for _ in (0, 1)]


def recorded_texts(data: bytes) -> list[str]:
    """Texts of the msg records; every complete line must parse (the last one may be cut)."""
    records = [json.loads(line) for line in data.split(b"\n")[:-1]]
    return [r["text"] for r in records if r["rec"] == "msg"]


@pytest.mark.parametrize("kind", RECORDERS)
def test_connection_open_at_stop_gets_a_close_record(kind, procs, tmp_path):
    out = tmp_path / "stop.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, kind, out)

    async def session():
        async with client_through(server_port, proxy_port, "open") as ws:
            await ws.send("still here")
            await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert await asyncio.to_thread(procs.stop, proc) == 0
    asyncio.run(session())
    records = list(CaptureFile(str(out)).records())
    assert [r["rec"] for r in records] == ["open", "msg", "msg", "close"]
    assert (records[-1]["code"], records[-1]["reason"], records[-1]["by"]) == (1006, None, None)
    if kind == "mwtap":
        assert "4 records written" in proc.log_path.read_text() and "0 dropped" in proc.log_path.read_text()


def test_mitmdump_flow_file_and_har_keep_every_message_and_agree_with_the_capture(procs, tmp_path):
    """The recorder leaves mitmproxy's own features whole: -w and hardump hold every message."""
    from mitmproxy import io

    out, flows, har = tmp_path / "cap.jsonl", tmp_path / "flows.mitm", tmp_path / "x.har"
    server_port, proxy_port = free_port(), free_port()
    command = recorder_command("mitmdump", server_port, proxy_port, out) + ["-w", str(flows), "--set",
                                                                           f"hardump={har}"]
    proc = procs.start(command, "mitmdump")
    wait_port(proxy_port, proc=proc)

    async def session():
        async with serve(server_handler, "127.0.0.1", server_port, ping_interval=None):
            for path in ("one", "two"):
                async with connect(f"ws://127.0.0.1:{proxy_port}/{path}", proxy=None, ping_interval=None) as ws:
                    for i in range(30):
                        await ws.send(f"{path} {i}" if i % 3 else f"{path} {i}".encode())
                        await asyncio.wait_for(ws.recv(), TIMEOUT)
    asyncio.run(session())
    assert procs.stop(proc) == 0, proc.log_path.read_text()
    records = list(CaptureFile(str(out)).records())
    paths = by_path(records)
    captured = {path: [(r["dir"] == "c2s", payload_bytes(r)) for r in records
                       if r["rec"] == "msg" and paths[r["conn"]] == path] for path in ("one", "two")}
    assert [len(frames) for frames in captured.values()] == [60, 60]
    with flows.open("rb") as f:
        in_flows = {flow.request.path.strip("/"): [(m.from_client, m.content) for m in flow.websocket.messages]
                    for flow in io.FlowReader(f).stream()}
    assert in_flows == captured
    entries = json.loads(har.read_text())["log"]["entries"]
    in_har = {e["request"]["url"].rsplit("/", 1)[1]: [
        (m["type"] == "send", m["data"].encode() if m["opcode"] == 1 else base64.b64decode(m["data"]))
        for m in e["_webSocketMessages"]] for e in entries}
    assert in_har == captured
