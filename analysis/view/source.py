"""The capture files `mwtap view` reads: every record with where its line is (file, offset, length),
so the index keeps only those numbers and reads a frame's JSON back from disk when it is shown.

A gzip capture cannot be read at an offset, so it is decompressed once into a private temporary
file (removed by `close`); offsets then refer to that file. Following (`--follow`) reads a plain
file as it grows: a last line without its newline is left for the next read.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import tempfile
import zlib
from typing import Callable, Iterator

from analysis.capture import CaptureError, CaptureFile, Damage

Located = tuple[dict, int, int, bytes]  # (record, file number, offset, its line)


class Lines:
    """A binary file's lines from its start, remembering the last one given out and where it starts.

    `wait` (following): called at the end of the file, or at a last line not yet complete; it
    returns False to stop reading. Without it, reading stops at the end (a last line without
    newline is given out: the reader reports it as truncated).
    """

    def __init__(self, f, wait: Callable[[], bool] | None = None):
        self.f = f
        self.wait = wait
        self.start = 0
        self.line = b""

    def __iter__(self) -> Iterator[bytes]:
        f, offset = self.f, 0
        if self.wait is None:
            for line in f:  # C-level line iteration: the common case, kept cheap
                self.start, self.line = offset, line
                offset += len(line)
                yield line
            return
        while True:
            line = f.readline()
            if self.wait is not None and not line.endswith(b"\n"):
                if not self.wait():
                    return
                f.seek(offset)
                continue
            if not line:
                return
            self.start, self.line = offset, line
            offset += len(line)
            yield line


class Sources:
    """The files of one view: plain captures as they are, gzip captures decompressed once."""

    def __init__(self, paths: list[str]):
        self.names = list(paths)  # as the user gave them (messages, the page)
        self.paths: list[str] = []  # what is read at offsets
        self.damage: list[Damage] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        for number, path in enumerate(paths):
            self.paths.append(self._plain(number, path))

    def _plain(self, number: int, path: str) -> str:
        if os.path.isdir(path):
            raise CaptureError(f"{path}: is a directory, not a capture file")
        try:
            with open(path, "rb") as f:
                compressed = f.read(2) == b"\x1f\x8b"
        except OSError as e:
            raise CaptureError(f"{path}: cannot open ({e.strerror})") from e
        if not compressed:
            return path
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mwtap-view-")  # mode 0700: private
        out = os.path.join(self._tmp.name, f"{number}.jsonl")
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            try:
                shutil.copyfileobj(src, dst, 1 << 20)
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # keep what came before the damage
                self.damage.append(Damage(path, 0, f"compressed stream damaged ({e})"))
        return out

    def capture(self, number: int) -> CaptureFile:
        """Capture file `number`, its header read and checked now (a CaptureError names the file as the
        user gave it, not its decompressed copy)."""
        name = self.names[number]
        with open(self.paths[number], "rb") as f:
            first = f.readline()
        if not first:
            raise CaptureError(f"{name}: empty file, not an mwtap capture")
        checked = CaptureFile(name)
        list(checked._parse([first]))  # the capture reader's header check: raises CaptureError
        return CaptureFile(name, header=checked.header)

    def check(self) -> None:
        """Every file's header read and checked (`capture`)."""
        for number in range(len(self.paths)):
            self.capture(number)

    def named(self, damage: Damage) -> Damage:
        """`damage` found reading `paths`, naming its file as the user gave it."""
        if damage.path in self.paths:
            return dataclasses.replace(damage, path=self.names[self.paths.index(damage.path)])
        return damage

    def records(self, number: int, wait: Callable[[], bool] | None = None) -> tuple[CaptureFile, Iterator[Located]]:
        """The capture file (its header read and checked now) and its records with their places and
        lines."""
        capture = self.capture(number)

        def located() -> Iterator[Located]:
            with open(self.paths[number], "rb") as f:
                lines = Lines(f, wait)
                for rec in capture._parse(lines):  # the capture reader's checks, line by line
                    yield rec, number, lines.start, lines.line
        return capture, located()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

