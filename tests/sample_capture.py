"""A synthetic capture for the plot and report tests, with every thing they draw: violations,
reconnects after 4401 and 1006, unsubscribed streams, WebSocket pings, long silences, a connection
open at the end, and a hostile payload. (The notebooks run on a real `mwtap demo` capture.)"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from analysis.synth import T0, CaptureBuilder

LATENCY_MS = {"GetClock": 15, "ms.PublishEvent": 60, "cqm.SubscribeExConversations": 120,
              "ms.SubscribeMessagingEvents": 90, "cm.ConsumerRequestConversation": 250}


class Consumer:
    """One client: its connections one after the other, each with a subscription and a dialog."""

    def __init__(self, b: CaptureBuilder, rng: random.Random, number: int):
        self.b, self.rng, self.number = b, rng, number
        self.token = f"token-{number}-0"
        self.host = f"10.0.0.{number + 10}"
        self.generation = 0

    def connect(self, t: float) -> None:
        self.conn = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self.b.open(self.conn, t, token=self.token, client=f"{self.host}:{41000 + self.generation}")
        self.generation += 1
        self.ids = iter(range(1, 10**6))
        self.seq = 0
        self.dialog = f"dialog-{self.number}-{self.generation}"
        self.sub = self.request(t + 0.05, "cqm.SubscribeExConversations", {"convState": ["OPEN"]},
                                "cqm.SubscribeExConversationsResponse", {"subscriptionId": f"sub-{self.conn[:8]}"})
        self.request(t + 0.4, "ms.SubscribeMessagingEvents", {"dialogId": self.dialog, "fromSeq": 0},
                     "GenericSubscribeResponse", {})

    def request(self, t: float, type_: str, body, resp_type: str | None, resp_body=None, code: int = 200,
                answered: bool = True):
        req_id = str(next(self.ids))
        frame = {"kind": "req", "id": req_id, "type": type_}
        if body is not None:
            frame["body"] = body
        self.b.c2s(self.conn, t, frame)
        if answered:
            latency = self.rng.lognormvariate(0, 0.6) * LATENCY_MS.get(type_, 50) / 1000
            resp = {"kind": "resp", "reqId": req_id, "code": code, "type": resp_type}
            if resp_body is not None:
                resp["body"] = resp_body
            self.b.s2c(self.conn, t + latency, resp)
        return (resp_body or {}).get("subscriptionId")

    def agent_message(self, t: float, text: str) -> None:
        self._event(t, "agent-1", "ASSIGNED_AGENT", {"type": "ContentEvent", "contentType": "text/plain",
                                                      "message": text})
        message = self.seq - 1
        for delay, status in ((0.2, "ACCEPT"), (1.5, "READ")):
            self.publish(t + delay, {"type": "AcceptStatusEvent", "status": status, "sequenceList": [message]})

    def publish(self, t: float, event: dict) -> None:
        self.request(t, "ms.PublishEvent", {"dialogId": self.dialog, "event": event}, "ms.PublishEventResponse",
                     {"sequence": self.seq})
        self._event(t + 0.08, f"consumer-{self.number}", "CONSUMER", event)

    def _event(self, t: float, originator: str, role: str, event: dict) -> None:
        self.b.s2c(self.conn, t, {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {
            "changes": [{"sequence": self.seq, "originatorId": originator, "dialogId": self.dialog,
                         "originatorMetadata": {"id": originator, "role": role},
                         "serverTimestamp": int(t * 1000), "event": event}]}})
        self.seq += 1

    def conversation_update(self, t: float) -> None:
        self.b.s2c(self.conn, t, {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                                  "body": {"subscriptionId": self.sub, "changes": [{"type": "UPSERT", "result": {
                                      "convId": self.dialog, "conversationDetails": {"state": "OPEN"}}}]}})

    def chat(self, t: float, until: float) -> float:
        """Ordinary traffic until `until`: messages both ways, GetClock and pings every 20-40 s."""
        next_keepalive = t + self.rng.uniform(20, 40)
        while t < until:
            roll = self.rng.random()
            if roll < 0.35:
                self.agent_message(t, "agent says hello " + "x" * self.rng.randint(0, 40))
            elif roll < 0.6:
                self.publish(t, {"type": "ContentEvent", "contentType": "text/plain", "message": "hi there"})
            elif roll < 0.75:
                self.conversation_update(t)
            else:
                self.request(t, "GetClock", None, "GetClock$Response", {"currentTime": int(t * 1000)})
            if t > next_keepalive:
                self.b.ping(self.conn, t + 0.5)
                self.b.ping(self.conn, t + 0.502, from_client=False, pong=True)
                next_keepalive = t + self.rng.uniform(20, 40)
            t += self.rng.uniform(2, 12)
        return t


def misbehaving(c: Consumer, t: float) -> None:
    """Bad JSON, a request without id, a binary frame, a hostile payload, a long silence closed with 4401, a reconnect
    with the same token, a dropped connection and a reconnect 0.3 s later."""
    c.connect(t)
    t = c.chat(t + 1, t + 40)
    c.b.c2s(c.conn, t, '{"kind":"req","type":"ms.PublishEvent","body":')
    c.b.c2s(c.conn, t + 1, {"kind": "req", "type": "GetClock"})
    c.b.c2s(c.conn, t + 1.5, b"\x00\x01binary", binary=True)
    c.agent_message(t + 2, '<script>alert("mwtap")</script><img src=x onerror=alert(1)> & "quotes"')
    t += 2 + 95  # silent for longer than the keep-alive limit
    c.b.close(c.conn, t, 4401, "token expired", "server")
    c.connect(t + 0.4)  # same token after 4401
    t = c.chat(t + 1.4, t + 50)
    c.b.close(c.conn, t, 1006, None, "server")
    c.connect(t + 0.3)  # same token, too soon after 1006
    t = c.chat(t + 1.3, t + 40)
    c.b.close(c.conn, t, 1000, "bye", "client")


def unsubscriber(c: Consumer, t: float) -> None:
    """An unanswered request, an error response, an orphan response, a notification after unsubscribe."""
    c.connect(t)
    t = c.chat(t + 1, t + 60)
    c.request(t, "cm.ConsumerRequestConversation", {"ttrDefName": "NORMAL"}, None, answered=False)
    c.request(t + 2, "ms.PublishEvent", {"dialogId": "no-such-dialog", "event": {"type": "ContentEvent",
                                                                                 "message": "lost"}},
              "ms.PublishEventResponse", {"error": "unknown dialog"}, code=500)
    c.b.s2c(c.conn, t + 3, {"kind": "resp", "reqId": "999", "code": 200, "type": "GetClock$Response"})
    c.request(t + 4, "cqm.UnsubscribeExConversations", {"subscriptionId": c.sub}, "GenericSubscribeResponse", {})
    c.conversation_update(t + 6)
    t = c.chat(t + 8, t + 70)
    c.b.close(c.conn, t, 1000, "bye", "client")


def generate(out: Path, seed: int = 6) -> None:
    rng = random.Random(seed)
    b = CaptureBuilder(recording=f"sample-{seed}")
    consumers = [Consumer(b, rng, n) for n in range(5)]
    misbehaving(consumers[0], T0)
    unsubscriber(consumers[1], T0 + 5)
    for i, c in enumerate(consumers[2:]):
        start = T0 + 10 + 20 * i
        c.connect(start)
        end = c.chat(start + 1, start + 180)
        c.b.close(c.conn, end, 4401, "token expired", "server")
        c.token = f"token-{c.number}-1"
        c.connect(end + 2.5)
        c.chat(end + 3.5, end + 90)  # still open at the end of the capture
    b.records[1:] = sorted(b.records[1:], key=lambda r: r["t"])
    b.write(out)

