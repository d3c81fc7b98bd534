"""Tokens of the built-in identity provider.

Tokens are JWTs (`base64url(header).base64url(payload).base64url(signature)`) signed with HMAC-SHA256
under a key made when the server starts; the server accepts only tokens it signed itself. Nothing
is stored per token: everything the server needs is in the signed claims, so a flood of signups
costs no memory. Three kinds:

* signup (`POST /api/account/{a}/signup`): an *unauthenticated* identity, claim `"unauth": true`.
  Besides the token's `exp` it has an extension deadline `ext` (= issue time + `identity_window`,
  when that is configured). Calling signup again with `Authorization: jwt <previous token>`
  extends the identity: new token, same `sub`.
* authenticate (`POST /api/account/{a}/authenticate`, body `{"authCode": X}`): an authenticated
  identity whose `sub` is derived from the auth code, so the same code gives the same consumer.
* the newer unauthenticated flow: `anonymous/authorize` gives an id token (audience `idp:{a}`, not
  usable on the socket); `app/{connector}/authenticate` exchanges it for an unauthenticated
  consumer token with the id token's `sub`.

`exp` and `ext` are seconds with millisecond decimals (JWT allows non-integer NumericDates), so a
one-second lifetime is one second. Connection closes: unknown or expired token -> 4401;
unauthenticated identity past `ext` -> 4407.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass

CLOSE_TOKEN = 4401
CLOSE_IDENTITY = 4407
_AUTH_CODE_NAMESPACE = uuid.UUID("5b1f7a44-6a36-4d0e-9f61-1d3c1b0a7e55")
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode("ascii")


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
        self._key = secrets.token_bytes(32)

    def signup(self, account: str, previous: str | None = None) -> str | None:
        """A token for a new unauthenticated identity, or for the identity of `previous` (extension,
        also after `previous` expired). None if `previous` is not a consumer token of this server
        for `account`."""
        if previous is None:
            return self._consumer_token(account, str(uuid.uuid4()), unauthenticated=True)
        known = self.identity(previous)
        if known is None or known.account != account:
            return None
        return self._consumer_token(account, known.sub, unauthenticated=True)

    def authenticate(self, account: str, auth_code: str) -> str:
        return self._consumer_token(account, str(uuid.uuid5(_AUTH_CODE_NAMESPACE, auth_code)), unauthenticated=False)

    def anonymous_id_token(self, account: str) -> str:
        """The id token of `anonymous/authorize`: a new anonymous subject, only good for exchange."""
        now = time.time()
        return self._sign({"sub": str(uuid.uuid4()), "aud": f"idp:{account}", "iss": "mwtap-serve",
                           "iat": round(now, 3), "exp": round(now + self.token_lifetime, 3), "jti": uuid.uuid4().hex})

    def exchange_id_token(self, account: str, id_token: str) -> str | None:
        """The consumer token for an unexpired id token of `account`, or None."""
        claims = self._claims(id_token)
        if claims is None or claims.get("aud") != f"idp:{account}" or not _number(claims.get("exp")) \
                or claims["exp"] <= time.time() or not isinstance(claims.get("sub"), str):
            return None
        return self._consumer_token(account, claims["sub"], unauthenticated=True)

    def identity(self, token: str) -> Identity | None:
        """The identity of a consumer token this server signed (expired or not), else None."""
        claims = self._claims(token)
        if claims is None:
            return None
        audience, sub, exp, ext = claims.get("aud"), claims.get("sub"), claims.get("exp"), claims.get("ext")
        if not isinstance(audience, str) or not audience.startswith("acc:") or not isinstance(sub, str) \
                or not _number(exp) or not (ext is None or _number(ext)):
            return None
        return Identity(sub=sub, account=audience[4:], exp=exp, ext=ext)

    def _consumer_token(self, account: str, sub: str, *, unauthenticated: bool) -> str:
        now = time.time()
        payload = {"sub": sub, "aud": f"acc:{account}", "iss": "mwtap-serve", "iat": round(now, 3),
                   "exp": round(now + self.token_lifetime, 3), "jti": uuid.uuid4().hex}
        if unauthenticated:
            payload["unauth"] = True
            if self.identity_window is not None:
                payload["ext"] = round(now + self.identity_window, 3)
        return self._sign(payload)

    def _sign(self, payload: dict) -> str:
        signed = f"{_HEADER}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        return f"{signed}.{_b64(hmac.digest(self._key, signed.encode(), hashlib.sha256))}"

    def _claims(self, token: str) -> dict | None:
        """The payload of a token whose signature is this server's, else None."""
        if not token.isascii():
            return None
        header, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        expected = _b64(hmac.digest(self._key, f"{header}.{body}".encode(), hashlib.sha256))
        if header != _HEADER or not hmac.compare_digest(signature, expected):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, binascii.Error):
            return None
        return claims if isinstance(claims, dict) else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
