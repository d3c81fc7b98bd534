"""Closes mitmproxy made itself because a peer broke the WebSocket protocol.

When a peer sends something wsproto cannot accept (a close code outside the ranges RFC 6455 allows,
text that is not UTF-8, an unknown opcode, a reserved bit, an unmasked client frame, ...), wsproto
turns it into a close event of its own: code 1002 (1007 for bad UTF-8), its description of the
fault as reason. mitmproxy sends that close to both peers and fills `flow.websocket` as if the
offending peer had sent it (`closed_by_client` names that peer). The flow carries nothing else:
the only way to tell such a close from a peer's own close frame is wsproto's reason text, matched
here (the tests feed the installed wsproto each kind of fault and check that every reason it gives
matches). What the peer actually sent (e.g. the close code 5000) is not kept by wsproto or
mitmproxy. A peer that itself closes with exactly such a code and text is taken for a proxy close.
"""

from __future__ import annotations

import re

PROTOCOL_ERROR_CODES = (1002, 1007)  # wsproto's CloseReason.PROTOCOL_ERROR, INVALID_FRAME_PAYLOAD_DATA

WSPROTO_FAILURE = re.compile(
    r"CLOSE with (1 byte payload|invalid code|unknown reserved code)"
    r"|remote CLOSE with local-only reason"
    r"|Error decoding CLOSE reason: .*"
    r"|'utf-8' codec can't decode .*"
    r"|unexpected CONTINUATION|expected CONTINUATION, got .*"
    r"|error in extension"
    r"|Invalid opcode 0x[0-9a-f]+"
    r"|Invalid attempt to fragment control frame"
    r"|(client|server) received unexpected (un)?masked frame"
    r"|Control frame with payload len > 125"
    r"|Payload length used \d bytes when \d would have sufficed"
    r"|8-byte payload length with non-zero MSB"
    r"|Reserved bit set unexpectedly", re.DOTALL)


def failed_by_proxy(code: int | None, reason: str | None) -> bool:
    """Whether a close with this code and reason is mitmproxy failing the connection on a protocol error."""
    return code in PROTOCOL_ERROR_CODES and reason is not None and WSPROTO_FAILURE.fullmatch(reason) is not None


def close_sides(closed_by_client: bool | None, code: int | None, reason: str | None) -> dict:
    """The `by` (and `protocol_error_by`) fields of a close record, from mitmproxy's WebSocket data:
    mitmproxy reports its own close on a peer's protocol error as that peer's close."""
    by = None if closed_by_client is None else ("client" if closed_by_client else "server")
    if by is not None and failed_by_proxy(code, reason):
        return {"by": "proxy", "protocol_error_by": by}
    return {"by": by}
