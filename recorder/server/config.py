"""Settings of the built-in Messaging Window server, shared by `mwtap serve`, the tests and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PORT = 8765
SEQUENCE_FAULTS = ("duplicate", "skip")


@dataclass
class ServerConfig:
    # Identity provider
    token_lifetime: float = 3600.0
    """Seconds until a token's `exp`; a connection whose token expires is closed with 4401."""
    identity_window: float | None = None
    """Seconds a signup (unauthenticated) identity stays valid without extension; past it the
    connection is closed with 4407. None: never."""
    init_timeout: float = 5.0
    """Seconds an unauthenticated socket has to send InitConnection before it is closed with 4401."""

    # Brand side (agent applications, bots)
    agent_session_lifetime: float = 3600.0
    """Seconds an agent's login session lives without a refresh; then its sockets are closed with 4401."""
    ring_timeout: float = 30.0
    """Seconds a bot has to accept or reject a ring before the built-in agent takes the conversation."""
    advertise: str | None = None
    """HOST:PORT the domain lookup names for every service (None: the address the lookup came to)."""

    # Connection
    idle_timeout: float = 60.0
    """Seconds without any frame from the client (data, ping or pong) before the server closes."""
    idle_close_code: int = 1000
    max_message_size: int = 1 << 20
    """Larger incoming messages are refused by closing with 1009."""

    # Limits (bound the server's memory whatever a client does; see docs/serve.md)
    max_outbox: int = 1000
    """Frames waiting to be sent to one connection; a client that lets more pile up (it does not
    read) is closed with 1013 and its frames are dropped."""
    max_subscriptions: int = 100
    """Conversation-metadata subscriptions per connection; more are answered 429."""
    max_conversations: int = 100
    """Conversations kept per consumer: a new one evicts the oldest closed one (DELETE change);
    when all are open, the request is answered 429."""
    max_events: int = 10_000
    """Sequenced events a consumer may publish into one conversation's history (the agent's
    receipts and answers come on top, a few per consumer message); more are answered 429."""
    retention: float = 600.0
    """Seconds a consumer's conversations are kept after its last connection closed; then they are
    forgotten, open ones too, and the agent stops working on them."""

    # Built-in agent
    agent_greeting: str | None = "Hello, this is the mwtap agent. How can I help?"
    agent_join_delay: float = 0.1
    agent_receipt_delay: float = 0.05
    """Seconds between a consumer message and the agent's ACCEPT, and again until its READ."""
    agent_reply_delay: float = 0.5
    """Seconds the agent types (COMPOSING ... PAUSE) before answering a consumer text."""
    agent_close_after_messages: int | None = None
    """The agent closes the conversation after answering this many consumer texts. None: never."""
    agent_close_after_seconds: float | None = None
    """The agent closes the conversation this many seconds after it was opened. None: never."""

    # Fault injection (all off by default)
    response_delays_ms: dict[str, int] = field(default_factory=dict)
    """Request type -> milliseconds to wait before sending its response."""
    drop_rate: float = 0.0
    """Share of responses that are never sent (the request still takes effect)."""
    sequence_fault: str | None = None
    """"duplicate" (reuse the previous sequence) or "skip" (jump one) for some sequenced events."""
    sequence_fault_rate: float = 0.1
    close_after: float | None = None
    """Seconds after which the server closes every connection unsolicited, with `close_code`."""
    close_code: int = 1011
    unknown_subscription_rate: float = 0.0
    """Share of conversation notifications followed by a copy for a subscription never issued."""
    seed: int | None = None
    """Seed of the fault RNG (None: random)."""

    def __post_init__(self) -> None:
        if self.sequence_fault is not None and self.sequence_fault not in SEQUENCE_FAULTS:
            raise ValueError(f"sequence_fault must be one of {SEQUENCE_FAULTS}, not {self.sequence_fault!r}")
        for name in ("max_outbox", "max_subscriptions", "max_conversations", "max_events"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("drop_rate", "sequence_fault_rate", "unknown_subscription_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
