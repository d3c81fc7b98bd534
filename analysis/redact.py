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

# One character of a JWT (A-Z a-z 0-9 - _ .) written as a JSON escape (`\u00XX`, or `\\u00XX` in JSON
# carried in a JSON string; an escaped backslash before it is left alone) or percent-encoded (`%XX`,
# `%25XX` when encoded twice). Encoders escape these characters only when told to, so finding one is
# what lets a text into the slow path; _ESCAPE_GATE_RE finds one without the lookbehind, which makes
# a search several times slower.
_TOKEN_CHAR_CODE = r"(?:2[dDeE]|3[0-9]|4[1-9a-fA-F]|5[0-9aAfF]|6[1-9a-fA-F]|7[0-9aA])"
_ESCAPE_GATE_RE = re.compile(rf"(?:\\u00|%(?:25)?){_TOKEN_CHAR_CODE}")
_ESCAPED_TOKEN_CHAR_RE = re.compile(rf"(?:(?:(?<!\\)\\)?\\u00|%(?:25)?){_TOKEN_CHAR_CODE}")
_TOKEN_RUN_RE = re.compile(rf"(?:[A-Za-z0-9_.-]+|{_ESCAPED_TOKEN_CHAR_RE.pattern})+")

# The string value of a "jwt" member (the jwt of `.ams.headers.ConsumerAuthentication`), key
# possibly escaped, found in the raw text rather than by a JSON parser: a parser keeps only the last
# of duplicated keys ("headers", "jwt", "type") while the server may read the first, and a payload
# that is not JSON at all may still carry one.
_JWT_MEMBER_RE = re.compile(r'"(?:j|\\u006[aA])(?:w|\\u0077)(?:t|\\u0074)"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"')

# The token of the URL path of an agent connection ("Messaging Agent API": /ws_api/account/{accountId}/
# messaging/brand/{token}) and of a consumer connection of older API versions; opaque or JWT.
_PATH_TOKEN_RE = re.compile(r"(/messaging/(?:brand|consumer)/)([^/?#]+)")

# Query parameter names that carry credentials (matched as substrings, case-insensitively).
_SECRET_PARAM_RE = re.compile(r"token|jwt|auth|secret|passw|session|apikey|api_key|signature|credential",
                              re.IGNORECASE)

_USERINFO_RE = re.compile(r"(?P<before>[A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):(?P<password>[^/?#@]+)@")
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})


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
        "applied_to": ["Authorization", "Cookie", "InitConnection jwt", "URL path token",
                       "JWT-shaped strings in URLs and payloads"] if enabled else [],
    }


def _is_marker(value: str) -> bool:
    return value.startswith(_MARKER_PREFIX) and MARKER_RE.fullmatch(value) is not None


def _replace_jwts(text: str) -> str:
    """`text` with every JWT replaced, plain or with escaped characters (escapes first: a plain
    match would stop at the first escape and leave the rest of the token)."""
    out = text
    if ("\\u00" in out or "%" in out) and _ESCAPE_GATE_RE.search(out):
        out = _TOKEN_RUN_RE.sub(_unescaped_jwts, out)
    if "eyJ" in out:
        out = JWT_RE.sub(_jwt_marker, out)
    return text if out == text else out


def _jwt_marker(match: re.Match) -> str:
    return marker(match.group(0))


def _unescaped_jwts(match: re.Match) -> str:
    """A run of token characters, some escaped: decoded with its JWTs marked, or as it was."""
    run = match.group(0)
    if "\\" not in run and "%" not in run:
        return run
    decoded = _ESCAPED_TOKEN_CHAR_RE.sub(lambda m: chr(int(m.group(0)[-2:], 16)), run)
    if "eyJ" not in decoded:
        return run
    out = JWT_RE.sub(_jwt_marker, decoded)
    return run if out == decoded else out


def redact_text(text: str) -> str:
    """A text payload with JWTs (however escaped) and "jwt" member values replaced."""
    out = text
    if '"jwt"' in out or "\\u00" in out:
        out = _JWT_MEMBER_RE.sub(_member_marker, out)
        if out == text:
            out = text
    return _replace_jwts(out)


def _member_marker(match: re.Match) -> str:
    raw = match.group(1)
    try:
        value = orjson.loads(f'"{raw}"')
    except orjson.JSONDecodeError:  # a lone surrogate, a bad escape: the value as written
        value = raw
    if not value or _is_marker(value):
        return match.group(0)
    return f'{match.string[match.start():match.start(1)]}{marker(value)}"'


def _may_hold_token(text: str) -> bool:
    """False when `redact_text` would certainly find nothing in `text`: substring checks, then one
    regex search only for a text with an escape or a percent sign."""
    return ("eyJ" in text or '"jwt"' in text
            or (("\\u00" in text or "%" in text) and _ESCAPE_GATE_RE.search(text) is not None))


def redacted_message(conn: str, t: float, n: int, from_client: bool, is_text: bool, content: bytes,
                     max_payload: int = DEFAULT_MAX_PAYLOAD) -> dict:
    """A msg record (`analysis.capture.message_record`) with secrets redacted from its payload, text
    or binary alike, as `redact_text` does (bytes that are not UTF-8 are read one character a byte).

    Redaction runs on the whole payload before anything is lifted or truncated, so no index field
    and no truncated tail can keep a piece of a token; `size` stays the length that was relayed.
    """
    # Looked at as latin-1 text (one character a byte): `bytes in bytes` first tries its operand as
    # an integer and raises, which costs more than the search itself.
    if _may_hold_token(content.decode("latin-1")):
        clean = _redacted_bytes(content)
        if clean is not content:
            record = message_record(conn, t, n, from_client, is_text, clean, max_payload)
            record["size"] = len(content)
            record["redacted"] = True
            return record
    return message_record(conn, t, n, from_client, is_text, content, max_payload)


def _redacted_bytes(content: bytes) -> bytes:
    """`content` itself when it holds no secret."""
    try:
        text, encoding = content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:  # latin-1 maps each byte to one character and back; markers are ASCII
        text, encoding = content.decode("latin-1"), "latin-1"
    clean = redact_text(text)
    return content if clean is text else clean.encode(encoding)


def redact_url(url: str) -> str:
    """A URL with its userinfo password, JWTs (path and query, percent-encoded or not), the token in
    the path of a brand or consumer connection and credential query parameters replaced.

    The marker is inserted as is (not percent-encoded), so the result is for reading, not for
    sending."""
    out = _replace_jwts(url)
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
    return _replace_jwts(value)


def _redact_cookie(pair: str) -> str:
    name, eq, value = pair.strip().partition("=")
    if not eq or not value or _is_marker(value):
        return pair.strip()
    return f"{name}={marker(value)}"


def redact_headers(pairs: list[list[str]]) -> list[list[str]]:
    """`[name, value]` pairs (wire order) with every secret replaced."""
    return [[name, redact_header_value(name, value)] for name, value in pairs]
