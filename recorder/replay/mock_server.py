"""The server-side replay: plays a recording's server side to live clients, with no real server.

A live connection plays the first recorded connection not played yet, of the consumer its token
names when the mock's IDP issued that token, else of any consumer; when none is left it is closed
with 1013. The token is the upgrade's Authorization header, or the token in its URL path (v2
consumer URLs); without either, the choice waits for the client's first message and takes the jwt
of its ConsumerAuthentication header if it is an InitConnection (a client that cannot set
WebSocket headers). The wait ends early, choosing without
a token, when an unplayed recording's server sent or closed before its client's first request, at
that recorded offset. What the played recording sent after its open is timed from the live upgrade,
and the `open` record keeps the upgrade's time.
Each client request is matched to a recorded request of the same type and shape (its payload with
ids and sequences masked; failing that, of the same type), in order. The mock then sends, relative
to the moment the live request arrived, what the recording had after that request: its response
(with the live request's `id` as `reqId`), the notifications that followed it before the next
request, and a server close, each at its recorded offset. A request type that was answered before
but has no unused recording left (a keep-alive sent more often) gets the last recorded response of
its type; a type never recorded gets a 400 StringResponse.

The IDP signup/authenticate endpoints answer a JWT-shaped token whose `sub` is a recorded consumer's
id, so a client recognises its own echoed events as it did in the recording: a signup with the
Authorization of a token the mock issued keeps that consumer (as a real IDP extends an identity),
any other signup gets the next recorded consumer, in the order they first connected (the last
one again once every consumer is taken).

Timestamps move to the replay's clock: every epoch-millisecond number under a timestamp key
(`serverTimestamp`, `currentTime`, `lastUpdateTime`, keys ending in `Ts` or `Timestamp`) is shifted
by as much as the live moment a played frame follows (the live request, or the upgrade) is later
than its recorded counterpart. What was live in the recording is live to the client under test (an
analysis of the mock's capture tells live messages from history by these stamps), what was
history stays as far in the past, and stamps played after one request keep their recorded gaps.

Given a `ReplayRecording`, the mock records the live connections (what the client sent, what the
mock answered, the closes), each `open` with `replay_of` the recorded connection it played.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import json
import re
import time
import uuid
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from analysis.capture import host_port, split_url
from analysis.diff import is_volatile, shape
from analysis.frame import messaging_changes, parse_payload, type_is
from analysis.identity import Token, init_connection_token, token_of, url_token
from analysis.redact import fingerprint
from recorder.replay.plan import RecordedConnection, ReplayPlan, ServerFrame
from recorder.replay.recording import ReplayRecording

NO_MORE_CONNECTIONS = 1013
_REQ_ID_RE = re.compile(r'("reqId"\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d+)')
_ACCOUNT_RE = re.compile(r"/account/([^/]+)/")
_EPOCH_MS_RE = re.compile(r'"([A-Za-z_]\w*)"(\s*:\s*)(\d{12,14})(?![\d.eE])')
"""A key and an integer that reads as milliseconds since 1970 (years 2001 to 5138)."""


def jwt_shaped(claims: dict) -> str:
    """An unsigned token in JWT form (the mock accepts any token; clients may read `sub`)."""
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def recorded_consumers(plan: ReplayPlan) -> list[str]:
    """The consumer id of each recorded connection (the originator of a change whose role is
    CONSUMER); connections of one recorded identity share what any of them shows."""
    shown = {conn.id: _consumer_shown(conn) for conn in plan.connections}
    by_identity: dict[str | None, str] = {}
    for conn in plan.connections:
        if shown[conn.id] is not None and conn.identity is not None:
            by_identity.setdefault(conn.identity, shown[conn.id])
    fallback = next((c for c in shown.values() if c is not None), None) or str(uuid.uuid4())
    return [by_identity.get(conn.identity) or shown[conn.id] or fallback for conn in plan.connections]


def _consumer_shown(conn: RecordedConnection) -> str | None:
    for frame in conn.server_frames:
        payload = parse_payload({"text": frame.data.decode("utf-8", "replace")}) if frame.is_text else None
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            continue
        for change in messaging_changes(payload["type"], payload.get("body")):
            meta = change.get("originatorMetadata")
            if isinstance(meta, dict) and meta.get("role") == "CONSUMER" and isinstance(meta.get("id"), str):
                return meta["id"]
    return None


def _first_unprompted(conn: RecordedConnection) -> float | None:
    """Seconds after its open at which the recorded server sent or closed before any client request."""
    times = [frame.t for frame in conn.server_frames if frame.after is None]
    close = conn.close or {}
    if not conn.requests and close.get("by") == "server" and isinstance(close.get("t"), (int, float)):
        times.append(close["t"])
    return min(times) - conn.t_open if times else None


IDP_PATH = re.compile(r"/api/account/([^/]+)/(signup|authenticate)/?")
"""The classic IDP paths, answered by the mock with a token of the recorded consumer."""


def json_response(status: int, payload: dict) -> Response:
    body = json.dumps(payload).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class ConnectionScript:
    """The server side of one recorded connection, keyed by the client frames it follows."""

    def __init__(self, conn: RecordedConnection):
        self.conn = conn
        self.unused: dict[tuple, list[int]] = {}
        self.unused_by_type: dict[str | None, list[int]] = {}
        for position, frame in enumerate(conn.frames):
            if frame.request_index is not None:
                self.unused.setdefault(_request_key(frame.type, frame.payload), []).append(position)
                self.unused_by_type.setdefault(frame.type, []).append(position)
        self.used: set[int] = set()
        self.follows: dict[int | None, list[ServerFrame]] = {}
        for server_frame in conn.server_frames:
            self.follows.setdefault(server_frame.after, []).append(server_frame)
        self.last_response: dict[str | None, ServerFrame] = {}
        for server_frame in conn.server_frames:
            if server_frame.kind == "resp" and server_frame.after is not None:
                self.last_response[conn.frames[server_frame.after].type] = server_frame
        close = conn.close or {}
        self.close = close if close.get("by") == "server" and isinstance(close.get("code"), int) else None
        requests = [p for p, f in enumerate(conn.frames) if f.request_index is not None]
        self.close_after = requests[-1] if requests else None

    def match(self, request_type: str | None, payload) -> int | None:
        """Position of the recorded request a live one plays (consumed), or None."""
        for candidates in (self.unused.get(_request_key(request_type, payload)), self.unused_by_type.get(request_type)):
            while candidates:
                position = candidates.pop(0)
                if position not in self.used:
                    self.used.add(position)
                    return position
        return None

    def start_time(self, position: int | None) -> float:
        return self.conn.t_open if position is None else self.conn.frames[position].t


def _request_key(request_type: str | None, payload) -> tuple:
    return request_type, shape(payload)


class MockServer:
    """`async with MockServer(plan) as server:` then point a client at `server.url()`."""

    def __init__(self, plan: ReplayPlan, host: str = "127.0.0.1", port: int = 0,
                 recording: ReplayRecording | None = None):
        self.plan = plan
        self.host = host
        self.port = port
        self.recording = recording
        self.issued: list[str] = []
        """Tokens the IDP endpoints handed out (the recording redacts them)."""
        self.consumers = recorded_consumers(plan)
        """The consumer each recorded connection was, by position in the plan."""
        self._signup_order = list(dict.fromkeys(self.consumers))
        self._signups = 0
        self._consumer_of_token: dict[str, str] = {}
        """Consumer of each token the IDP endpoints issued, by token fingerprint."""
        self.unplayed = list(range(len(plan.connections)))
        self._first_unprompted = [_first_unprompted(conn) for conn in plan.connections]
        self.unmatched: list[str] = []
        """Types of live requests that had no recorded counterpart."""
        self._server = None
        self._tasks: set[asyncio.Task] = set()

    def url(self) -> str:
        recorded = split_url(self.plan.connections[0].url)
        query = f"?{recorded.query}" if recorded.query else ""
        return f"ws://{host_port(self.host, self.port)}{recorded.path}{query}"

    def idp_url(self) -> str:
        match = _ACCOUNT_RE.search(split_url(self.plan.connections[0].url).path + "/")
        return f"http://{host_port(self.host, self.port)}/api/account/{match[1] if match else 'mwtap'}"

    async def __aenter__(self) -> MockServer:
        self._server = await serve(self._play, self.host, self.port, process_request=self._route,
                                   ping_interval=None, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._server.close()
        await self._server.wait_closed()

    def _route(self, ws: ServerConnection, request: Request) -> Response | None:
        if IDP_PATH.fullmatch(urlsplit(request.path).path) is None:
            return None
        consumer = self._consumer_of(_header_token(request))
        if consumer is None:
            consumer = self._signup_order[min(self._signups, len(self._signup_order) - 1)]
            self._signups += 1
        now = int(time.time())
        token = jwt_shaped({"sub": consumer, "iss": "mwtap-replay-mock", "iat": now, "exp": now + 3600,
                            "jti": uuid.uuid4().hex})
        self.issued.append(token)
        self._consumer_of_token[fingerprint(token)] = consumer
        return json_response(200, {"jwt": token})

    def _consumer_of(self, token: Token | None) -> str | None:
        return None if token is None else self._consumer_of_token.get(token.fingerprint)

    def _next_recorded(self, token: Token | None) -> RecordedConnection | None:
        """The recorded connection a live one plays (taken), or None when all are played."""
        consumer = self._consumer_of(token)
        candidates = [i for i in self.unplayed if self.consumers[i] == consumer] or self.unplayed
        if not candidates:
            return None
        index = candidates[0]
        self.unplayed.remove(index)
        return self.plan.connections[index]

    async def _play(self, ws: ServerConnection) -> None:
        opened, opened_loop = time.time(), asyncio.get_running_loop().time()
        token, first, left = _header_token(ws.request) or url_token(ws.request.path), None, False
        if token is None and self.unplayed:
            try:
                first = await self._first_message(ws)
            except ConnectionClosed:
                left = True  # closed before it spoke: it plays nothing, takes nothing
            token = _init_connection_token(first)
        played = None if left else self._next_recorded(token)
        if self.recording is not None:
            self.recording.open(str(ws.id), played.id if played else None,
                                f"ws://{host_port(self.host, self.port)}{ws.request.path}", opened, ws, "server", t=opened)
            if first is not None:
                self.recording.message(str(ws.id), True, first)
        try:
            if played is None:
                await ws.close(NO_MORE_CONNECTIONS, "mwtap mock: no more recorded connections")
            else:
                await self._play_recorded(ws, ConnectionScript(played), first, opened_loop)
        finally:
            if self.recording is not None:
                await ws.wait_closed()
                self.recording.close(str(ws.id), ws, "server")

    async def _first_message(self, ws: ServerConnection) -> str | bytes | None:
        """The client's first message, or None when an unplayed recording's server spoke before its
        client's first request (ConnectionClosed when the client left first)."""
        waits = [t for t in map(self._first_unprompted.__getitem__, self.unplayed) if t is not None]
        try:
            return await asyncio.wait_for(ws.recv(), min(waits, default=None))
        except TimeoutError:
            return None

    async def _play_recorded(self, ws: ServerConnection, script: ConnectionScript, first: str | bytes | None,
                             opened_loop: float) -> None:
        tasks: set[asyncio.Task] = set()
        self._follow(ws, script, None, None, tasks, asyncio.get_running_loop().time() - opened_loop)
        try:
            if first is not None:
                self._answer(ws, script, first, tasks)
            async for message in ws:
                if self.recording is not None:
                    self.recording.message(str(ws.id), True, message)
                self._answer(ws, script, message, tasks)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()

    async def _send(self, ws: ServerConnection, data: str | bytes) -> None:
        await ws.send(data)
        if self.recording is not None:
            self.recording.message(str(ws.id), False, data)

    def _answer(self, ws: ServerConnection, script: ConnectionScript, message, tasks: set) -> None:
        payload = parse_payload({"text": message}) if isinstance(message, str) else None
        request_type = payload.get("type") if isinstance(payload, dict) else None
        request_id = payload.get("id") if isinstance(payload, dict) else None
        position = script.match(request_type, payload)
        if position is not None:
            self._follow(ws, script, position, request_id, tasks)
            return
        self.unmatched.append(str(request_type))
        reused = script.last_response.get(request_type)
        if reused is not None:
            self._spawn(tasks, self._send_later(ws, [(0.0, reused)], request_id, None, time.time() - reused.t))
            return
        error = {"kind": "resp", "reqId": None if request_id is None else str(request_id), "type": "StringResponse",
                 "code": 400, "body": f"mwtap mock: no recorded {request_type} request to answer"}
        self._spawn(tasks, self._send(ws, orjson.dumps(error).decode()))

    def _follow(self, ws: ServerConnection, script: ConnectionScript, position: int | None, request_id,
                tasks: set, late: float = 0.0) -> None:
        """Schedules what the recording sent after the client frame at `position` (None: the open),
        which happened `late` seconds ago."""
        start = script.start_time(position) + late
        frames = [(f.t - start, f) for f in script.follows.get(position, [])]
        close = script.close if script.close is not None and script.close_after == position else None
        if frames or close:
            self._spawn(tasks, self._send_later(ws, frames, request_id,
                                                None if close is None else (close["t"] - start, close),
                                                time.time() - start))

    async def _send_later(self, ws: ServerConnection, frames: list[tuple[float, ServerFrame]],
                          request_id, close: tuple[float, dict] | None, shift: float) -> None:
        """Sends `frames` at their offsets, stamped `shift` seconds later than recorded, then `close`."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        with contextlib.suppress(ConnectionClosed):
            for offset, frame in frames:
                await asyncio.sleep(max(0.0, began + offset - loop.time()))
                await self._send(ws, _as_played(frame, request_id, round(shift * 1000)))
            if close is not None:
                await asyncio.sleep(max(0.0, began + close[0] - loop.time()))
                await ws.close(close[1]["code"], close[1].get("reason") or "")

    def _spawn(self, tasks: set, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        for registry in (tasks, self._tasks):
            registry.add(task)
            task.add_done_callback(registry.discard)


def _header_token(request: Request) -> Token | None:
    """The token of a request's Authorization header ("jwt <token>", "Bearer <token>")."""
    value = request.headers.get("Authorization")
    return token_of(value.split(" ", 1)[-1]) if value else None


def _init_connection_token(message: str | bytes | None) -> Token | None:
    """The ConsumerAuthentication jwt of an InitConnection request."""
    payload = parse_payload({"text": message}) if isinstance(message, str) else None
    request_type = payload.get("type") if isinstance(payload, dict) else None
    is_init = isinstance(request_type, str) and type_is(request_type, "InitConnection")
    return init_connection_token(payload) if is_init else None


def _as_played(frame: ServerFrame, request_id, shift_ms: int) -> str | bytes:
    """A recorded server frame as the mock sends it: answering the live request's id, its
    timestamps `shift_ms` later; every other byte as recorded."""
    if not frame.is_text:
        return frame.data
    text = shift_timestamps(frame.data.decode("utf-8", "replace"), shift_ms)
    if frame.kind != "resp" or request_id is None:
        return text
    return _REQ_ID_RE.sub(lambda m: m.group(1) + orjson.dumps(str(request_id)).decode(), text, count=1)


def shift_timestamps(text: str, shift_ms: int) -> str:
    """`text` with every epoch-millisecond value under a timestamp key moved by `shift_ms`."""
    def shifted(m: re.Match) -> str:
        if not is_volatile(m[1]):
            return m[0]
        return f'"{m[1]}"{m[2]}{int(m[3]) + shift_ms}'
    return _EPOCH_MS_RE.sub(shifted, text)
