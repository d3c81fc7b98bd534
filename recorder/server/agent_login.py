"""What an agent application calls before its socket, as LivePerson's `node-agent-sdk` calls it:

* `GET  /api/account/{account}/service/baseURI.json?version=1.0` (the CSDS domain lookup) ->
  `{"baseURIs": [{"service": "agentVep", …}, {"service": "asyncMessagingEnt", …}]}`: every service
  is this server (the address the request came to, or `advertise` when set: a recorder in front
  of the server gets the WebSocket only when the lookup names it).
* `POST /api/account/{account}/login?v=1.3`, body `{"username", "password"}` -> `{"bearer", "csrf",
  "config": {"userId", "userPid"}}` and a `session_id` cookie. Any non-empty username and password
  log in; the same username is the same agent.
* `POST /api/account/{account}/refresh?v=1.3`, body `{"csrf"}` with the cookie: the session lives
  `agent_session_lifetime` seconds more; 401 when it is unknown or expired.

The bearer is opaque (not a JWT, as LivePerson's are not): the brand WebSocket carries it in its
path. A session whose lifetime passes without a refresh is expired: its sockets are closed with
4401. Sessions are kept in memory, at most MAX_SESSIONS (the oldest are forgotten first).
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

from aiohttp import web

from recorder.server.idp import ACCOUNT, BadRequest, error, json_body

MAX_SESSIONS = 10_000
SESSION_COOKIE = "session_id"
_AGENT_NAMESPACE = uuid.UUID("0b3a3d1e-8e0c-4d55-9a57-5d0c6f1e2b61")


@dataclass
class AgentLogin:
    account: str
    user_id: str
    """LivePerson's numeric user id; `{account}.{user_id}` is the agent's id in the v2 brand API."""
    pid: str
    """The agent's participant id in conversations (`userPid` of the login)."""
    bearer: str
    csrf: str
    expires: float

    @property
    def old_id(self) -> str:
        return f"{self.account}.{self.user_id}"

    def expired(self) -> bool:
        return time.time() >= self.expires


class AgentLogins:
    def __init__(self, lifetime: float):
        self.lifetime = lifetime
        self.by_session: dict[str, AgentLogin] = {}
        self.by_bearer: dict[str, AgentLogin] = {}

    def login(self, account: str, username: str) -> tuple[str, AgentLogin]:
        key = uuid.uuid5(_AGENT_NAMESPACE, f"{account}/{username}")
        login = AgentLogin(account, str(key.int % 10**10), str(key), secrets.token_hex(32), secrets.token_hex(16),
                           time.time() + self.lifetime)
        session = secrets.token_hex(16)
        self.by_session[session] = login
        self.by_bearer[login.bearer] = login
        while len(self.by_session) > MAX_SESSIONS:
            self._forget(next(iter(self.by_session)))
        return session, login

    def refresh(self, session: str | None, csrf) -> AgentLogin | None:
        login = self.by_session.get(session or "")
        if login is None or login.expired() or not isinstance(csrf, str) or csrf != login.csrf:
            return None
        login.expires = time.time() + self.lifetime
        return login

    def of_bearer(self, bearer: str) -> AgentLogin | None:
        return self.by_bearer.get(bearer)

    def _forget(self, session: str) -> None:
        login = self.by_session.pop(session)
        self.by_bearer.pop(login.bearer, None)


class AgentLoginRoutes:
    def __init__(self, logins: AgentLogins, advertise: str | None):
        self.logins = logins
        self.advertise = advertise

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{ACCOUNT}/service/baseURI.json", self.domains)
        app.router.add_post(f"{ACCOUNT}/login", self.login)
        app.router.add_post(f"{ACCOUNT}/refresh", self.refresh)

    async def domains(self, request: web.Request) -> web.Response:
        account, host = request.match_info["account"], self.advertise or request.host
        return web.json_response({"baseURIs": [{"service": service, "account": account, "baseURI": host}
                                               for service in ("agentVep", "asyncMessagingEnt")]})

    async def login(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        username, password = body.get("username"), body.get("password")
        if not all(isinstance(v, str) and v for v in (username, password)):
            raise BadRequest('login needs a JSON body {"username": "…", "password": "…"}')
        session, login = self.logins.login(request.match_info["account"], username)
        response = web.json_response({"bearer": login.bearer, "csrf": login.csrf,
                                      "config": {"userId": login.user_id, "userPid": login.pid,
                                                 "loginName": username, "accountId": login.account}})
        response.set_cookie(SESSION_COOKIE, session, httponly=True, path="/")
        return response

    async def refresh(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if self.logins.refresh(request.cookies.get(SESSION_COOKIE), body.get("csrf")) is None:
            return error(401, "unknown or expired session (log in again)")
        return web.json_response({})
