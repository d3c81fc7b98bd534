"""Progress of long commands: one line on standard error, rewritten in place from a thread, only
when standard error is a terminal (piped or redirected, nothing is written, so scripts and logs see
only the results)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import click

INTERVAL_S = 0.25


class StatusLine:
    """While the block runs, shows `text()` every INTERVAL_S (an empty text shows nothing); once more
    at the end, then the line is cleared."""

    def __init__(self, text: Callable[[], str]):
        self.text = text
        self.on = sys.stderr.isatty()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # the thread's rewrite and echo() never interleave
        self.thread = threading.Thread(target=self._run, name="mwtap-progress", daemon=True)

    def __enter__(self) -> StatusLine:
        if self.on:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.on:
            self.stop.set()
            self.thread.join()
            self._show()
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def _run(self) -> None:
        while not self.stop.wait(INTERVAL_S):
            self._show()

    def _show(self) -> None:
        text = self.text()
        if text:
            with self.lock:
                sys.stderr.write(f"\r\033[K{text}")
                sys.stderr.flush()

    def echo(self, line: str, err: bool = True) -> None:
        """Print a line of the command's own output above the status line (redrawn at the next tick)."""
        with self.lock:
            if self.on:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
            click.echo(line, err=err)


class EchoHandler(logging.Handler):
    """Log records printed above a status line (with its `echo`), never through it."""

    def __init__(self, status: StatusLine, level: int):
        super().__init__(level)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.status.echo(self.format(record))
        except Exception:
            self.handleError(record)


def size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def frames(n: float) -> str:
    return f"{n:.0f} frames"


def amount_text(label: str, done: int, total: int, elapsed_s: float, unit: Callable[[float], str]) -> str:
    """"LABEL  DONE of TOTAL (P%), RATE/s, N s left" (counts as plain numbers, no separators)."""
    text = f"{label}  {unit(done)} of {unit(total)} ({100 * done // total if total else 100}%)"
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if rate > 0 and total > done:
        text += f", {unit(rate)}/s, {(total - done) / rate:.0f} s left"
    return text


def amount(label: str, measure: Callable[[], tuple[int, int]], unit: Callable[[float], str]) -> StatusLine:
    """A status line for work measured as (done, total) in `unit`."""
    started = time.monotonic()

    def text() -> str:
        done, total = measure()
        return amount_text(label, done, total, time.monotonic() - started, unit) if total else ""
    return StatusLine(text)


@contextmanager
def reading(label: str) -> Iterator[None]:
    """Progress of the capture files read within the block (in this thread): bytes on disk read of
    their size, rate and time left. Files read by worker processes are not seen."""
    from analysis.capture import watch_reads

    files: list[tuple[object, int]] = []

    def opened(capture) -> None:
        try:
            files.append((capture, os.path.getsize(capture.path)))
        except OSError:  # the reader reports it
            pass

    with watch_reads(opened), amount(label, lambda: (sum(f.bytes_read for f, _ in files),
                                                     sum(n for _, n in files)), size):
        yield


class Stages(StatusLine):
    """Work done in named stages, each announced by calling the line with its name:
    "LABEL  STAGE (I of N)"."""

    def __init__(self, label: str, count: int):
        self.stage, self.index = "", 0
        super().__init__(lambda: f"{label}  {self.stage} ({self.index} of {count})" if self.index else "")

    def __call__(self, stage: str) -> None:
        self.stage, self.index = stage, self.index + 1
