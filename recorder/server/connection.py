"""One client WebSocket of the built-in server: authentication, timers, request loop, outbox.

Choices (the protocol documents none of them):
* Authentication by `Authorization: jwt <token>` on the upgrade, or by an `InitConnection` request
  whose `.ams.headers.ConsumerAuthentication` header carries the jwt. Without a header the client
  has `init_timeout` seconds to authenticate, else the socket is closed with 4401. Requests other
  than InitConnection/GetClock/.GetClock before authentication are answered 401; the identity
  counts from the moment the InitConnection response goes out (so with `--delay InitConnection=N`
  pipelined requests are rejected). InitConnection without a jwt -> 401 response; with an unknown,
  expired or other-account jwt -> close 4401; an extension-overdue identity -> close 4407.
* Idle: no frame at all from the client (data, ping, pong) for `idle_timeout` -> close with
  `idle_close_code` (default 1000), reason "idle timeout". The server sends no pings of its own,
  so client pongs never hide idleness.
* A binary frame -> close 1003; a message over `max_message_size` -> close 1009; invalid UTF-8
  -> 1007, a broken frame -> 1002 (aiohttp).
* Notifications caused by a request are sent after its response.
* A client that does not read: once `max_outbox` frames wait for it, its frames are dropped and
  the socket is closed with 1013 (Try Again Later); if the close frame cannot be written within
  CLOSE_TIMEOUT the TCP connection is aborted. 1013 rather than 1008: LivePerson's own client code
  treats 1008 as a token error and would fetch a new token; any code but 4401/4407 means "wait a
  little and reconnect" in the Messaging Window API's close-code rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from recorder.server.auth import CLOSE_TOKEN, Identity
from recorder.server.requests import ERROR_TYPE, Request, RequestError, Session, parse_request, response

if TYPE_CHECKING:
    from recorder.server.app import MessagingServer

log = logging.getLogger("mwtap.serve")
UNAUTHENTICATED_TYPES = ("GetClock", ".GetClock")
CONSUMER_AUTHENTICATION = ".ams.headers.ConsumerAuthentication"
CLOSE_SLOW_READER = 1013
CLOSE_TIMEOUT = 5.0
"""Seconds a close handshake may take before the TCP connection is aborted."""


def header_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: jwt <token>` header (scheme case-insensitive)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "jwt" and token.strip() else ""


class ClientSession:
    """One consumer socket: `ws` is prepared with autoping and autoclose off, so that pings reach
    `run` (they count as activity) and the client's close code can be echoed."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, account: str, server: MessagingServer):
        self.ws = ws
        self.request = request
        self.account = account
        self.server = server
        self.config = server.config
        self.faults = server.faults
        self.identity: Identity | None = None
        self.outbox: asyncio.Queue[dict] = asyncio.Queue()
        self.held: list[dict] | None = None
        self.tasks: set[asyncio.Task] = set()
        self.auth_timer: asyncio.Task | None = None
        self.closing: set[asyncio.Task] = set()
        """Close handshakes in progress; unlike `tasks` they are not cancelled when the session ends."""
        self.close_code: int | None = None
        """The code the server closed with, when it closed first."""
        self.last_activity = asyncio.get_running_loop().time()
        self.idle_timeout = self.config.idle_timeout

    def notify(self, frame: dict) -> None:
        if self.held is not None:
            self.held.append(frame)
        else:
            self._send(frame)

    def _send(self, frame: dict) -> None:
        if self.close_code is not None:
            return
        if self.outbox.qsize() >= self.config.max_outbox:
            self.outbox = asyncio.Queue()  # what it would not read is dropped with it
            self.close_soon(CLOSE_SLOW_READER, f"over {self.config.max_outbox} frames unread")
            return
        self.outbox.put_nowait(frame)

    async def run(self) -> None:
        self._spawn(self._write())
        self._spawn(self._watch_idle())
        if self.config.close_after is not None:
            self._spawn(self._close_later(self.config.close_after, self.config.close_code, "closed by fault injection"))
        self._start_auth()
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await self.ws.receive()
                self.last_activity = loop.time()
                if message.type is WSMsgType.TEXT and self.close_code is None:  # closing: no more answers
                    self._handle(message.data)
                    if not self.outbox.empty():
                        # let the writer flush before the next request of a pipelined burst: the
                        # outbox then only grows while the client does not read
                        await asyncio.sleep(0)
                elif message.type is WSMsgType.PING:
                    await self.ws.pong(message.data)
                elif message.type is WSMsgType.BINARY:
                    self.close_soon(1003, "binary frames are not supported")
                    break
                elif message.type is WSMsgType.CLOSE:
                    await self._echo_close(message.data, message.extra)
                    break
                elif message.type in (WSMsgType.ERROR, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
        except ConnectionError:
            pass
        finally:
            for task in self.tasks:
                task.cancel()
            self._ended()
        if self.closing:
            await asyncio.wait(self.closing)

    def _start_auth(self) -> None:
        token = header_token(self.request.headers.get("Authorization"))
        if token is None:
            self.auth_timer = self._spawn(self._close_later(self.config.init_timeout, CLOSE_TOKEN, "no InitConnection"))
        else:
            self._authenticate(token)

    def _ended(self) -> None:
        self.server.store.forget(self)
        if self.identity is not None:
            self.server.store.detach(self.identity.sub)

    # -- requests ------------------------------------------------------------------------------

    def _handle(self, text: str) -> None:
        try:
            request = parse_request(text)
        except RequestError as e:
            self._send(response(e.request_id, ERROR_TYPE, e.code, e.message))
            return
        if request.type == "InitConnection":
            self._init_connection(request)
            return
        self.held = []
        try:
            frame = self._answer(request)
        finally:
            held, self.held = self.held, None
        self._respond(request.type, frame, held)

    def _answer(self, request: Request) -> dict:
        if self.identity is None and request.type not in UNAUTHENTICATED_TYPES:
            return response(request.id, ERROR_TYPE, 401,
                            "not authenticated: send InitConnection (and wait for its response) or an Authorization header")
        session = Session(account=self.account, consumer=self.identity.sub if self.identity else "", sink=self)
        try:
            response_type, body = self.server.dispatcher.answer(session, request)
            return response(request.id, response_type, 200, body)
        except RequestError as e:
            return response(request.id, ERROR_TYPE, e.code, e.message)
        except Exception:
            log.exception("request %s failed", request.type)
            return response(request.id, ERROR_TYPE, 500, "internal server error")

    def _init_connection(self, request: Request) -> None:
        token = next((h.get("jwt") for h in request.headers
                      if isinstance(h, dict) and h.get("type") == CONSUMER_AUTHENTICATION), None)
        if not isinstance(token, str) or not token:
            self._respond(request.type, response(request.id, ERROR_TYPE, 401,
                                                 f"InitConnection needs a {CONSUMER_AUTHENTICATION} header with a jwt"), [])
            return
        identity = self._valid_identity(token)
        if identity is not None:
            self._respond(request.type, response(request.id, "StringResponse", 200, "OK"), [],
                          on_sent=lambda: self._accept(identity))

    def _respond(self, request_type: str, frame: dict, held: list[dict], on_sent=None) -> None:
        delay = self.faults.response_delay(request_type)
        if delay > 0:
            self._spawn(self._respond_later(delay, frame, held, on_sent))
        else:
            self._emit(frame, held, on_sent)

    async def _respond_later(self, delay: float, frame: dict, held: list[dict], on_sent) -> None:
        await asyncio.sleep(delay)
        self._emit(frame, held, on_sent)

    def _emit(self, frame: dict, held: list[dict], on_sent) -> None:
        if on_sent is not None:
            on_sent()
        if not self.faults.drop_response():
            self._send(frame)
        for notification in held:
            self._send(notification)

    # -- authentication ------------------------------------------------------------------------

    def _authenticate(self, token: str) -> None:
        identity = self._valid_identity(token)
        if identity is not None:
            self._accept(identity)

    def _valid_identity(self, token: str) -> Identity | None:
        """The identity of `token`, or None after starting to close the socket with 4401/4407."""
        identity = self.server.issuer.identity(token)
        if identity is None or identity.account != self.account:
            self.close_soon(CLOSE_TOKEN, "unknown token")
            return None
        code = identity.close_code_at(time.time())
        if code is not None:
            self.close_soon(code, "token expired" if code == CLOSE_TOKEN else "identity must be extended")
            return None
        return identity

    def _accept(self, identity: Identity) -> None:
        if self.identity is not None:
            self.server.store.detach(self.identity.sub)
        self.server.store.attach(identity.sub)
        self.identity = identity
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        deadline, code = identity.deadline()
        reason = "token expired" if code == CLOSE_TOKEN else "identity must be extended"
        self.auth_timer = self._spawn(self._close_later(deadline - time.time(), code, reason))

    # -- background tasks ----------------------------------------------------------------------

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _echo_close(self, code: int, reason: str) -> None:
        """Answers the client's close with its own code, as RFC 6455 suggests (aiohttp's autoclose
        would answer 1000); a close without a code is answered 1000."""
        if code in (0, 1005, 1006, 1015) or not 1000 <= code < 5000:
            code, reason = 1000, ""
        with contextlib.suppress(ConnectionError):
            await self.ws.close(code=code, message=reason.encode())

    async def _write(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                await self.ws.send_str(json.dumps(frame, separators=(",", ":")))
        except ConnectionError:
            pass

    async def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = self.last_activity + self.idle_timeout - loop.time()
            if remaining <= 0:
                self.close_soon(self.config.idle_close_code, "idle timeout")
                return
            await asyncio.sleep(remaining)

    async def _close_later(self, delay: float, code: int, reason: str) -> None:
        await asyncio.sleep(max(0.0, delay))
        self.close_soon(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        task = asyncio.get_running_loop().create_task(self._close(code, reason))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def _close(self, code: int, reason: str) -> None:
        """Closes with `code`; aborts the TCP connection when the close frame cannot be written
        (a client that does not read)."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError):
            if self.request.transport is not None:
                self.request.transport.abort()
