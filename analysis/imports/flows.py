"""mitmproxy flow files (`mitmdump -w`, anything `mitmproxy.io.FlowReader` reads) as capture records.

WebSocket flows become connections with their messages and close (code, reason, side); upgrades that
did not become WebSockets become `refused` records. Flow files have no pings. Needs mitmproxy, which
is imported only here, only when a flow file is read.
"""

from __future__ import annotations

from analysis.capture import CaptureError, Damage, host_port
from analysis.imports.records import (close_record, import_header, is_upgrade, open_record,
                                      recording_id, refused_record)
from analysis.redact import redacted_message


def read_flows(path: str, damage: list[Damage]) -> tuple[dict, list[list[dict]]]:
    """(header, records per connection) of a flow file; damage (truncation) is appended to `damage`."""
    try:
        from mitmproxy import http, io
        from mitmproxy.exceptions import FlowReadException
        from mitmproxy.version import VERSION
    except ImportError:
        raise CaptureError(f"{path}: reading mitmproxy flow files needs mitmproxy (pip install mitmproxy)") from None
    connections = []
    with open(path, "rb") as f:
        flows, position = 0, 0
        try:
            for flow in io.FlowReader(f).stream():
                flows += 1
                position = f.tell()
                if isinstance(flow, http.HTTPFlow):
                    records = _records(flow)
                    if records:
                        connections.append(records)
        except FlowReadException as e:
            damage.append(Damage(path, flows + 1, f"flow file damaged at byte {position} ({e}); "
                                                  f"read {flows} flow(s) before it"))
    start = min((c[0]["t"] for c in connections), default=0.0)
    return import_header(start, source="flows", mitmproxy_version=VERSION,
                         recording=recording_id("flows", path)), connections


def _pairs(headers) -> list[list[str]]:
    return [[name.decode("utf-8", "backslashreplace"), value.decode("utf-8", "backslashreplace")]
            for name, value in headers.fields]


def _records(flow) -> list[dict] | None:
    request, response, ws = flow.request, flow.response, flow.websocket
    client = host_port(*flow.client_conn.peername[:2]) if flow.client_conn.peername else None
    conn = flow.id  # the recorder uses the flow id too
    if ws is None:
        if not is_upgrade(_pairs(request.headers)):
            return None
        t = (response.timestamp_end if response else None) or request.timestamp_end or request.timestamp_start
        return [refused_record(conn, t, url=request.url, client=client,
                               status=response.status_code if response else None,
                               error=flow.error.msg if flow.error else None)]
    server_addr = flow.server_conn.peername or flow.server_conn.address
    records = [open_record(conn, response.timestamp_end or request.timestamp_start, url=request.url, client=client,
                           server=host_port(*server_addr[:2]) if server_addr else None,
                           t_request=request.timestamp_start, request_headers=_pairs(request.headers),
                           status=response.status_code, response_headers=_pairs(response.headers),
                           tls=bool(flow.client_conn.tls_established))]
    for n, message in enumerate(ws.messages):
        records.append(redacted_message(conn, message.timestamp, n, message.from_client, message.is_text,
                                        message.content))
    if ws.close_code is not None:
        by = None if ws.closed_by_client is None else ("client" if ws.closed_by_client else "server")
        records.append(close_record(conn, ws.timestamp_end or records[-1]["t"], ws.close_code, ws.close_reason, by))
    return records
