"""The brand side of the built-in server: agent applications (bots) on
`/ws_api/account/{account}/messaging/brand/{bearer}?v=2.1`, with the `.ams.*` requests LivePerson's
`node-agent-sdk` sends, in the v2.1 shapes its transformers read.

* The bearer comes from the login of `recorder.server.agent_login`; an unknown one, or one whose
  session expired (no refresh within `agent_session_lifetime`), is closed with 4401, an open
  socket too at the moment its session expires.
* A new conversation is offered as a ring (`.ams.routing.RoutingTaskNotification`, WAITING) to a
  bot that set itself ONLINE and subscribed to routing tasks; the built-in agent steps aside. A
  ring REJECTED, not answered within `ring_timeout`, or left by a bot that disconnected goes to
  the built-in agent. ACCEPTED: the bot joins as ASSIGNED_AGENT.
* The bot gets the events of the conversations it takes part in without subscribing
  (`.ams.ms.OnlineEventDistribution`, as the Messaging Agent API's Getting Started shows), and
  conversation changes on its `.ams.aam.SubscribeExConversations` subscriptions (DELETE when a
  conversation leaves the subscription's `convState` filter).
* String answers are `.ReqBody$StringResp`, agent state and ring updates answered 202 (as the
  Getting Started page shows), errors 4xx.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from analysis._core import AGENT_SLACK
from recorder.server.agent import Agent
from recorder.server.agent_login import AgentLogin
from recorder.server.auth import CLOSE_TOKEN
from recorder.server.connection import ClientSession
from recorder.server.conversations import Conversation, ConversationStore, as_list, now_ms
from recorder.server.requests import Request, RequestError, Session, request_body, response

if TYPE_CHECKING:
    from recorder.server.app import MessagingServer

STRING_RESP = ".ReqBody$StringResp"
SUBSCRIBED = ".ams.GenericSubscribe$Response"
ROUTING_NOTIFICATION = ".ams.routing.RoutingTaskNotification"
CONVERSATIONS_NOTIFICATION = ".ams.aam.ExConversationChangeNotification"
EVENT_NOTIFICATION = ".ams.ms.OnlineEventDistribution"
AGENT_ROLE = "ASSIGNED_AGENT"


class Bots:
    """The connected bots, their rings, and what they hear of the conversations."""

    def __init__(self, server: MessagingServer):
        self.store: ConversationStore = server.store
        self.agent: Agent = server.agent
        self.config = server.config
        self.sessions: list[BrandSession] = []
        self.rings: dict[str, tuple[Conversation, BrandSession, asyncio.TimerHandle]] = {}
        self.old_ids: dict[str, str] = {}
        """Participant id (pid) of a bot -> its v2 id (`{account}.{userId}`)."""
        self.agent.step_aside = self.ring
        self.store.on_updated.append(self._updated)
        self.store.on_change.append(self._event)

    def add(self, session: BrandSession) -> None:
        self.sessions.append(session)
        self.old_ids[session.login.pid] = session.login.old_id

    def remove(self, session: BrandSession) -> None:
        if session not in self.sessions:  # it was never added: refused with 4401
            return
        self.sessions.remove(session)
        pid = session.login.pid
        if not any(s.login.pid == pid for s in self.sessions):  # bounded by the bots connected
            self.old_ids.pop(pid, None)
        for ring_id, (_, holder, _) in list(self.rings.items()):
            if holder is session:
                self._ring_ended(ring_id, "CANCELLED")

    def ring(self, conversation: Conversation) -> bool:
        """Offers a new conversation to a bot ready for it; False when none is (the built-in agent takes it)."""
        ready = [s for s in self.sessions if s.available and s.routing and s.login.account == conversation.account]
        if not ready:
            return False
        session = min(ready, key=lambda s: sum(1 for _, holder, _ in self.rings.values() if holder is s))
        ring_id = f"{conversation.id}_{session.login.user_id}_{now_ms()}"
        timer = asyncio.get_running_loop().call_later(self.config.ring_timeout, self._ring_ended, ring_id, "EXPIRED")
        self.rings[ring_id] = (conversation, session, timer)
        session.ring_changed(ring_id, conversation, "WAITING", self.config.ring_timeout)
        return True

    def answer_ring(self, session: BrandSession, ring_id, state, request_id: str) -> None:
        entry = self.rings.get(ring_id) if isinstance(ring_id, str) else None
        if entry is None or entry[1] is not session:
            raise RequestError(404, f"no ring {ring_id} waits for this agent", request_id)
        if state not in ("ACCEPTED", "REJECTED"):
            raise RequestError(400, "ringState must be ACCEPTED or REJECTED", request_id)
        conversation = entry[0]
        if state == "ACCEPTED":
            del self.rings[ring_id]
            entry[2].cancel()
            session.ring_changed(ring_id, conversation, state, 0)
            if conversation.state == "OPEN":
                self.store.add_participant(conversation, session.login.pid, AGENT_ROLE)
        else:
            self._ring_ended(ring_id, state)

    def _ring_ended(self, ring_id: str, state: str) -> None:
        conversation, session, timer = self.rings.pop(ring_id)
        timer.cancel()
        session.ring_changed(ring_id, conversation, state, 0)
        if conversation.state == "OPEN" and conversation.id in self.store.conversations:
            self.agent.join(conversation)

    def _updated(self, conversation: Conversation) -> None:
        for session in self.sessions:
            session.conversation_changed(conversation)

    def _event(self, conversation: Conversation, change: dict) -> None:
        body = self.brand_change(change)
        for session in self.sessions:
            if session.takes_part(conversation):
                session.notify({"kind": "notification", "type": EVENT_NOTIFICATION, "body": body})

    def brand_change(self, change: dict) -> dict:
        """A messaging change as the v2.1 brand side sends it: `originatorPId` is the participant id,
        `originatorId` a bot's v2 id (the SDK compares it with its own)."""
        originator = change["originatorId"]
        return {**change, "originatorId": self.old_ids.get(originator, originator), "originatorPId": originator}

    def brand_result(self, conversation: Conversation) -> dict:
        """A conversation as `.ams.aam.ExConversationChangeNotification` carries it: participants
        by role, as v2 ids and as participant ids (`participantsPId`)."""
        result = conversation.result()
        details = result["conversationDetails"]
        by_role: dict[str, list[str]] = {}
        pids: dict[str, list[str]] = {}
        for participant in conversation.participants:
            by_role.setdefault(participant["role"], []).append(self.old_ids.get(participant["id"], participant["id"]))
            pids.setdefault(participant["role"], []).append(participant["id"])
        details["participants"], details["participantsPId"] = by_role, pids
        for dialog in details["dialogs"]:
            dialog["participantsDetails"] = [{**p, "state": "ACTIVE"} for p in conversation.participants]
        return result


class BrandSession(ClientSession):
    """One bot socket: authenticated by the bearer in its path, answering the `.ams.*` requests."""

    def __init__(self, ws, request, account: str, server: MessagingServer, login: AgentLogin | None):
        super().__init__(ws, request, account, server)
        self.bots: Bots = server.bots
        self.login = login
        self.available = False
        self.routing: set[str] = set()
        self.agent_states: set[str] = set()
        self.conversation_filters: dict[str, dict] = {}  # subscription id -> its request body
        # node-agent-sdk pings every 60 s on a timer that fires a few ms late: the analysis's slack
        self.idle_timeout = self.config.idle_timeout * (1 + AGENT_SLACK)

    def _start_auth(self) -> None:
        login = self.login
        if login is None or login.account != self.account or login.expired():
            self.close_soon(CLOSE_TOKEN, "unknown or expired agent session")
            return
        self.bots.add(self)
        self._spawn(self._watch_session())

    async def _watch_session(self) -> None:
        while not self.login.expired():  # a refresh moves `expires`
            await asyncio.sleep(max(0.0, self.login.expires - time.time()))
        self.close_soon(CLOSE_TOKEN, "agent session expired")

    def _ended(self) -> None:
        super()._ended()
        self.bots.remove(self)

    def _answer(self, request: Request) -> dict:
        handler = BRAND_HANDLERS.get(request.type)
        if self.login is None:
            return response(request.id, STRING_RESP, 401, "not authenticated")
        if handler is None:
            return response(request.id, STRING_RESP, 400, f"unknown request type {request.type!r}")
        try:
            code, response_type, body = handler(self, request)
        except RequestError as e:
            return response(request.id, STRING_RESP, e.code, e.message)
        return response(request.id, response_type, code, body)

    # -- what the bot hears ----------------------------------------------------------------------

    def takes_part(self, conversation: Conversation) -> bool:
        return any(p["id"] == self.login.pid for p in conversation.participants)

    def ring_changed(self, ring_id: str, conversation: Conversation, state: str, timeout: float) -> None:
        ring = {"ringId": ring_id, "ringExpiration": int(timeout * 1000), "ringState": state,
                "convId": conversation.id, "consumerId": conversation.consumer, "skillId": "-1",
                "brandId": conversation.account}
        for subscription_id in self.routing:
            self.notify({"kind": "notification", "type": ROUTING_NOTIFICATION, "body": {
                "subscriptionId": subscription_id, "changes": [{"type": "UPSERT", "result": {
                    "routingTaskId": ring_id.rpartition("_")[0], "brandId": conversation.account,
                    "ringsDetails": [ring]}}]}})

    def conversation_changed(self, conversation: Conversation, only: str | None = None) -> None:
        for subscription_id, body in self.conversation_filters.items():
            if only not in (None, subscription_id) or not self._watches(body, conversation):
                continue
            states = as_list(body.get("convState"))
            kept = not states or conversation.state in states
            change = {"type": "UPSERT" if kept else "DELETE", "result": self.bots.brand_result(conversation)}
            self.notify({"kind": "notification", "type": CONVERSATIONS_NOTIFICATION,
                         "body": {"subscriptionId": subscription_id, "changes": [change]}})

    def _watches(self, body: dict, conversation: Conversation) -> bool:
        agents = as_list(body.get("agentIds"))
        if conversation.account != self.account:
            return False
        return not agents or any(self.bots.old_ids.get(p["id"]) in agents for p in conversation.participants)

    # -- requests --------------------------------------------------------------------------------

    def get_clock(self, request: Request) -> tuple:
        return 200, ".GetClock$Response", {"currentTime": now_ms()}

    def get_profile(self, request: Request) -> tuple:
        target = request.body.get("userId") if isinstance(request.body, dict) else request.body
        if target in (None, "", self.login.old_id, self.login.pid):
            profile = {"userId": self.login.old_id, "pid": self.login.pid, "firstName": "mwtap", "lastName": "bot"}
        else:
            profile = {"userId": str(target), "firstName": "mwtap", "lastName": "consumer", "privateData": {}}
        return 200, ".ams.userprofile.GetUserProfile$Response", profile

    def set_state(self, request: Request) -> tuple:
        availability = request_body(request).get("availability")
        if availability not in ("ONLINE", "AWAY", "BACK_SOON", "OFFLINE"):
            raise RequestError(400, "availability must be ONLINE, AWAY, BACK_SOON or OFFLINE", request.id)
        self.available = availability == "ONLINE"
        for subscription_id in self.agent_states:
            self._agent_state(subscription_id, availability)
        return 202, STRING_RESP, "Agent state updated successfully"

    def subscribe_states(self, request: Request) -> tuple:
        subscription_id = self._new_subscription(self.agent_states, request)
        self._agent_state(subscription_id, "ONLINE" if self.available else "OFFLINE")
        return 200, SUBSCRIBED, {"subscriptionId": subscription_id}

    def _agent_state(self, subscription_id: str, availability: str) -> None:
        self.notify({"kind": "notification", "type": ".ams.routing.AgentStateNotification", "body": {
            "subscriptionId": subscription_id, "changes": [{"type": "UPSERT", "result": {
                "agentUserId": self.login.old_id, "channels": ["MESSAGING"], "availability": availability}}]}})

    def subscribe_routing(self, request: Request) -> tuple:
        subscription_id = self._new_subscription(self.routing, request)
        self.notify({"kind": "notification", "type": ROUTING_NOTIFICATION,
                     "body": {"subscriptionId": subscription_id, "changes": []}})
        return 200, SUBSCRIBED, {"subscriptionId": subscription_id}

    def update_routing(self, request: Request) -> tuple:
        return 200, SUBSCRIBED, {}

    def update_ring(self, request: Request) -> tuple:
        body = request_body(request)
        self.bots.answer_ring(self, body.get("ringId"), body.get("ringState"), request.id)
        return 202, STRING_RESP, "Ring state updated successfully"

    def subscribe_conversations(self, request: Request) -> tuple:
        body = request_body(request, required=False)
        subscription_id = str(uuid.uuid4())
        if len(self.conversation_filters) >= self.config.max_subscriptions:
            raise RequestError(429, f"too many conversation subscriptions (limit {self.config.max_subscriptions})",
                               request.id)
        self.conversation_filters[subscription_id] = body
        for conversation in list(self.server.store.conversations.values()):
            states = as_list(body.get("convState"))
            if not states or conversation.state in states:
                self.conversation_changed(conversation, only=subscription_id)
        return 200, ".ams.aam.SubscribeExConversations$Response", {"subscriptionId": subscription_id}

    def unsubscribe_conversations(self, request: Request) -> tuple:
        if self.conversation_filters.pop(str(request_body(request).get("subscriptionId")), None) is None:
            raise RequestError(404, "unknown subscription", request.id)
        return 200, STRING_RESP, "OK Unsubscribed"

    def publish(self, request: Request) -> tuple:
        conversation = self._taken_part(request, request_body(request).get("dialogId"))
        event = request_body(request).get("event")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise RequestError(400, "event must be an object with a type", request.id)
        if conversation.state != "OPEN":
            raise RequestError(400, f"conversation {conversation.id} is closed", request.id)
        sequence = self.server.store.publish(conversation, self.login.pid, event, request.metadata)
        return 200, ".ams.ms.PublishEvent$Response", {"sequence": sequence}

    def query_messages(self, request: Request) -> tuple:
        body = request_body(request)
        conversation = self._taken_part(request, body.get("dialogId"))
        newer = body.get("newerThanSequence", 0)
        history = self.server.store.history(conversation.dialog, newer if isinstance(newer, int) else 0)
        return 200, ".ams.ms.QueryMessages$Response", [self.bots.brand_change(c) for c in history]

    def update_field(self, request: Request) -> tuple:
        body = request_body(request)
        conversation = self._taken_part(request, body.get("conversationId"))
        fields = as_list(body.get("conversationField"))
        if not fields or not all(isinstance(f, dict) for f in fields):
            raise RequestError(400, "conversationField must be an object or an array of objects", request.id)
        for field in fields:
            name = field.get("field")
            if name in ("ConversationStateField", "Stage") and field.get("conversationState") == "CLOSE":
                self.server.store.close(conversation, "AGENT")
            elif name == "ParticipantsChange" and field.get("type") == "REMOVE":
                self.server.store.remove_participant(conversation, self.login.pid)  # back to the queue
                if conversation.state == "OPEN" and not self.bots.ring(conversation):
                    self.bots.agent.join(conversation)
        return 200, STRING_RESP, "OK"

    def generate_url(self, request: Request) -> tuple:
        session = Session(account=self.account, consumer=self.login.pid, sink=self)
        return 200, ".ams.ms.GenerateURLResponse", self.server.dispatcher.generate_url(session, request)

    def ok(self, request: Request) -> tuple:
        return 200, STRING_RESP, "OK"

    def unsupported(self, request: Request) -> tuple:
        raise RequestError(400, f"{request.type} is not served by mwtap serve", request.id)

    def _new_subscription(self, subscriptions: set[str], request: Request) -> str:
        if len(subscriptions) >= self.config.max_subscriptions:
            raise RequestError(429, f"too many subscriptions (limit {self.config.max_subscriptions})", request.id)
        subscription_id = str(uuid.uuid4())
        subscriptions.add(subscription_id)
        return subscription_id

    def _taken_part(self, request: Request, conversation_id) -> Conversation:
        conversation = self.server.store.conversations.get(str(conversation_id))
        if conversation is None or not self.takes_part(conversation):
            raise RequestError(404, f"this agent takes no part in conversation {conversation_id}", request.id)
        return conversation


BRAND_HANDLERS = {
    ".GetClock": BrandSession.get_clock,
    "GetClock": BrandSession.get_clock,
    ".ams.userprofile.GetUserProfile": BrandSession.get_profile,
    ".ams.userprofile.SetUserProfile": BrandSession.ok,
    ".ams.routing.SetAgentState": BrandSession.set_state,
    ".ams.routing.SubscribeAgentsState": BrandSession.subscribe_states,
    ".ams.routing.SubscribeRoutingTasks": BrandSession.subscribe_routing,
    ".ams.routing.UpdateRoutingTaskSubscription": BrandSession.update_routing,
    ".ams.routing.UpdateRingState": BrandSession.update_ring,
    ".ams.aam.SubscribeExConversations": BrandSession.subscribe_conversations,
    ".ams.aam.UnsubscribeExConversations": BrandSession.unsubscribe_conversations,
    ".ams.ms.PublishEvent": BrandSession.publish,
    "ms.PublishEvent": BrandSession.publish,
    ".ams.ms.QueryMessages": BrandSession.query_messages,
    ".ams.cm.UpdateConversationField": BrandSession.update_field,
    "cm.UpdateConversationField": BrandSession.update_field,
    ".ams.ms.GenerateURLForUploadFile": BrandSession.generate_url,
    ".ams.ms.GenerateURLForDownloadFile": BrandSession.generate_url,
    ".ams.cm.AgentRequestConversation": BrandSession.unsupported,
}
"""Request type -> handler returning (code, response type, body)."""
