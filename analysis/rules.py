"""The violation rules: ids (part of the contract), default severities and the violation record."""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITIES = (ERROR, WARNING, INFO)
SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}

# rule id -> default severity. Some rules lower or raise it per case (docs/analysis.md says when).
RULES: dict[str, str] = {
    "invalid-json": ERROR,
    "binary-frame": ERROR,
    "missing-kind": WARNING,          # info for a c2s frame with id and type (kind is optional on requests)
    "unknown-kind": WARNING,
    "missing-type": ERROR,            # warning for s2c frames
    "request-without-id": ERROR,
    "duplicate-request-id": ERROR,
    "reused-request-id": INFO,
    "orphan-response": WARNING,
    "response-type-mismatch": WARNING,
    "unanswered-request": ERROR,      # warning when the connection closed before the timeout, info when the client closed it
    "invalid-response-code": ERROR,
    "unknown-subscription": WARNING,  # info for messaging events of a dialog never subscribed
    "notification-after-unsubscribe": WARNING,
    "keepalive-gap": WARNING,
    "request-before-init": ERROR,     # warning when the server answered the early request 2xx
    "token-not-refreshed": ERROR,
    "fast-reconnect": WARNING,
    "sequence-gap": WARNING,
    "sequence-duplicate": WARNING,
    "sequence-regression": ERROR,
    "missing-accept": WARNING,
    "publish-after-close": WARNING,
    "ring-not-answered": WARNING,     # agent connections
}


@dataclass(slots=True)
class Violation:
    rule: str
    severity: str
    conn: str | None
    t: float
    frame: int | None
    message: str
    at_capture_end: bool = False
