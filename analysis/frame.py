"""One msg record as the analyzers see it: its category and its payload, parsed at most once."""

from __future__ import annotations

from typing import Any

import orjson

REQ = "req"
RESP = "resp"
NOTIFICATION = "notification"
KINDS = frozenset({REQ, RESP, NOTIFICATION})

_UNPARSED = object()


class Frame:
    """A msg record plus its category (req / resp / notification / None for unusable frames).

    `payload` parses the text on first use only: most analyzers work from the index fields the
    recorder lifted to the top level of the record.
    """
    __slots__ = ("rec", "category", "_payload")

    def __init__(self, rec: dict, category: str | None, payload: Any = _UNPARSED):
        self.rec = rec
        self.category = category
        self._payload = payload

    @property
    def payload(self) -> Any:
        """The decoded JSON payload, or None when it is not JSON (or was truncated)."""
        if self._payload is _UNPARSED:
            self._payload = parse_payload(self.rec)
        return self._payload

    @property
    def body(self) -> Any:
        payload = self._payload
        if payload is _UNPARSED:
            payload = self._payload = parse_payload(self.rec)
        return payload.get("body") if payload.__class__ is dict else None


def parse_payload(rec: dict) -> Any:
    text = rec.get("text")
    if text is None or rec.get("truncated"):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def as_list(value: Any) -> list:
    """An array field: a single element sent bare counts as a one-element array (protocol overview)."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def is_conversation_notification(type_: str | None) -> bool:
    """cqm. / aam. / .ams.aam. ExConversationChangeNotification (catalog §12.2)."""
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
