"""The client-side replay: sends a recording's client frames to a target and records what happens.

Pacing (`timing`):
* `wait`: before each frame, wait until the target has answered every request the recorded client
  had seen answered, and sent at least as many notifications of each type as the recorded client
  had received, at that point (at most `wait_timeout`; what did not come is reported once and not
  waited for again);
* `original`: the recorded gaps, divided by `speed`;
* `fast`: no pacing.
In every mode a frame that echoes a server-assigned value waits (at most `wait_timeout`) until the
target has sent the frame that assigns it, and after the last frame the replay waits (at most
`wait_timeout`) for the responses and notifications still due before it closes.

A 4401/4407 close before the last frame: a fresh token is fetched, the connection is reopened and
the frames that restore its state (InitConnection, subscriptions) are re-sent before the replay
goes on. Any other close ends the replay of that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from analysis.frame import parse_payload
from analysis.ids import short_id
from recorder.replay.plan import ClientFrame, RecordedConnection, ReplayPlan
from recorder.replay.recording import ReplayRecording
from recorder.replay.substitution import FrameKeys, Substitution, SubstitutionStore
from recorder.replay.target import target_url, with_path_bearer
from recorder.replay.tokens import TokenError, TokenPool

TIMINGS = ("wait", "original", "fast")
TOKEN_CLOSE_CODES = (4401, 4407)
RECONNECT_SPACING = 1.0
"""Seconds at least between two reconnects of one connection, so a target that accepts a fresh
token and closes again at once is not hammered (the Node agent SDK's sample waits 5 s to retry)."""
HANDSHAKE_HEADERS = frozenset({"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                               "sec-websocket-extensions", "sec-websocket-protocol", "content-length",
                               "user-agent", "authorization"})


@dataclass
class ReplayOptions:
    target: str
    timing: str = "wait"
    speed: float = 1.0
    parallel: bool = False
    fresh_ids: bool = False
    wait_timeout: float = 5.0
    max_reconnects: int = 5
    """Reconnects in a row on which the target answered no recorded request (re-sent subscriptions
    do not count: a target can answer them and close again at once). An answer starts the count again."""
    addresses: list[str] = field(default_factory=list)
    """Connect to these addresses (the ones `check_target` approved) instead of resolving the target's name."""
    tls: ssl.SSLContext | None = None
    """How a `wss` target is trusted (`target_tls`; None: the system's roots)."""

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise ValueError(f"timing must be one of {TIMINGS}, not {self.timing!r}")
        if self.speed <= 0:
            raise ValueError("speed must be positive")


class connect_without_redirects(connect):
    """websockets' `connect` that never follows a redirect: only the URL the user gave is contacted,
    so a 3xx answer to the upgrade is a refusal (InvalidStatus) like any other."""

    def process_redirect(self, exc: Exception) -> Exception:
        return exc


async def connect_checked(url: str, addresses: list[str], **options) -> ClientConnection:
    """Opens `url` at the first of `addresses` that accepts the TCP connection, trying them in order;
    the name in `url` is not resolved (it is still sent as the Host). No addresses: the name is
    resolved as usual. Only an OSError before the WebSocket handshake (TCP refused or unreachable, or
    a failed TLS handshake) moves on to the next address: once one is made, the WebSocket handshake's
    outcome (a refusal, a redirect, a timeout) is the result, as for any client."""
    if not addresses:
        return await connect_without_redirects(url, **options)
    failures: list[OSError] = []
    for address in addresses:
        try:
            return await connect_without_redirects(url, host=address, **options)
        except TimeoutError:
            raise
        except OSError as e:
            failures.append(e)
    raise failures[0] if len(failures) == 1 else OSError("; ".join(str(e) for e in failures))


@dataclass
class ConnectionResult:
    recorded: str
    replayed: list[str] = field(default_factory=list)
    frames_total: int = 0
    frames_sent: int = 0
    frames_unsent: int = 0
    """Recorded frames never sent: the connection could not be made, or ended before its last frame."""
    responses: int = 0
    notifications: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    reconnects: int = 0
    events: list[str] = field(default_factory=list)
    """What went differently: timeouts, reconnects, early closes (one line each)."""


@dataclass
class ReplayResult:
    connections: list[ConnectionResult]
    substitutions: list[Substitution]
    tokens_fetched: int
    interrupted: bool

    @property
    def incomplete(self) -> list[ConnectionResult]:
        """The recorded connections that could not be made or whose frames were not all sent."""
        return [c for c in self.connections if not c.replayed or c.frames_unsent]

    def to_json(self) -> dict:
        return {"interrupted": self.interrupted, "tokens_fetched": self.tokens_fetched,
                "connections": [asdict(c) for c in self.connections],
                "substitutions": [asdict(s) for s in self.substitutions]}


class Replayer:
    def __init__(self, plan: ReplayPlan, options: ReplayOptions, tokens: TokenPool, recording: ReplayRecording,
                 log: Callable[[str], None] = lambda line: None):
        self.plan = plan
        self.options = options
        self.tokens = tokens
        self.recording = recording
        self.log = log
        self.store = SubstitutionStore()
        self.stop = asyncio.Event()
        self.changed = asyncio.Condition()
        self.replays: list[ConnectionReplay] = []  # as they are made: their results count what is sent

    def request_stop(self) -> None:
        """Ends the replay cleanly (Ctrl-C): open connections are closed, the capture is flushed."""
        self.stop.set()
        asyncio.get_running_loop().create_task(self.notify())

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def run(self) -> ReplayResult:
        self.replays = replays = [ConnectionReplay(self, conn) for conn in self.plan.connections]
        if self.options.parallel:
            first = min(c.t_open for c in self.plan.connections)
            await asyncio.gather(*(self._start_later(r, r.conn.t_open - first) for r in replays))
        else:
            for replay in replays:
                if self.stop.is_set():
                    break
                await replay.run()
        self.recording.finish()
        fetched = self.tokens.source.fetched if self.tokens.source else 0
        return ReplayResult([r.result for r in replays], self.store.made, fetched, self.stop.is_set())

    async def _start_later(self, replay: ConnectionReplay, offset: float) -> None:
        if self.options.timing == "original":
            await self.wait_for(lambda: False, offset / self.options.speed)
        if not self.stop.is_set():
            await replay.run()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float,
                       also: Callable[[], bool] = lambda: False) -> bool:
        """Waits until `predicate()` (or `also()` or stop), at most `timeout`; returns `predicate()`.
        When it already holds, returns without yielding to the event loop: frames the recorded client
        sent back to back leave together, before the reader can take in what the target answered
        meanwhile (a request sent while another with its id is in flight stays in flight)."""
        if predicate() or also() or self.stop.is_set():
            return predicate()
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: predicate() or also() or self.stop.is_set()),
                                       max(0.0, timeout))
        return predicate()


class ConnectionReplay:
    def __init__(self, replayer: Replayer, conn: RecordedConnection):
        self.r = replayer
        self.options = replayer.options
        self.conn = conn
        self.result = ConnectionResult(conn.id, frames_total=len(conn.frames), frames_unsent=len(conn.frames))
        self.keys = FrameKeys()
        self.sent_requests: set[int] = set()
        # request index -> responses, re-sent requests' included: its keys are the requests answered
        self.responses: Counter = Counter()
        self.given_up: set[int] = set()
        self.notifications: Counter = Counter()
        self.deficit: Counter = Counter()
        self.next_id = 0
        self.ws: ClientConnection | None = None
        self.ws_id = ""
        self.reader: asyncio.Task | None = None
        self.state: list[ClientFrame] = []  # recorded frames sent so far that restore state on a reconnect
        self.failed_reconnects = 0  # reconnects since the target last answered a recorded request
        self.answerable: set[int] = set()  # recorded requests sent since the last reconnect
        self.deadlines: dict[str, float] = {}  # what the next frame waits for -> when it stops waiting
        self.last_reconnect = -RECONNECT_SPACING
        # Past the recorded client's close: the replay has what that client had when it closed (or
        # has sent its own close frame). What the target sends next, the recorded client never saw:
        # it had closed, and mitmproxy drops what follows the first close frame. Not recorded.
        self.past_close = False
        self.last_frames_sent = False
        self.after_close = 0

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except TokenError as e:
            self._event(f"stopped: {e}")
        finally:
            await self._close()
            self.r.store.finished.add(self.conn.id)
            await self.r.notify()

    async def _run(self) -> None:
        if not await self._connect("initial"):
            return
        start = asyncio.get_running_loop().time()
        frames = self.conn.frames
        index = 0
        while index < len(frames) and not self.r.stop.is_set():
            frame = frames[index]
            await self._pace(frame, start)
            await self._await_values(frame)
            if self._closed() or not await self._send(frame):
                if not await self._recover(index):
                    return
                continue
            index += 1
            self.deadlines.clear()
            self.result.frames_unsent = len(frames) - index
        if not self.r.stop.is_set():
            self.last_frames_sent = True
            await self._drain(start)

    def _left(self, waiting_for: str) -> float:
        """Seconds left to wait for `waiting_for` before the next frame: `wait_timeout` from the first
        try, the time spent reconnecting not counted (restarting the wait on each reconnect, with a
        token shorter-lived than the wait, never got to the end of it)."""
        now = asyncio.get_running_loop().time()
        return self.deadlines.setdefault(waiting_for, now + self.options.wait_timeout) - now

    async def _pace(self, frame: ClientFrame, start: float) -> None:
        if self.options.timing == "original":
            due = start + (frame.t - self.conn.t_open) / self.options.speed
            await self.r.wait_for(lambda: False, due - asyncio.get_running_loop().time(), also=self._closed)
        elif self.options.timing == "wait":
            if not await self.r.wait_for(lambda: self._caught_up(frame.answered_before, frame.notifications_before),
                                         self._left("answers"), also=self._closed) and not self._closed():
                self._give_up(frame.answered_before, frame.notifications_before, f"before frame {frame.n}")

    async def _await_values(self, frame: ClientFrame) -> None:
        sources = set(frame.needs.values())
        store = self.r.store
        if store.missing(sources) and not await self.r.wait_for(lambda: not store.missing(sources),
                                                                 self._left("values"), also=self._closed):
            missing = store.missing(sources)
            if self._closed():
                return
            store.given_up |= missing
            self._event(f"frame {frame.n} ({frame.type}): the target did not send the counterpart of recorded "
                        f"server frame(s) {', '.join(str(n) for _, n in sorted(missing))} within "
                        f"{self.options.wait_timeout:g} s; values from them are sent as recorded")

    async def _drain(self, start: float) -> None:
        expected = self.conn.notifications
        if not await self.r.wait_for(lambda: self._caught_up(self.sent_requests, expected),
                                     self.options.wait_timeout, also=self._closed):
            if not self._closed():
                self._give_up(self.sent_requests, expected, "after the last frame")
            elif self.reader is not None:  # requests sent as the target closed: nobody else would tell
                await self.reader
                for index in sorted(self.sent_requests - self.given_up - self.responses.keys()):
                    self._event(f"no response to request {self._request_name(index)}: the target closed the "
                                f"connection with {self.ws.close_code} after the last frame")
        close = self.conn.close or {}
        if self.options.timing == "original" and close.get("t"):
            due = start + (close["t"] - self.conn.t_open) / self.options.speed
            await self.r.wait_for(self._closed, due - asyncio.get_running_loop().time())
        if close.get("by") == "server":
            await self.r.wait_for(self._closed, self.options.wait_timeout)

    def _caught_up(self, requests, notifications: Counter) -> bool:
        if not (set(requests) - self.given_up) <= self.responses.keys():
            return False
        return all(self.notifications[t] >= n - self.deficit[t] for t, n in notifications.items())

    def _request_name(self, index: int) -> str:
        frame = next((f for f in self.conn.frames if f.request_index == index), None)
        return f"{frame.type} (id {frame.request_id})" if frame else f"#{index}"

    def _give_up(self, requests, notifications: Counter, when: str) -> None:
        for index in sorted(set(requests) - self.given_up - self.responses.keys()):
            self.given_up.add(index)
            self._event(f"no response to request {self._request_name(index)} within {self.options.wait_timeout:g} s "
                        f"({when})")
        for type_, count in notifications.items():
            short = count - self.deficit[type_] - self.notifications[type_]
            if short > 0:
                self.deficit[type_] += short
                self._event(f"{short} {type_} notification(s) the recorded client had by then did not arrive "
                            f"within {self.options.wait_timeout:g} s ({when})")

    # -- sending -------------------------------------------------------------------------------

    async def _send(self, frame: ClientFrame, restoring: bool = False) -> bool:
        data: str | bytes = frame.data
        if frame.is_text:
            try:
                data = self._rewrite(frame, frame.data.decode("utf-8"))
            except UnicodeDecodeError:
                self._event(f"frame {frame.n}: recorded text is not UTF-8; sent as a binary frame")
        request_id = frame.request_id
        if frame.request_index is not None and isinstance(data, str) and self.options.fresh_ids:
            data, request_id = self._fresh_id(data, frame)
        if frame.request_index is not None:
            self.keys.request_sent(request_id, frame.request_index)
            self.sent_requests.add(frame.request_index)
            if not restoring:
                self.answerable.add(frame.request_index)
        self.r.recording.message(self.ws_id, True, data)
        try:
            await self.ws.send(data)
        except ConnectionClosed:
            return False
        self.result.frames_sent += 1
        if frame.restores_state and not restoring:
            self.state.append(frame)
        return True

    def _rewrite(self, frame: ClientFrame, text: str) -> str:
        text = self.r.store.rewrite(text, frame.needs, self.conn.id, frame.n, frame.type)
        for recorded in self.conn.init_jwts:
            encoded = orjson.dumps(recorded).decode()
            if encoded in text:
                text = text.replace(encoded, orjson.dumps(self.r.tokens.current[self.conn.identity]).decode())
        return text

    def _fresh_id(self, text: str, frame: ClientFrame) -> tuple[str, str]:
        self.next_id += 1
        fresh = f"replay-{self.next_id}"
        payload = orjson.loads(text)
        old = orjson.dumps(payload["id"]).decode()
        replaced = text.replace(f'"id":{old}', f'"id":"{fresh}"', 1).replace(f'"id": {old}', f'"id": "{fresh}"', 1)
        if (parse_payload({"text": replaced}) or {}).get("id") != fresh:
            payload["id"] = fresh
            replaced = orjson.dumps(payload).decode()
        return replaced, fresh

    # -- connecting ----------------------------------------------------------------------------

    async def _connect(self, reason: str) -> bool:
        conn = self.conn
        token = None
        if conn.uses_token:
            pool = self.r.tokens
            token = await (pool.get(conn.identity, conn.side) if reason == "initial"
                           else pool.refresh(conn.identity, reason, conn.side))
        url = target_url(self.options.target, conn.url)
        if conn.path_token is not None:  # an agent's bearer rides in the path: the recorded one is redacted
            url = with_path_bearer(url, token)
        headers, user_agent = self._headers(token)
        self.ws_id = str(uuid.uuid4())
        t_request = time.time()
        tls = {"ssl": self.options.tls} if url.startswith("wss:") and self.options.tls is not None else {}
        try:
            self.ws = await connect_checked(url, self.options.addresses, additional_headers=headers,
                                            user_agent_header=user_agent, proxy=None, ping_interval=None,
                                            max_size=None, open_timeout=self.options.wait_timeout * 2, **tls)
        except (OSError, InvalidHandshake, TimeoutError) as e:
            status = e.response.status_code if isinstance(e, InvalidStatus) else None
            error = str(e) or type(e).__name__
            location = e.response.headers.get("Location") if isinstance(e, InvalidStatus) else None
            if location is not None and 300 <= status < 400:
                error += f" (a redirect to {location}: not followed)"
            error = self.r.recording.refused(self.ws_id, conn.id, url, status, error)
            self._event(f"cannot connect to {self.r.recording.clean_url(url)}: {error}")
            return False
        self.r.recording.open(self.ws_id, conn.id, url, t_request, self.ws, "client")
        self.result.replayed.append(self.ws_id)
        self.reader = asyncio.get_running_loop().create_task(self._read(self.ws, self.ws_id))
        return True

    def _headers(self, token: str | None) -> tuple[list[tuple[str, str]], str | None]:
        headers, user_agent = [], None
        for name, value in self.conn.request_headers:
            lname = name.lower()
            if lname == "authorization" and token is not None:
                scheme = value.split(" ", 1)[0] if " " in value else "jwt"
                headers.append((name, f"{scheme} {token}"))
            elif lname == "user-agent":
                user_agent = value
            elif lname not in HANDSHAKE_HEADERS and "[redacted sha256:" not in value:
                headers.append((name, value))
        return headers, user_agent

    async def _recover(self, index: int) -> bool:
        """After the target closed before frame `index`: reconnect with a fresh token on 4401/4407."""
        if self.reader is not None:
            await self.reader
        code = self.ws.close_code if self.ws else None
        total = len(self.conn.frames)
        if code not in TOKEN_CLOSE_CODES or self.failed_reconnects >= self.options.max_reconnects \
                or self.r.stop.is_set():
            self._event(f"the target closed the connection with {code} after {index} of {total} frames"
                        + (f" ({self.failed_reconnects} reconnect(s) in a row got no recorded request answered)"
                           if code in TOKEN_CLOSE_CODES and self.failed_reconnects else ""))
            return False
        loop = asyncio.get_running_loop()
        began = loop.time()
        await self.r.wait_for(self.r.stop.is_set, self.last_reconnect + RECONNECT_SPACING - began)
        if self.r.stop.is_set():
            return False
        self.last_reconnect = loop.time()
        self.result.reconnects += 1
        self.failed_reconnects += 1
        self.answerable.clear()
        lost = sorted(self.sent_requests - self.responses.keys() - self.given_up)
        self.given_up.update(lost)
        self._event(f"the target closed with {code} after {index} of {total} frames: fetched a fresh token, "
                    f"reconnected and re-sent the auth and subscription frames"
                    + (f" ({len(lost)} unanswered request(s) not retried)" if lost else ""))
        if not await self._connect(str(code)):
            return False
        await self._restore()
        spent = loop.time() - began  # a frame's waits count the time connected, not the reconnect's
        self.deadlines = {waiting_for: deadline + spent for waiting_for, deadline in self.deadlines.items()}
        return True

    async def _restore(self) -> None:
        """Re-sends the frames that restore state, each awaiting its answer (on a close, the next
        round of `_run` tells whether to go on)."""
        for frame in self.state:
            before = self.responses[frame.request_index]
            if not await self._send(frame, restoring=True):
                return
            if frame.request_index is not None and not await self.r.wait_for(
                    lambda: self.responses[frame.request_index] > before, self.options.wait_timeout,
                    also=self._closed):
                if self._closed():
                    return
                self._event(f"no response to the re-sent {frame.type} within {self.options.wait_timeout:g} s")

    async def _close(self) -> None:
        ws = self.ws
        if ws is None:
            return
        if not self._closed():
            close = self.conn.close or {}
            code = close.get("code") if close.get("by") == "client" else None
            if not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
                code = 1000
            await asyncio.sleep(0)  # the reader takes in what arrived before the close frame leaves
            self.past_close = True
            await ws.close(code, "replay interrupted" if self.r.stop.is_set() else "")
        if self.reader is not None:
            await self.reader
        if self.after_close:
            self._event(f"{self.after_close} frame(s) the target sent after the recorded client's close (or the "
                        "replay's close frame) left out, as a capture through mitmproxy ends at the first close frame")

    def _past_close(self) -> bool:
        """Whether the replay reached the point where the recorded client closed: its close frame is
        sent, or (timing other than original, the client closing) after the last frame it has the
        answers and notifications the recorded client had."""
        if not self.past_close and self.last_frames_sent and self.options.timing != "original" \
                and (self.conn.close or {}).get("by") == "client":
            self.past_close = self._caught_up(self.sent_requests, self.conn.notifications)
        return self.past_close

    def _closed(self) -> bool:
        return self.reader is None or self.reader.done()

    # -- receiving -----------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection, ws_id: str) -> None:
        try:
            async for message in ws:
                if self._past_close():
                    self.after_close += 1
                    continue
                rec = self.r.recording.message(ws_id, False, message)
                self._received(rec)
                await self.r.notify()
        except ConnectionClosed:
            pass
        self.result.close_codes.append(ws.close_code)
        self.r.recording.close(ws_id, ws, "client")
        await self.r.notify()

    def _received(self, rec: dict) -> None:
        payload = parse_payload(rec)
        key = self.keys.key(rec, payload)
        if rec.get("kind") == "resp":
            self.result.responses += 1
            if key is not None:
                self.responses[key[1]] += 1
                if key[1] in self.answerable:  # the target serves this connection: reconnecting paid off
                    self.failed_reconnects = 0
        elif rec.get("kind") == "notification":
            self.result.notifications += 1
            self.notifications[rec.get("type")] += 1
        learned = self.conn.learnable.get(key) if key is not None else None
        if learned is not None:
            n, values = learned
            self.r.store.learn((self.conn.id, n), values, payload)

    def _event(self, line: str) -> None:
        self.result.events.append(line)
        self.r.log(f"{short_id(self.conn.id)}: {line}")
