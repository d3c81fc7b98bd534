"""Live checking for `mwtap record --live`: violations as they happen, nothing kept but open state."""

from __future__ import annotations

import dataclasses
from typing import Callable

import orjson

from analysis import _core
from analysis.config import Config
from analysis.native import ANALYZERS
from analysis.rules import Violation


class LiveChecker:
    """Feed records as the recorder writes them; `on_violation` is called the moment one is found.

    The native core's engine (`analysis._core.Engine`) checks them: every analyzer contributes
    violations, so all of them run; no table rows are built, and the state of a connection is
    dropped when it closes.
    """

    def __init__(self, config: Config | None, on_violation: Callable[[Violation], None]):
        self._engine = _core.Engine(dataclasses.asdict(config or Config()), ANALYZERS)
        self._on_violation = on_violation

    def feed(self, rec: dict) -> None:
        self._report(self._engine.feed(orjson.dumps(rec)))

    def advance(self, t: float) -> None:
        """Let time pass while no record arrives, so deadlines (unanswered requests, missing
        accepts) fire on time."""
        self._report(self._engine.advance(t))

    def finish(self) -> None:
        """End of the recording: report what is still pending on connections left open."""
        self._report(self._engine.finish()["violations"])

    def _report(self, rows: list[dict] | None) -> None:
        for row in rows or ():
            self._on_violation(Violation(**row))
