"""Each rule in a few sentences for someone who has not read the protocol overview, shown wherever
the rule is (analyze, report, the verdict, `mwtap view`): what the Messaging Window API asks (the page
of LivePerson's documentation that says it), what was seen, the likely cause in the client and the fix.
docs/analysis.md has the full rule table."""

EXPLANATIONS: dict[str, str] = {
    "invalid-json": "Every message must be one JSON object (Protocol Overview, Message Format). This one is not "
                    "JSON, not an object, or not UTF-8: the peer serialised it by hand or cut it. Serialise with a "
                    "JSON library and send whole messages.",
    "binary-frame": "The API speaks JSON text messages only (Protocol Overview, Message Format); a binary "
                    "WebSocket message was sent. Send text frames.",
    "missing-kind": "Messages say what they are with `kind`: req, resp or notification (Protocol Overview). "
                    "Requests that carry id and type are understood without it (info); otherwise add `kind`.",
    "unknown-kind": "`kind` must be req, resp or notification (Protocol Overview); this value is none of "
                    "them. Check the spelling the client uses.",
    "missing-type": "Every message has a `type` (Protocol Overview, Message Types). A request without it "
                    "cannot be routed: set the type of every message.",
    "request-without-id": "Every request must carry an `id`, which the response echoes as `reqId` (Protocol "
                          "Overview, Responses). Without it the answer cannot be matched: give each request an id.",
    "duplicate-request-id": "Request ids must be unique per WebSocket session (API reference, request schema). "
                            "This id was sent again while an earlier request with it was still waiting, so the "
                            "answers cannot be told apart. Use a counter per connection.",
    "reused-request-id": "An id was used again after its request was answered. Nothing breaks (LivePerson's "
                         "own SDK does it for GetClock), but the schema asks for ids unique per session.",
    "orphan-response": "A response's `reqId` must be the `id` of a request still waiting (Protocol Overview, "
                       "Responses). This one matches none: never sent, answered twice, or no reqId.",
    "response-type-mismatch": "Each request has its own response type (API reference, e.g. ms.PublishEvent → "
                              "ms.PublishEventResponse). The server answered this reqId with a type that does "
                              "not answer the request waiting under it; the request keeps waiting.",
    "unanswered-request": "Every request gets a response (Protocol Overview, Requests, Responses and "
                          "Notifications). None came within the timeout: the server lost it or is overloaded. "
                          "A client that hangs up right after a request chose not to wait (info).",
    "invalid-response-code": "A response carries an HTTP-like `code`, 100–599 (Protocol Overview, Responses). "
                             "This one is missing or out of range: a server bug.",
    "unknown-subscription": "Notifications follow a subscribe response that gave the subscription id (Protocol "
                            "Overview, Subscriptions). This one names an id no subscribe returned: state lost "
                            "across a reconnect, or a server-side (implicit) subscription (info).",
    "notification-after-unsubscribe": "After a successful unsubscribe the server should stop notifying "
                                      "(API reference, Unsubscribe from Conversation Metadata); it did not.",
    "keepalive-gap": "The client should send something at least every 60 seconds (Protocol Overview, Keep "
                     "Alive); it stayed silent longer, and a server closes such connections. Send GetClock or "
                     "a WebSocket ping on a timer that does not stop when the tab is idle.",
    "request-before-init": "Without an Authorization header the client must wait for the InitConnection "
                           "response before other requests (API reference, InitConnection). An error when the "
                           "server refused or ignored the early request, a warning when it answered it anyway. "
                           "Await the InitConnection response, or send the token in the upgrade.",
    "token-not-refreshed": "After close 4401/4407 the client must get a fresh token before reconnecting "
                           "(Protocol Overview, Error Handling). It came back with the same token, which will be "
                           "refused again: fetch or extend the token first.",
    "fast-reconnect": "After a server close or a dropped connection the client should wait a short while "
                      "before reconnecting (Protocol Overview, Error Handling). It came back sooner than the "
                      "minimum: add a delay with back-off.",
    "sequence-gap": "Messaging events of a conversation are numbered in sequence (API reference, PublishEvent "
                    "response). A number was skipped: events were lost, unless (on a consumer's connection) it "
                    "was a message for agents only, which the consumer never receives. Re-subscribe with "
                    "fromSeq to fetch what was lost.",
    "sequence-duplicate": "A sequence of the dialog was delivered again outside a re-subscribe's replay: "
                          "deduplicate by sequence before showing messages.",
    "sequence-regression": "Sequences within a dialog only grow (Protocol Overview, Continue an existing "
                           "conversation). A lower, unseen one arrived: order is broken on the server side.",
    "missing-accept": "When a message arrives the client publishes an ACCEPT for its sequence, and READ once "
                      "shown (Protocol Overview, Continue an existing conversation, step 4). None came within the "
                      "timeout: the agent never sees the message as delivered. Publish AcceptStatusEvent ACCEPT. "
                      "(Once the dialog is closed no ACCEPT is due: it would be a publish to a closed dialog.)",
    "ring-not-answered": "An agent is offered routing tasks and takes one by sending UpdateRingState ACCEPTED "
                         "with the ring's ringId, or REJECTED (Messaging Agent API, Getting Started, steps 5 "
                         "and 6). This ring expired unanswered, so the consumer waited until it went to another "
                         "agent: answer every WAITING ring before its ringExpiration.",
    "publish-after-close": "After a conversation or dialog is closed the client should not publish to it "
                           "(Protocol Overview, Finish a conversation). Stop the composer when the CLOSE "
                           "notification arrives. A publish within 1 s of that notification is only info: it "
                           "may have left the client before the notification reached it; after the client's own "
                           "close request there is no such allowance.",
}

# What a client that breaks the rule does, as the verdict says it ("consumer … <does this>: 16 times").
DOES: dict[str, str] = {
    "invalid-json": "sends messages that are not JSON objects",
    "binary-frame": "sends binary WebSocket messages",
    "missing-kind": "sends messages without `kind`",
    "unknown-kind": "sends messages of an unknown `kind`",
    "missing-type": "sends messages without `type`",
    "request-without-id": "sends requests without an id",
    "duplicate-request-id": "reuses request ids while they are in flight",
    "reused-request-id": "reuses request ids after their answer",
    "orphan-response": "receives responses that answer no waiting request",
    "response-type-mismatch": "receives responses of the wrong type",
    "unanswered-request": "has requests that were never answered",
    "invalid-response-code": "receives responses with an invalid code",
    "unknown-subscription": "receives notifications of unknown subscriptions",
    "notification-after-unsubscribe": "receives notifications after unsubscribing",
    "keepalive-gap": "stays silent longer than the keep-alive limit",
    "request-before-init": "sends requests before InitConnection",
    "token-not-refreshed": "reconnects with the token that just expired",
    "fast-reconnect": "reconnects without waiting",
    "sequence-gap": "receives messages with sequence gaps",
    "sequence-duplicate": "receives the same message sequence twice",
    "sequence-regression": "receives message sequences that go backwards",
    "missing-accept": "does not ACCEPT the messages it receives",
    "publish-after-close": "publishes to closed conversations",
    "ring-not-answered": "lets routing rings expire unanswered",
}
