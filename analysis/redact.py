"""Redaction of secrets, with fingerprints (docs/capture-format.md "Redaction").

A secret is replaced by `[redacted sha256:<first 12 hex digits of sha256(secret)>]`, so two
connections that used the same token can be told apart from two that did not, without the token.

Pure functions, used by the recorder on its hot path and by importers of HAR or flow files. Each
returns its input object unchanged (same identity) when there was nothing to redact, and checks
for a cheap substring before it runs any regex or JSON parse.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import unquote

import orjson

from analysis.capture import DEFAULT_MAX_PAYLOAD, message_record

_MARKER_PREFIX = "[redacted sha256:"
# A JWT's marker also carries the fingerprint of its `sub` claim, so the identity behind a
# refreshed token can still be followed across reconnects.
MARKER_RE = re.compile(r"\[redacted sha256:([0-9a-f]{12})(?: sub:([0-9a-f]{12}))?\]")

# Three base64url segments, the first one a JSON object ("eyJ" is base64 of '{"'). The signature
# may be empty (alg "none"). Matches are replaced whole.
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_JWT_BYTES_RE = re.compile(JWT_RE.pattern.encode("ascii"))  # in binary and non-UTF-8 payloads

# Query parameter names that carry credentials (matched as substrings, case-insensitively).
_SECRET_PARAM_RE = re.compile(r"token|jwt|auth|secret|passw|session|apikey|api_key|signature|credential",
                              re.IGNORECASE)

_USERINFO_RE = re.compile(r"(?P<before>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):(?P<password>[^/?#@]+)@")
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_CONSUMER_AUTH = ".ams.headers.ConsumerAuthentication"


def fingerprint(secret: str) -> str:
    """First 12 hex digits of the SHA-256 of the secret (UTF-8)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def marker(secret: str) -> str:
    sub = jwt_sub(secret)
    identity = f" sub:{fingerprint(sub)}" if sub is not None else ""
    return f"{_MARKER_PREFIX}{fingerprint(secret)}{identity}]"


def jwt_sub(token: str) -> str | None:
    """The `sub` claim of a JWT-shaped token, if it has one."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].startswith("eyJ"):
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None


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
        "applied_to": ["Authorization", "Cookie", "InitConnection jwt",
                       "JWT-shaped strings in URLs and payloads"] if enabled else [],
    }


def _is_marker(value: str) -> bool:
    return value.startswith(_MARKER_PREFIX) and MARKER_RE.fullmatch(value) is not None


def _replace_jwts(text: str) -> str:
    if "eyJ" not in text:
        return text
    out = JWT_RE.sub(lambda m: marker(m.group(0)), text)
    return text if out == text else out


def redact_text(text: str) -> str:
    """A text payload with JWT-shaped strings and InitConnection credentials replaced."""
    out = text
    if "ConsumerAuthentication" in out and "InitConnection" in out:
        out = _redact_init_connection(out)
    return _replace_jwts(out)


def _redact_init_connection(text: str) -> str:
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if not isinstance(payload, dict) or payload.get("type") != "InitConnection":
        return text
    headers = payload.get("headers")
    if isinstance(headers, dict):  # the protocol allows a single element instead of an array
        headers = [headers]
    if not isinstance(headers, list):
        return text
    out = text
    reencode = False
    for header in headers:
        if not isinstance(header, dict) or header.get("type") != _CONSUMER_AUTH:
            continue
        jwt = header.get("jwt")
        if not isinstance(jwt, str) or not jwt or _is_marker(jwt):
            continue
        header["jwt"] = marker(jwt)
        encoded = orjson.dumps(jwt).decode()[1:-1]
        if encoded in out:
            out = out.replace(encoded, header["jwt"])
        else:  # escaped differently than orjson would: re-encode the whole payload
            reencode = True
    if reencode:
        return orjson.dumps(payload).decode()
    return out


def redacted_message(conn: str, t: float, n: int, from_client: bool, is_text: bool, content: bytes,
                     max_payload: int = DEFAULT_MAX_PAYLOAD) -> dict:
    """A msg record (`analysis.capture.message_record`) with secrets redacted from its payload: a
    text payload as `redact_text` does, the bytes of a binary or non-UTF-8 one by JWT shape.

    Redaction runs on the whole payload before anything is lifted or truncated, so no index field
    and no truncated tail can keep a piece of a token; `size` stays the length that was relayed.
    """
    if b"eyJ" in content or (is_text and b"ConsumerAuthentication" in content):
        clean = _redacted_bytes(content, is_text)
        if clean is not content:
            record = message_record(conn, t, n, from_client, is_text, clean, max_payload)
            record["size"] = len(content)
            record["redacted"] = True
            return record
    return message_record(conn, t, n, from_client, is_text, content, max_payload)


def _redacted_bytes(content: bytes, is_text: bool) -> bytes:
    """`content` itself when it holds no secret."""
    if is_text:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            clean = redact_text(text)
            return content if clean is text else clean.encode("utf-8")
    out = _JWT_BYTES_RE.sub(lambda m: marker(m.group(0).decode("ascii")).encode("ascii"), content)
    return content if out == content else out


def redact_url(url: str) -> str:
    """A URL with its userinfo password, JWT-shaped strings (path and query) and credential query
    parameters replaced.

    The marker is inserted as is (not percent-encoded), so the result is for reading, not for
    sending."""
    out = _replace_jwts(url)
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
    return _replace_jwts(value)


def _redact_cookie(pair: str) -> str:
    name, eq, value = pair.strip().partition("=")
    if not eq or not value or _is_marker(value):
        return pair.strip()
    return f"{name}={marker(value)}"


def redact_headers(pairs: list[list[str]]) -> list[list[str]]:
    """`[name, value]` pairs (wire order) with every secret replaced."""
    return [[name, redact_header_value(name, value)] for name, value in pairs]
