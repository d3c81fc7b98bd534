"""Thresholds and switches of the analysis (every field has a CLI option or a `load()` keyword)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Config:
    response_timeout_s: float = 30.0
    """A request without a response after this long is `unanswered-request`."""
    keepalive_limit_s: float = 60.0
    """A client silence longer than this is `keepalive-gap` (Messaging Window API — Protocol Overview, Keep
    Alive: a message every 60 seconds)."""
    min_reconnect_delay_s: float = 1.0
    """A reconnect sooner than this after a close other than 4401/4407 is `fast-reconnect`."""
    accept_timeout_s: float = 10.0
    """A message from another participant not acknowledged (ACCEPT or READ) after this long is `missing-accept`."""
    reconnect_window_s: float = 600.0
    """Longest delay for linking a reconnect by client host only (token and JWT `sub` links have no limit)."""
    max_violations: int = 1000
    """Violations kept in the summary (errors first); the rest are only counted."""
    no_response_types: tuple[str, ...] = ("KeepAlive",)
    """Request types the server does not answer (never `unanswered-request`)."""
    init_exempt_types: tuple[str, ...] = ("InitConnection", "GetClock", ".GetClock", "KeepAlive")
    """Request types allowed before the InitConnection response."""
    severity: dict[str, str] = field(default_factory=dict)
    """Per-rule severity overrides, e.g. {"keepalive-gap": "error"}."""

    def __post_init__(self) -> None:
        from analysis.rules import RULES, SEVERITIES
        for rule, severity in self.severity.items():
            if rule not in RULES or severity not in SEVERITIES:
                raise ValueError(f"severity override {rule}={severity}: unknown rule or severity "
                                 f"(severities: {', '.join(SEVERITIES)})")

    @classmethod
    def from_options(cls, **options) -> "Config":
        """A Config from keyword options, ignoring those left at None (unset CLI options)."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown analysis option(s): {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in options.items() if v is not None})
