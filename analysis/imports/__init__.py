"""Inputs other than mwtap captures, read as captures: HAR files and mitmproxy flow files.

`open_capture(path)` looks at the content (not the extension): an mwtap capture (JSONL header), a
HAR (JSON object with `log.entries`) or a flow file (tnetstring), and returns an object with the
interface of `analysis.capture.CaptureFile` (`path`, `header`, `damage`, `unknown_records`, `records()`).
`SourceLimits` says what such inputs cannot show (close codes, pings) and adjusts the analysis.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import orjson

from analysis.capture import CaptureFile, DamageLog, as_paths
from analysis.capture import _open as open_binary  # the capture reader's open: gunzips, one-line errors
from analysis.config import Config

CAPTURE, HAR, FLOWS = "capture", "har", "flows"
_HEAD = 1 << 16


def detect(path: str) -> str:
    """`capture`, `har` or `flows`, from the first bytes of the file."""
    with open_binary(path) as f:
        try:
            head = f.read(_HEAD)
        except (EOFError, gzip.BadGzipFile, zlib.error):
            return CAPTURE  # the capture reader reports the damage
    if _starts_flow_file(path):
        return FLOWS
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if body[:1] != b"{":
        return CAPTURE
    try:
        first = orjson.loads(body.split(b"\n", 1)[0])
    except orjson.JSONDecodeError:
        first = None
    if isinstance(first, dict) and "rec" in first:
        return CAPTURE
    return HAR if isinstance(first, dict) and "log" in first or b'"log"' in head else CAPTURE


_TNETSTRING_LENGTH = re.compile(rb"(\d{1,12}):")


def _starts_flow_file(path: str) -> bool:
    """Whether the file starts with a tnetstring dictionary (`<length>:<data>}`), as every flow
    file does: a file that merely starts with a digit is not one."""
    with open(path, "rb") as f:
        length = _TNETSTRING_LENGTH.match(f.read(13))
        if length is None:
            return False
        f.seek(length.end() + int(length[1]))
        return f.read(1) == b"}"


@dataclass
class ImportedFile:
    """A HAR or flow file whose records come in time order across connections, each connection's
    records in their own order. `records()` indexes the file (where each connection is, when it
    opens; `header` and the file's damage are then known), and the records are read while they are
    iterated, each connection when the merge reaches it: memory follows the connections open at a
    time, not the file."""
    path: str
    kind: str
    header: dict | None = None
    damage: DamageLog = field(default_factory=DamageLog)
    unknown_records: dict[str, int] = field(default_factory=dict)

    def records(self) -> Iterator[dict]:
        if self.kind == HAR:
            from analysis.imports.har import read_har as read
        else:
            from analysis.imports.flows import read_flows as read
        self.header, records = read(self.path, self.damage)
        return records


def all_captures(paths) -> bool:
    """Whether every one of `paths` is a capture (a path that cannot be read counts as one: the
    capture reader reports it)."""
    for path in as_paths(paths):
        try:
            if detect(path) != CAPTURE:
                return False
        except OSError:
            pass
    return True


def open_capture(path: str) -> CaptureFile | ImportedFile:
    kind = detect(path)
    return CaptureFile(path) if kind == CAPTURE else ImportedFile(path, kind)


@dataclass(frozen=True)
class SourceLimits:
    """What the inputs cannot show, as notes for the summary and severity changes for the rules that
    would otherwise report the missing data as misbehaviour (docs/export.md, "What imports cannot show")."""
    notes: tuple[str, ...] = ()
    severity: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, headers: Iterable[dict | None]) -> "SourceLimits":
        sources = [(h or {}).get("source") for h in headers]
        har, flows = sources.count(HAR), sources.count(FLOWS)
        if not har and not flows:
            return cls()
        every_file = har + flows == len(sources)
        notes, severity = [], []
        if har:
            notes.append(f"close codes and pings not available (HAR, {har} file(s)): its connections end at "
                         "capture end (an unanswered request may be one whose connection closed first), "
                         "reconnect rules (token-not-refreshed, fast-reconnect) are not checked")
        if flows:
            notes.append(f"pings not available (flows, {flows} file(s))")
        notes.append("keep-alive silences are counted from messages only"
                     + (": keepalive-gap is info" if every_file else " in those files"))
        if every_file:
            severity.append(("keepalive-gap", "info"))
        return cls(tuple(notes), tuple(severity))

    def config(self, config: Config) -> Config:
        """`config` with the severity changes, unless the user chose a severity for that rule."""
        if not self.severity:
            return config
        return dataclasses.replace(config, severity={**dict(self.severity), **config.severity})

    def annotate(self, summary: dict) -> dict:
        summary["capture"]["notes"].extend(self.notes)
        return summary
