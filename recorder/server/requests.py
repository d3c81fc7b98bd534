"""Parsing and answering Messaging Window requests (everything but the socket).

Every request gets a response `{"kind":"resp","reqId":<id as string>,"type","code","body"}`.
Errors use type `StringResponse`, a 4xx code and a string body: 400 for malformed requests and
unknown types, 401 before authentication, 404 for unknown conversations/dialogs/subscriptions,
429 past a limit (subscriptions per connection, conversations per consumer, events per
conversation; LivePerson documents 429
as its rate-limit answer).
When no id can be read (invalid JSON, no `id`), the error response has no `reqId`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from recorder.server.config import ServerConfig
from recorder.server.conversations import (MESSAGING_NOTIFICATION, SEQUENCED_EVENTS, Conversation, ConversationStore,
                                           Sink, as_list)

ERROR_TYPE = "StringResponse"


class RequestError(Exception):
    def __init__(self, code: int, message: str, request_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass
class Request:
    id: str
    type: str
    body: object
    headers: list
    metadata: list | None


def parse_request(text: str) -> Request:
    try:
        frame = json.loads(text)
    except ValueError as e:
        raise RequestError(400, f"invalid JSON: {e}") from None
    except RecursionError:
        raise RequestError(400, "invalid JSON: nested too deeply") from None
    if not isinstance(frame, dict):
        raise RequestError(400, "a request must be a JSON object")
    request_id = frame.get("id")
    if request_id is None or isinstance(request_id, (dict, list, bool)) or request_id == "":
        raise RequestError(400, "request without a usable id")
    request_id = str(request_id)
    if frame.get("kind", "req") != "req":
        raise RequestError(400, f"kind must be req, not {frame.get('kind')!r}", request_id)
    request_type = frame.get("type")
    if not isinstance(request_type, str) or not request_type:
        raise RequestError(400, "request without a type", request_id)
    headers = frame.get("headers")
    metadata = frame.get("metadata")
    return Request(id=request_id, type=request_type, body=frame.get("body"),
                   headers=as_list(headers), metadata=None if metadata is None else as_list(metadata))


def response(request_id: str | None, response_type: str, code: int, body) -> dict:
    frame = {"kind": "resp", "reqId": request_id, "type": response_type, "code": code, "body": body}
    if request_id is None:
        del frame["reqId"]
    return frame


@dataclass
class Session:
    """What a request handler needs to know about its connection."""
    account: str
    consumer: str
    sink: Sink


class Dispatcher:
    """Answers authenticated requests; `answer` returns (response type, body) or raises RequestError."""

    def __init__(self, store: ConversationStore, config: ServerConfig):
        self.store = store
        self.config = config

    def answer(self, session: Session, request: Request) -> tuple[str, object]:
        entry = HANDLERS.get(request.type)
        if entry is None:
            raise RequestError(400, f"unknown request type {request.type!r}", request.id)
        handler, response_type = entry
        return response_type, handler(self, session, request)

    # -- handlers --------------------------------------------------------------------------------

    def get_clock(self, session: Session, request: Request) -> object:
        return {"currentTime": int(time.time() * 1000)}

    def ok(self, session: Session, request: Request) -> object:
        return "OK"

    def subscribe_conversations(self, session: Session, request: Request) -> object:
        body = request_body(request, required=False)
        limit = self.config.max_subscriptions
        if self.store.subscriptions_of(session.sink, session.consumer) >= limit:
            raise RequestError(429, f"too many conversation subscriptions on this connection (limit {limit}): "
                                    "unsubscribe one first", request.id)
        notification = request.type.replace("SubscribeExConversations", "ExConversationChangeNotification")
        subscription_id = self.store.subscribe_metadata(session.sink, session.consumer, notification)
        self.store.initial_listing(subscription_id, body)
        return {"subscriptionId": subscription_id}

    def unsubscribe_conversations(self, session: Session, request: Request) -> object:
        subscription_id = _field(request, "subscriptionId")
        if not self.store.unsubscribe_metadata(str(subscription_id), session.sink):
            raise RequestError(404, f"unknown subscription {subscription_id}", request.id)
        return "OK Unsubscribed"

    def request_conversation(self, session: Session, request: Request) -> object:
        body = request_body(request, required=False)
        ttr = body.get("ttrDefName")
        requested = _requested_details(body, request.id)
        limit = self.config.max_conversations
        if not self.store.make_room(session.consumer, limit):
            raise RequestError(429, f"too many open conversations for this consumer (limit {limit}): "
                                    "close one first", request.id)
        conversation = self.store.create(session.account, session.consumer, ttr if isinstance(ttr, str) else None,
                                         requested)
        return {"conversationId": conversation.id}

    def subscribe_events(self, session: Session, request: Request) -> object:
        conversation = self._dialog_owner(session, request)
        from_seq = request_body(request).get("fromSeq", 0)
        if not isinstance(from_seq, int) or isinstance(from_seq, bool):
            raise RequestError(400, "fromSeq must be an integer", request.id)
        history = self.store.history(conversation.dialog, from_seq)
        if history:
            session.sink.notify({"kind": "notification", "type": MESSAGING_NOTIFICATION,
                                 "body": {"changes": history}})
        self.store.subscribe_events(session.sink, conversation.dialog)
        return {}

    def query_messages(self, session: Session, request: Request) -> object:
        conversation = self._dialog_owner(session, request)
        body = request_body(request)
        from_seq = body.get("fromSeq", body.get("newerThanSequence", 0))
        return self.store.history(conversation.dialog, from_seq if isinstance(from_seq, int) else 0)

    def publish(self, session: Session, request: Request) -> object:
        conversation = self._dialog_owner(session, request)
        event = _field(request, "event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise RequestError(400, "event must be an object with a type", request.id)
        if conversation.state != "OPEN":
            raise RequestError(400, f"conversation {conversation.id} is closed", request.id)
        limit = self.config.max_events
        if event["type"] in SEQUENCED_EVENTS and conversation.dialog.consumer_events >= limit:
            raise RequestError(429, f"conversation {conversation.id} holds {limit} events (the limit): "
                                    "start a new one", request.id)
        sequence = self.store.publish(conversation, session.consumer, event, request.metadata)
        return {"sequence": sequence}

    def update_field(self, session: Session, request: Request) -> object:
        conversation = self._owned(session, request, _field(request, "conversationId"))
        fields = as_list(_field(request, "conversationField"))
        if not fields or not all(isinstance(f, dict) for f in fields):
            raise RequestError(400, "conversationField must be an object or an array of objects", request.id)
        closed = False
        for field in fields:
            closed |= self._apply_field(conversation, field, request.id)
        return "OK Conversation resolved successfully" if closed else "OK"

    def generate_url(self, session: Session, request: Request) -> object:
        body = request_body(request)
        path = body.get("relativePath") or f"/v1/AUTH_async-images/{session.account}/{uuid.uuid4()}.{body.get('fileType', 'PNG')}"
        expires = str(int(time.time()) + 300)
        return {"relativePath": path, "queryParams": {"temp_url_sig": uuid.uuid4().hex, "temp_url_expires": expires}}

    def set_profile(self, session: Session, request: Request) -> object:
        return "OK User Profile set successfully"

    def get_profile(self, session: Session, request: Request) -> object:
        return {"userId": session.consumer}

    # -- helpers -------------------------------------------------------------------------------

    def _apply_field(self, conversation: Conversation, field: dict, request_id: str) -> bool:
        """Applies one conversationField object; True when it closed the conversation."""
        name = field.get("field")
        if name in ("ConversationStateField", "Stage"):
            if field.get("conversationState") == "CLOSE":
                self.store.close(conversation, "CONSUMER")
                return True
            return False
        if name == "DialogChange":
            dialog = field.get("dialog") if isinstance(field.get("dialog"), dict) else {}
            if dialog.get("state") == "CLOSE" and dialog.get("dialogId", conversation.id) == conversation.id:
                self.store.close(conversation, "CONSUMER")
                return True
            return False
        if name == "CSATRate":
            rate = field.get("csatRate")
            if not isinstance(rate, int) or not 1 <= rate <= 5:
                raise RequestError(400, "csatRate must be an integer from 1 to 5", request_id)
            self.store.update(conversation, csat=dict(field))
            return False
        if name == "TTRField":
            self.store.update(conversation, ttr={"ttrType": field.get("ttrType"), "value": field.get("value")})
            return False
        if name in ("Skill", "ParticipantsChange", "DelayField", "ManualETTR", "Note", "TopicField"):
            return False
        raise RequestError(400, f"unknown conversationField {name!r}", request_id)

    def _dialog_owner(self, session: Session, request: Request) -> Conversation:
        dialog_id = _field(request, "dialogId")
        dialog = self.store.dialogs.get(str(dialog_id))
        if dialog is None:
            raise RequestError(404, f"unknown dialog {dialog_id}", request.id)
        return self._owned(session, request, dialog.conversation_id)

    def _owned(self, session: Session, request: Request, conversation_id) -> Conversation:
        conversation = self.store.owned(str(conversation_id), session.consumer)
        if conversation is None:
            raise RequestError(404, f"unknown conversation {conversation_id}", request.id)
        return conversation


def request_body(request: Request, required: bool = True) -> dict:
    if request.body is None and not required:
        return {}
    if not isinstance(request.body, dict):
        raise RequestError(400, "body must be an object", request.id)
    return request.body


def _requested_details(body: dict, request_id: str) -> dict:
    """The `conversationDetails` fields a conversation request sets: `skillId` (a string, as
    LivePerson sends it back), `campaignInfo` and `conversationContext` (as `context`)."""
    details = {}
    skill = body.get("skillId")
    if skill is not None:
        if isinstance(skill, bool) or not isinstance(skill, (str, int)):
            raise RequestError(400, "skillId must be a string or an integer", request_id)
        details["skillId"] = str(skill)
    for name, detail in (("campaignInfo", "campaignInfo"), ("conversationContext", "context")):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, dict):
                raise RequestError(400, f"{name} must be an object", request_id)
            details[detail] = value
    return details


def _field(request: Request, name: str):
    value = request_body(request).get(name)
    if value is None:
        raise RequestError(400, f"body.{name} is missing", request.id)
    return value


HANDLERS: dict[str, tuple[Callable, str]] = {
    "GetClock": (Dispatcher.get_clock, "GetClockResponse"),
    ".GetClock": (Dispatcher.get_clock, ".GetClock$Response"),
    "KeepAlive": (Dispatcher.ok, "StringResponse"),
    "cqm.SubscribeExConversations": (Dispatcher.subscribe_conversations, "cqm.SubscribeExConversationsResponse"),
    ".ams.aam.SubscribeExConversations": (Dispatcher.subscribe_conversations,
                                          ".ams.aam.SubscribeExConversations$Response"),
    "cqm.UnsubscribeExConversations": (Dispatcher.unsubscribe_conversations, "StringResponse"),
    "cm.ConsumerRequestConversation": (Dispatcher.request_conversation, "cm.RequestConversationResponse"),
    ".ams.cm.ConsumerRequestConversation": (Dispatcher.request_conversation, ".ams.cm.RequestConversation$Response"),
    "ms.SubscribeMessagingEvents": (Dispatcher.subscribe_events, "GenericSubscribeResponse"),
    ".ams.ms.QueryMessages": (Dispatcher.query_messages, ".ams.ms.QueryMessages$Response"),
    "ms.PublishEvent": (Dispatcher.publish, "ms.PublishEventResponse"),
    ".ams.ms.PublishEvent": (Dispatcher.publish, ".ams.ms.PublishEvent$Response"),
    "cm.UpdateConversationField": (Dispatcher.update_field, "StringResponse"),
    "ms.GenerateURLForUploadFile": (Dispatcher.generate_url, "ms.GenerateURLResponse"),
    "ms.GenerateURLForDownloadFile": (Dispatcher.generate_url, "ms.GenerateURLResponse"),
    "userprofile.SetUserProfile": (Dispatcher.set_profile, "StringResponse"),
    "userprofile.GetUserProfile": (Dispatcher.get_profile, ".ams.userprofile.GetUserProfile$Response"),
    ".ams.userprofile.GetUserProfile": (Dispatcher.get_profile, ".ams.userprofile.GetUserProfile$Response"),
}
"""Request type -> (handler, response type). InitConnection is handled by the connection itself."""
