"""Tokens of the built-in identity provider.

Tokens are JWT-shaped (`base64url(header).base64url(payload).base64url(signature)`) with a fake
signature; the server only accepts tokens it issued itself. Two kinds of identity:

* signup (`POST /api/account/{a}/signup`): an *unauthenticated* identity, claim `"unauth": true`.
  Besides the token's `exp` it has an extension deadline `ext` (= issue time + `identity_window`,
  when that is configured). Calling signup again with `Authorization: jwt <previous token>`
  extends the identity: new token, same `sub`.
* authenticate (`POST /api/account/{a}/authenticate?authCode=X`): an authenticated identity whose
  `sub` is derived from the auth code, so the same code gives the same consumer.

Connection closes: unknown or expired token -> 4401; unauthenticated identity past `ext` -> 4407.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass

CLOSE_TOKEN = 4401
CLOSE_IDENTITY = 4407
_AUTH_CODE_NAMESPACE = uuid.UUID("5b1f7a44-6a36-4d0e-9f61-1d3c1b0a7e55")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Identity:
    sub: str
    account: str
    exp: float
    ext: float | None
    """Extension deadline of an unauthenticated identity, None for authenticated ones."""

    def close_code_at(self, now: float) -> int | None:
        """The close code this identity earns at `now`, or None while it is valid."""
        if now >= self.exp:
            return CLOSE_TOKEN
        if self.ext is not None and now >= self.ext:
            return CLOSE_IDENTITY
        return None

    def deadline(self) -> tuple[float, int]:
        """When the connection must be closed, and with which code."""
        if self.ext is not None and self.ext < self.exp:
            return self.ext, CLOSE_IDENTITY
        return self.exp, CLOSE_TOKEN


class TokenIssuer:
    def __init__(self, token_lifetime: float, identity_window: float | None):
        self.token_lifetime = token_lifetime
        self.identity_window = identity_window
        self._issued: dict[str, Identity] = {}

    def signup(self, account: str, previous: str | None = None) -> str | None:
        """A token for a new unauthenticated identity, or for the identity of `previous` (extension).
        None if `previous` is not a token of this server."""
        if previous is None:
            sub = str(uuid.uuid4())
        else:
            known = self._issued.get(previous)
            if known is None:
                return None
            sub = known.sub
        return self._issue(account, sub, unauthenticated=True)

    def authenticate(self, account: str, auth_code: str) -> str:
        return self._issue(account, str(uuid.uuid5(_AUTH_CODE_NAMESPACE, auth_code)), unauthenticated=False)

    def identity(self, token: str) -> Identity | None:
        return self._issued.get(token)

    def _issue(self, account: str, sub: str, *, unauthenticated: bool) -> str:
        now = time.time()
        identity = Identity(
            sub=sub, account=account, exp=now + self.token_lifetime,
            ext=now + self.identity_window if unauthenticated and self.identity_window is not None else None,
        )
        payload = {"sub": sub, "aud": f"acc:{account}", "iss": "mwtap-serve", "iat": int(now),
                   "exp": int(identity.exp), "jti": uuid.uuid4().hex}
        if unauthenticated:
            payload["unauth"] = True
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signature = _b64(hashlib.sha256(f"{header}.{body}".encode()).digest())
        token = f"{header}.{body}.{signature}"
        self._issued[token] = identity
        return token
