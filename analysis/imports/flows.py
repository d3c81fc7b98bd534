"""mitmproxy flow files (`mitmdump -w`, anything `mitmproxy.io.FlowReader` reads) as capture records.

WebSocket flows become connections with their messages and close (code, reason, side); upgrades that
did not become WebSockets become `refused` records. Flow files have no pings. Needs mitmproxy, which
is imported only here, only when a flow file is read.

Two passes, so that memory follows the connections open at a time, not the file: the first notes
where each flow starts in the file and when it opened; the second merges the flows' records by time,
reading each flow again (by seeking to it) only when the merge reaches its opening.
"""

from __future__ import annotations

from typing import Iterator

from analysis.capture import CaptureError, Damage, host_port, request_url
from analysis.imports.records import (by_time, close_record, import_header, is_upgrade, open_record,
                                      recording_id, refused_record)
from analysis.protocol_errors import close_sides
from analysis.redact import redacted_message


def read_flows(path: str, damage: list[Damage]) -> tuple[dict, Iterator[dict]]:
    """(header, records of all connections in time order) of a flow file; damage (truncation) is
    appended to `damage`. The records are read while they are iterated."""
    try:
        from mitmproxy.version import VERSION
    except ImportError:
        raise CaptureError(f"{path}: reading mitmproxy flow files needs mitmproxy (pip install mitmproxy)") from None
    index = _index(path, damage)
    start = min((opened for opened, _, _ in index), default=0.0)
    return (import_header(start, source="flows", mitmproxy_version=VERSION, recording=recording_id("flows", path)),
            _merged(path, index))


def _index(path: str, damage: list[Damage]) -> list[tuple[float, int, tuple[int, int | None]]]:
    """(time of the first record, position in the file, (byte offset, byte offset of its handshake
    flow or None)) of every flow that gives records, in time order (file order among equal times, as
    a merge of the flows in file order has it).

    Files of mitmproxy before 7.0 (flow format < 12) keep a WebSocket in a flow of its own after its
    handshake flow; mitmproxy's reader joins the two when it reads the WebSocket flow right after
    having read the handshake, so the handshake's offset is kept to read it again first."""
    from mitmproxy import io

    index = []
    handshakes: dict[str, int] = {}  # old files: id of a handshake flow -> its offset, until its WebSocket comes
    with open(path, "rb") as f:
        flows, position = 0, 0
        try:
            for flow in io.FlowReader(f).stream():
                if _old_handshake(flow):
                    handshakes[flow.id] = position
                opened = _opened(flow)
                if opened is not None:
                    migrated = flow.websocket is not None and "duplicated" in flow.metadata
                    index.append((opened, flows, (position, handshakes.pop(flow.id, None) if migrated else None)))
                flows += 1
                position = f.tell()
        except Exception as e:  # on a damaged flow mitmproxy's reader raises KeyError, AttributeError … too
            if flows == 0:
                raise CaptureError(f"{path}: not a flow file mitmproxy reads ({type(e).__name__}: {e})") from None
            damage.append(Damage(path, flows + 1, f"flow file damaged at byte {position} ({e}); "
                                                  f"read {flows} flow(s) before it"))
    index.sort()
    return index


def _merged(path: str, index: list[tuple[float, int, tuple[int, int | None]]]) -> Iterator[dict]:
    """The flows' records merged by time, each flow read when the merge reaches its first record."""
    from mitmproxy import io

    with open(path, "rb") as f:
        def read_at(offset: int):
            f.seek(offset)
            return next(io.FlowReader(f).stream())

        def flow_at(where: tuple[int, int | None]) -> list[dict]:
            offset, handshake = where
            if handshake is not None:
                read_at(handshake)  # mitmproxy keeps it, to join it with the WebSocket flow read next
            return _records(read_at(offset))

        yield from by_time(index, flow_at)


def _pairs(headers) -> list[list[str]]:
    return [[name.decode("utf-8", "backslashreplace"), value.decode("utf-8", "backslashreplace")]
            for name, value in headers.fields]


def _old_handshake(flow) -> bool:
    """A successful upgrade without its WebSocket: in files of mitmproxy before 7.0 the messages
    are in a flow of their own, which mitmproxy's reader turns into a copy of this one."""
    return flow.websocket is None and flow.response is not None and flow.response.status_code == 101


def _opened(flow) -> float | None:
    """The time of a flow's first record; None for a flow that gives none (not a WebSocket upgrade,
    or an old file's handshake whose WebSocket flow gives the connection)."""
    from mitmproxy import http

    if not isinstance(flow, http.HTTPFlow):
        return None
    request, response, ws = flow.request, flow.response, flow.websocket
    if ws is not None:  # a migrated WebSocket whose handshake flow is missing has no response
        first_message = ws.messages[0].timestamp if ws.messages else None
        return (response.timestamp_end if response else None) or request.timestamp_start or first_message
    if not is_upgrade(_pairs(request.headers)) or _old_handshake(flow):
        return None
    return (response.timestamp_end if response else None) or request.timestamp_end or request.timestamp_start


def _records(flow) -> list[dict]:
    """The records of a flow `_opened` gives a time for."""
    request, response, ws = flow.request, flow.response, flow.websocket
    client = host_port(*flow.client_conn.peername[:2]) if flow.client_conn.peername else None
    conn = flow.id  # the recorder uses the flow id too
    url = request_url(request.scheme, request.host, request.port, request.path)
    if ws is None:
        return [refused_record(conn, _opened(flow), url=url, client=client,
                               status=response.status_code if response else None,
                               error=flow.error.msg if flow.error else None)]
    server_addr = flow.server_conn.peername or flow.server_conn.address
    records = [open_record(conn, _opened(flow), url=url, client=client,
                           server=host_port(*server_addr[:2]) if server_addr else None,
                           t_request=request.timestamp_start, request_headers=_pairs(request.headers),
                           status=response.status_code if response else None,
                           response_headers=_pairs(response.headers) if response else [],
                           tls=bool(flow.client_conn.tls_established))]
    for n, message in enumerate(ws.messages):
        # flow files before mitmproxy 7.0 keep text content as str and times as int
        content = message.content.encode("utf-8", "surrogateescape") if isinstance(message.content, str) \
            else message.content
        records.append(redacted_message(conn, float(message.timestamp), n, message.from_client, message.is_text,
                                        content))
    if ws.close_code is not None:
        records.append(close_record(conn, ws.timestamp_end or records[-1]["t"], ws.close_code, ws.close_reason,
                                    close_sides(ws.closed_by_client, ws.close_code, ws.close_reason)))
    return records
