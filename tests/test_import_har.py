"""A HAR in the shape Chrome DevTools saves (`_webSocketMessages` with opcode 1/2, `time` in epoch
seconds), read by content whatever its name, redacted like the recorder, and truncated."""

from __future__ import annotations

import base64
import gzip
import heapq
import json
import subprocess
import tracemalloc
import zlib
from datetime import datetime

import pytest

import analysis
from analysis.capture import CaptureError
from analysis.imports import detect, open_capture
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
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(other) in out.stderr


def write_har(path, entries: int, messages: int, padding: int, *, apart: float = 10.0) -> None:
    """`entries` WebSocket entries (`apart` seconds apart, in file order), each with `messages` text
    messages 0.01 s apart, one a line (indent) so that damage has a line to name."""
    pad = "x" * padding
    har = {"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "entries": [
        entry(WS_URL, 101, [message("send" if j % 2 == 0 else "receive", T0 + i * apart + 0.01 * (j + 1),
                                    {"kind": "req", "id": f"{i}-{j}", "pad": pad}) for j in range(messages)],
              started=T0 + i * apart)
        for i in range(entries)]}}
    path.write_text(json.dumps(har, indent=1))


def test_a_har_is_read_entry_by_entry_not_whole(tmp_path):
    path = tmp_path / "many.har"
    write_har(path, entries=400, messages=25, padding=1000)
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        capture = open_capture(str(path))
        records = capture.records()  # the first pass, which fills in the header
        indexing = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        seen = [(rec["t"], rec["rec"]) for rec in records]
        merging = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    times = [t for t, _ in seen]
    assert len(seen) == 400 * 26 and [kind for _, kind in seen].count("open") == 400 and times == sorted(times)
    assert capture.damage == [] and capture.header["source"] == "har"
    # read whole: a 28 MB peak (the text, the JSON, the records)
    assert indexing < 4_000_000 and merging < 4_000_000, f"peaks {indexing:,} and {merging:,} bytes"


def mixed_har() -> bytes:
    """Connections open at the same time with messages at equal times, entries out of time order, a
    refused upgrade, a page load, non-ASCII and invalid UTF-8 text, a BOM, an entry larger than what
    is read at a time, and ~2 MB in all (so that entries straddle what is read at a time)."""
    entries = []
    for i in range(60):
        started = T0 + (i * 7 % 60) * 0.02  # out of file order; messages of several at equal times
        texts = [f"{i}.{j} h\u00e9llo \U0001F600 ~BAD~ " + "y" * 3000 for j in range(10)]
        entries.append(entry(WS_URL + f"&c={i}", 101, [
            {"type": "send" if j % 3 else "receive", "time": round(started + 0.02 * (j % 4), 2), "opcode": 1, "data": t}
            for j, t in enumerate(texts)], started=started))
    entries.insert(5, entry("https://va.msg.liveperson.net/index.html", 200, None, upgrade=False))
    entries.insert(9, entry("wss://va.msg.liveperson.net/forbidden", 403, None, started=T0 + 1.0))
    entries.insert(20, entry(WS_URL + "&c=big", 101, [message("send", T0 + 0.5, "z" * 600_000)], started=T0 + 0.4))
    har = {"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "entries": entries}}
    return b"\xef\xbb\xbf" + json.dumps(har, indent=1, ensure_ascii=False).encode().replace(b"~BAD~", b"\xff\xfe")


def reference(data: bytes) -> list[tuple]:
    """(t, kind, url or direction, text) of every record, from the whole file read at once and merged
    by time as a live capture orders them (connections in file order at equal times)."""
    connections = []
    for found in json.loads(data.decode("utf-8-sig", "replace"))["log"]["entries"]:
        url, started = found["request"]["url"], datetime.fromisoformat(found["startedDateTime"]).timestamp()
        if found["response"]["status"] != 101:
            if url.startswith("wss:"):
                connections.append([(started, "refused", url, None)])
            continue
        msgs = [(m["time"], "msg", "c2s" if m["type"] == "send" else "s2c", m["data"])
                for m in found["_webSocketMessages"]]
        opened = min(started + found["time"] / 1000, msgs[0][0])
        connections.append([(opened, "open", url, None), *msgs])
    return list(heapq.merge(*connections, key=lambda r: r[0]))


def summary(rec: dict) -> tuple:
    if rec["rec"] == "msg":
        return rec["t"], "msg", rec["dir"], rec["text"]
    return rec["t"], rec["rec"], rec["url"], None


@pytest.mark.parametrize("name", ["mixed.har", "mixed.har.gz"])
def test_records_and_their_order_are_those_of_the_whole_file(tmp_path, name):
    data = mixed_har()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    capture = open_capture(str(path))
    records = capture.records()
    assert capture.header["source"] == "har" and capture.header["t"] == T0  # known before the first record
    got = [summary(rec) for rec in records]
    assert got == reference(data) and len(got) == 60 * 11 + 2 + 1  # and the refused upgrade
    assert "h\u00e9llo \U0001F600 \ufffd\ufffd" in got[1][3]  # invalid UTF-8 replaced, as before
    assert capture.damage == []


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damage_names_its_line_and_byte_and_every_entry_before_it_is_kept(tmp_path, damage):
    path = tmp_path / "damaged.har"
    write_har(path, entries=40, messages=30, padding=1000)  # ~1.3 MB, entry 30 well past the first read
    data = path.read_bytes()
    if damage == "truncated":
        at = data.index(b"30-15") + 100  # in the padding of entry 30's 16th message
        path.write_bytes(data[:at])
        offset = data.rindex(b'"data": ', 0, at) + len(b'"data": ')  # where the cut string starts
        problem = "truncated (file ends early)"
    else:
        at = offset = data.index(b'"time"', data.index(b"29-29"))  # in entry 30, where its second key starts
        path.write_bytes(data[:at] + b"@@" + data[at:])
        problem = "invalid JSON (Expecting property name enclosed in double quotes)"
    records = list((capture := open_capture(str(path))).records())
    assert sum(r["rec"] == "open" for r in records) == 30 and len(records) == 30 * 31
    assert [(d.line, d.problem) for d in capture.damage] == [
        (data[:at].count(b"\n") + 1, f"HAR damaged at byte {offset}: {problem}; read 30 connection(s) before it")]


def test_an_unparseable_url_does_not_stop_the_import(tmp_path):
    path = tmp_path / "bracket.har"
    har = chrome_har()
    har["log"]["entries"][1]["request"]["url"] = "wss://[va.msg.liveperson.net/ws_api"  # urlsplit: ValueError
    path.write_text(json.dumps(har))
    records = list((capture := open_capture(str(path))).records())
    opened = [r for r in records if r["rec"] == "open"]
    assert [r["url"] for r in opened] == ["wss://[va.msg.liveperson.net/ws_api", WS_URL]
    assert opened[0]["tls"] and len(records) == 1 + 4 + 1 + 2 and capture.damage == []
    # ... and what reads the url later (identity, the mock's URLs) takes it too, imported or converted
    converted = tmp_path / "bracket.jsonl"
    mwtap = str(BIN / "mwtap")
    assert subprocess.run([mwtap, "convert", str(path), "-o", str(converted)], timeout=60).returncode == 0
    for source in (path, converted):
        done = subprocess.run([mwtap, "analyze", str(source), "--format", "json"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert [c["url"] for c in json.loads(done.stdout)["connections"]][0] == "wss://[va.msg.liveperson.net/ws_api"


def test_a_damaged_har_gz_keeps_every_entry_before_the_damage(tmp_path):
    plain = tmp_path / "session.har"
    write_har(plain, entries=40, messages=30, padding=1000)
    compressed = gzip.compress(plain.read_bytes())
    cut = tmp_path / "cut.har.gz"
    cut.write_bytes(compressed[:len(compressed) * 2 // 3])
    decompressible = zlib.decompressobj(wbits=31).decompress(cut.read_bytes())
    whole_entries = decompressible.count(b'"startedDateTime"') - 1  # the last one is cut
    records = list((capture := open_capture(str(cut))).records())
    assert 10 < whole_entries < 40 and sum(r["rec"] == "open" for r in records) == whole_entries
    [damage] = capture.damage
    assert "compressed stream damaged" in damage.problem and f"read {whole_entries} connection(s)" in damage.problem

    crc = tmp_path / "crc.har.gz"  # the document whole, the stream's trailer not
    crc.write_bytes(compressed[:-8] + bytes(8))
    records = list((capture := open_capture(str(crc))).records())
    assert sum(r["rec"] == "open" for r in records) == 40
    assert ["compressed stream damaged" in d.problem for d in capture.damage] == [True]


def test_an_integer_too_long_for_json_is_damage_not_a_crash(tmp_path):
    har = chrome_har()
    har["log"]["entries"][3]["time"] = "TOO_LONG"
    path = tmp_path / "long.har"
    path.write_text(json.dumps(har).replace('"TOO_LONG"', "9" * 5000))
    done = subprocess.run([str(BIN / "mwtap"), "analyze", str(path), "--format", "json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "invalid JSON (an integer of over 4,300 digits); read 2 connection(s)" in done.stderr
    read = json.loads(done.stdout)["capture"]  # the entries before the damage: an upgrade and a refused one
    assert (read["connections"], read["refused"], read["frames"]) == (1, 1, 4)


def test_a_har_gz_leaves_no_token_in_clear_on_disk(tmp_path, monkeypatch):
    """A .har.gz's connections wait for the merge in a temporary file: redacted records, not the HAR."""
    from analysis.imports import har as har_module
    copies = []

    def visible_copy():
        copies.append(open(tmp_path / f"copy{len(copies)}", "w+b"))
        return copies[-1]

    monkeypatch.setattr(har_module.tempfile, "TemporaryFile", visible_copy)
    path = tmp_path / "session.har.gz"
    path.write_bytes(gzip.compress(json.dumps(chrome_har()).encode()))
    records = list(open_capture(str(path)).records())
    assert len(copies) == 1 and sum(r["rec"] == "open" for r in records) == 2
    written = (tmp_path / "copy0").read_bytes()
    assert written and JWT.encode() not in written and marker(JWT).encode() in written
