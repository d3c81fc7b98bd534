"""The built-in Messaging Window server: WebSocket endpoint and IDP endpoints on one port.

* `GET  /ws_api/account/{account}/messaging/consumer?v=3` — the consumer WebSocket.
* `POST /api/account/{account}/signup` — a new unauthenticated identity, `{"jwt": …}`; with
  `Authorization: jwt <previous token>` the identity of that token is extended (same `sub`).
* `POST /api/account/{account}/authenticate?authCode=X` — an authenticated identity for X.
The HTTP requests must not carry a body (websockets' HTTP parser refuses bodies).
"""

from __future__ import annotations

import http
import json
import logging
import re
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from analysis.capture import host_port
from recorder.server.agent import Agent
from recorder.server.auth import TokenIssuer
from recorder.server.config import ServerConfig
from recorder.server.connection import ActivityTrackingConnection, ClientSession, header_token
from recorder.server.conversations import ConversationStore
from recorder.server.faults import Faults
from recorder.server.requests import Dispatcher

log = logging.getLogger("mwtap.serve")
DEFAULT_ACCOUNT = "mwtap"
WS_PATH = re.compile(r"/ws_api/account/([^/]+)/messaging/consumer/?")
IDP_PATH = re.compile(r"/api/account/([^/]+)/(signup|authenticate)/?")


def json_response(status: int, payload: dict) -> Response:
    body = json.dumps(payload).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class MessagingServer:
    """`async with MessagingServer(config) as server:` serves on `server.port` until the block ends."""

    def __init__(self, config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or ServerConfig()
        self.host = host
        self.port = port
        self.faults = Faults(self.config)
        self.store = ConversationStore(self.faults)
        self.agent = Agent(self.store, self.config)
        self.issuer = TokenIssuer(self.config.token_lifetime, self.config.identity_window)
        self.dispatcher = Dispatcher(self.store)
        self.close_codes: list[int | None] = []
        """The close code of every finished client connection, in order."""
        self._server = None

    def url(self, account: str = DEFAULT_ACCOUNT) -> str:
        return f"ws://{host_port(self.host, self.port)}/ws_api/account/{account}/messaging/consumer?v=3"

    def idp_url(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Base of the IDP endpoints: POST `{idp_url}/signup` or `{idp_url}/authenticate`."""
        return f"http://{host_port(self.host, self.port)}/api/account/{account}"

    async def __aenter__(self) -> MessagingServer:
        self._server = await serve(
            self._serve_connection, self.host, self.port, process_request=self._route,
            create_connection=ActivityTrackingConnection, ping_interval=None,
            max_size=self.config.max_message_size)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()
        await self.agent.stop()

    async def _serve_connection(self, ws: ActivityTrackingConnection) -> None:
        peer = host_port(*ws.remote_address[:2])
        log.info("connection from %s", peer)
        await ClientSession(ws, self).run()
        self.close_codes.append(ws.close_code)
        log.info("connection from %s closed with %s", peer, ws.close_code)

    def _route(self, ws: ActivityTrackingConnection, request: Request) -> Response | None:
        path = urlsplit(request.path)
        if (match := IDP_PATH.fullmatch(path.path)) is not None:
            if request.method != "POST":
                return json_response(405, {"error": "use POST"})
            return self._idp(request, match[1], match[2], parse_qs(path.query))
        if (match := WS_PATH.fullmatch(path.path)) is not None and request.method == "GET":
            ws.account = match[1]
            return None
        return json_response(404, {"error": f"no such endpoint: {request.method} {path.path}"})

    def _idp(self, request: Request, account: str, action: str, query: dict[str, list[str]]) -> Response:
        if action == "authenticate":
            auth_code = query.get("authCode", [""])[0]
            if not auth_code:
                return json_response(400, {"error": "authenticate needs ?authCode="})
            return json_response(200, {"jwt": self.issuer.authenticate(account, auth_code)})
        previous = header_token(request.headers.get("Authorization"))
        token = self.issuer.signup(account, previous or None)
        if token is None:
            return json_response(401, {"error": "unknown token in Authorization header"})
        return json_response(200, {"jwt": token})
