"""Conversations, dialogs, sequences and subscriptions of the built-in server.

Plain state plus fan-out: a *sink* is anything with `notify(frame: dict)` (a client connection).
Conversation metadata goes to the `SubscribeExConversations` subscriptions of the owning consumer;
the filters of a subscription (`convState`, `stage`, `minLastUpdatedTime`) select only the first,
listing notification; later changes of the consumer's conversations are always sent.

Memory is bounded per consumer: at most `max_conversations` kept (the oldest closed one is
forgotten, with a DELETE change, to make room), and `retention` seconds after a consumer's last
connection closed all its conversations are forgotten.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from recorder.server.faults import Faults

MESSAGING_NOTIFICATION = "ms.MessagingEventNotification"
SEQUENCED_EVENTS = ("ContentEvent", "AcceptStatusEvent", "RichContentEvent")


def now_ms() -> int:
    return int(time.time() * 1000)


class Sink(Protocol):
    def notify(self, frame: dict) -> None: ...


@dataclass
class Dialog:
    id: str
    conversation_id: str
    created: int
    state: str = "OPEN"
    end: int | None = None
    closed_by: str | None = None
    changes: list[dict] = field(default_factory=list)
    """Sequenced changes in publish order (chat states are not kept)."""
    last_sequence: int | None = None
    consumer_events: int = 0
    """Sequenced events the consumer published (what `max_events` limits)."""

    def details(self, participants: list[dict]) -> dict:
        details = {"dialogId": self.id, "participantsDetails": participants, "dialogType": "MAIN",
                   "channelType": "MESSAGING", "state": self.state, "creationTs": self.created,
                   "metaDataLastUpdateTs": self.end or self.created}
        if self.end is not None:
            details.update(endTs=self.end, closedBy=self.closed_by)
        return details


@dataclass
class Conversation:
    id: str
    consumer: str
    account: str
    start: int
    ttr: dict
    participants: list[dict]
    dialog: Dialog
    state: str = "OPEN"
    stage: str = "OPEN"
    close_reason: str | None = None
    end: int | None = None
    csat: dict | None = None
    last_update: int = 0
    requested: dict = field(default_factory=dict)
    """What the consumer asked for (`skillId`, `campaignInfo`, `context`, ...), carried back in
    every `conversationDetails` as LivePerson does: clients compare it with their request."""

    def result(self) -> dict:
        details = {"participants": self.participants,
                   "dialogs": [self.dialog.details(self.participants)],
                   "brandId": self.account, "state": self.state, "stage": self.stage,
                   "startTs": self.start, "metaDataLastUpdateTs": self.last_update, "ttr": self.ttr,
                   **self.requested}
        if self.end is not None:
            details.update(endTs=self.end, closeReason=self.close_reason)
        if self.csat is not None:
            details["csat"] = self.csat
        return {"convId": self.id, "conversationDetails": details, "lastUpdateTime": self.last_update}

    def role_of(self, participant: str) -> str | None:
        return next((p["role"] for p in self.participants if p["id"] == participant), None)


@dataclass
class MetadataSubscription:
    sink: Sink
    consumer: str
    notification_type: str


class ConversationStore:
    def __init__(self, faults: Faults, retention: float):
        self.faults = faults
        self.retention = retention
        self.conversations: dict[str, Conversation] = {}
        self.dialogs: dict[str, Dialog] = {}
        self._by_consumer: dict[str, dict[str, Conversation]] = {}
        """Each consumer's conversations, oldest first."""
        self.metadata_subscriptions: dict[str, MetadataSubscription] = {}
        self._watchers: dict[str, dict[str, MetadataSubscription]] = {}
        """The metadata subscriptions of each consumer, by subscription id."""
        self.event_subscriptions: dict[str, set[Sink]] = {}
        self._connections: dict[str, int] = {}
        """Open authenticated connections of each consumer."""
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        """Consumers without a connection, and when their conversations are forgotten."""
        self.on_created: list[Callable[[Conversation], None]] = []
        self.on_change: list[Callable[[Conversation, dict], None]] = []
        """Called after every messaging change (sequenced or chat state)."""
        self.on_closed: list[Callable[[Conversation], None]] = []
        self.on_forgotten: list[Callable[[Conversation], None]] = []
        self.on_updated: list[Callable[[Conversation], None]] = []
        """Called after every change of a conversation's metadata (the brand side's notifications)."""

    # -- conversations -------------------------------------------------------------------------

    def create(self, account: str, consumer: str, ttr_type: str | None, requested: dict) -> Conversation:
        conversation_id = str(uuid.uuid4())
        start = now_ms()
        dialog = Dialog(id=conversation_id, conversation_id=conversation_id, created=start)
        conversation = Conversation(
            id=conversation_id, consumer=consumer, account=account, start=start,
            ttr={"ttrType": ttr_type or "NORMAL", "value": 3600},
            participants=[{"id": consumer, "role": "CONSUMER"}], dialog=dialog, last_update=start,
            requested=requested)
        self.conversations[conversation_id] = conversation
        self._by_consumer.setdefault(consumer, {})[conversation_id] = conversation
        self.dialogs[dialog.id] = dialog
        self._upsert(conversation)
        for callback in self.on_created:
            callback(conversation)
        return conversation

    def of_consumer(self, consumer: str) -> list[Conversation]:
        return list(self._by_consumer.get(consumer, {}).values())

    def make_room(self, consumer: str, limit: int) -> bool:
        """Forgets the consumer's oldest closed conversations until it has fewer than `limit`;
        False when that is impossible (all are open)."""
        kept = self._by_consumer.get(consumer, {})
        closed = (c for c in list(kept.values()) if c.state == "CLOSE")
        while len(kept) >= limit:
            oldest = next(closed, None)
            if oldest is None:
                return False
            self._forget_conversation(oldest, {"type": "DELETE", "result": oldest.result()})
        return True

    def owned(self, conversation_id: str, consumer: str) -> Conversation | None:
        conversation = self.conversations.get(conversation_id)
        return conversation if conversation is not None and conversation.consumer == consumer else None

    def add_participant(self, conversation: Conversation, participant: str, role: str) -> None:
        conversation.participants.append({"id": participant, "role": role})
        self._upsert(conversation)

    def remove_participant(self, conversation: Conversation, participant: str) -> None:
        conversation.participants = [p for p in conversation.participants if p["id"] != participant]
        self._upsert(conversation)

    def close(self, conversation: Conversation, by_role: str) -> None:
        if conversation.state == "CLOSE":
            return
        end = now_ms()
        conversation.state = conversation.stage = "CLOSE"
        conversation.close_reason = by_role
        conversation.end = end
        dialog = conversation.dialog
        dialog.state, dialog.end, dialog.closed_by = "CLOSE", end, by_role
        self._upsert(conversation)
        for callback in self.on_closed:
            callback(conversation)

    def update(self, conversation: Conversation, **fields) -> None:
        for name, value in fields.items():
            setattr(conversation, name, value)
        self._upsert(conversation)

    # -- metadata subscriptions ----------------------------------------------------------------

    def subscribe_metadata(self, sink: Sink, consumer: str, notification_type: str) -> str:
        """Registers the subscription and returns its id; the caller sends `initial_listing` after
        the response."""
        subscription_id = str(uuid.uuid4())
        subscription = MetadataSubscription(sink, consumer, notification_type)
        self.metadata_subscriptions[subscription_id] = subscription
        self._watchers.setdefault(consumer, {})[subscription_id] = subscription
        return subscription_id

    def subscriptions_of(self, sink: Sink, consumer: str) -> int:
        return sum(1 for s in self._watchers.get(consumer, {}).values() if s.sink is sink)

    def initial_listing(self, subscription_id: str, body: dict) -> None:
        subscription = self.metadata_subscriptions.get(subscription_id)
        if subscription is None:
            return
        states = as_list(body.get("convState"))
        stages = as_list(body.get("stage"))
        since = body.get("minLastUpdatedTime") or 0
        listed = [c for c in self.of_consumer(subscription.consumer)
                  if (not states or c.state in states) and (not stages or c.stage in stages)
                  and (not isinstance(since, (int, float)) or c.last_update >= since)]
        self._send_metadata(subscription_id, subscription, [{"type": "UPSERT", "result": c.result()} for c in listed])

    def unsubscribe_metadata(self, subscription_id: str, sink: Sink) -> bool:
        subscription = self.metadata_subscriptions.get(subscription_id)
        if subscription is None or subscription.sink is not sink:
            return False
        self._drop_subscription(subscription_id)
        return True

    def _drop_subscription(self, subscription_id: str) -> None:
        subscription = self.metadata_subscriptions.pop(subscription_id)
        watchers = self._watchers[subscription.consumer]
        del watchers[subscription_id]
        if not watchers:
            del self._watchers[subscription.consumer]

    def _upsert(self, conversation: Conversation) -> None:
        conversation.last_update = max(now_ms(), conversation.last_update)
        self._tell_watchers(conversation.consumer, {"type": "UPSERT", "result": conversation.result()})
        for callback in self.on_updated:
            callback(conversation)

    def _tell_watchers(self, consumer: str, change: dict) -> None:
        for subscription_id, subscription in list(self._watchers.get(consumer, {}).items()):
            self._send_metadata(subscription_id, subscription, [change])

    def _send_metadata(self, subscription_id: str, subscription: MetadataSubscription, changes: list[dict]) -> None:
        body = {"subscriptionId": subscription_id, "changes": changes}
        subscription.sink.notify({"kind": "notification", "type": subscription.notification_type, "body": body})
        if self.faults.unknown_subscription():
            stray = {"subscriptionId": str(uuid.uuid4()), "changes": changes}
            subscription.sink.notify({"kind": "notification", "type": subscription.notification_type, "body": stray})

    # -- messaging events ----------------------------------------------------------------------

    def subscribe_events(self, sink: Sink, dialog: Dialog) -> None:
        self.event_subscriptions.setdefault(dialog.id, set()).add(sink)

    def history(self, dialog: Dialog, from_seq: int) -> list[dict]:
        return [c for c in dialog.changes if c["sequence"] >= from_seq]

    def publish(self, conversation: Conversation, originator: str, event: dict,
                metadata: list | None = None) -> int:
        """Publishes `event` on the conversation's MAIN dialog; returns its sequence (0 for chat states)."""
        dialog = conversation.dialog
        change = {"originatorId": originator,
                  "originatorMetadata": {"id": originator, "role": conversation.role_of(originator) or "CONSUMER"},
                  "event": event, "conversationId": conversation.id, "dialogId": dialog.id}
        if metadata:
            change["metadata"] = metadata
        sequence = 0
        if event.get("type") in SEQUENCED_EVENTS:
            sequence = self.faults.next_sequence(dialog.last_sequence)
            dialog.last_sequence = sequence
            change = {"sequence": sequence, "serverTimestamp": now_ms(), **change}
            dialog.changes.append(change)
            if originator == conversation.consumer:
                dialog.consumer_events += 1
        frame = {"kind": "notification", "type": MESSAGING_NOTIFICATION, "body": {"changes": [change]}}
        for sink in list(self.event_subscriptions.get(dialog.id, ())):
            sink.notify(frame)
        for callback in self.on_change:
            callback(conversation, change)
        return sequence

    # -- connections ---------------------------------------------------------------------------

    def forget(self, sink: Sink) -> None:
        """Drops every subscription of a closed connection."""
        for subscription_id, subscription in list(self.metadata_subscriptions.items()):
            if subscription.sink is sink:
                self._drop_subscription(subscription_id)
        for dialog_id, sinks in list(self.event_subscriptions.items()):
            sinks.discard(sink)
            if not sinks:
                del self.event_subscriptions[dialog_id]

    def attach(self, consumer: str) -> None:
        """A connection of `consumer` authenticated: its conversations are kept."""
        self._connections[consumer] = self._connections.get(consumer, 0) + 1
        expiry = self._expiries.pop(consumer, None)
        if expiry is not None:
            expiry.cancel()

    def detach(self, consumer: str) -> None:
        """A connection of `consumer` ended: after the last one, its conversations are forgotten
        `retention` seconds later unless it comes back."""
        self._connections[consumer] -= 1
        if self._connections[consumer] == 0:
            del self._connections[consumer]
            self._expiries[consumer] = asyncio.get_running_loop().call_later(
                self.retention, self._expire, consumer)

    def _expire(self, consumer: str) -> None:
        del self._expiries[consumer]
        for conversation in self.of_consumer(consumer):
            self._forget_conversation(conversation, None)

    def _forget_conversation(self, conversation: Conversation, change: dict | None) -> None:
        del self.conversations[conversation.id]
        kept = self._by_consumer[conversation.consumer]
        del kept[conversation.id]
        if not kept:
            del self._by_consumer[conversation.consumer]
        del self.dialogs[conversation.dialog.id]
        self.event_subscriptions.pop(conversation.dialog.id, None)
        if change is not None:
            self._tell_watchers(conversation.consumer, change)
        for callback in self.on_forgotten:
            callback(conversation)


def as_list(value) -> list:
    """Single-element arrays may be sent as the element itself."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
