"""Who a connection is: its token fingerprint (from the redaction marker or the raw token) and the
JWT `sub` when the token is visible (the view groups connections by it; replay reads tokens with it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.capture import split_url
from analysis.frame import as_list
from analysis.redact import fingerprint, jwt_sub, marked_tokens

CONSUMER_AUTHENTICATION = ".ams.headers.ConsumerAuthentication"
AGENT, CONSUMER = "agent", "consumer"


@dataclass(slots=True)
class Token:
    fingerprint: str
    sub: str | None = None


def token_of(credential: str) -> Token | None:
    """A token from a redaction marker or a raw token; `sub` is the fingerprint of its JWT `sub`."""
    found = marked_tokens(credential)
    if found:
        return Token(*found[0])
    credential = credential.strip()
    if not credential:
        return None
    sub = jwt_sub(credential)
    return Token(fingerprint(credential), fingerprint(sub) if sub is not None else None)


def header_token(open_rec: dict) -> Token | None:
    """The token of the Authorization header of the WebSocket upgrade ("jwt <token>")."""
    for pair in open_rec.get("request_headers") or ():
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "authorization":
            value = str(pair[1])
            scheme, _, credential = value.partition(" ")
            return token_of(credential if credential else scheme)
    return None




def url_token(url: Any) -> Token | None:
    """A token carried in the URL path or query: an agent's bearer rides in the path after
    `/messaging/brand/` (opaque, not JWT-shaped), a v2 consumer's after `/messaging/consumer/`."""
    if not isinstance(url, str):
        return None
    found = marked_tokens(url)
    if found:
        return Token(*found[0])
    segments = split_url(url).path.split("/")
    for i, segment in enumerate(segments):
        if segment.startswith("eyJ") and segment.count(".") == 2:
            return token_of(segment)
        if segment in ("brand", "consumer") and i > 0 and segments[i - 1] == "messaging" and i + 1 < len(segments):
            return token_of(segments[i + 1])
    return None


def side_of_url(url: Any) -> str | None:
    """`agent` for a brand connection (`/messaging/brand/`), `consumer` for `/messaging/consumer`,
    None when the URL does not tell."""
    if not isinstance(url, str):
        return None
    path = split_url(url).path
    if "/messaging/brand/" in path:
        return AGENT
    if "/messaging/consumer" in path:
        return CONSUMER
    return None




def init_connection_token(payload: Any) -> Token | None:
    """The jwt of the ConsumerAuthentication header object of an InitConnection request."""
    if not isinstance(payload, dict):
        return None
    for header in as_list(payload.get("headers")):
        if isinstance(header, dict) and header.get("type") == CONSUMER_AUTHENTICATION:
            jwt = header.get("jwt")
            if isinstance(jwt, str):
                return token_of(jwt)
    return None

