"""The report as blocks that both renderers understand; capture-derived text stays raw here and
is escaped by the renderer (a capture is untrusted input)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass
class Link:
    """A cell linking to an anchor of the report."""
    text: str
    target: str


@dataclass
class Anchor:
    """A cell that is the target of links."""
    text: str
    id: str


@dataclass
class Code:
    """A payload or other verbatim text (shown preformatted)."""
    text: str


@dataclass
class Details:
    """A line that opens a longer text (HTML <details>: no script); the rule explanations."""
    summary: str
    text: str


@dataclass
class Conn:
    """A connection id: shown short (`analysis.ids.short_id`), the full id one hover away."""
    id: str
    full: bool = False


Cell = Union[str, int, float, None, Link, Anchor, Code, Details, Conn]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    note: str = ""  # e.g. "first 50 of 1,234"


@dataclass
class Heading:
    text: str
    id: str


@dataclass
class Plot:
    figure: Any  # matplotlib.figure.Figure
    alt: str


Block = Union[str, Table, Heading, Plot, Details]


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list[Section]


def anchor_id(*parts) -> str:
    """An HTML id made only of [a-z0-9-] from any parts (rule ids, numbers)."""
    return "-".join(re.sub(r"[^a-z0-9]+", "-", str(p).lower()).strip("-") or "x" for p in parts)
