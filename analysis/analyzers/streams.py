"""Subscription streams: conversation-metadata, routing-task and agent-state streams keyed by the
subscriptionId of the subscribe response, messaging-event streams keyed by the dialogId of
ms.SubscribeMessagingEvents."""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.engine import Analyzer
from analysis.frame import Frame, can_answer, is_messaging_notification, type_is
from analysis.identity import AGENT, is_agent_request, side_of_url
from analysis.rules import INFO

CONVERSATIONS = "conversations"
MESSAGING = "messaging-events"
# Requests whose response names a subscriptionId that later notifications carry: the consumer's
# conversation metadata, and on the brand side routing tasks and agent states (Messaging Agent API —
# Getting Started, Step 5).
_KEYED = {"SubscribeExConversations": CONVERSATIONS, "SubscribeRoutingTasks": "routing-tasks",
          "SubscribeAgentsState": "agent-states"}
_KINDS_KEYED = frozenset(_KEYED.values())


@dataclass(slots=True)
class _Stream:
    kind: str
    key: str
    request_type: str | None = None
    t_request: float | None = None
    request_frame: int | None = None
    t_confirmed: float | None = None
    notifications: int = 0
    t_first: float | None = None
    t_last: float | None = None
    t_unsubscribed: float | None = None
    after_unsubscribe: int = 0


@dataclass(slots=True)
class _StreamConn:
    # request id -> (what, request type, t, frame, key) per outstanding request, in the order sent:
    # what its response confirms (a response takes the oldest its type can answer, as in Pairs)
    pending: dict[str, list[tuple]] = field(default_factory=dict)
    streams: dict[str, _Stream] = field(default_factory=dict)  # subscriptionId -> stream
    dialogs: dict[str, _Stream] = field(default_factory=dict)  # dialogId -> stream
    unknown: set[str] = field(default_factory=set)  # reported once each
    agent: bool = False


class Streams(Analyzer):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = ctx.rows("streams")
        self.conns: dict[str, _StreamConn] = {}

    def open(self, rec: dict) -> None:
        self.conns[rec["conn"]] = _StreamConn(agent=side_of_url(rec.get("url")) == AGENT)

    def wants(self, hook: str, direction: str, type_: str | None) -> bool:
        return hook != "request" or (type_ is not None and (
            type_.endswith(("ExConversations", "MessagingEvents", *_KEYED)) or is_agent_request(type_)))

    def request(self, frame: Frame) -> None:
        rec = frame.rec
        type_, req_id = rec["type"], rec.get("id")
        state = self.conns[rec["conn"]]
        if is_agent_request(type_):
            state.agent = True
        if req_id is None:
            return
        keyed = next((kind for name, kind in _KEYED.items() if type_is(type_, name)), None)
        if type_is(type_, "UnsubscribeExConversations"):
            action = ("unsubscribe", type_, rec["t"], rec.get("n"), rec.get("subscriptionId"))
        elif keyed is not None:
            action = (keyed, type_, rec["t"], rec.get("n"), None)
        elif type_is(type_, "SubscribeMessagingEvents") and frame.lifted("dialogId") is not None:
            action = (MESSAGING, type_, rec["t"], rec.get("n"), rec["dialogId"])
        else:
            return
        state.pending.setdefault(req_id, []).append(action)

    def response(self, frame: Frame) -> None:
        rec = frame.rec
        state = self.conns[rec["conn"]]
        req_id, code = rec.get("reqId"), rec.get("code")
        actions = state.pending.get(req_id)
        if not actions:
            return
        answered = next((i for i, action in enumerate(actions) if can_answer(rec.get("type"), code, action[1])), None)
        if answered is None:
            return
        action = actions.pop(answered)
        if not actions:
            del state.pending[req_id]
        t = rec["t"]
        kind, type_, t_request, request_frame, key = action
        if code.__class__ is not int or code >= 400:
            # A refused subscription does not keep the events that came before its answer.
            stream = state.dialogs.get(key) if kind == MESSAGING else None
            if stream is not None and (stream.t_request, stream.request_frame) == (t_request, request_frame):
                self._row(rec["conn"], state.dialogs.pop(key), t)
            return
        if kind == "unsubscribe":
            stream = state.streams.get(key)
            if stream is not None:
                stream.t_unsubscribed = t
            return
        if kind in _KINDS_KEYED:
            key = rec.get("subscriptionId")
            if key is None:
                return
            stream = state.streams.get(key)  # notifications may have come before this response
            if stream is None:
                stream = state.streams[key] = _Stream(kind, key)
            stream.kind = kind
        else:
            previous = state.dialogs.get(key)
            if previous is not None and (previous.t_request, previous.request_frame) != (t_request, request_frame):
                self._row(rec["conn"], previous, t)
                previous = None
            # The events that came while this subscription was unanswered are already counted on it.
            stream = state.dialogs[key] = previous or _Stream(kind, key)
        stream.request_type, stream.t_request, stream.request_frame, stream.t_confirmed = (
            type_, t_request, request_frame, t)

    def notification(self, frame: Frame) -> None:
        rec = frame.rec
        state = self.conns[rec["conn"]]
        sid = rec.get("subscriptionId")
        if sid is not None:
            stream = state.streams.get(sid)
            if stream is None:
                kind = next((p[0] for actions in state.pending.values() for p in actions if p[0] in _KINDS_KEYED),
                            None)
                if kind is not None:
                    stream = state.streams[sid] = _Stream(kind, sid)
                else:
                    self._unknown(state, rec, sid, f"notification for unknown subscription {ascii(sid)}", None)
                    return
            self._count(stream, rec)
        elif is_messaging_notification(rec.get("type")):
            events = frame.lifted("events")
            dialogs = (events[0][0],) if len(events) == 1 else dict.fromkeys(event[0] for event in events)
            for dialog in dialogs:
                if dialog is None:
                    continue
                stream = state.dialogs.get(dialog)
                if stream is None:
                    stream = self._pending_dialog(state, dialog)
                if stream is None and state.agent:
                    # The brand side delivers the events of the conversations the agent takes part in
                    # without a subscription (Messaging Agent API — Getting Started, Step 7).
                    stream = state.dialogs[dialog] = _Stream(MESSAGING, dialog)
                if stream is None:
                    self._unknown(state, rec, dialog, f"messaging events for dialog {ascii(dialog)} that was not "
                                                      "subscribed on this connection", INFO)
                else:
                    self._count(stream, rec)

    @staticmethod
    def _pending_dialog(state: _StreamConn, dialog: str) -> _Stream | None:
        """The stream of an unanswered SubscribeMessagingEvents for the dialog: events may come
        before the subscribe response (as conversation notifications may)."""
        for actions in state.pending.values():
            for kind, type_, t_request, request_frame, key in actions:
                if kind == MESSAGING and key == dialog:
                    stream = state.dialogs[dialog] = _Stream(kind, dialog, type_, t_request, request_frame)
                    return stream
        return None

    def _count(self, stream: _Stream, rec: dict) -> None:
        t = rec["t"]
        stream.notifications += 1
        if stream.t_first is None:
            stream.t_first = t
        stream.t_last = t
        if stream.t_unsubscribed is not None:
            stream.after_unsubscribe += 1
            if stream.after_unsubscribe == 1:
                self.ctx.violation("notification-after-unsubscribe", rec["conn"], t, rec.get("n"),
                                   f"notification for subscription {ascii(stream.key)} "
                                   f"{t - stream.t_unsubscribed:.3f} s after it was unsubscribed "
                                   "(reported once per subscription)")

    def _unknown(self, state: _StreamConn, rec: dict, key: str, message: str, severity: str | None) -> None:
        if key not in state.unknown:
            state.unknown.add(key)
            self.ctx.violation("unknown-subscription", rec["conn"], rec["t"], rec.get("n"),
                               message + " (reported once per connection)", severity)

    def close(self, rec: dict, at_capture_end: bool) -> None:
        state = self.conns.pop(rec["conn"])
        for stream in [*state.streams.values(), *state.dialogs.values()]:
            self._row(rec["conn"], stream, rec["t"])

    def _row(self, conn: str, stream: _Stream, t_end: float) -> None:
        if self.rows is None:
            return
        start = stream.t_confirmed if stream.t_confirmed is not None else stream.t_first
        end = stream.t_unsubscribed if stream.t_unsubscribed is not None else t_end
        span = end - start if start is not None else 0.0
        self.rows({
            "conn": conn, "t": stream.t_request if stream.t_request is not None else stream.t_first,
            "kind": stream.kind,
            "subscription_id": stream.key if stream.kind in _KINDS_KEYED else None,
            "dialog_id": stream.key if stream.kind == MESSAGING else None,
            "request_type": stream.request_type, "request_frame": stream.request_frame,
            "t_confirmed": stream.t_confirmed, "notifications": stream.notifications,
            "first_notification_delay_ms": ((stream.t_first - stream.t_request) * 1000.0
                                            if stream.t_first is not None and stream.t_request is not None else None),
            "t_first": stream.t_first, "t_last": stream.t_last,
            "rate_per_min": stream.notifications * 60.0 / span if span > 0 else None,
            "t_unsubscribed": stream.t_unsubscribed, "unsubscribed": stream.t_unsubscribed is not None,
            "after_unsubscribe": stream.after_unsubscribe,
        })
