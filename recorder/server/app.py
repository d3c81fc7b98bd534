"""The built-in Messaging Window server: WebSocket endpoints and HTTP endpoints on one port (aiohttp),
plain or TLS.

* `GET /ws_api/account/{account}/messaging/consumer?v=3` — the consumer WebSocket.
* `GET /ws_api/account/{account}/messaging/brand/{bearer}?v=2.1` — the agent (bot) WebSocket
  (`recorder.server.brand`).
* the IDP calls of `recorder.server.idp` (signup, authenticate, the anonymous flow), with CORS.
* the agent's domain lookup, login and refresh (`recorder.server.agent_login`).
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter

from aiohttp import web

from analysis.capture import host_port
from recorder.server.agent import Agent
from recorder.server.agent_login import AgentLoginRoutes, AgentLogins
from recorder.server.auth import TokenIssuer
from recorder.server.brand import Bots, BrandSession
from recorder.server.config import ServerConfig
from recorder.server.connection import CLOSE_TIMEOUT, ClientSession
from recorder.server.conversations import ConversationStore
from recorder.server.faults import Faults
from recorder.server.idp import MAX_BODY, IdentityProvider, error, http_errors
from recorder.server.requests import Dispatcher

log = logging.getLogger("mwtap.serve")
DEFAULT_ACCOUNT = "mwtap"
WS_ROUTE = "/ws_api/account/{account}/messaging/consumer"
BRAND_ROUTE = "/ws_api/account/{account}/messaging/brand/{bearer}"

class MessagingServer:
    """`async with MessagingServer(config) as server:` serves on `server.port` until the block ends."""

    def __init__(self, config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None):
        self.config = config or ServerConfig()
        self.host = host
        self.port = port
        self.faults = Faults(self.config)
        self.store = ConversationStore(self.faults, self.config.retention)
        self.agent = Agent(self.store, self.config)
        self.issuer = TokenIssuer(self.config.token_lifetime, self.config.identity_window)
        self.dispatcher = Dispatcher(self.store, self.config)
        self.agent_logins = AgentLogins(self.config.agent_session_lifetime)
        self.bots = Bots(self)
        self.tls = tls
        self.sessions: set[ClientSession] = set()
        self.close_codes: Counter[int | None] = Counter()
        """How many finished client connections closed with each code (a count: bounded memory)."""
        self._runner: web.AppRunner | None = None

    def url(self, account: str = DEFAULT_ACCOUNT) -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{host_port(self.host, self.port)}/ws_api/account/{account}/messaging/consumer?v=3"

    def idp_url(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Base of the IDP endpoints: POST `{idp_url}/signup` or `{idp_url}/authenticate`; also of
        the agent's `login` and `refresh`, and `service/baseURI.json` (the domain lookup)."""
        return f"{'https' if self.tls else 'http'}://{host_port(self.host, self.port)}/api/account/{account}"

    async def __aenter__(self) -> MessagingServer:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[http_errors])
        app.router.add_get(WS_ROUTE, self._consumer_socket)
        app.router.add_get(WS_ROUTE + "/", self._consumer_socket)
        app.router.add_get(BRAND_ROUTE, self._brand_socket)
        IdentityProvider(self.issuer).add_routes(app)
        AgentLoginRoutes(self.agent_logins, self.config.advertise).add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls).start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        for session in list(self.sessions):
            session.close_soon(1001, "server stopping")
        await self._runner.cleanup()
        await self.agent.stop()

    async def _consumer_socket(self, request: web.Request) -> web.StreamResponse:
        return await self._socket(request, "consumer", ClientSession)

    async def _brand_socket(self, request: web.Request) -> web.StreamResponse:
        login = self.agent_logins.of_bearer(request.match_info["bearer"])
        return await self._socket(request, "agent (brand)",
                                  lambda *args: BrandSession(*args, login))

    async def _socket(self, request: web.Request, side: str, session_type) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, autoclose=False, max_msg_size=self.config.max_message_size,
                                   timeout=CLOSE_TIMEOUT)
        if not ws.can_prepare(request):
            return error(426, f"this is the {side} WebSocket: connect with a WebSocket upgrade request",
                         {"Upgrade": "websocket"})
        await ws.prepare(request)
        peer = host_port(*request.transport.get_extra_info("peername")[:2])
        log.info("%s connection from %s", side, peer)
        session = session_type(ws, request, request.match_info["account"], self)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
        code = session.close_code if session.close_code is not None else ws.close_code
        self.close_codes[code] += 1
        log.info("connection from %s closed with %s", peer, code)
        return ws
