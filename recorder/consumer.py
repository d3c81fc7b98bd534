"""A scripted Messaging Window consumer (asyncio, websockets) for the demo, tests and benchmarks.

It runs the typical session of the protocol overview: token from the IDP, WebSocket (auth by
header or InitConnection), conversation-metadata subscription, continue the open conversation or
request one, subscribe to its messaging events, ACCEPT and (after `read_delay`) READ every agent
message, send texts with chat states, keep alive, close the conversation and send CSAT.
On 4401/4407 it asks the IDP for a token for the same identity (signup with the old token) and
reconnects at once; on any other close it waits with exponential backoff and reconnects. One
that never connected (no token, nothing listening) gives up at once, saying why in `stats.error`.
Misbehaviours for exercising the analyzer are switched on in `ConsumerConfig` (named in
`MISBEHAVIOURS`). Tokens come from the IDP's signup call, or from any `TokenFetch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from analysis.redact import jwt_sub

TOKEN_CLOSE_CODES = (4401, 4407)
KEEPALIVES = ("ping", "getclock")
RECEIPT_TASK = "mwtap-consumer-receipt"


@dataclass
class ConsumerConfig:
    auth: str = "header"
    """"header" (Authorization: jwt …) or "init" (InitConnection request)."""
    messages: int | None = 3
    """Texts to send before closing the conversation; None: until `duration` or `stop`."""
    duration: float | None = None
    """Seconds after which the consumer wraps up; None: no limit."""
    message_interval: float = 0.2
    """Seconds between one text's answer and the next text."""
    reply_timeout: float = 10.0
    """Seconds to wait for the agent's answer before sending the next text anyway."""
    read_delay: float = 0.2
    """Seconds between ACCEPT and READ of an agent message (the time until it is "shown")."""
    keepalive: str = "ping"
    """"ping" (WebSocket ping) or "getclock" (GetClock request)."""
    keepalive_interval: float = 20.0
    close_conversation: bool = True
    csat: int | None = 5
    """CSAT rate sent after the conversation closed; None: none."""
    request_timeout: float = 5.0
    reconnect_delay: float = 0.5
    """First wait before reconnecting after a non-token close; doubles up to `reconnect_delay_max`."""
    reconnect_delay_max: float = 8.0
    max_reconnects: int = 10
    text: str = "message {n} from the scripted consumer"
    # Misbehaviours
    no_keepalive: bool = False
    reuse_token_after_4401: bool = False
    """After a 4401, reconnect once with the same token before fetching a new one."""
    reconnect_immediately: bool = False
    """No wait before reconnecting after a non-token close."""
    skip_accept: bool = False
    """Never publish ACCEPT (READ receipts are still sent)."""
    reuse_request_id: bool = False
    """Send each text with the id of its COMPOSING chat state, while that one is still in flight."""

    def misbehaving(self, names) -> ConsumerConfig:
        """This config with the misbehaviours `names` (keys of MISBEHAVIOURS) switched on."""
        return replace(self, **{MISBEHAVIOURS[name][0]: True for name in names})

    def __post_init__(self) -> None:
        if self.auth not in ("header", "init"):
            raise ValueError(f"auth must be 'header' or 'init', not {self.auth!r}")
        if self.keepalive not in KEEPALIVES:
            raise ValueError(f"keepalive must be one of {KEEPALIVES}, not {self.keepalive!r}")


MISBEHAVIOURS = {
    "no-keepalive": ("no_keepalive", "never pings nor sends GetClock, so a server's idle timeout closes it "
                                     "(keepalive-gap)"),
    "stale-token": ("reuse_token_after_4401", "after a 4401, reconnects once with the same token "
                                              "(token-not-refreshed)"),
    "skip-accept": ("skip_accept", "sends READ but never ACCEPT for the agent's messages (missing-accept)"),
    "reuse-request-id": ("reuse_request_id", "sends each text with the id of its COMPOSING chat state while that "
                                             "is unanswered (duplicate-request-id)"),
    "reconnect-immediately": ("reconnect_immediately", "reconnects without waiting after a close other than "
                                                       "4401/4407 (fast-reconnect)"),
}
"""Name -> (ConsumerConfig field, what the consumer then does and the analysis rule it trips)."""


@dataclass
class ConsumerStats:
    consumer_id: str | None = None
    tokens_fetched: int = 0
    connections: int = 0
    reconnects: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    """Close code of every connection, the consumer's own final 1000 included (None: the connection
    could not be opened, or was given up after a request went unanswered)."""
    requests_sent: int = 0
    responses: int = 0
    error_responses: int = 0
    request_timeouts: int = 0
    notifications: int = 0
    unknown_subscription_notifications: int = 0
    conversation_ids: list[str] = field(default_factory=list)
    messages_sent: int = 0
    agent_messages: int = 0
    accepts_sent: int = 0
    reads_sent: int = 0
    keepalives_sent: int = 0
    conversations_closed: int = 0
    csat_sent: int = 0
    completed: bool = False
    """True when the consumer finished its script and closed the socket itself."""
    error: str | None = None
    """Why the last attempt to get a token or open a connection failed (never holds a token)."""


class Disconnected(Exception):
    def __init__(self, code: int | None):
        super().__init__(f"connection closed with {code}")
        self.code = code


class RequestTimeout(Exception):
    pass


class TokenUnavailable(OSError):
    """No token could be had; the message says why and never holds a token."""


TokenFetch = Callable[[str | None, str], Awaitable[str]]
"""`await fetch(previous, reason)`: a token. `previous` is the token the server refused (None at
first), `reason` is "initial", "4401" or "4407". Raises TokenUnavailable."""

_WS_ACCOUNT = re.compile(r"/ws_api/account/([^/]+)/")
_IDP_ACCOUNT = re.compile(r"/api/account/([^/]+)(?:/signup)?/?")


def idp_url_for(url: str) -> str | None:
    """The IDP base (`http[s]://HOST/api/account/ACCOUNT`) of the server a consumer WebSocket URL
    (ws[s]://HOST/ws_api/account/ACCOUNT/…) or an IDP URL points to, the built-in server's layout
    (one port for both); None when the URL names no account."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    match = None
    if scheme and parts.netloc:
        match = _WS_ACCOUNT.match(parts.path) if parts.scheme.startswith("ws") else _IDP_ACCOUNT.fullmatch(parts.path)
    return f"{scheme}://{parts.netloc}/api/account/{match[1]}" if match else None


def signup(idp_url: str, previous: str | None = None, timeout: float = 5.0) -> str:
    """A token from the IDP's signup call (`POST {idp_url}/signup`, no body): a new identity, or
    with `previous` (sent as `Authorization: jwt …`) the same identity extended."""
    url = f"{idp_url.rstrip('/')}/signup"
    request = urllib.request.Request(url, method="POST", data=b"")
    if previous is not None:
        request.add_header("Authorization", f"jwt {previous}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as reply:
            answer = json.load(reply)
    except urllib.error.HTTPError as e:
        raise TokenUnavailable(f"POST {url}: {e}") from None
    except (OSError, ValueError) as e:  # URLError's text wraps the reason in <urlopen error …>
        raise TokenUnavailable(f"POST {url}: {getattr(e, 'reason', e)}") from None
    token = answer.get("jwt") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenUnavailable(f"POST {url}: the answer holds no jwt")
    return token


def signup_tokens(idp_url: str, timeout: float) -> TokenFetch:
    async def fetch(previous: str | None, reason: str) -> str:
        return await asyncio.to_thread(signup, idp_url, previous, timeout)
    return fetch


async def run_consumer(ws_url: str, tokens: str | TokenFetch, config: ConsumerConfig | None = None, *,
                       stop: asyncio.Event | None = None) -> ConsumerStats:
    """Runs one scripted consumer until its script is done, `stop` is set or reconnects run out.
    `tokens` is the IDP base, e.g. `http://127.0.0.1:8765/api/account/mwtap` (POST `/signup`), or
    a TokenFetch."""
    return await ScriptedConsumer(ws_url, tokens, config or ConsumerConfig(), stop or asyncio.Event()).run()


class ScriptedConsumer:
    def __init__(self, ws_url: str, tokens: str | TokenFetch, config: ConsumerConfig, stop: asyncio.Event):
        self.ws_url = ws_url
        self.fetch_token = signup_tokens(tokens, config.request_timeout) if isinstance(tokens, str) else tokens
        self.config = config
        self.stop = stop
        self.stats = ConsumerStats()
        self.loop = asyncio.get_running_loop()
        self.deadline = None if config.duration is None else self.loop.time() + config.duration
        self.ids = itertools.count(1)
        self.seen_sequences: set[int] = set()
        self.last_sequence = -1
        self.conversation_id: str | None = None
        self.conversation_closed = asyncio.Event()
        self.csat_sent_for: str | None = None
        self.progress = asyncio.Event()
        """Set on every messaging or conversation change of the current conversation."""
        self.read_by_agent: dict[int, int] = {}
        """Our sequence -> how many agent messages we had heard when the agent READ it."""
        # per connection
        self.ws: ClientConnection | None = None
        self.pending: dict[str, list[asyncio.Future]] = {}
        self.subscriptions: set[str] = set()
        self.listings: dict[str, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self.gone: asyncio.Future | None = None

    # -- reconnect loop ------------------------------------------------------------------------

    async def run(self) -> ConsumerStats:
        token: str | None = None
        previous: str | None = None
        reason = "initial"
        reused_once = False
        failures = 0
        while True:
            try:
                if token is None:
                    token = await (self._refresh_token(previous, reason) if previous
                                   else self._fetch_token(None, reason))
                await self._session(token)
                self.stats.completed = True
                return self.stats
            except Disconnected as closed:
                self.stats.close_codes.append(closed.code)
                code = closed.code
            except (OSError, InvalidHandshake, TimeoutError, RequestTimeout) as e:
                self.stats.close_codes.append(None)
                self.stats.error = str(e) or type(e).__name__
                code = None
                if not self.stats.connections:  # never connected: nothing to resume, say so at once
                    return self.stats
            if self.stats.reconnects >= self.config.max_reconnects or self.stop.is_set() or self._past_deadline():
                return self.stats
            self.stats.reconnects += 1
            if code in TOKEN_CLOSE_CODES:
                if code == 4401 and self.config.reuse_token_after_4401 and not reused_once:
                    reused_once = True
                else:
                    previous, token, reason = token, None, str(code)
                continue
            delay = 0.0 if self.config.reconnect_immediately else min(
                self.config.reconnect_delay * 2 ** failures, self.config.reconnect_delay_max)
            failures += 1
            await self._pause(delay)

    def _past_deadline(self) -> bool:
        return self.deadline is not None and self.loop.time() >= self.deadline

    def _chat_over(self) -> bool:
        if self.stop.is_set() or self._past_deadline():
            return True
        return self.config.messages is not None and self.stats.messages_sent >= self.config.messages

    async def _pause(self, seconds: float) -> None:
        """Sleeps, waking early when `stop` is set or the connection goes away."""
        await self._pause_until(self.stop, seconds)

    async def _pause_until(self, event: asyncio.Event, seconds: float) -> None:
        """Sleeps until `event` or `stop` is set, at most `seconds`; raises Disconnected if the
        connection goes away meanwhile."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stop.wait())]
        await asyncio.wait(waiters + ([self.gone] if self.gone is not None else []),
                           timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self._raise_if_gone()

    # -- tokens --------------------------------------------------------------------------------

    async def _refresh_token(self, previous: str, reason: str) -> str:
        """A token for the identity of `previous`, else for a new identity."""
        try:
            return await self._fetch_token(previous, reason)
        except OSError:
            return await self._fetch_token(None, reason)

    async def _fetch_token(self, previous: str | None, reason: str) -> str:
        token = await self.fetch_token(previous, reason)
        self.stats.tokens_fetched += 1
        self.stats.consumer_id = jwt_sub(token)
        return token

    # -- one connection ------------------------------------------------------------------------

    async def _session(self, token: str) -> None:
        headers = {"Authorization": f"jwt {token}"} if self.config.auth == "header" else None
        async with connect(self.ws_url, proxy=None, additional_headers=headers, ping_interval=None,
                           open_timeout=self.config.request_timeout) as ws:
            self.ws = ws
            self.gone = self.loop.create_future()
            self.pending, self.subscriptions, self.listings = {}, set(), {}
            self.stats.connections += 1
            reader = self.loop.create_task(self._read())
            if not self.config.no_keepalive:
                self._spawn(self._keep_alive())
            try:
                await self._script(token)
                await ws.close()
                self.stats.close_codes.append(ws.close_code)
            finally:
                for task in self.tasks:
                    task.cancel()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                self.gone = None

    async def _script(self, token: str) -> None:
        if self.config.auth == "init":
            await self._request("InitConnection", None, headers=[
                {"type": ".ams.headers.ClientProperties", "deviceFamily": "DESKTOP", "os": "LINUX"},
                {"type": ".ams.headers.ConsumerAuthentication", "jwt": token}])
        response = await self._request("cqm.SubscribeExConversations", {"minLastUpdatedTime": 0, "convState": ["OPEN"]})
        subscription_id = response["body"]["subscriptionId"]
        listing = await self._wait(self.listings.setdefault(subscription_id, self.loop.create_future()),
                                   self.config.request_timeout)
        while True:
            if self.conversation_id is not None and self.conversation_closed.is_set():
                await self._wrap_up()
                open_id = None
            else:
                open_id = next((c["result"]["convId"] for c in listing if c.get("type") == "UPSERT"
                                and c["result"]["conversationDetails"].get("state") == "OPEN"), None)
            if self._chat_over() and (open_id is None or not self.config.close_conversation):
                return
            await self._join_conversation(open_id)
            await self._chat()
            await self._wrap_up()
            if self._chat_over():
                return
            listing = []

    async def _join_conversation(self, open_id: str | None) -> None:
        if open_id is None:
            response = await self._request("cm.ConsumerRequestConversation",
                                           {"ttrDefName": "NORMAL", "channelType": "MESSAGING"})
            open_id = response["body"]["conversationId"]
        if open_id != self.conversation_id:
            self.conversation_id = open_id
            self.conversation_closed.clear()
            self.stats.conversation_ids.append(open_id)
            self.seen_sequences.clear()
            self.read_by_agent.clear()
            self.last_sequence = -1
        await self._request("ms.SubscribeMessagingEvents",
                            {"dialogId": open_id, "conversationId": open_id, "fromSeq": self.last_sequence + 1})

    async def _chat(self) -> None:
        while not self._chat_over() and not self.conversation_closed.is_set():
            text = {"type": "ContentEvent", "contentType": "text/plain",
                    "message": self.config.text.format(n=self.stats.messages_sent + 1)}
            composing = {"type": "ChatStateEvent", "chatState": "COMPOSING"}
            heard_before = self.stats.agent_messages
            if self.config.reuse_request_id:
                first = self._send_request("ms.PublishEvent", self._event_body(composing))
                second = self._send_request("ms.PublishEvent", self._event_body(text), request_id=first.request_id)
                with contextlib.suppress(TimeoutError):
                    await self._wait(asyncio.gather(first, second), self.config.request_timeout)
                response = second.result() if second.done() and not second.cancelled() else None
            else:
                await self._publish(composing)
                response = await self._publish(text)
            self.stats.messages_sent += 1
            await self._publish({"type": "ChatStateEvent", "chatState": "PAUSE"})
            sequence = (response or {}).get("body", {}).get("sequence") if (response or {}).get("code") == 200 else None
            await self._await_reply(sequence, heard_before)
            await self._pause(self.config.message_interval)

    async def _await_reply(self, sequence: int | None, heard_before: int) -> None:
        """Waits until the agent answered our text: its first message after READing `sequence`
        (any new agent message when the sequence is unknown), or `reply_timeout`, or stop."""
        def answered() -> bool:
            if sequence is None:
                return self.stats.agent_messages > heard_before
            heard_at_read = self.read_by_agent.get(sequence)
            return heard_at_read is not None and self.stats.agent_messages > heard_at_read

        deadline = self.loop.time() + self.config.reply_timeout
        while not answered() and not self.stop.is_set() and self.loop.time() < deadline \
                and not self.conversation_closed.is_set():
            self.progress.clear()
            await self._pause_until(self.progress, deadline - self.loop.time())

    async def _wrap_up(self) -> None:
        """Closes the conversation (if configured) and sends CSAT once; safe to call again."""
        if not self.conversation_closed.is_set():
            if not self.config.close_conversation:
                return
            receipts = [t for t in self.tasks if t.get_name() == RECEIPT_TASK]
            if receipts:  # the last answer is shown (READ) before the consumer closes
                with contextlib.suppress(TimeoutError):
                    await self._wait(asyncio.wait(receipts), self.config.request_timeout)
            await self._request("cm.UpdateConversationField", {
                "conversationId": self.conversation_id,
                "conversationField": [{"field": "ConversationStateField", "conversationState": "CLOSE"}]})
            self._mark_closed()
        if self.config.csat is not None and self.csat_sent_for != self.conversation_id:
            await self._request("cm.UpdateConversationField", {
                "conversationId": self.conversation_id,
                "conversationField": {"field": "CSATRate", "csatRate": self.config.csat,
                                      "csatResolutionConfirmation": True, "status": "FILLED"}})
            self.csat_sent_for = self.conversation_id
            self.stats.csat_sent += 1

    def _mark_closed(self) -> None:
        if not self.conversation_closed.is_set():
            self.conversation_closed.set()
            self.stats.conversations_closed += 1
        self.progress.set()

    # -- requests ------------------------------------------------------------------------------

    def _event_body(self, event: dict) -> dict:
        return {"dialogId": self.conversation_id, "conversationId": self.conversation_id, "event": event}

    async def _publish(self, event: dict) -> dict | None:
        """Publishes on the current conversation; a lost response is tolerated (None)."""
        try:
            return await self._request("ms.PublishEvent", self._event_body(event))
        except RequestTimeout:
            return None

    async def _request(self, request_type: str, body: dict | None, **extra) -> dict:
        future = self._send_request(request_type, body, **extra)
        try:
            return await self._wait(future, self.config.request_timeout)
        except TimeoutError:
            self.stats.request_timeouts += 1
            raise RequestTimeout(f"no response to {request_type} within {self.config.request_timeout}s") from None

    def _send_request(self, request_type: str, body: dict | None, *, request_id: str | None = None,
                      headers: list | None = None) -> asyncio.Future:
        request_id = request_id or str(next(self.ids))
        frame = {"kind": "req", "id": request_id, "type": request_type}
        if body is not None:
            frame["body"] = body
        if headers is not None:
            frame["headers"] = headers
        future = self.loop.create_future()
        future.request_id = request_id  # type: ignore[attr-defined]
        self.pending.setdefault(request_id, []).append(future)
        self._spawn(self._send(frame))
        self.stats.requests_sent += 1
        return future

    async def _send(self, frame: dict) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(frame))

    async def _wait(self, awaitable, timeout: float | None = None):
        """Awaits `awaitable`, raising Disconnected if the connection goes away first."""
        future = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait([future, self.gone], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            return future.result()
        future.cancel()
        self._raise_if_gone()
        raise TimeoutError

    def _raise_if_gone(self) -> None:
        if self.gone is not None and self.gone.done():
            raise Disconnected(self.gone.result())

    # -- incoming ------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                try:
                    frame = json.loads(message)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            if not self.gone.done():
                self.gone.set_result(self.ws.close_code)

    def _dispatch(self, frame: dict) -> None:
        if frame.get("kind") == "resp":
            self.stats.responses += 1
            if frame.get("code", 200) >= 400:
                self.stats.error_responses += 1
            elif isinstance(frame.get("body"), dict) and "subscriptionId" in frame["body"]:
                # registered here: the listing notification may follow before the script resumes
                self.subscriptions.add(frame["body"]["subscriptionId"])
            waiters = self.pending.get(str(frame.get("reqId")))
            if waiters:
                future = waiters.pop(0)
                if not future.done():
                    future.set_result(frame)
            return
        self.stats.notifications += 1
        body = frame.get("body") or {}
        if "MessagingEvent" in str(frame.get("type")):
            for change in body.get("changes", []):
                self._on_messaging_change(change)
        elif "ExConversationChangeNotification" in str(frame.get("type")):
            self._on_conversations(body)

    def _on_conversations(self, body: dict) -> None:
        subscription_id = body.get("subscriptionId")
        if subscription_id not in self.subscriptions:
            self.stats.unknown_subscription_notifications += 1
            return
        listing = self.listings.setdefault(subscription_id, self.loop.create_future())
        if not listing.done():
            listing.set_result(body.get("changes", []))
        for change in body.get("changes", []):
            result = change.get("result") or {}
            if result.get("convId") == self.conversation_id \
                    and result.get("conversationDetails", {}).get("state") == "CLOSE":
                self._mark_closed()

    def _on_messaging_change(self, change: dict) -> None:
        sequence = change.get("sequence")
        if change.get("dialogId") != self.conversation_id or not isinstance(sequence, int):
            return
        self.last_sequence = max(self.last_sequence, sequence)
        event = change.get("event") or {}
        if change.get("originatorId") == self.stats.consumer_id:
            return
        self.progress.set()
        if event.get("type") == "AcceptStatusEvent" and event.get("status") == "READ":
            for read in event.get("sequenceList") or []:
                self.read_by_agent.setdefault(read, self.stats.agent_messages)
        elif event.get("type") == "ContentEvent" and sequence not in self.seen_sequences:
            self.seen_sequences.add(sequence)
            self.stats.agent_messages += 1
            self._spawn(self._acknowledge(sequence)).set_name(RECEIPT_TASK)

    async def _acknowledge(self, sequence: int) -> None:
        with contextlib.suppress(Disconnected):
            if not self.config.skip_accept:
                await self._publish({"type": "AcceptStatusEvent", "status": "ACCEPT", "sequenceList": [sequence]})
                self.stats.accepts_sent += 1
            await asyncio.sleep(self.config.read_delay)
            await self._publish({"type": "AcceptStatusEvent", "status": "READ", "sequenceList": [sequence]})
            self.stats.reads_sent += 1

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.config.keepalive_interval)
            if self.config.keepalive == "ping":
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.ping()
            else:
                self._send_request("GetClock", None)
            self.stats.keepalives_sent += 1

    def _spawn(self, coroutine) -> asyncio.Task:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
