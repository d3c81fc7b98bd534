"""CaptureWriter: the buffered, rotating, never-raising JSONL writer of a capture.

Records are encoded with `analysis.capture.dumps` (or arrive encoded, `write_line`) into an
in-memory buffer, `lines` (`analysis._core.Lines`), and written with
`os.write` on a file created 0600 with `O_EXCL | O_NOFOLLOW`, every part alike: an existing
file is never overwritten, and a symbolic link is never followed. The buffer is written out when
it reaches 1 MiB, when a record passed to `write` or `write_line` arrives at least
`flush_interval` after the last write, and whenever the owner calls `flush()` (the recorder does
so on every close, every 250 ms from its event loop while data is pending, and at exit).

The recorder's messages take a shorter way, the one native call a message costs: the core encodes
each straight into `lines` (`lines.message(...)`), which says when the buffer is full (1 MiB, or
the part's rotation size), and the recorder then calls `write_out()`; by time, its 250 ms tick
writes them out.

A failing write (disk full, file size limit) never raises: the failure is logged once, the records
it lost are counted, and a `drop` record carrying the count is written as soon as writing works
again, or at close. A line that was cut in the middle by the failure is ended with a newline first,
so readers see one damaged line and nothing else.

Rotation: with `rotate_bytes`, a part that reached the size is closed and the next one is opened:
`cap.jsonl`, `cap.part2.jsonl`, `cap.part3.jsonl`, ... Every part starts with its own header
(same `recording` id, `part` = N). When the next name is taken (a file or a link someone left
there), that name is skipped with a warning and the part goes to the next free number, which its
header's `part` carries too: part numbers may then have a gap, nothing is overwritten and nothing
is lost. Only when no name is free (or the file cannot be created) does the writer stay on the
current part.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from analysis._core import Lines
from analysis.capture import DROP, dumps

log = logging.getLogger(__name__)

BUFFER_BYTES = 1 << 20
FLUSH_INTERVAL = 0.2
PART_NAMES_TRIED = 100  # taken names skipped at one rotation before staying on the current part


def part_path(path: Path, part: int) -> Path:
    """The file of part `part` (1 is `path` itself)."""
    if part == 1:
        return path
    if path.suffix == ".jsonl":
        return path.with_name(f"{path.stem}.part{part}.jsonl")
    return path.with_name(f"{path.name}.part{part}")


def creation_problem(error: OSError) -> str:
    """Why a capture could not be created, for a one-line error."""
    return "file exists (mwtap never overwrites a capture)" if isinstance(error, FileExistsError) else error.strerror


def _create(path: Path) -> int:
    """A new file of mode 0600; FileExistsError if the name is taken, by a file or a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
    return fd


class CaptureWriter:
    """Writes capture records to `path` (and its rotated parts).

    `header(part)` builds the header record of a part; it is called when that part is first
    written, so it can report settings that were changed after the writer was created.
    Raises OSError only from the constructor (the first file cannot be created).
    """

    def __init__(self, path: Path | str, header: Callable[[int], dict], rotate_bytes: int = 0,
                 flush_interval: float = FLUSH_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.header = header
        self.flush_interval = flush_interval
        self.clock = clock
        self.written = 0
        self.dropped = 0
        self.part = 1
        self.paths = [self.path]
        self._fd: int | None = _create(self.path)
        self.lines = Lines(BUFFER_BYTES)
        self._file_bytes = 0
        self._header_due = True
        self._last_flush = clock()
        self._lost = 0  # records lost since the last drop record
        self._lost_reason = ""
        self._failing = False
        self._torn = False  # the file ends in a partial line
        self.rotate_bytes = rotate_bytes

    @property
    def pending(self) -> bool:
        return self.lines.lines > 0 or self._lost > 0

    @property
    def rotate_bytes(self) -> int:
        """The size at which a part is closed and the next one opened (0: one file)."""
        return self._rotate_bytes

    @rotate_bytes.setter
    def rotate_bytes(self, size: int) -> None:
        self._rotate_bytes = size
        self._set_limit()

    def _set_limit(self) -> None:
        """The buffer is full at 1 MiB, or sooner when it would take the part to its rotation size."""
        room = self._rotate_bytes - self._file_bytes if self._rotate_bytes else BUFFER_BYTES
        self.lines.limit = max(1, min(BUFFER_BYTES, room))

    def write(self, record: dict) -> None:
        """Queue one record; writes out the buffer when it is full or due."""
        if self._fd is None:
            self.dropped += 1
            return
        try:
            line = dumps(record)
        except (TypeError, ValueError) as e:  # orjson.JSONEncodeError is a TypeError
            self.note_lost(1, f"cannot encode record: {e}")
            return
        self.write_line(line)

    def write_line(self, line: bytes) -> None:
        """Queue one record already encoded (a capture line: one newline, at its end), like `write`."""
        if self._fd is None:
            self.dropped += 1
            return
        if self.lines.append(line) or self.clock() - self._last_flush >= self.flush_interval:
            self.write_out()

    def write_out(self) -> None:
        """Write out the buffer (`lines` is full, or the write is due), then go on to the next part
        when this one reached its rotation size. Once closed: what `lines` holds is dropped."""
        if self._fd is None:
            self.dropped += self.lines.lines
            self.lines.take()
            return
        self.flush()
        if self._rotate_bytes and self._file_bytes >= self._rotate_bytes:
            self._rotate()

    def note_lost(self, count: int, reason: str) -> None:
        """Count records that were lost before reaching the writer (reported in a drop record)."""
        self.dropped += count
        self._lost += count
        self._lost_reason = reason

    def flush(self) -> None:
        """Write out everything buffered, after the part's header and a pending drop record."""
        self._last_flush = self.clock()
        if self._fd is None:
            return
        has_header, has_drop = self._header_due, self._lost > 0
        meta = []  # header and drop lines: not counted as records
        if has_header:
            meta.append(dumps(self.header(self.part)))
        if has_drop:
            meta.append(dumps({"rec": DROP, "t": time.time(), "count": self._lost, "reason": self._lost_reason}))
        n_lines = self.lines.lines
        if not meta and not n_lines:
            return
        lines = self.lines.take()
        meta = [b"\n"] * self._torn + meta  # the newline ending a line a failed write cut
        data = b"".join(meta) + lines if meta else lines
        done = self._write_all(data)
        if done == len(data):
            self._torn = False
            self._header_due = False
            self._lost = 0
            self.written += n_lines
            if self._failing:
                self._failing = False
                log.warning("mwtap: writing %s works again", self.paths[-1])
            return
        self._account_failure(meta, lines, n_lines, has_header, has_drop, done)

    def _account_failure(self, meta: list[bytes], lines: bytes, n_lines: int, has_header: bool, has_drop: bool,
                         done: int) -> None:
        """After a write of `meta` then `lines` that stopped at byte `done`: what made it whole into the
        file, what is lost."""
        end = 0  # bytes of the pieces written whole
        whole_meta = 0
        for piece in meta:
            if end + len(piece) > done:
                break
            end += len(piece)
            whole_meta += 1
        complete = 0
        if whole_meta == len(meta) and done > end:
            complete = lines.count(b"\n", 0, done - end)
            end += lines.rfind(b"\n", 0, done - end) + 1
        if done > 0:
            self._torn = done > end
        whole_meta -= len(meta) - has_header - has_drop  # the leading newline
        if has_header and whole_meta > 0:
            self._header_due = False
            whole_meta -= 1
        if has_drop and whole_meta > 0:
            self._lost = 0
        self.written += complete
        lost = n_lines - complete
        self.dropped += lost
        self._lost += lost

    def close(self) -> None:
        """Flush (a pending drop record included) and close the file; idempotent."""
        if self._fd is None:
            return
        self.flush()
        fd, self._fd = self._fd, None
        try:
            os.close(fd)
        except OSError as e:
            log.error("mwtap: closing %s failed: %s", self.paths[-1], e)

    def _write_all(self, data: bytes) -> int:
        """Bytes of `data` written before an error (all of them on success)."""
        view = memoryview(data)
        done = 0
        while done < len(data):
            try:
                done += os.write(self._fd, view[done:])  # type: ignore[arg-type]
            except OSError as e:
                if not self._failing:
                    self._failing = True
                    log.error("mwtap: writing %s failed: %s; dropping records until it works again",
                              self.paths[-1], e)
                self._lost_reason = f"write failed: {e}"
                break
        self._file_bytes += done
        self._set_limit()
        return done

    def _rotate(self) -> None:
        self.flush()
        taken = []
        for part in range(self.part + 1, self.part + 1 + PART_NAMES_TRIED):
            try:
                fd = _create(part_path(self.path, part))
                break
            except FileExistsError:
                taken.append(part_path(self.path, part).name)
            except OSError as e:
                log.error("mwtap: cannot open the next part of %s (%s); staying on part %d", self.path, e, self.part)
                self.rotate_bytes = 0
                return
        else:
            log.error("mwtap: the next %d part names of %s are taken; staying on part %d", PART_NAMES_TRIED,
                      self.path, self.part)
            self.rotate_bytes = 0
            return
        if taken:
            log.warning("mwtap: %s already exist (never overwritten); part %d goes to %s", ", ".join(taken), part,
                        part_path(self.path, part).name)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self.part = part
        self.paths.append(part_path(self.path, part))
        self._file_bytes = 0
        self._set_limit()
        self._header_due = True
        self._torn = False
