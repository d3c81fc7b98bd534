"""Redaction of secrets, with fingerprints (docs/capture-format.md "Redaction").

A secret is replaced by `[redacted sha256:<first 12 hex digits of sha256(secret)>]`, so two
connections that used the same token can be told apart from two that did not, without the token.

Pure functions, used by the recorder on its hot path and by importers of HAR or flow files. Each
returns its input object unchanged (same identity) when there was nothing to redact, and checks
for cheap substrings before it runs any regex.

A token is found however it is written: a JWT also with any of its characters JSON-escaped
(`\u0065yJ…`, also escaped twice for JSON carried in a JSON string) or percent-encoded (once or
twice), the value of a `"jwt"` member in the raw text (so a duplicated key, which a JSON parser
would drop, cannot hide it), and a binary payload like a text one. Its marker is the plain token's.

The payload side (`redact_text`, `replace_jwts`, `marker`, `fingerprint`, `jwt_sub` and the
redacted msg record) is the native core's (core/src/redact.rs); the URL and header rules are here.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import orjson

# fingerprint, jwt_sub and redact_text are this module's API as well (importers, replay, analyses).
from analysis._core import fingerprint, jwt_sub, marker, message_line, redact_text, replace_jwts  # noqa: F401
from analysis.capture import DEFAULT_MAX_PAYLOAD

_MARKER_PREFIX = "[redacted sha256:"
# A JWT's marker also carries the fingerprint of its `sub` claim, so the identity behind a
# refreshed token can still be followed across reconnects.
MARKER_RE = re.compile(r"\[redacted sha256:([0-9a-f]{12})(?: sub:([0-9a-f]{12}))?\]")

# Three base64url segments, the first one a JSON object ("eyJ" is base64 of '{"'). The signature
# may be empty (alg "none"). The shape the native redaction replaces; analyses look for it too.
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# The token of the URL path of an agent connection ("Messaging Agent API": /ws_api/account/{accountId}/
# messaging/brand/{token}) and of a consumer connection of older API versions; opaque or JWT.
_PATH_TOKEN_RE = re.compile(r"(/messaging/(?:brand|consumer)/)([^/?#]+)")

# Query parameter names that carry credentials (matched as substrings, case-insensitively).
_SECRET_PARAM_RE = re.compile(r"token|jwt|auth|secret|passw|session|apikey|api_key|signature|credential",
                              re.IGNORECASE)

_USERINFO_RE = re.compile(r"(?P<before>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):(?P<password>[^/?#@]+)@")
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})


def marked_tokens(text: str) -> list[tuple[str, str | None]]:
    """(token fingerprint, sub fingerprint or None) of every redaction marker in `text`, in order."""
    if _MARKER_PREFIX not in text:
        return []
    return [(token, sub or None) for token, sub in MARKER_RE.findall(text)]


def fingerprints(text: str) -> list[str]:
    """The token fingerprints of every redaction marker in `text`, in order."""
    return [token for token, _ in marked_tokens(text)]


def redaction_info(enabled: bool) -> dict:
    """The `redaction` object of a capture header."""
    return {
        "enabled": enabled,
        "fingerprint": "sha256/12",
        "applied_to": ["Authorization", "Cookie", "InitConnection jwt", "URL path token",
                       "JWT-shaped strings in URLs and payloads"] if enabled else [],
    }


def _is_marker(value: str) -> bool:
    return value.startswith(_MARKER_PREFIX) and MARKER_RE.fullmatch(value) is not None


def redacted_message(conn: str, t: float, n: int, from_client: bool, is_text: bool, content: bytes,
                     max_payload: int = DEFAULT_MAX_PAYLOAD) -> dict:
    """A msg record (`analysis.capture.message_record`) with secrets redacted from its payload, text
    or binary alike, as `redact_text` does (bytes that are not UTF-8 are read one character a byte).

    Redaction runs on the whole payload before anything is lifted or truncated, so no index field
    and no truncated tail can keep a piece of a token; `size` stays the length that was relayed.
    The record is the one the recorder writes (`analysis._core.message_line`), as a dict.
    """
    record = orjson.loads(message_line(conn, 0.0, n, from_client, is_text, content, max_payload, True))
    record["t"] = t  # as given: a float from the recorder, anything in a hand-built record
    return record


def redact_url(url: str) -> str:
    """A URL with its userinfo password, JWTs (path and query, percent-encoded or not), the token in
    the path of a brand or consumer connection and credential query parameters replaced.

    The marker is inserted as is (not percent-encoded), so the result is for reading, not for
    sending."""
    out = replace_jwts(url)
    if "/messaging/" in out:
        out = _PATH_TOKEN_RE.sub(_path_token_marker, out)
    userinfo = _USERINFO_RE.match(out)
    if userinfo and not _is_marker(userinfo["password"]):
        out = f"{userinfo['before']}:{marker(unquote(userinfo['password']))}@{out[userinfo.end():]}"
    query_start = out.find("?")
    if query_start < 0 or not _SECRET_PARAM_RE.search(out, query_start):
        return out
    fragment_start = out.find("#", query_start)
    end = len(out) if fragment_start < 0 else fragment_start
    params = out[query_start + 1:end].split("&")
    for i, param in enumerate(params):
        name, eq, value = param.partition("=")
        if eq and value and _SECRET_PARAM_RE.search(name) and not _is_marker(value):
            params[i] = f"{name}={marker(unquote(value))}"
    return out[:query_start + 1] + "&".join(params) + out[end:]


def _path_token_marker(match: re.Match) -> str:
    token = match.group(2)
    return match.group(0) if _is_marker(token) else f"{match.group(1)}{marker(unquote(token))}"


def redact_header_value(name: str, value: str) -> str:
    """One header value with its secrets replaced (credentials, cookie values, JWTs)."""
    lname = name.lower()
    if lname in _AUTH_HEADERS:
        scheme, sep, credentials = value.strip().partition(" ")
        if not sep:
            return value if not value or _is_marker(value) else marker(value)
        credentials = credentials.strip()
        if not credentials or _is_marker(credentials):
            return value
        return f"{scheme} {marker(credentials)}"
    if lname == "cookie":
        return "; ".join(_redact_cookie(pair) for pair in value.split(";"))
    if lname == "set-cookie":
        first, sep, attributes = value.partition(";")
        return _redact_cookie(first) + sep + attributes
    return replace_jwts(value)


def _redact_cookie(pair: str) -> str:
    name, eq, value = pair.strip().partition("=")
    if not eq or not value or _is_marker(value):
        return pair.strip()
    return f"{name}={marker(value)}"


def redact_headers(pairs: list[list[str]]) -> list[list[str]]:
    """`[name, value]` pairs (wire order) with every secret replaced."""
    return [[name, redact_header_value(name, value)] for name, value in pairs]
