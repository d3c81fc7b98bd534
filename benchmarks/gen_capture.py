"""Generate a synthetic, realistic capture of about N frames: concurrent consumers requesting a
conversation, subscribing, chatting with an agent, acknowledging messages, keeping alive (GetClock
and WS pings), closing conversations, now and then an error response or a request the server never
answers, and reconnecting (after 4401 with a fresh token, after 1006 with the same one).

    python benchmarks/gen_capture.py OUT.jsonl[.gz] --frames 1000000 [--clients 200] [--seed 1]
                                     [--no-body-index] [--as-built]

Records are written in time order, each connection's frames numbered in that order, as a recorder
writes them (`InTimeOrder`). `--no-body-index` writes the capture as recorders before the body index
fields wrote it (docs/capture-format.md), to measure the analysis on older captures.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import math
import random
from typing import Iterator

import orjson

from analysis.capture import dumps
from analysis.frame import BODY_INDEX_FIELDS
from analysis.synth import T0, CaptureBuilder


class InTimeOrder:
    """A binary file wrapper that writes records in time order, as a recorder writes what it relays.
    The generator builds a response or a notification with a time ahead of the clock (its delay),
    then the next request at the clock, and closes a connection at the clock while answers to it
    are still under way. Here records wait in a heap until the clock has passed their time (none
    built later is older: every time is at least the clock), a close comes after its connection's
    last frame, and each connection's frames are numbered as they leave. Without this, rows were
    out of time order by up to a quarter of a second, which no recorder writes, and
    `analysis.load` paid for a sort that no real capture costs."""

    def __init__(self, out):
        self.out = out
        self.waiting: list[tuple[float, int, dict]] = []
        self.built = 0
        self.last_t: dict[str, float] = {}  # of each connection's latest record
        self.numbers: dict[str, int] = {}

    def write(self, line: bytes) -> None:
        rec = orjson.loads(line)
        conn = rec.get("conn")
        if conn is not None:
            if rec["rec"] == "close":
                rec["t"] = max(rec["t"], self.last_t.get(conn, rec["t"]))
            self.last_t[conn] = max(rec["t"], self.last_t.get(conn, rec["t"]))
        self.built += 1
        heapq.heappush(self.waiting, (rec["t"], self.built, rec))

    def flush(self, until: float = math.inf) -> None:
        """Writes the records older than `until`, in time order (then in the order built)."""
        while self.waiting and self.waiting[0][0] < until:
            _, _, rec = heapq.heappop(self.waiting)
            if rec["rec"] == "msg":
                rec["n"] = self.numbers.get(rec["conn"], 0)
                self.numbers[rec["conn"]] = rec["n"] + 1
            self.out.write(dumps(rec))


class WithoutBodyIndex:
    """A binary file wrapper that drops the body index fields from the msg records written to it."""

    def __init__(self, out):
        self.out = out

    def write(self, line: bytes) -> None:
        rec = orjson.loads(line)
        for key in BODY_INDEX_FIELDS:
            rec.pop(key, None)
        self.out.write(dumps(rec))


def consumer(b: CaptureBuilder, rng: random.Random, client: int, clock: list[float]) -> Iterator[None]:
    """One consumer's life, one exchange per step; `clock[0]` is the shared capture time."""
    generation = 0
    token = f"token-{client}-0"
    while True:
        conn = f"conn-{client}-{generation}"
        host = f"10.0.{client // 250}.{client % 250}:{40000 + generation}"
        b.open(conn, clock[0], token=token, client=host)
        ids = iter(range(1, 10**9))
        sub, dialog, seq, me = f"sub-{conn}", f"dialog-{client}-{generation}", 0, f"consumer-{client}"

        def request(type_: str, body: dict | None, resp_type: str, resp_body=None, code: int = 200) -> None:
            req_id = str(next(ids))
            frame = {"kind": "req", "id": req_id, "type": type_}
            if body is not None:
                frame["body"] = body
            b.c2s(conn, clock[0], frame)
            resp = {"kind": "resp", "reqId": req_id, "code": code, "type": resp_type}
            if resp_body is not None:
                resp["body"] = resp_body
            b.s2c(conn, clock[0] + rng.uniform(0.005, 0.2), resp)

        def event(sequence: int, originator: str, role: str, body: dict) -> None:
            b.s2c(conn, clock[0] + 0.01, {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {
                "changes": [{"sequence": sequence, "originatorId": originator,
                             "originatorMetadata": {"id": originator, "role": role},
                             "serverTimestamp": int(clock[0] * 1000), "dialogId": dialog, "event": body}]}})

        if generation == 0 or rng.random() < 0.3:
            request("cm.ConsumerRequestConversation", {"channelType": "MESSAGING", "ttrDefName": "NORMAL"},
                    "cm.RequestConversationResponse", {"conversationId": dialog})
        request("cqm.SubscribeExConversations", {"minLastUpdatedTime": 0, "convState": ["OPEN"]},
                "cqm.SubscribeExConversationsResponse", {"subscriptionId": sub})
        b.s2c(conn, clock[0] + 0.25, {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                                      "body": {"subscriptionId": sub, "changes": [{"type": "UPSERT", "result": {
                                          "convId": dialog, "conversationDetails": {
                                              "participants": [{"id": "agent-1", "role": "ASSIGNED_AGENT"},
                                                               {"id": f"consumer-{client}", "role": "CONSUMER"}],
                                              "state": "OPEN", "startTs": 1}, "lastUpdateTime": 1}}]}})
        yield
        request("ms.SubscribeMessagingEvents", {"dialogId": dialog, "fromSeq": 0}, "GenericSubscribeResponse", {})
        yield
        for _ in range(rng.randint(20, 400)):
            roll = rng.random()
            if roll < 0.3:  # agent message, then ACCEPT and READ with their echoes
                message = seq
                event(seq, "agent-1", "ASSIGNED_AGENT", {"type": "ContentEvent", "contentType": "text/plain",
                                                         "message": "agent says " + "x" * rng.randint(5, 120)})
                seq += 1
                clock[0] += 0.03  # the consumer acknowledges after the message arrived
                for status in ("ACCEPT", "READ"):
                    accept = {"type": "AcceptStatusEvent", "status": status, "sequenceList": [message]}
                    request("ms.PublishEvent", {"dialogId": dialog, "event": accept},
                            "ms.PublishEventResponse", {"sequence": seq})
                    event(seq, me, "CONSUMER", accept)
                    seq += 1
            elif roll < 0.45:  # consumer message and its echo
                content = {"type": "ContentEvent", "contentType": "text/plain",
                           "message": "hello " + "y" * rng.randint(5, 200)}
                request("ms.PublishEvent", {"dialogId": dialog, "event": content},
                        "ms.PublishEventResponse", {"sequence": seq})
                event(seq, me, "CONSUMER", content)
                seq += 1
            elif roll < 0.6:  # agent typing
                b.s2c(conn, clock[0], {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {
                    "changes": [{"originatorId": "agent-1", "dialogId": dialog,
                                 "event": {"type": "ChatStateEvent", "chatState": rng.choice(["COMPOSING", "PAUSE"])}}]}})
            elif roll < 0.75:
                request("GetClock", None, "GetClock$Response", {"currentTime": int(clock[0] * 1000)})
            elif roll < 0.85:
                b.ping(conn, clock[0])
                b.ping(conn, clock[0] + 0.002, from_client=False, pong=True)
            elif roll < 0.86:  # a request that fails, or that the server never answers
                if rng.random() < 0.8:
                    request("ms.PublishEvent", {"dialogId": dialog, "event": {"type": "ChatStateEvent",
                                                                              "chatState": "ACTIVE"}},
                            "ms.PublishEventResponse", {"code": "ERR"}, code=400)
                else:
                    b.c2s(conn, clock[0], {"kind": "req", "id": str(next(ids)), "type": "GetClock"})
            elif roll < 0.93:  # conversation metadata update
                b.s2c(conn, clock[0], {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                                       "body": {"subscriptionId": sub, "changes": [{"type": "UPSERT", "result": {
                                           "convId": dialog, "conversationDetails": {"state": "OPEN", "startTs": 1,
                                                                                     "ttr": {"ttrType": "NORMAL",
                                                                                             "value": 3600}}}}]}})
            else:  # consumer typing
                request("ms.PublishEvent", {"dialogId": dialog, "event": {"type": "ChatStateEvent",
                                                                          "chatState": "COMPOSING"}},
                        "ms.PublishEventResponse", {"sequence": 0})
            yield
        if rng.random() < 0.3:  # the consumer closes the conversation
            request("cm.UpdateConversationField", {"conversationId": dialog, "conversationField": [
                {"field": "ConversationStateField", "conversationState": "CLOSE"}]}, "cm.UpdateConversationFieldResponse")
            b.s2c(conn, clock[0] + 0.05, {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                                          "body": {"subscriptionId": sub, "changes": [{"type": "UPSERT", "result": {
                                              "convId": dialog, "conversationDetails": {"state": "CLOSE",
                                                                                        "startTs": 1}}}]}})
        ending = rng.random()
        if ending < 0.4:
            b.close(conn, clock[0], 4401, "token expired", "server")
            token = f"token-{client}-{generation + 1}"
        elif ending < 0.7:
            b.close(conn, clock[0], 1006, None, "server")
        else:
            b.close(conn, clock[0], 1000, "bye", "client")
        generation += 1
        for _ in range(rng.randint(3, 30)):  # wait a few steps before reconnecting
            yield


def generate(out, frames: int, clients: int, seed: int, as_built: bool = False) -> None:
    rng = random.Random(seed)
    clock = [T0]
    ordered = None if as_built else InTimeOrder(out)
    b = CaptureBuilder(ordered or out, recording=f"synthetic-{seed}")
    lives = [consumer(b, rng, c, clock) for c in range(clients)]
    try:
        while True:
            for life in lives:
                clock[0] += rng.uniform(0.0005, 0.004) * 200 / clients
                if ordered:
                    ordered.flush(until=clock[0])
                next(life)
                if sum(b.counters.values()) >= frames:
                    return
    finally:
        if ordered:
            ordered.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-body-index", action="store_true", help="leave out the body index fields")
    parser.add_argument("--as-built", action="store_true",
                        help="records in the order they are built, out of time order (as this script wrote them "
                             "before 2026-12-04: tests/test_native_engine.py holds the retired Python engine's "
                             "answers on such captures)")
    args = parser.parse_args()
    opener = gzip.open if args.out.endswith(".gz") else open
    with opener(args.out, "wb") as f:
        generate(WithoutBodyIndex(f) if args.no_body_index else f, args.frames, args.clients, args.seed,
                 args.as_built)


if __name__ == "__main__":
    main()
