"""A HAR in the shape Chrome DevTools saves (`_webSocketMessages` with opcode 1/2, `time` in epoch
seconds), read by content whatever its name, redacted like the recorder, and truncated."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

import analysis
from analysis.capture import CaptureError
from analysis.imports import detect
from analysis.redact import fingerprint, marker
from conftest import BIN

JWT = ("eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(b'{"sub":"chrome-user-7"}').decode().rstrip("=")
       + ".c2lnbmF0dXJlLXNpZ25hdHVyZQ")
T0 = 1_795_600_000.0
WS_URL = "wss://va.msg.liveperson.net/ws_api/account/123/messaging/consumer?v=3"


def entry(url: str, status: int, messages: list | None, *, started: float = T0, upgrade: bool = True) -> dict:
    headers = [{"name": "Host", "value": "va.msg.liveperson.net"}, {"name": "Authorization", "value": f"jwt {JWT}"}]
    if upgrade:
        headers.append({"name": "Upgrade", "value": "websocket"})
    found = {"startedDateTime": _iso(started), "time": 12.5,
             "request": {"method": "GET", "url": url, "httpVersion": "HTTP/1.1", "headers": headers},
             "response": {"status": status, "statusText": "", "httpVersion": "HTTP/1.1",
                          "headers": [{"name": "Sec-WebSocket-Extensions", "value": "permessage-deflate"}]},
             "serverIPAddress": "192.0.2.10", "timings": {"send": 1, "wait": 10, "receive": 1.5}}
    if messages is not None:
        found["_resourceType"] = "websocket"
        found["_webSocketMessages"] = messages
    return found


def _iso(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def message(kind: str, t: float, payload, opcode: int = 1) -> dict:
    data = json.dumps(payload) if opcode == 1 else base64.b64encode(payload).decode()
    return {"type": kind, "time": t, "opcode": opcode, "data": data}


def chrome_har() -> dict:
    ws = [
        message("send", T0 + 0.1, {"kind": "req", "id": 1, "type": "GetClock"}),
        message("receive", T0 + 0.15, {"kind": "resp", "reqId": "1", "code": 200, "type": "GetClockResponse",
                                        "body": {"currentTime": 1}}),
        message("send", T0 + 0.2, {"kind": "req", "id": "2", "type": "InitConnection", "headers": [
            {"type": ".ams.headers.ConsumerAuthentication", "jwt": JWT}]}),
        message("receive", T0 + 0.3, b"\x00\x01binary", opcode=2),
    ]
    return {"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "pages": [],
                    "entries": [
                        entry("https://va.msg.liveperson.net/index.html", 200, None, upgrade=False),
                        entry(WS_URL, 101, ws, started=T0),
                        entry("wss://va.msg.liveperson.net/forbidden", 403, None, started=T0 + 1),
                        entry(WS_URL, 101, [message("send", T0 + 2.1, {"kind": "req", "id": "9",
                                                                        "type": "GetClock"})], started=T0 + 2),
                    ]}}


@pytest.fixture
def har_file(tmp_path):
    path = tmp_path / "session.json"  # not named .har: detected by content
    path.write_text(json.dumps(chrome_har(), indent=2))
    return path


def test_chrome_har_becomes_connections_messages_and_a_refused_upgrade(har_file):
    assert detect(str(har_file)) == "har"
    cap = analysis.load(har_file)
    conns = cap.connections.set_index("state")
    assert sorted(cap.connections.state) == ["open-at-end", "open-at-end", "refused"]
    assert conns.loc["refused", "refused_status"] == 403
    ws = cap.connections[cap.connections.state == "open-at-end"].iloc[0]
    assert ws.url == WS_URL and ws.token == fingerprint(JWT) and ws.frames_c2s == 2 and ws.frames_s2c == 2
    frames = cap.frames[cap.frames.conn == ws.conn]
    assert list(frames.op) == ["text", "text", "text", "binary"] and list(frames.dir) == ["c2s", "s2c", "c2s", "s2c"]
    assert list(frames.type[:3]) == ["GetClock", "GetClockResponse", "InitConnection"]
    assert list(frames.id[:1]) == ["1"] and frames.t.iloc[0].timestamp() == pytest.approx(T0 + 0.1)
    assert JWT not in "".join(frames.text.dropna()) and marker(JWT) in frames.text.iloc[2]
    answered = cap.pairs[cap.pairs.status == "answered"]
    assert list(answered.type) == ["GetClock"] and answered.latency_ms.iloc[0] == pytest.approx(50, abs=1)


def test_har_convert_keeps_binary_payloads_and_flags_redaction(har_file, tmp_path):
    out = tmp_path / "cap.jsonl"
    run = subprocess.run([str(BIN / "mwtap"), "convert", str(har_file), "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["source"] == "har" and records[0]["mitmproxy"] is None
    msgs = [r for r in records if r["rec"] == "msg"]
    assert base64.b64decode(msgs[3]["b64"]) == b"\x00\x01binary" and msgs[3]["op"] == "binary"
    assert [r.get("redacted", False) for r in msgs[:3]] == [False, False, True]
    assert JWT not in out.read_text()
    assert not any(r["rec"] == "close" for r in records)  # HAR has no close: none is invented


def test_truncated_har_keeps_the_entries_before_the_damage(har_file, tmp_path):
    text = har_file.read_text()
    cut = tmp_path / "cut.har"
    cut.write_text(text[:text.index('"wss://va.msg.liveperson.net/forbidden"') + 20])
    cap = analysis.load(cut)
    assert list(cap.connections.state) == ["open-at-end"] and len(cap.frames) == 4
    [damage] = cap.damage
    assert damage.path == str(cut) and damage.line == cut.read_text().count("\n") + 1  # the cut line
    assert "truncated" in damage.problem
    out = subprocess.run([str(BIN / "mwtap"), "analyze", str(cut)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.startswith(f"{cut}:{damage.line}: HAR damaged")
    assert "Traceback" not in out.stderr


def test_json_that_is_neither_har_nor_capture_is_refused_in_one_line(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}\n')
    with pytest.raises(CaptureError, match="not an mwtap capture"):
        analysis.load(other)
    out = subprocess.run([str(BIN / "mwtap"), "analyze", str(other)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and str(other) in out.stderr
