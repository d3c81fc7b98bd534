"""What a replay sends, learned from a capture: per recorded connection, its client frames (bytes
as recorded), what the recorded client had seen before sending each one, and which server frame
introduced every server-assigned value it echoes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from analysis.capture import C2S, CLOSE, MSG, OPEN, CaptureFile, payload_bytes, split_url
from analysis.frame import as_list, parse_payload
from analysis.redact import marked_tokens
from analysis.identity import (CONSUMER_AUTHENTICATION, Token, header_token, init_connection_token, side_of_url,
                               url_token)
from recorder.replay.substitution import FrameKeys, Path, SourceRef, ValueKey, echoed, learnable
from recorder.replay.target import path_bearer

RESTORE_TYPES = ("InitConnection", "SubscribeExConversations", "SubscribeMessagingEvents",
                 "SetAgentState", "SubscribeRoutingTasks", "SubscribeAgentsState")
"""Requests re-sent after a token reconnect to restore the connection's state (auth, subscriptions;
an agent's availability and its routing-task and agent-state subscriptions: without them a bot's
new connection is OFFLINE and gets no rings)."""


class PlanError(Exception):
    """A capture that cannot be replayed (one line)."""


@dataclass
class ClientFrame:
    n: int
    t: float
    is_text: bool
    data: bytes
    payload: Any
    request_index: int | None
    """Position among the connection's requests (None for frames that are not requests)."""
    answered_before: frozenset[int]
    """Requests whose responses the recorded client had received before sending this frame."""
    notifications_before: Counter
    """Notifications per type the recorded client had received before sending this frame."""
    needs: dict[ValueKey, SourceRef]

    @property
    def request_id(self) -> str | None:
        value = self.payload.get("id") if isinstance(self.payload, dict) else None
        return None if value is None or isinstance(value, (dict, list, bool)) else str(value)

    @property
    def type(self) -> str | None:
        value = self.payload.get("type") if isinstance(self.payload, dict) else None
        return value if isinstance(value, str) else None

    @property
    def restores_state(self) -> bool:
        return self.type is not None and self.type.endswith(RESTORE_TYPES)


@dataclass
class ServerFrame:
    """A recorded server frame, for the server-side replay."""
    n: int
    t: float
    is_text: bool
    data: bytes
    kind: str | None
    after: int | None
    """Position in `frames` of the request it answers (responses) or that preceded it (others)."""


@dataclass
class RecordedConnection:
    id: str
    url: str
    t_open: float
    request_headers: list[list[str]]
    frames: list[ClientFrame] = field(default_factory=list)
    server_frames: list[ServerFrame] = field(default_factory=list)
    learnable: dict[tuple, tuple[int, dict[Path, ValueKey]]] = field(default_factory=dict)
    """Match key of a recorded server frame -> (its n, its learnable values)."""
    requests: int = 0
    notifications: Counter = field(default_factory=Counter)
    close: dict | None = None
    header_token: Token | None = None
    """The Authorization token (its fingerprint and JWT `sub`), if the upgrade carried one."""
    path_token: Token | None = None
    """The bearer in the URL's path (an agent's, `/messaging/brand/{bearer}`), if any."""
    init_tokens: dict[str, Token] = field(default_factory=dict)
    """InitConnection tokens by fingerprint."""
    init_jwts: set[str] = field(default_factory=set)
    """The recorded InitConnection jwt values as they are in the capture (redaction markers)."""

    @property
    def uses_token(self) -> bool:
        return self.header_token is not None or self.path_token is not None or bool(self.init_tokens)

    @property
    def side(self) -> str | None:
        """`agent` or `consumer` (`analysis.identity.side_of_url`), None when the URL does not tell."""
        return side_of_url(self.url)

    @property
    def identity(self) -> str | None:
        """Who the recorded client was (the replay uses one token per identity): `sub:<fingerprint>`
        of its token's JWT `sub` when the capture shows one, so that a token the client refreshed
        for the same consumer stays the same identity; else the token's fingerprint."""
        token = self.header_token or self.path_token or (
            self.init_tokens[min(self.init_tokens)] if self.init_tokens else None)
        if token is None:
            return None
        return f"sub:{token.sub}" if token.sub else token.fingerprint


@dataclass
class ReplayPlan:
    path: str
    connections: list[RecordedConnection]

    def select(self, conn_ids: tuple[str, ...]) -> ReplayPlan:
        if not conn_ids:
            return self
        by_id = {c.id: c for c in self.connections}
        chosen = []
        for conn_id in conn_ids:
            matches = [c for c in self.connections if c.id.startswith(conn_id)]
            if len(matches) != 1:
                problem = "no" if not matches else "more than one"
                raise PlanError(f"{self.path}: {problem} connection with id {conn_id!r} "
                                f"(known: {', '.join(c.id for c in by_id.values()) or 'none'})")
            chosen.append(matches[0])
        # In the order they were recorded, whatever the order given: a consumer's reconnect replayed
        # before its first connection would ask for a conversation that does not exist yet.
        chosen_ids = {c.id for c in chosen}
        return ReplayPlan(self.path, [c for c in self.connections if c.id in chosen_ids])


def _redacted_path_bearer(url: str) -> bool:
    """Whether the bearer in the URL's path is a redaction marker (one recorded in clear, with
    `--no-redact`, is replayed as it was)."""
    index = path_bearer(url)
    return index is not None and bool(marked_tokens(split_url(url).path.split("/")[index]))


def load_plan(path: str) -> ReplayPlan:
    """Reads a capture (raises CaptureError for a file that is not one, PlanError if nothing to replay)."""
    capture = CaptureFile(path)
    connections: dict[str, RecordedConnection] = {}
    state: dict[str, _ConnReading] = {}
    known: dict[ValueKey, SourceRef] = {}
    for rec in capture.records():
        conn_id = rec.get("conn")
        kind = rec.get("rec")
        if kind == OPEN and isinstance(conn_id, str) and isinstance(rec.get("url"), str):
            url = rec["url"]
            connections[conn_id] = RecordedConnection(
                conn_id, url, rec.get("t") or 0.0, rec.get("request_headers") or [], header_token=header_token(rec),
                path_token=url_token(url) if _redacted_path_bearer(url) else None)
            state[conn_id] = _ConnReading(connections[conn_id])
        elif conn_id in state:
            if kind == MSG:
                state[conn_id].message(rec, known)
            elif kind == CLOSE:
                connections[conn_id].close = rec
    if capture.damage:
        raise PlanError(f"{capture.damage[0]} (the capture is damaged; replay needs it whole)")
    if not connections:
        raise PlanError(f"{path}: no WebSocket connection in this capture")
    return ReplayPlan(path, list(connections.values()))


class _ConnReading:
    """Follows one recorded connection through the capture."""

    def __init__(self, conn: RecordedConnection):
        self.conn = conn
        self.keys = FrameKeys()
        self.answered: set[int] = set()
        self.requests_by_id: dict[str, list[int]] = {}
        self.notifications = conn.notifications
        self.last_request: int | None = None
        self.position_of_request: dict[int, int] = {}

    def message(self, rec: dict, known: dict[ValueKey, SourceRef]) -> None:
        payload = parse_payload(rec)
        if rec.get("dir") == C2S:
            self._client(rec, payload, known)
            return
        after = self.last_request
        if rec.get("kind") == "resp":
            queue = self.requests_by_id.get(rec.get("reqId"))
            if queue:
                index = queue.pop(0)
                self.answered.add(index)
                after = self.position_of_request[index]
        elif rec.get("kind") == "notification":
            self.notifications[rec.get("type")] += 1
        self.conn.server_frames.append(ServerFrame(rec.get("n", 0), rec.get("t") or self.conn.t_open,
                                                   rec.get("op") != "binary", payload_bytes(rec), rec.get("kind"), after))
        key = self.keys.key(rec, payload)
        if key is None:
            return
        values = learnable(rec, payload)
        self.conn.learnable[key] = (rec["n"], values)
        for value_key in values.values():
            known[value_key] = (self.conn.id, rec["n"])

    def _client(self, rec: dict, payload: Any, known: dict[ValueKey, SourceRef]) -> None:
        conn = self.conn
        if rec.get("truncated"):
            raise PlanError(f"connection {conn.id}: message {rec.get('n')} was truncated by the recorder; "
                            "it cannot be resent")
        token = init_connection_token(payload)
        if token is not None:
            conn.init_tokens[token.fingerprint] = token
            conn.init_jwts.update(h["jwt"] for h in as_list(payload.get("headers"))
                                  if isinstance(h, dict) and h.get("type") == CONSUMER_AUTHENTICATION
                                  and isinstance(h.get("jwt"), str))
        is_request = rec.get("kind", "req") == "req" and isinstance(rec.get("id"), str)
        frame = ClientFrame(rec.get("n", len(conn.frames)), rec.get("t") or conn.t_open, rec.get("op") != "binary",
                            payload_bytes(rec), payload, conn.requests if is_request else None,
                            frozenset(self.answered), Counter(self.notifications), echoed(payload, known))
        if is_request:
            self.last_request = self.position_of_request[conn.requests] = len(conn.frames)
            self.requests_by_id.setdefault(rec["id"], []).append(conn.requests)
            self.keys.request_sent(rec["id"], conn.requests)
            conn.requests += 1
        conn.frames.append(frame)
