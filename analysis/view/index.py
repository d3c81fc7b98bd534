"""The index `mwtap view` answers from, built in one pass of the protocol engine over the capture.

Per record (global number `g`, in the order the engine is fed) it keeps a few packed columns:
where its line is (file, offset, length), time, connection, frame number `n`, kind, direction,
type, size, the frame it pairs with, the stream it belongs to and its worst violation: about 70
bytes a record with the connection's own lists. The frames' JSON stays on disk and is read back
by offset when shown. What the engine (the native core) finds, pairs, violations, reconnects and
connection rows, arrives as rows, so the view shows exactly the verdict `mwtap analyze` gives.
Whole captures are placed by the core (`place`, core/src/locations.rs); a capture followed as it
grows, a record at a time here (`add`): both make the same index (tests/test_view_index.py).
"""

from __future__ import annotations

import functools
import struct
from array import array
from dataclasses import dataclass, field

import numpy as np

from analysis.capture import CLOSE, MSG, OPEN, PING, PONG, REFUSED, record_of
from analysis.config import Config
from analysis.frame import type_is
from analysis.identity import header_token, url_token
from analysis.engine import Engine
from analysis.rules import SEVERITIES

# Record kinds as kept in the `kind` column.
KINDS = ("open", "close", "ping", "pong", "req", "resp", "notification", "msg", "refused")
KIND_CODE = {name: code for code, name in enumerate(KINDS)}
_REC_KIND = {OPEN: KIND_CODE["open"], CLOSE: KIND_CODE["close"], PING: KIND_CODE["ping"],
             PONG: KIND_CODE["pong"], REFUSED: KIND_CODE["refused"]}
_MSG_KIND = {"req": KIND_CODE["req"], "resp": KIND_CODE["resp"], "notification": KIND_CODE["notification"]}
DIRS = ("c2s", "s2c", "")
DIR_CODE = {"c2s": 0, "s2c": 1}
_DIR_CODE = {**DIR_CODE, None: 2}
_REQ, _RESP, _NOTIFICATION, _OTHER_MSG = (KIND_CODE[k] for k in ("req", "resp", "notification", "msg"))
SEVERITY_LEVEL = {name: len(SEVERITIES) - rank for rank, name in enumerate(SEVERITIES)}  # error 3 … info 1
MAX_TYPES = 65_000  # distinct type names told apart; further ones share the last slot
VIOLATIONS_KEPT = 200_000  # listed one by one; all are counted


@dataclass
class Connection:
    """One connection (or refused upgrade): its records' numbers and what the engine said of it."""
    number: int
    conn: str
    t_open: float
    url: str | None = None
    client: str | None = None
    identity: str | None = None  # "sub:…", "token:…", else None (grouped by client host)
    rows: array = field(default_factory=lambda: array("q"))  # g of every record, in order
    msgs: array = field(default_factory=lambda: array("q"))  # g of each message, by arrival
    closed: dict | None = None  # the close record (code, reason, by, t)
    refused: dict | None = None
    row: dict | None = None  # the engine's `connections` row, once the connection ended
    prev: int | None = None  # the connection this one reconnects (numbers)
    next: int | None = None
    linked_by: str | None = None
    counts: dict = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    streams: dict = field(default_factory=dict)  # ("sub"|"dialog", id) -> stream number

    def frame(self, columns: "Columns", n: int) -> int | None:
        """The g of message `n` (recorders number a connection's messages 0, 1, …)."""
        msgs = self.msgs
        if 0 <= n < len(msgs) and columns.n[msgs[n]] == n:
            return msgs[n]
        found = np.nonzero(columns.view("n")[np.frombuffer(msgs, np.int64)] == n)[0] if msgs else ()
        return int(msgs[found[0]]) if len(found) else None


class _Field:
    """One fixed column of `Columns`, read one record at a time (`columns.t[g]`)."""
    __slots__ = ("columns", "unpack", "at")

    def __init__(self, columns: "Columns", code: str, at: int):
        self.columns, self.unpack, self.at = columns, struct.Struct("<" + code).unpack_from, at

    def __getitem__(self, g: int):
        return self.unpack(self.columns.fixed, g * RECORD.size + self.at)[0]


FIXED = (("file", "H"), ("offset", "q"), ("length", "I"), ("t", "d"), ("conn", "I"), ("n", "i"), ("kind", "B"),
         ("dir", "B"), ("type", "H"), ("size", "I"))
RECORD = struct.Struct("<" + "".join(code for _, code in FIXED))  # 38 bytes, no padding
_DTYPE = np.dtype([(name, "<" + code) for name, code in FIXED])


class Columns:
    """The facts of every record, packed. Those known when a record arrives are one `RECORD` each
    in `fixed` (one pack per record: ten array appends cost twice as much); those set afterwards
    (its pair, stream, worst violation) are arrays grown a chunk at a time, filled with their
    default. Queries take numpy views (`view`) for the duration of one call: a buffer exporting a
    view cannot grow."""

    LATER = {"peer": ("q", -1), "stream": ("i", -1), "severity": ("B", 0)}
    CHUNK = 1 << 16

    def __init__(self) -> None:
        self.fixed = bytearray()
        self.count = 0
        self.capacity = 0
        at = 0
        for name, code in FIXED:
            setattr(self, name, _Field(self, code, at))
            at += struct.calcsize("<" + code)
        for name, (code, _) in self.LATER.items():
            setattr(self, name, array(code))

    def __len__(self) -> int:
        return self.count

    def grow(self) -> None:
        """Room for the next CHUNK records in the columns set later (`locate`, when following)."""
        for name, (code, default) in self.LATER.items():
            getattr(self, name).extend(array(code, [default]) * self.CHUNK)
        self.capacity += self.CHUNK

    def load(self, count: int, fixed: bytearray, **later: bytes) -> None:
        """Columns made elsewhere (the core's locating pass, `ViewIndex.place`): `fixed` packed as
        RECORD (taken as it is), the columns set later as their arrays' bytes (those not given: their
        default)."""
        self.fixed = fixed
        for name, (code, default) in self.LATER.items():
            column = array(code)
            if name in later:
                column.frombytes(later[name])
            else:
                column.extend(array(code, [default]) * count)
            setattr(self, name, column)
        self.count = self.capacity = count

    def view(self, name: str) -> np.ndarray:
        if name in self.LATER:
            column = getattr(self, name)
            return np.frombuffer(column, dtype=column.typecode if column.typecode != "q" else np.int64)[:self.count]
        return np.frombuffer(self.fixed, _DTYPE)[name]


_pack = RECORD.pack


class ViewIndex:
    """Records placed by the core (`place`, then `analysis.view.build` attaches what its engine found
    through `adder`), or fed one at a time with their places (`add`: `locate` indexes it, this index's
    own engine analyses it and reports through `adder`)."""

    def __init__(self, config: Config | None = None):
        self.config = config or Config()
        self.columns = Columns()
        self.connections: list[Connection] = []
        self.by_conn: dict[str, Connection] = {}
        self.types: list[str] = [""]
        self._type_code: dict[str | None, int] = {None: 0}
        self._subscribe_types: set[int] = set()  # type codes of SubscribeMessagingEvents requests
        self.streams: list[tuple[int, str, str]] = []  # (connection, "sub"|"dialog", id)
        self.stream_sizes = array("I")
        self.violations: list[tuple] = []  # (rule, severity, connection, t, g, message, at_capture_end)
        self.violation_total = 0
        self.last_t = 0.0
        # The tables wanted of the engine (not `silences`, a row per client message: the silences
        # over the limit are the keepalive-gap violations).
        self._tables = {"pairs": self._pair, "violations": self._violation, "reconnects": self._reconnect,
                        "connections": self._connection}

    @functools.cached_property
    def engine(self) -> Engine:
        """`add`'s engine (following a capture)."""
        return Engine(self.config, self)

    # --- what the engine found ---------------------------------------------------------------
    def adder(self, table: str):
        return self._tables.get(table)

    def _pair(self, row: dict) -> None:
        self.pair(row["conn"], row.get("frame"), row.get("response_frame"))

    def pair(self, conn: str, frame: int | None, response_frame: int | None) -> None:
        """Request `frame` and response `response_frame` of `conn` answer each other (reported by this
        index's engine when following; a whole capture's pairs are linked in the core)."""
        c = self._conn(conn)
        if c is None or frame is None or response_frame is None:
            return
        req, resp = c.frame(self.columns, frame), c.frame(self.columns, response_frame)
        if req is None or resp is None:
            return
        peer, stream = self.columns.peer, self.columns.stream
        peer[req], peer[resp] = resp, req
        if stream[req] >= 0 and stream[resp] < 0:  # a messaging-events subscribe: its answer joins its stream
            stream[resp] = stream[req]
            self.stream_sizes[stream[req]] += 1
        elif stream[resp] >= 0 and stream[req] < 0:  # a conversations subscribe: the answer names the stream
            stream[req] = stream[resp]
            self.stream_sizes[stream[resp]] += 1

    def _violation(self, row: dict) -> None:
        self.violation_total += 1
        c = self.by_conn.get(row["conn"])
        number = g = None
        if c is not None:
            number = c.number
            c.counts[row["severity"]] += 1
            if row.get("frame") is not None:
                g = c.frame(self.columns, row["frame"])
        if g is not None:
            level = SEVERITY_LEVEL[row["severity"]]
            if level > self.columns.severity[g]:
                self.columns.severity[g] = level
        if len(self.violations) < VIOLATIONS_KEPT:
            self.violations.append((row["rule"], row["severity"], number, row["t"], g, row["message"],
                                    bool(row.get("at_capture_end"))))

    def _reconnect(self, row: dict) -> None:
        c, prev = self._conn(row["conn"]), self._conn(row.get("prev_conn"))
        if c is not None and prev is not None:
            c.prev, prev.next, c.linked_by = prev.number, c.number, row.get("linked_by")

    def _connection(self, row: dict) -> None:
        c = self._conn(row["conn"])
        if c is None:
            return
        c.row = {k: v for k, v in row.items() if k not in ("conn",)}
        if row.get("sub"):
            c.identity = "sub:" + row["sub"]
        elif row.get("token") and c.identity is None:
            c.identity = "token:" + row["token"]

    def _conn(self, conn) -> Connection | None:
        return self.by_conn.get(conn)

    # --- records -----------------------------------------------------------------------------
    def place(self, found: dict) -> None:
        """Take the records of whole captures as the core placed them in one pass (`_core.Locations`,
        core/src/locations.rs: what `locate` makes of each record, pairs linked) into this empty index.
        Each part of `found` is dropped once taken (the memory of two copies is never held at once)."""
        self.columns.load(found.pop("count"), found.pop("fixed"), peer=found.pop("peer"), stream=found.pop("stream"))
        connections = found.pop("connections")
        connections.reverse()
        while connections:  # popped: each connection's bytes freed once its arrays hold them
            conn, t_open, rows, msgs = connections.pop()
            c = self._open(conn, t_open)
            c.rows.frombytes(rows)
            c.msgs.frombytes(msgs)
        self.types = found["types"]
        self._type_code.update((name, code) for code, name in enumerate(self.types) if code)
        self._subscribe_types = set(found["subscribe_types"])
        for number, (conn, kind, key) in enumerate(found["streams"]):
            self.streams.append((conn, kind, key))
            self.connections[conn].streams[(kind, key)] = number
        self.stream_sizes.frombytes(found["stream_sizes"])
        for conn, line in found["connection_records"]:
            rec = record_of(line)
            self._connection_record(self.connections[conn], rec, rec["rec"], rec["t"])
        self.last_t = found["last_t"]

    def add(self, rec: dict, file: int, offset: int, line: bytes) -> None:
        """Index one record, then feed its line to the engine (which may report pairs and violations of
        it): the line as read, which the core reads as `mwtap analyze` does (a record re-encoded could
        differ: orjson writes at most 254 levels, json no infinity)."""
        self.locate(rec, file, offset, len(line))
        self.engine.feed_line(line)

    def locate(self, rec: dict, file: int, offset: int, length: int) -> None:
        """Index one record without the engine (`place` does it for every record in the core). The hot
        path when following: about half the work per record of the engine's own."""
        kind = rec["rec"]
        conn = rec.get("conn")
        t = rec.get("t")
        if conn.__class__ is str and (t.__class__ is float or t.__class__ is int):
            c = self.by_conn.get(conn)
            if c is None:
                c = self._open(conn, t)
            cols = self.columns
            g = cols.count
            if g >= cols.capacity:
                cols.grow()
            if kind == MSG:
                code = _MSG_KIND.get(rec.get("kind"), _OTHER_MSG)
                type_code = self._type_code.get(rec.get("type"))
                if type_code is None:
                    type_code = self._type(rec.get("type"))
                n = rec.get("n")
                if n.__class__ is not int or not -0x80000000 <= n <= 0x7FFFFFFF:
                    n = len(c.msgs)
                size = rec.get("size")
                if size.__class__ is not int or not 0 <= size <= 0xFFFFFFFF:
                    size = 0
                c.msgs.append(g)
                if code == _NOTIFICATION or (code == _RESP and "subscriptionId" in rec) or \
                        (code == _REQ and type_code in self._subscribe_types):
                    cols.stream[g] = self._stream(c, rec)
            else:
                code = _REC_KIND.get(kind)
                if code is None:
                    return
                type_code = size = 0
                n = cols.n[c.rows[-1]] if c.rows else -1
                self._connection_record(c, rec, kind, t)
            cols.fixed += _pack(file, offset, length if length <= 0xFFFFFFFF else 0xFFFFFFFF, t, c.number, n, code,
                                _DIR_CODE.get(rec.get("dir"), 2), type_code, size)
            cols.count = g + 1
            c.rows.append(g)
            if t > self.last_t:
                self.last_t = t

    def _connection_record(self, c: Connection, rec: dict, kind: str, t: float) -> None:
        if kind == CLOSE:
            c.closed = {k: rec.get(k) for k in ("t", "code", "reason", "by", "protocol_error_by")}
        elif kind == OPEN:
            c.url, c.client, c.t_open = rec.get("url"), rec.get("client"), t
            token = header_token(rec) or url_token(rec.get("url"))
            if token is not None:
                c.identity = f"sub:{token.sub}" if token.sub else f"token:{token.fingerprint}"
        elif kind == REFUSED:
            c.url, c.client = rec.get("url"), rec.get("client")
            c.refused = {k: rec.get(k) for k in ("t", "status", "error")}

    def _open(self, conn: str, t: float) -> Connection:
        c = Connection(len(self.connections), conn, t)
        self.connections.append(c)
        self.by_conn[conn] = c
        return c

    def _type(self, type_) -> int:
        code = self._type_code.get(type_)
        if code is None:
            if type_.__class__ is not str:
                return 0
            code = min(len(self.types), MAX_TYPES)
            if code < MAX_TYPES:
                self.types.append(type_)
                if type_is(type_, "SubscribeMessagingEvents"):
                    self._subscribe_types.add(code)
            self._type_code[type_] = code
        return code

    def _stream(self, c: Connection, rec: dict) -> int:
        """The subscription a message belongs to: notifications by their subscriptionId (or the
        dialog of their messaging events), subscribe requests for a dialog, answers naming one."""
        key = None
        sid = rec.get("subscriptionId")
        if sid.__class__ is str:
            key = ("sub", sid)
        elif rec.get("kind") == "notification":
            events = rec.get("events")
            if events.__class__ is list and events and events[0].__class__ is list and events[0] and \
                    events[0][0].__class__ is str:
                key = ("dialog", events[0][0])
        elif rec.get("kind") == "req" and type_is(rec.get("type"), "SubscribeMessagingEvents"):
            dialog = rec.get("dialogId")
            if dialog.__class__ is str:
                key = ("dialog", dialog)
        if key is None:
            return -1
        number = c.streams.get(key)
        if number is None:
            number = c.streams[key] = len(self.streams)
            self.streams.append((c.number, *key))
            self.stream_sizes.append(0)
        self.stream_sizes[number] += 1
        return number

    def advance(self, t: float) -> None:
        """Let the capture's clock run on without a record (following: deadlines fire on time)."""
        self.engine.advance(t)

    def finish(self) -> None:
        self.engine.finish()
