"""Capture records built from imported traffic, exactly as the recorder builds them: `ws://` URLs,
`[name, value]` header pairs, and every secret redacted (docs/capture-format.md)."""

from __future__ import annotations

import hashlib
import heapq
from importlib.metadata import PackageNotFoundError, version
from typing import Iterable, Iterator

from analysis.capture import CLOSE, OPEN, REFUSED, header_record, ws_url
from analysis.redact import redact_header_value, redact_headers, redact_text, redact_url, redaction_info


def header_value(pairs: list[list[str]], name: str) -> str | None:
    name = name.lower()
    return next((value for key, value in pairs if key.lower() == name), None)


def is_upgrade(pairs: list[list[str]]) -> bool:
    return "websocket" in (header_value(pairs, "Upgrade") or "").lower()


def open_record(conn: str, t: float, *, url: str, client: str | None, server: str | None, t_request: float | None,
                request_headers: list[list[str]], status: int | None, response_headers: list[list[str]],
                tls: bool) -> dict:
    protocol = header_value(response_headers, "Sec-WebSocket-Protocol")
    return {
        "rec": OPEN, "t": t, "conn": conn, "url": redact_url(ws_url(url)), "client": client, "server": server,
        "t_request": t_request, "request_headers": redact_headers(request_headers), "status": status,
        "response_headers": redact_headers(response_headers),
        "extensions": header_value(response_headers, "Sec-WebSocket-Extensions"),
        "subprotocol": redact_header_value("Sec-WebSocket-Protocol", protocol) if protocol else None,
        "tls": tls,
    }


def refused_record(conn: str, t: float, *, url: str, client: str | None, status: int | None,
                   error: str | None) -> dict:
    return {"rec": REFUSED, "t": t, "conn": conn, "url": redact_url(ws_url(url)), "client": client,
            "status": status, "error": error}


def close_record(conn: str, t: float, code: int | None, reason: str | None, by: str | None) -> dict:
    return {"rec": CLOSE, "t": t, "conn": conn, "code": code,
            "reason": redact_text(reason) if reason else reason, "by": by}


def import_header(t: float, *, source: str, mitmproxy_version: str | None, recording: str) -> dict:
    try:
        mwtap_version = version("mwtap")
    except PackageNotFoundError:
        mwtap_version = None
    return header_record(t, mwtap_version=mwtap_version, mitmproxy_version=mitmproxy_version,
                         redaction=redaction_info(True), recording_id=recording, source=source)


def recording_id(source: str, path: str) -> str:
    """A stable recording id for an imported file: the same input always converts to the same capture."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 16))
        f.seek(0, 2)
        digest.update(str(f.tell()).encode())
    return f"{source}-{digest.hexdigest()[:24]}"


def connection_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def by_time(connections: Iterable[list[dict]]) -> Iterator[dict]:
    """Records of all connections in time order, each connection's own order kept (like a live capture)."""
    return heapq.merge(*connections, key=lambda rec: rec["t"])
