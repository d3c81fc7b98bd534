"""The built-in identity provider's HTTP endpoints, the calls LivePerson's IDP documents:

* `POST /api/account/{account}/signup` (body optional, e.g. `{}`) -> `{"jwt": …}`; with
  `Authorization: jwt <previous token>` the identity of that token is extended (same `sub`).
* `GET  /api/account/{account}/signup.jsonp?callback=NAME` -> `NAME({"jwt": …});` for a `<script>` tag.
* `POST /api/account/{account}/authenticate`, body `{"authCode": "…"}` -> `{"jwt": …}`.
* `POST /api/account/{account}/anonymous/authorize` -> `{"token": <id token>}`, then
  `POST /api/account/{account}/app/{connectorId}/authenticate?v=3.0`, body `{"id_token": …}` ->
  `{"token": <consumer jwt>}` (the newer unauthenticated flow).

Every answer, errors included, carries CORS headers so that a page on another origin can call the
IDP (no cookies are used, so any origin is allowed); `OPTIONS` preflights are answered 204. Bad
input is a 4xx with a JSON body `{"error": "…"}`, never a dropped connection: a body over
MAX_BODY bytes 413, a body that is not a JSON object or lacks its field 400, a token this server
did not issue 401, an unknown path 404, a wrong method 405.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from recorder.server.auth import TokenIssuer
from recorder.server.connection import header_token

MAX_BODY = 16 * 1024
"""Bytes an IDP request body may have (an `authCode` may be an external JWT of a few KB)."""
ACCOUNT = "/api/account/{account}"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}
JSONP_CALLBACK = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*")
"""A JavaScript name (dotted paths allowed): anything else could inject script into the page."""


class BadRequest(Exception):
    """Answered 400 with this message."""


def error(status: int, message: str, headers=None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def http_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413, ...) as JSON, and CORS headers on every HTTP answer."""
    try:
        response = await handler(request)
    except BadRequest as e:
        response = error(400, str(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        detail = e.text if e.text and not e.text.startswith(str(e.status)) else e.reason  # 413 says the sizes
        response = error(e.status, f"{request.method} {request.path}: {detail}", allow)
    if not isinstance(response, web.WebSocketResponse) and not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


class IdentityProvider:
    def __init__(self, issuer: TokenIssuer):
        self.issuer = issuer

    def add_routes(self, app: web.Application) -> None:
        for path, method, handler in [
            (f"{ACCOUNT}/signup", "POST", self.signup),
            (f"{ACCOUNT}/signup.jsonp", "GET", self.signup_jsonp),
            (f"{ACCOUNT}/authenticate", "POST", self.authenticate),
            (f"{ACCOUNT}/anonymous/authorize", "POST", self.anonymous_authorize),
            (f"{ACCOUNT}/app/{{connector}}/authenticate", "POST", self.app_authenticate),
        ]:
            app.router.add_route(method, path, handler)
            app.router.add_route("OPTIONS", path, preflight)

    async def signup(self, request: web.Request) -> web.Response:
        await json_body(request)  # nothing is read from it, but it must be JSON when present
        token = self._signup(request)
        if token is None:
            return error(401, "unknown token in Authorization header")
        return web.json_response({"jwt": token})

    async def signup_jsonp(self, request: web.Request) -> web.Response:
        callback = request.query.get("callback", "")
        if JSONP_CALLBACK.fullmatch(callback) is None:
            return error(400, "signup.jsonp needs ?callback= with a JavaScript function name")
        token = self._signup(request)
        if token is None:
            return error(401, "unknown token in Authorization header")
        return web.Response(text=f"{callback}({json.dumps({'jwt': token})});", content_type="application/javascript")

    async def authenticate(self, request: web.Request) -> web.Response:
        code = await required_string(request, "authCode")
        return web.json_response({"jwt": self.issuer.authenticate(request.match_info["account"], code)})

    async def anonymous_authorize(self, request: web.Request) -> web.Response:
        await json_body(request)
        return web.json_response({"token": self.issuer.anonymous_id_token(request.match_info["account"])})

    async def app_authenticate(self, request: web.Request) -> web.Response:
        id_token = await required_string(request, "id_token")
        token = self.issuer.exchange_id_token(request.match_info["account"], id_token)
        if token is None:
            return error(401, "id_token is not an unexpired token of anonymous/authorize for this account")
        return web.json_response({"token": token})

    def _signup(self, request: web.Request) -> str | None:
        previous = header_token(request.headers.get("Authorization"))
        return self.issuer.signup(request.match_info["account"], previous or None)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def json_body(request: web.Request) -> dict:
    """The request's JSON object body ({} when there is none); 400 when it is something else."""
    if (request.content_length or 0) > MAX_BODY:  # refused before waiting for a body that may never come
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, request.content_length)
    raw = await request.read()  # over the application's client_max_size (a chunked body): 413
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def required_string(request: web.Request, name: str) -> str:
    value = (await json_body(request)).get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f'{request.path} needs a JSON body {{"{name}": "…"}}')
    return value
