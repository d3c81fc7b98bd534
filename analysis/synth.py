"""Building captures from scripted traffic (tests, benchmarks, examples), with the capture
builders of `analysis.capture`, so they are exactly what the recorder writes."""

from __future__ import annotations

import gzip
from typing import IO, Any

import orjson

from analysis.capture import CLOSE, OPEN, PING, PONG, dumps, header_record, message_record
from analysis.redact import marker

T0 = 1_795_544_000.0
URL = "ws://127.0.0.1:9000/ws_api/account/123/messaging/consumer?v=3"


class CaptureBuilder:
    """Appends records in call order; `out` (a binary file) receives them as they are built,
    otherwise they are kept in `records`."""

    def __init__(self, out: IO[bytes] | None = None, *, t0: float = T0, recording: str = "synthetic",
                 part: int = 1, redaction: bool = True):
        self.out = out
        self.records: list[dict] = []
        self.counters: dict[str, int] = {}
        self._add(header_record(t0, mwtap_version="0.1.0", mitmproxy_version=None,
                                redaction={"enabled": redaction}, recording_id=recording, part=part,
                                source="synthetic"))

    def _add(self, rec: dict) -> dict:
        if self.out is not None:
            self.out.write(dumps(rec))
        else:
            self.records.append(rec)
        return rec

    def open(self, conn: str, t: float, *, token: str | None = "token-1", client: str = "127.0.0.1:50000",
             url: str = URL) -> dict:
        """A connection; `token` goes in the Authorization header as its redaction marker (None: no header,
        the client authenticates with InitConnection)."""
        headers = [["Host", "127.0.0.1:9000"]]
        if token is not None:
            headers.append(["Authorization", f"jwt {marker(token)}"])
        self.counters[conn] = 0
        return self._add({"rec": OPEN, "t": t, "conn": conn, "url": url, "client": client, "server": "127.0.0.1:9000",
                          "t_request": t, "request_headers": headers, "status": 101, "response_headers": [],
                          "extensions": None, "subprotocol": None, "tls": False})

    def msg(self, conn: str, t: float, payload: Any, *, from_client: bool, binary: bool = False) -> dict:
        """A message: a dict is JSON-encoded, str and bytes are sent as they are."""
        if isinstance(payload, (dict, list)):
            payload = orjson.dumps(payload)
        elif isinstance(payload, str):
            payload = payload.encode()
        n = self.counters.get(conn, 0)
        self.counters[conn] = n + 1
        return self._add(message_record(conn, t, n, from_client, not binary, payload))

    def c2s(self, conn: str, t: float, payload: Any, **kw) -> dict:
        return self.msg(conn, t, payload, from_client=True, **kw)

    def s2c(self, conn: str, t: float, payload: Any, **kw) -> dict:
        return self.msg(conn, t, payload, from_client=False, **kw)

    def ping(self, conn: str, t: float, *, from_client: bool = True, pong: bool = False) -> dict:
        return self._add({"rec": PONG if pong else PING, "t": t, "conn": conn,
                          "dir": "c2s" if from_client else "s2c", "payload": "b'keepalive'"})

    def close(self, conn: str, t: float, code: int = 1000, reason: str | None = "", by: str = "client") -> dict:
        return self._add({"rec": CLOSE, "t": t, "conn": conn, "code": code, "reason": reason, "by": by})

    def record(self, rec: dict) -> dict:
        return self._add(rec)

    def write(self, path, *, gz: bool = False) -> None:
        data = b"".join(dumps(r) for r in self.records)
        with (gzip.open if gz else open)(path, "wb") as f:
            f.write(data)
