"""Ctrl-C and SIGTERM for the long-running commands: stop cleanly, never with a traceback."""

from __future__ import annotations

import asyncio
import signal
from typing import Callable


def on_stop_signal(callback: Callable[[], None]) -> None:
    """Call `callback` on SIGINT or SIGTERM (from inside the running event loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


def stop_event() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets."""
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    return stop
