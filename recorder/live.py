"""Live protocol checking, a mitmproxy addon beside the Recorder: every record the Recorder
emits goes through the analysis engine, and each violation is reported the moment it is found.

    mitmdump -s recorder/addon.py --set mwtap_out=cap.jsonl --set mwtap_live=true
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Callable

from mitmproxy import ctx

from analysis.config import Config
from analysis.ids import short_id
from analysis.live import LiveChecker
from analysis.rules import Violation

log = logging.getLogger("mwtap.live")
CLOCK_TICK = 1.0  # seconds between clock advances while no record arrives


def violation_line(v: Violation) -> str:
    """One line: time, connection, severity, rule, message."""
    when = datetime.fromtimestamp(v.t).strftime("%H:%M:%S.%f")[:-3]
    return f"{when} {short_id(v.conn)} {v.severity:7} {v.rule}: {v.message}"


class LiveCheck:
    """Option `mwtap_live`: check the protocol while recording. `report` receives each line
    (default: the `mwtap.live` logger at WARNING, which mitmdump prints)."""

    def __init__(self, recorder, report: Callable[[str], None] | None = None, config: Config | None = None):
        self.recorder = recorder
        self.report = report or log.warning
        self.config = config
        self.checker: LiveChecker | None = None
        self.violations = 0
        self._tick: asyncio.TimerHandle | None = None

    def load(self, loader) -> None:
        loader.add_option("mwtap_live", bool, False,
                          "mwtap: check the Messaging Window protocol live and report each violation at once.")

    def configure(self, updated: set[str]) -> None:
        if "mwtap_live" in updated and ctx.options.mwtap_live and self.checker is None:
            self.checker = LiveChecker(self.config, self._found)
            self.recorder.observers.append(self.checker.feed)

    def running(self) -> None:
        if self.checker is not None:
            self._schedule()

    def _schedule(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(CLOCK_TICK, self._advance)

    def _advance(self) -> None:
        try:
            self.checker.advance(time.time())
        except Exception as e:  # noqa: BLE001 - checking must never disturb the proxy
            log.error("mwtap: live check failed: %r", e)
        self._schedule()

    def _found(self, violation: Violation) -> None:
        self.violations += 1
        self.report(violation_line(violation))

    def done(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.checker is not None:
            try:
                self.checker.finish()
            except Exception as e:  # noqa: BLE001 - checking must never disturb the proxy
                log.error("mwtap: live check failed: %r", e)
