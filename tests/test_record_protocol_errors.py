"""Closes mitmproxy makes when a peer breaks the WebSocket protocol: the `close` record says the
proxy closed and which peer broke the protocol. Raw-socket clients send hand-built frames through
the real recorder (`mwtap record` and `mitmdump -s`) to a real websockets server."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import pytest
import wsproto
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from wsproto.events import CloseConnection

from analysis.capture import CaptureFile
from analysis.imports import open_capture
from analysis.protocol_errors import failed_by_proxy
from test_record_e2e import RECORDERS, by_path, start_recorder

TIMEOUT = 20


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False, masked: bool = True,
          length_bytes: int = 0) -> bytes:
    """One WebSocket frame as RFC 6455 lays it out; `length_bytes` 2 forces the 16-bit length form."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if length_bytes == 2:
        head += bytes([mask_bit | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([mask_bit | len(payload)])
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"", masked: bool = True) -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason, masked=masked)


# What a client sends after one good message, and the close mitmproxy answers it with (code, reason).
CLIENT_FAULTS = {
    "code5000": (close_frame(5000), 1002, "CLOSE with invalid code"),
    "bad-utf8": (frame(0x1, b"ok\xff\xfe"), 1007, None),  # reason: Python's UnicodeDecodeError text
    "opcode3": (frame(0x3, b"x"), 1002, "Invalid opcode 0x3"),
    "rsv1": (frame(0x1, b"x", rsv1=True), 1002, "Reserved bit set unexpectedly"),
    "unmasked": (frame(0x1, b"x", masked=False), 1002, "server received unexpected unmasked frame"),
    "local-code": (close_frame(1006), 1002, "remote CLOSE with local-only reason"),
    "long-ping": (frame(0x9, b"p" * 126, length_bytes=2), 1002, "Control frame with payload len > 125"),
    "continuation": (frame(0x0, b"x"), 1002, "unexpected CONTINUATION"),
}
# A client's own, valid close frame with the protocol-error code: the client closed, not the proxy.
OWN_1002 = close_frame(1002, b"my own protocol error")


@pytest.mark.parametrize("data", [fault for fault, _, _ in CLIENT_FAULTS.values()] + [
    frame(0x8, b"\x03"), close_frame(1016),
    close_frame(1000, b"\xff"), frame(0x9, b"x", fin=False), frame(0x1, b"x" * 10, length_bytes=2),
    frame(0x1, b"a", fin=False) + frame(0x1, b"b"),
])
def test_every_failure_the_installed_wsproto_gives_is_recognised(data):
    """wsproto (the one mitmproxy runs) fed a faulty frame as a server: its close is a proxy failure."""
    connection = wsproto.Connection(wsproto.ConnectionType.SERVER)
    connection.receive_data(frame(0x1, b"fine") + data)
    closes = [e for e in connection.events() if isinstance(e, CloseConnection)]
    assert len(closes) == 1 and failed_by_proxy(closes[0].code, closes[0].reason), closes


def test_a_peers_own_close_is_not_a_proxy_failure():
    assert not failed_by_proxy(1002, "my own protocol error")
    assert not failed_by_proxy(1000, "CLOSE with invalid code")  # a proxy failure is 1002 or 1007
    assert not failed_by_proxy(1006, None)


SERVER_FAULT = "send a fault"


async def server_handler(ws) -> None:
    """Echoes; asked for a fault, sends a close frame with the invalid code 5000 itself."""
    try:
        async for message in ws:
            if message == SERVER_FAULT:
                ws.transport.write(close_frame(5000, masked=False))
                return
            await ws.send(message)
    except ConnectionClosed:
        pass


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    return first & 0x0F, await reader.readexactly(length)


async def raw_client(proxy_port: int, path: str, fault: bytes) -> tuple[int, str]:
    """Upgrade by hand, exchange one message, send `fault`; the close code and reason the proxy answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{proxy_port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert response.startswith(b"HTTP/1.1 101"), response
    writer.write(frame(0x1, b"hello"))
    assert await asyncio.wait_for(read_frame(reader), TIMEOUT) == (0x1, b"hello")
    writer.write(fault)
    opcode, payload = await asyncio.wait_for(read_frame(reader), TIMEOUT)
    writer.close()
    assert opcode == 0x8
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


@pytest.mark.parametrize("kind", RECORDERS)
def test_close_records_say_the_proxy_closed_and_which_peer_broke_the_protocol(kind, procs, tmp_path):
    out = tmp_path / "faults.jsonl"
    proc, server_port, proxy_port = start_recorder(procs, kind, out)
    cases = {**{path: fault for path, (fault, _, _) in CLIENT_FAULTS.items()}, "own-1002": OWN_1002,
             "server-fault": frame(0x1, SERVER_FAULT.encode())}

    async def session() -> dict[str, tuple[int, str]]:
        async with serve(server_handler, "127.0.0.1", server_port, ping_interval=None, compression=None):
            return {path: await raw_client(proxy_port, path, fault) for path, fault in cases.items()}
    answered = asyncio.run(session())
    assert procs.stop(proc) == 0
    records = list(CaptureFile(str(out)).records())
    paths = by_path(records)
    closes = {paths[r["conn"]]: r for r in records if r["rec"] == "close"}
    assert sorted(closes) == sorted(cases)
    for path, (_, code, reason) in CLIENT_FAULTS.items():
        close = closes[path]
        assert (close["code"], close["by"], close["protocol_error_by"]) == (code, "proxy", "client"), close
        assert answered[path] == (code, close["reason"])  # the client got the proxy's close, recorded as sent
        if reason is not None:
            assert close["reason"] == reason
    assert "'utf-8' codec can't decode" in closes["bad-utf8"]["reason"]
    server = closes["server-fault"]
    assert (server["code"], server["reason"], server["by"], server["protocol_error_by"]) == \
        (1002, "CLOSE with invalid code", "proxy", "server")
    own = closes["own-1002"]
    assert (own["code"], own["reason"], own["by"]) == (1002, "my own protocol error", "client")
    assert "protocol_error_by" not in own
    texts = [r.get("text") for r in records if r["rec"] == "msg"]
    assert texts == ["hello", "hello"] * (len(cases) - 1) + ["hello", "hello", SERVER_FAULT]  # bad UTF-8: no msg


def test_a_flow_file_import_says_the_proxy_closed_too(procs, tmp_path):
    """mitmdump -w keeps mitmproxy's own view (the offending peer as closer); `mwtap convert` and
    `mwtap analyze` of the flow file tell the proxy's close from the peer's, like the live capture."""
    flows = tmp_path / "faults.mitm"
    proc, server_port, proxy_port = start_recorder(procs, "mitmdump", tmp_path / "faults.jsonl", f"save_stream_file={flows}")

    async def session() -> None:
        async with serve(server_handler, "127.0.0.1", server_port, ping_interval=None, compression=None):
            await raw_client(proxy_port, "code5000", CLIENT_FAULTS["code5000"][0])
            await raw_client(proxy_port, "own-1002", OWN_1002)
    asyncio.run(session())
    assert procs.stop(proc) == 0
    records = list(open_capture(str(flows)).records())
    paths = by_path(records)
    closes = {paths[r["conn"]]: r for r in records if r["rec"] == "close"}
    assert (closes["code5000"]["by"], closes["code5000"]["protocol_error_by"]) == ("proxy", "client")
    assert closes["own-1002"]["by"] == "client" and "protocol_error_by" not in closes["own-1002"]
