"""What the Python side reads of a message beyond its index fields (replay, diff, the built-in
server): its payload, array fields, notification variants and type names. The protocol rules are
the native core's (core/src/frame.rs)."""

from __future__ import annotations

from typing import Any

import orjson

NOTIFICATION = "notification"  # the `category` of a server message that answers no request
BODY_INDEX_FIELDS = ("dialogId", "conversationId", "sequence", "event", "events")  # what the recorder lifts


def parse_payload(rec: dict) -> Any:
    text = rec.get("text")
    if text is None or rec.get("truncated"):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def as_list(value: Any) -> list:
    """An array field: a single element sent bare counts as a one-element array (Messaging Window API —
    Protocol Overview, Single Element Arrays)."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def is_conversation_notification(type_: str | None) -> bool:
    """cqm. / aam. / .ams.aam. ExConversationChangeNotification (the tutorials, the API reference page
    and the v2 spelling of the same notification)."""
    return type_ is not None and type_.endswith("ExConversationChangeNotification")


def is_messaging_notification(type_: str | None) -> bool:
    """ms.MessagingEventNotification and the v2 ms.OnlineEventDistribution (single change body)."""
    return type_ is not None and ("MessagingEventNotification" in type_ or "OnlineEventDistribution" in type_)


def messaging_changes(type_: str, body: Any) -> list[dict]:
    """The change objects of a messaging-event notification, whichever variant it is."""
    if not isinstance(body, dict):
        return []
    if "OnlineEventDistribution" in type_:
        return [body]
    return [c for c in as_list(body.get("changes")) if isinstance(c, dict)]


def type_is(type_: str | None, name: str) -> bool:
    """Whether a request type is `name` under any of its prefixes (cqm., .ams.aam., .ams.ms., …)."""
    return type_ is not None and (type_ == name or type_.endswith("." + name))
