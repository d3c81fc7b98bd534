"""Messaging events: per-dialog sequence gaps, duplicates and regressions; whether and how fast the
client (consumer or agent) acknowledged (ACCEPT, READ) each message of another participant;
publishing to closed conversations."""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.engine import Analyzer, trim_oldest
from analysis.frame import (Frame, as_list, can_answer, is_conversation_notification, is_messaging_notification,
                            type_is)
from analysis.histogram import LogHistogram
from analysis.identity import AGENT, header_token, init_connection_token, is_agent_request, side_of_url
from analysis.rules import INFO

CONTENT_EVENTS = frozenset({"ContentEvent", "RichContentEvent"})
CHAT_STATE = "ChatStateEvent"
SEEN_KEPT = 1024      # recent sequences per dialog, at least (trim_oldest): duplicates, own echoes
ECHOES_KEPT = 1024    # published sequences per connection still waiting for their notification
HISTORY_SLACK_S = 1.0  # events stamped this long before the subscribe are history replay
CLOSED_IDS_KEPT = 100_000  # closed conversations, and closed dialogs, remembered (the earliest closed go first)
READ_WAIT_S = 300.0   # how long an accepted message waits for its READ (bounds memory)
_ID_TYPES = frozenset({str, type(None)})
REQUESTS = ("PublishEvent", "SubscribeMessagingEvents", "UpdateConversationField", "InitConnection")


@dataclass(slots=True)
class _Dialog:
    subscribed_t: float | None = None
    last: int | None = None
    # sequence -> its originator when that may be the consumer (no role, or role CONSUMER), else None
    seen: dict[int, str | None] = field(default_factory=dict)


@dataclass(slots=True)
class _Expect:
    """A message of another participant, waiting for the consumer's ACCEPT and READ."""
    dialog: str
    seq: int
    t: float
    originator: str | None
    row: dict | None
    accept_t: float | None = None
    read_t: float | None = None
    reported: bool = False
    done: bool = False


@dataclass(slots=True)
class _SeqConn:
    own_ids: set[str] = field(default_factory=set)
    dialogs: dict[str, _Dialog] = field(default_factory=dict)
    publishes: dict[str, tuple] = field(default_factory=dict)  # request id -> (dialog, event type)
    closes: dict[str, tuple] = field(default_factory=dict)     # request id -> (conversations, dialogs)
    echoes: set[tuple[str, int]] = field(default_factory=set)  # (dialog, seq) of own published events
    awaiting: dict[tuple[str, int], _Expect] = field(default_factory=dict)
    closed: bool = False
    agent: bool = False  # an agent connection: the consumer's events are the others'; READ alone acknowledges


class Sequences(Analyzer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = ctx.rows("sequences")
        self.conns: dict[str, _SeqConn] = {}
        # Closed conversations and dialogs (ids are global: a reconnect still publishes to them).
        self.closed_conversations: dict[str, float] = {}
        self.closed_dialogs: dict[str, float] = {}
        self.counts = dict.fromkeys(("events", "sequenced", "from_others", "accepted", "read"), 0)
        self.accept_ms = LogHistogram()
        self._after = ctx.timers.after

    def stats(self) -> dict:
        return {"messaging": {**self.counts, "accept_p50_ms": self.accept_ms.percentile(50),
                              "accept_p90_ms": self.accept_ms.percentile(90)}}

    def open(self, rec: dict) -> None:
        state = self.conns[rec["conn"]] = _SeqConn(agent=side_of_url(rec.get("url")) == AGENT)
        token = header_token(rec)
        if token is not None and token.sub:
            state.own_ids.add(token.sub)

    # -- requests ---------------------------------------------------------------------------------

    def wants(self, hook: str, direction: str, type_: str | None) -> bool:
        if hook == "request":
            return any(type_is(type_, name) for name in REQUESTS) or is_agent_request(type_)
        if hook == "notification":
            return is_messaging_notification(type_) or is_conversation_notification(type_)
        return True

    def request(self, frame: Frame) -> None:
        type_ = frame.rec["type"]
        if is_agent_request(type_):
            self.conns[frame.rec["conn"]].agent = True
        elif type_is(type_, "PublishEvent"):
            self._publish(frame)
        elif type_is(type_, "SubscribeMessagingEvents"):
            dialog = frame.lifted("dialogId")
            if dialog is not None:
                self.conns[frame.rec["conn"]].dialogs[dialog] = _Dialog(frame.rec["t"])
        elif type_is(type_, "UpdateConversationField"):
            self._close_request(frame)
        elif type_is(type_, "InitConnection"):
            token = init_connection_token(frame.payload)
            if token is not None and token.sub:
                self.conns[frame.rec["conn"]].own_ids.add(token.sub)

    def _publish(self, frame: Frame) -> None:
        event = frame.lifted("event")
        if event is None:  # the body is not an object
            return
        rec = frame.rec
        state = self.conns[rec["conn"]]
        # `event` is there, so the record was lifted: an absent dialogId / conversationId is absent
        # from the payload too. Only a malformed one sends us to the payload.
        dialog, conversation = rec.get("dialogId"), rec.get("conversationId")
        if dialog.__class__ not in _ID_TYPES or conversation.__class__ not in _ID_TYPES:
            dialog, conversation = frame.lifted("dialogId"), frame.lifted("conversationId")
        event_type, status, sequences = event
        if event_type != CHAT_STATE and (self.closed_dialogs or self.closed_conversations):
            closed = [f"dialog {dialog!a} closed {rec['t'] - self.closed_dialogs[dialog]:.1f} s earlier"
                      if dialog in self.closed_dialogs else None,
                      f"conversation {conversation!a} closed {rec['t'] - self.closed_conversations[conversation]:.1f}"
                      " s earlier" if conversation in self.closed_conversations else None]
            closed = [c for c in closed if c]
            if closed:
                self.ctx.violation("publish-after-close", rec["conn"], rec["t"], rec.get("n"),
                                   f"{event_type} published to {closed[0]}")
        if event_type == "AcceptStatusEvent" and status in ("ACCEPT", "READ"):
            for seq in sequences:
                expect = state.awaiting.get((dialog, seq))
                if expect is not None:
                    self._acknowledged(rec, state, expect, status)
        if rec.get("id") is not None:
            state.publishes[rec["id"]] = (dialog, event_type)

    def _acknowledged(self, rec: dict, state: _SeqConn, expect: _Expect, status: str) -> None:
        t = rec["t"]
        if status == "ACCEPT":
            if expect.accept_t is None:
                expect.accept_t = t
                self.counts["accepted"] += 1
                self.accept_ms.add((t - expect.t) * 1000.0)
        elif expect.read_t is None:
            expect.read_t = t
            self.counts["read"] += 1
            if (expect.accept_t is None and not expect.reported and not state.agent
                    and expect.originator not in state.own_ids):
                expect.reported = True
                self.ctx.violation("missing-accept", rec["conn"], t, rec.get("n"),
                                   f"READ published for sequence {expect.seq} of dialog {expect.dialog!a} "
                                   f"from {expect.originator} without an ACCEPT before it")
        if expect.read_t is not None:
            self._finalize(state, expect)

    def _close_request(self, frame: Frame) -> None:
        body = frame.body
        if not isinstance(body, dict) or frame.rec.get("id") is None:
            return
        conversation = body.get("conversationId")
        conversations, dialogs = [], []
        for item in as_list(body.get("conversationField")):
            if not isinstance(item, dict):
                continue
            name = item.get("field")
            if name in ("ConversationStateField", "Stage") and item.get("conversationState") == "CLOSE":
                conversations.append(conversation)
                dialogs.append(conversation)
            elif name == "DialogChange" and isinstance(item.get("dialog"), dict):
                if item["dialog"].get("state") == "CLOSE":
                    dialogs.append(item["dialog"].get("dialogId"))
        if conversations or dialogs:
            self.conns[frame.rec["conn"]].closes[frame.rec["id"]] = (conversations, dialogs)

    # -- responses --------------------------------------------------------------------------------

    def response(self, frame: Frame) -> None:
        rec = frame.rec
        state = self.conns[rec["conn"]]
        req_id, code, type_ = rec.get("reqId"), rec.get("code"), rec.get("type")
        ok = code.__class__ is int and code < 400
        if req_id in state.publishes and can_answer(type_, code, "ms.PublishEvent"):
            publish = state.publishes.pop(req_id)
            if ok and publish[1] != CHAT_STATE:
                seq = frame.lifted("sequence")
                if seq is not None:
                    self._own_published(state, publish[0], seq)
            return
        if req_id not in state.closes or not can_answer(type_, code, "cm.UpdateConversationField"):
            return
        close = state.closes.pop(req_id)
        if ok:
            for conversation in close[0]:
                self._mark(self.closed_conversations, conversation, rec["t"])
            for dialog in close[1]:
                self._mark(self.closed_dialogs, dialog, rec["t"])

    def _own_published(self, state: _SeqConn, dialog: str, seq: int) -> None:
        """The echo of an own event tells the consumer's own originatorId, whichever comes first."""
        d = state.dialogs.get(dialog)
        originator = d.seen.get(seq) if d is not None else None
        if originator is not None:
            state.own_ids.add(originator)
            return
        if len(state.echoes) >= ECHOES_KEPT:
            state.echoes.clear()
        state.echoes.add((dialog, seq))

    @staticmethod
    def _mark(closed: dict, key, t: float) -> None:
        if isinstance(key, str):
            closed.setdefault(key, t)
            trim_oldest(closed, CLOSED_IDS_KEPT)

    # -- notifications ----------------------------------------------------------------------------

    def notification(self, frame: Frame) -> None:
        type_ = frame.rec.get("type")
        if is_messaging_notification(type_):
            state = self.conns[frame.rec["conn"]]
            for event in frame.lifted("events"):
                self._change(state, frame.rec, event)
        elif is_conversation_notification(type_) and (
                "CLOSE" in frame.rec.get("text", "") or self.closed_dialogs or self.closed_conversations):
            self._conversation_changes(frame)

    def _conversation_changes(self, frame: Frame) -> None:
        body = frame.body
        if not isinstance(body, dict):
            return
        t = frame.rec["t"]
        for change in as_list(body.get("changes")):
            result = change.get("result") if isinstance(change, dict) and change.get("type") == "UPSERT" else None
            details = result.get("conversationDetails") if isinstance(result, dict) else None
            if not isinstance(details, dict) or not isinstance(result.get("convId"), str):
                continue
            conversation, state, stage = result["convId"], details.get("state"), details.get("stage")
            self._set_closed(self.closed_dialogs, conversation, state, t)
            self._set_closed(self.closed_conversations, conversation, stage or state, t)
            for dialog in as_list(details.get("dialogs")):
                if isinstance(dialog, dict) and isinstance(dialog.get("dialogId"), str):
                    self._set_closed(self.closed_dialogs, dialog["dialogId"], dialog.get("state"), t)

    @staticmethod
    def _set_closed(closed: dict, key: str, state, t: float) -> None:
        if state == "CLOSE":
            closed.setdefault(key, t)
            trim_oldest(closed, CLOSED_IDS_KEPT)
        elif state == "OPEN":
            closed.pop(key, None)

    def _change(self, state: _SeqConn, rec: dict, event: list) -> None:
        """One entry of the `events` index field (see `analysis.frame.lift_body`)."""
        dialog, conversation, seq, event_type, status, originator, role, stamp = event
        if dialog is None:
            return
        d = state.dialogs.get(dialog)
        if d is None:
            d = state.dialogs[dialog] = _Dialog()
        # An explicit role wins over the sequence a publish response returned: the tutorials show an
        # agent's ACCEPT at the sequence the consumer's own publish was answered with.
        echo = seq is not None and (dialog, seq) in state.echoes
        if echo:
            state.echoes.discard((dialog, seq))
        # The consumer's events are never an agent's own, and on a consumer connection an agent's
        # are never the client's.
        maybe_own = role is None or (role != "CONSUMER" if state.agent else role == "CONSUMER")
        if originator is not None and ((role == "CONSUMER" and not state.agent) or (echo and maybe_own)):
            state.own_ids.add(originator)
        own = originator in state.own_ids
        history = (d.subscribed_t is not None and isinstance(stamp, (int, float))
                   and stamp / 1000.0 < d.subscribed_t - HISTORY_SLACK_S)
        counts = self.counts
        counts["events"] += 1
        if seq is not None:
            counts["sequenced"] += 1
            last = d.last
            if last is not None and seq != last + 1:
                self._out_of_order(d, rec, dialog, seq, last)
            else:
                d.last = seq
            d.seen[seq] = originator if maybe_own else None
            trim_oldest(d.seen, SEEN_KEPT)
        row = None
        if self.rows is not None:
            row = {"conn": rec["conn"], "t": rec["t"], "frame": rec.get("n"), "dialog_id": dialog,
                   "conversation_id": conversation, "sequence": seq, "event_type": event_type,
                   "status": status, "originator_id": originator,
                   "originator_role": role, "own": own, "history": history, "accept_ms": None, "read_ms": None}
        if seq is not None and not own and not history and event_type in CONTENT_EVENTS:
            counts["from_others"] += 1
            expect = _Expect(dialog, seq, rec["t"], originator, row)
            state.awaiting[(dialog, seq)] = expect
            self._after(rec["t"], self.config.accept_timeout_s, self._accept_due, rec["conn"], state, expect,
                        rec.get("n"))
        elif row is not None:
            self.rows(row)

    def _out_of_order(self, d: _Dialog, rec: dict, dialog: str, seq: int, last: int) -> None:
        if seq > last + 1:
            missing = f"{last + 1}" if seq == last + 2 else f"{last + 1}-{seq - 1}"
            self.ctx.violation("sequence-gap", rec["conn"], rec["t"], rec.get("n"),
                               f"dialog {dialog!a}: sequence {seq} after {last} (missing {missing})")
            d.last = seq
        elif seq in d.seen:
            self.ctx.violation("sequence-duplicate", rec["conn"], rec["t"], rec.get("n"),
                               f"dialog {dialog!a}: sequence {seq} delivered again")
        else:
            self.ctx.violation("sequence-regression", rec["conn"], rec["t"], rec.get("n"),
                               f"dialog {dialog!a}: sequence {seq} after {last}")

    def _accept_due(self, deadline: float, conn: str, state: _SeqConn, expect: _Expect, n) -> None:
        if expect.done or state.closed:
            return
        # (an agent's READ has finalized its message already: an agent may READ without ACCEPT)
        if expect.accept_t is None and expect.originator not in state.own_ids:
            expect.reported = True
            within = f"from {expect.originator} within {self.config.accept_timeout_s:g} s"
            if state.agent:
                message = (f"the agent acknowledged (ACCEPT or READ) no consumer message at sequence {expect.seq} "
                           f"of dialog {expect.dialog!a} {within}")
            else:
                read = " (a READ was sent)" if expect.read_t is not None else ""
                message = f"no ACCEPT for sequence {expect.seq} of dialog {expect.dialog!a} {within}{read}"
            self.ctx.violation("missing-accept", conn, deadline, n, message)
        # An accepted message waits for its READ, but not forever (bounded memory).
        if expect.accept_t is None:
            self._finalize(state, expect)
        else:
            self.ctx.timers.after(expect.t, READ_WAIT_S, self._read_due, state, expect)

    def _read_due(self, deadline: float, state: _SeqConn, expect: _Expect) -> None:
        if not expect.done:
            self._finalize(state, expect)

    def _finalize(self, state: _SeqConn, expect: _Expect) -> None:
        expect.done = True
        state.awaiting.pop((expect.dialog, expect.seq), None)
        row = expect.row
        if row is not None:
            if expect.accept_t is not None:
                row["accept_ms"] = (expect.accept_t - expect.t) * 1000.0
            if expect.read_t is not None:
                row["read_ms"] = (expect.read_t - expect.t) * 1000.0
            self.rows(row)

    def close(self, rec: dict, at_capture_end: bool) -> None:
        conn, t = rec["conn"], rec["t"]
        state = self.conns.pop(conn)
        state.closed = True
        for expect in list(state.awaiting.values()):
            acknowledged = expect.accept_t is not None or (state.agent and expect.read_t is not None)
            if not acknowledged and not expect.reported and expect.originator not in state.own_ids:
                # Still within its allowance: the client closed (or the capture ended) before the deadline.
                waited = t - expect.t
                ended = "the capture ended" if at_capture_end else "the connection closed"
                what = ("the consumer message at sequence", "before the agent's ACCEPT or READ") if state.agent else (
                    "sequence", "before any ACCEPT")
                self.ctx.violation("missing-accept", conn, t, None,
                                   f"{ended} {waited:.1f} s after {what[0]} {expect.seq} of dialog "
                                   f"{expect.dialog!a} arrived, {what[1]}", INFO,
                                   at_capture_end=at_capture_end)
            self._finalize(state, expect)
