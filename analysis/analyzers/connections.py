"""Connections (one row each) and reconnect chains: which connection follows which of the same
client, after how long, and whether a fresh token was used after 4401/4407."""

from __future__ import annotations

from dataclasses import dataclass

from analysis.engine import Analyzer, trim_oldest
from analysis.frame import Frame, type_is
from analysis.identity import (AGENT, CONSUMER, Token, client_host, header_token, init_connection_token,
                               is_agent_request, side_of_url, url_token)

TOKEN_CLOSE_CODES = frozenset({4401, 4407})
CLIENT_KEYS_KEPT = 100_000  # most recently closed client keys (token, sub, host) kept for linking


@dataclass(slots=True)
class _Conn:
    conn: str
    t_open: float
    url: str | None
    client: str | None
    host: str | None
    open_seen: bool
    side: str | None = None
    auth: str | None = None
    token: Token | None = None
    linked: bool = False
    prev_conn: str | None = None
    chain: str | None = None
    attempt: int = 0
    frames_c2s: int = 0
    frames_s2c: int = 0
    bytes_c2s: int = 0
    bytes_s2c: int = 0
    pings_c2s: int = 0
    pings_s2c: int = 0


@dataclass(slots=True)
class _Closed:
    """What a later reconnect of the same client needs to know about a closed connection."""
    conn: str
    t_close: float
    code: int | None
    by: str | None
    fingerprint: str | None
    chain: str
    attempt: int
    has_successor: bool = False


class Connections(Analyzer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = ctx.rows("connections")
        self.reconnect_rows = ctx.rows("reconnects")
        self.conns: dict[str, _Conn] = {}
        # The last closed connection per client key, for linking reconnects; the most recently
        # closed keys last (bounded by trim_oldest: a live check runs for days).
        self.last_closed: dict[tuple[str, str], _Closed] = {}

    def open(self, rec: dict) -> None:
        url = rec.get("url") if isinstance(rec.get("url"), str) else None
        state = _Conn(rec["conn"], rec["t"], url, rec.get("client"), client_host(rec), not rec.get("implicit"),
                      side_of_url(url))
        self.conns[state.conn] = state
        for auth, token in (("header", header_token(rec)), ("url", url_token(url))):
            if token is not None:
                state.auth, state.token = auth, token
                self._link(state)
                return

    def wants(self, hook: str, direction: str, type_: str | None) -> bool:
        return hook != "request" or type_is(type_, "InitConnection") or is_agent_request(type_)

    def message(self, frame: Frame) -> None:
        rec = frame.rec
        state = self.conns[rec["conn"]]
        size = rec.get("size")
        size = size if size.__class__ is int else 0
        if rec["dir"] == "c2s":
            state.frames_c2s += 1
            state.bytes_c2s += size
        else:
            state.frames_s2c += 1
            state.bytes_s2c += size

    def request(self, frame: Frame) -> None:
        state = self.conns[frame.rec["conn"]]
        if is_agent_request(frame.rec.get("type")):
            state.side = AGENT
        elif state.auth is None and type_is(frame.rec.get("type"), "InitConnection"):
            state.auth = "init"
            state.token = init_connection_token(frame.payload)
            if not state.linked:
                self._link(state)

    def ping(self, rec: dict) -> None:
        state = self.conns[rec["conn"]]
        if rec.get("dir") == "c2s":
            state.pings_c2s += 1
        else:
            state.pings_s2c += 1

    def refused(self, rec: dict) -> None:
        if self.rows is not None:
            self.rows({"conn": rec.get("conn"), "t": rec.get("t"), "url": rec.get("url"), "client": rec.get("client"),
                       "state": "refused", "refused_status": rec.get("status"), "opened_at": None,
                       "closed_at": rec.get("t"), "close_reason": rec.get("error")})

    def close(self, rec: dict, at_capture_end: bool) -> None:
        state = self.conns.pop(rec["conn"])
        if not state.linked:
            self._link(state)
        code = rec.get("code") if rec.get("code").__class__ is int else None
        by = rec.get("by") if rec.get("by") in ("client", "server", "proxy") else None
        if not at_capture_end:
            closed = _Closed(state.conn, rec["t"], code, by, state.token.fingerprint if state.token else None,
                             state.chain or state.conn, state.attempt)
            last_closed = self.last_closed
            for key in self._keys(state):
                last_closed.pop(key, None)
                last_closed[key] = closed
            trim_oldest(last_closed, CLIENT_KEYS_KEPT)
        if self.rows is not None:
            token = state.token
            self.rows({
                "conn": state.conn, "t": state.t_open, "url": state.url, "client": state.client,
                "state": "open-at-end" if at_capture_end else "closed", "refused_status": None,
                "opened_at": state.t_open if state.open_seen else None, "closed_at": None if at_capture_end else rec["t"],
                "duration_s": rec["t"] - state.t_open, "close_code": code, "close_reason": rec.get("reason"),
                "closed_by": by, "side": state.side or (CONSUMER if state.auth == "init" else None), "auth": state.auth, "token": token.fingerprint if token else None,
                "sub": token.sub if token else None, "frames_c2s": state.frames_c2s, "frames_s2c": state.frames_s2c,
                "bytes_c2s": state.bytes_c2s, "bytes_s2c": state.bytes_s2c, "pings_c2s": state.pings_c2s,
                "pings_s2c": state.pings_s2c, "chain": state.chain or state.conn, "prev_conn": state.prev_conn,
            })

    @staticmethod
    def _keys(state: _Conn) -> list[tuple[str, str]]:
        keys = []
        if state.token is not None:
            keys.append(("token", state.token.fingerprint))
            if state.token.sub:
                keys.append(("sub", state.token.sub))
        if state.host:
            keys.append(("host", state.host))
        return keys

    def _link(self, state: _Conn) -> None:
        """Find the connection this one reconnects: same token, else same JWT sub, else same host."""
        state.linked = True
        for key in self._keys(state):
            prev = self.last_closed.get(key)
            if prev is None or prev.has_successor or prev.t_close > state.t_open + 0.05:
                continue
            delay = state.t_open - prev.t_close
            if key[0] == "host" and delay > self.config.reconnect_window_s:
                continue
            prev.has_successor = True
            state.prev_conn, state.chain, state.attempt = prev.conn, prev.chain, prev.attempt + 1
            self._reconnected(state, prev, key[0], delay)
            return

    def _reconnected(self, state: _Conn, prev: _Closed, linked_by: str, delay: float) -> None:
        fingerprint = state.token.fingerprint if state.token else None
        fresh = None if fingerprint is None or prev.fingerprint is None else fingerprint != prev.fingerprint
        after = f"after close {prev.code} ({prev.by or 'unknown side'}) of {prev.conn}"
        if prev.code in TOKEN_CLOSE_CODES and fresh is False:
            self.ctx.violation("token-not-refreshed", state.conn, state.t_open, None,
                               f"reconnected with the same token {fingerprint} {after}; "
                               f"{prev.code} asks for a fresh token")
        elif (prev.code not in TOKEN_CLOSE_CODES and (prev.by in ("server", "proxy") or prev.code == 1006)
              and linked_by != "host" and delay < self.config.min_reconnect_delay_s):
            self.ctx.violation("fast-reconnect", state.conn, state.t_open, None,
                               f"reconnected {delay:.3f} s {after} (minimum {self.config.min_reconnect_delay_s:g} s)")
        if self.reconnect_rows is not None:
            self.reconnect_rows({
                "conn": state.conn, "t": state.t_open, "prev_conn": prev.conn, "chain": state.chain,
                "attempt": state.attempt, "linked_by": linked_by, "delay_s": delay, "prev_close_code": prev.code,
                "prev_closed_by": prev.by, "fresh_token": fresh,
            })
