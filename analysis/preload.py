"""Heavy modules imported on a thread of their own while the core reads a capture without the GIL."""

from __future__ import annotations

import contextlib
import importlib
import threading


def preload(module: str) -> threading.Thread:
    """Starts importing `module` (pandas, matplotlib, aiohttp: a third of a second or more each) on a
    thread of its own; join it before use. An error shows where the module is then imported for use.
    Safe while `module` and what the caller imports meanwhile do not import each other circularly (a
    cycle could hand one thread a module still loading in the other)."""
    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    thread = threading.Thread(target=load, name=f"mwtap-import-{module}", daemon=True)
    thread.start()
    return thread
