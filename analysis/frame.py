"""One msg record as the analyzers see it: its category and its payload, parsed at most once."""

from __future__ import annotations

from typing import Any

import orjson

from analysis import _core

REQ = "req"
RESP = "resp"
NOTIFICATION = "notification"
KINDS = frozenset({REQ, RESP, NOTIFICATION})

_UNPARSED = object()
BODY_INDEX_FIELDS = ("dialogId", "conversationId", "sequence", "event", "events")  # what `lift_body` adds


class Frame:
    """A msg record plus its category (req / resp / notification / None for unusable frames).

    `payload` parses the text on first use only: most analyzers work from the index fields the
    recorder lifted to the top level of the record.
    """
    __slots__ = ("rec", "category", "_payload", "_lifted", "_checked")

    def __init__(self, rec: dict, category: str | None, payload: Any = _UNPARSED):
        self.rec = rec
        self.category = category
        self._payload = payload
        self._lifted = False
        self._checked: str | None = None  # the last body index field found well-formed

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

    def lifted(self, key: str) -> Any:
        """A body index field (`dialogId`, `event`, `events`, …; see `lift_body`). Captures written
        before these fields existed do not carry them, and a damaged or hand-made capture may carry
        them malformed: the payload is then parsed and lifted here, by the same function the
        recorder uses, so every path gives the same values."""
        rec = self.rec
        value = rec.get(key)
        if key == self._checked:
            return value
        if value is not None and _VALID[key](value):
            self._checked = key
            return value
        if not self._lifted:
            self._lifted = True
            for name in BODY_INDEX_FIELDS:
                rec.pop(name, None)
            rec.update(lift_body(rec.get("type"), self.body))
        return rec.get(key)


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


def request_name(type_: str) -> str:
    """A type without its prefix: `cqm.SubscribeExConversations` -> `SubscribeExConversations`,
    `.GetClock$Response` -> `GetClock$Response`."""
    return type_.rpartition(".")[2]


# Response types that name the request they answer (Messaging Window API — API reference pages and
# tutorials, with the v2 and brand-side spellings of the same types): response name -> request names.
_NAMED_RESPONSES = {response: requests for responses, requests in (
    (("RequestConversationResponse", "RequestConversation$Response"),
     ("ConsumerRequestConversation", "AgentRequestConversation")),
    (("PublishEventResponse", "PublishEvent$Response"), ("PublishEvent",)),
    (("SubscribeExConversationsResponse", "SubscribeExConversations$Response"), ("SubscribeExConversations",)),
    (("GenerateURLResponse", "BaseGenerateURLResponse"), ("GenerateURLForUploadFile", "GenerateURLForDownloadFile")),
    (("GetClockResponse", "GetClock$Response"), ("GetClock",)),
    (("QueryMessages$Response",), ("QueryMessages",)),
    (("GetUserProfile$Response",), ("GetUserProfile",)),
) for response in responses}
# The generic subscribe response answers any subscription request (messaging events, unsubscribes,
# and on the brand side routing tasks, agent states, subscription updates).
_GENERIC_SUBSCRIBE = frozenset({"GenericSubscribeResponse", "GenericSubscribe$Response"})
# A string response answers requests whose success has no body of its own (UpdateConversationField,
# UnsubscribeExConversations, InitConnection, ...), and as an error (4xx/5xx) any request.
_STRING_RESPONSES = frozenset({"StringResponse", "ReqBody$StringResp", "StringResp"})
_TYPED_SUCCESS = frozenset({request for names in _NAMED_RESPONSES.values() for request in names
                            if request != "GetClock"}) | {"SubscribeMessagingEvents"}
_answers_cache: dict[tuple, bool] = {}


def can_answer(response_type: Any, code: Any, request_type: Any) -> bool:
    """Whether a response of this type (and code) can answer a request of this type.

    Only a response type that names its request (or is a string or generic subscribe response)
    rules requests out: an undocumented or missing type answers anything, as does any response to
    a request without a type.
    """
    key = (response_type, request_type, code, code.__class__)  # 1, 1.0 and True are one dict key
    try:
        return _answers_cache[key]
    except (KeyError, TypeError):  # not asked yet, or an unhashable value from a malformed frame
        pass
    if response_type.__class__ is not str or request_type.__class__ is not str:
        return True
    found = _can_answer(response_type, code.__class__ is not int or code >= 400, request_type)
    if len(_answers_cache) >= 4096:  # endless distinct types and codes: stay bounded
        _answers_cache.clear()
    _answers_cache[key] = found
    return found


def _can_answer(response_type: str, error: bool, request_type: str) -> bool:
    response, request = request_name(response_type), request_name(request_type)
    if response in _NAMED_RESPONSES:
        return request in _NAMED_RESPONSES[response]
    if response in _GENERIC_SUBSCRIBE:
        return "subscri" in request.lower()
    if response in _STRING_RESPONSES:
        return error or request not in _TYPED_SUCCESS
    return True


_CONTAINERS = frozenset({dict, list})


def _valid_event(value: Any) -> bool:
    return (value.__class__ is list and len(value) == 3 and value[2].__class__ is list
            and _CONTAINERS.isdisjoint(map(type, value[:2])) and _CONTAINERS.isdisjoint(map(type, value[2])))


def _valid_events(value: Any) -> bool:
    if value.__class__ is not list:
        return False
    for entry in value:
        if entry.__class__ is not list or len(entry) != 8 or not _CONTAINERS.isdisjoint(map(type, entry)):
            return False
        dialog, sequence = entry[0], entry[2]
        if (dialog is not None and dialog.__class__ is not str) or (sequence is not None and sequence.__class__ is not int):
            return False
    return True


_VALID = {"dialogId": lambda value: value.__class__ is str, "conversationId": lambda value: value.__class__ is str,
          "sequence": lambda value: value.__class__ is int, "event": _valid_event, "events": _valid_events}


def lift_body(type_: Any, body: Any) -> dict:
    """The body index fields of a message (docs/capture-format.md, "Body index fields"), lifted by the
    native core as the recorder lifts them; `body` is a decoded JSON value (what orjson reads)."""
    return orjson.loads(_core.lift_body(type_ if type_.__class__ is str else None, orjson.dumps(body)))
