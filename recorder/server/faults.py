"""Fault injection: every decision goes through one seeded RNG so a run can be repeated."""

from __future__ import annotations

import random

from recorder.server.config import ServerConfig


class Faults:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.rng = random.Random(config.seed)

    def response_delay(self, request_type: str) -> float:
        """Seconds to hold back the response to `request_type`."""
        return self.config.response_delays_ms.get(request_type, 0) / 1000.0

    def drop_response(self) -> bool:
        return self._chance(self.config.drop_rate)

    def next_sequence(self, previous: int | None) -> int:
        """The sequence for a new event of a dialog whose last sequence is `previous`."""
        if previous is None:
            return 0
        fault = self.config.sequence_fault
        if fault is not None and self._chance(self.config.sequence_fault_rate):
            return previous if fault == "duplicate" else previous + 2
        return previous + 1

    def unknown_subscription(self) -> bool:
        return self._chance(self.config.unknown_subscription_rate)

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate
