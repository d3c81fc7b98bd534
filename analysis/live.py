"""Live checking for `mwtap record --live`: violations as they happen, nothing kept but open state."""

from __future__ import annotations

from typing import Callable

from analysis.config import Config
from analysis.engine import Engine
from analysis.rules import Violation


class LiveChecker:
    """Feed records as the recorder writes them; `on_violation` is called the moment one is found.

    Every analyzer contributes violations, so all of them run; no table rows are built, and the
    state of a connection is dropped when it closes.
    """

    def __init__(self, config: Config | None, on_violation: Callable[[Violation], None]):
        self._engine = Engine(config or Config(), sink=None, on_violation=on_violation)

    def feed(self, rec: dict) -> None:
        self._engine.feed(rec)

    def advance(self, t: float) -> None:
        """Let time pass while no record arrives, so deadlines (unanswered requests, missing
        accepts) fire on time."""
        self._engine.advance(t)

    def finish(self) -> None:
        """End of the recording: report what is still pending on connections left open."""
        self._engine.finish()
