"""Capture records built from imported traffic, exactly as the recorder builds them: `ws://` URLs,
`[name, value]` header pairs, and every secret redacted (docs/capture-format.md)."""

from __future__ import annotations

import hashlib
import heapq
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Iterable, Iterator, TypeVar

from analysis.capture import CLOSE, OPEN, REFUSED, header_record, ws_url
from analysis.redact import redact_header_value, redact_headers, redact_text, redact_url, redaction_info

Where = TypeVar("Where")


def header_value(pairs: list[list[str]], name: str) -> str | None:
    name = name.lower()
    return next((value for key, value in pairs if key.lower() == name), None)


def is_upgrade(pairs: list[list[str]]) -> bool:
    return "websocket" in (header_value(pairs, "Upgrade") or "").lower()


def utf8(text: str | None) -> str | None:
    """`text` as UTF-8 can hold it (a capture is UTF-8): a lone surrogate, which a HAR's JSON can
    escape, is written as its escape (`\\ud800`)."""
    return text if text is None or text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _utf8_pairs(pairs: list[list[str]]) -> list[list[str]]:
    return [[utf8(name), utf8(value)] for name, value in pairs]


def open_record(conn: str, t: float, *, url: str, client: str | None, server: str | None, t_request: float | None,
                request_headers: list[list[str]], status: int | None, response_headers: list[list[str]],
                tls: bool) -> dict:
    url, client, server = utf8(url), utf8(client), utf8(server)
    request_headers, response_headers = _utf8_pairs(request_headers), _utf8_pairs(response_headers)
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
    return {"rec": REFUSED, "t": t, "conn": conn, "url": redact_url(ws_url(utf8(url))), "client": utf8(client),
            "status": status, "error": utf8(error)}


def close_record(conn: str, t: float, code: int | None, reason: str | None, sides: dict) -> dict:
    """`sides`: `by` (and `protocol_error_by`), as `analysis.protocol_errors.close_sides` gives them."""
    return {"rec": CLOSE, "t": t, "conn": conn, "code": code,
            "reason": redact_text(utf8(reason)) if reason else reason, **sides}


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
    return hashlib.sha256("|".join(map(str, parts)).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def by_time(index: Iterable[tuple[float, int, Where]], load: Callable[[Where], Iterable[dict]]) -> Iterator[dict]:
    """Records of all connections in time order, each connection's own order kept and connections in
    file order at equal times (like a live capture, and as `heapq.merge` of them all would give). Each
    connection is read (`load(where)`) only when the merge reaches its first record, so memory follows
    the connections open at a time.

    `index`: (time of a connection's first record, its position in the file, where it is), sorted;
    `load(where)` gives that connection's records (at least one)."""
    heads: list[tuple[float, int, dict, Iterator[dict]]] = []  # (t, connection's position, record, rest)
    waiting = iter(index)
    upcoming = next(waiting, None)
    while heads or upcoming is not None:
        while upcoming is not None and (not heads or upcoming[0] <= heads[0][0]):
            _, order, where = upcoming
            records = iter(load(where))
            first = next(records)
            heapq.heappush(heads, (first["t"], order, first, records))
            upcoming = next(waiting, None)
        _, order, record, records = heads[0]
        yield record
        following = next(records, None)
        if following is None:
            heapq.heappop(heads)
        else:
            heapq.heapreplace(heads, (following["t"], order, following, records))
