"""Live checking for `mwtap record --live`: violations as they happen, nothing kept but open state."""

from __future__ import annotations

from typing import Callable

from analysis.config import Config
from analysis.engine import Engine
from analysis.rules import Violation


class LiveChecker(Engine):
    """Feed records as the recorder writes them; `on_violation` is called the moment one is found.

    Every analyzer of the core contributes violations, so all of them run; no table rows are
    built, and the state of a connection is dropped when it closes. `advance` lets time pass while
    no record arrives, so deadlines (unanswered requests, missing accepts) fire on time; `finish`
    reports what is still pending on connections left open.
    """

    def __init__(self, config: Config | None, on_violation: Callable[[Violation], None]):
        super().__init__(config, None, on_violation)
