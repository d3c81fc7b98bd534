"""Any input `open_capture` reads (capture, HAR, flow file) written as a capture v1 file."""

from __future__ import annotations

import os

from analysis.capture import CaptureError, Damage, dumps
from analysis.imports import open_capture

FILE_MODE = 0o600  # captures hold payloads: only their owner reads them


def convert(source: str, target: str, *, force: bool = False) -> tuple[int, list[Damage]]:
    """Write `source` to `target` as a capture; returns (records written after the header, damage).

    Refuses to overwrite an existing `target` unless `force`."""
    capture = open_capture(source)
    records = capture.records()
    first = next(records, None)  # reads the input, fills in the header
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(target, flags, FILE_MODE)
    except FileExistsError:
        raise CaptureError(f"{target}: exists (use --force to overwrite)") from None
    except OSError as e:
        raise CaptureError(f"{target}: cannot create ({e.strerror})") from None
    os.fchmod(fd, FILE_MODE)
    count = 0
    with os.fdopen(fd, "wb", buffering=1 << 20) as out:
        out.write(dumps(capture.header))
        if first is not None:
            out.write(dumps(first))
            count = 1
        for rec in records:
            out.write(dumps(rec))
            count += 1
    return count, capture.damage
