"""The report as Markdown for a bug report: the same sections and tables, without the plots.
Capture-derived text is escaped so that neither Markdown nor HTML in it is rendered."""

from __future__ import annotations

import re
from html import escape

from analysis.report.html import number
from analysis.ids import short_id
from analysis.report.model import Anchor, Code, Conn, Details, Heading, Link, Plot, Report, Table

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}|#~])")


def render_markdown(report: Report) -> str:
    out = [f"# {text(report.title)}", ""]
    for section in report.sections:
        out += [f"## {text(section.title)}", ""]
        for block in section.blocks:
            out += _block(block) + [""]
    return "\n".join(out)


def text(value: str) -> str:
    """Plain text safe in Markdown: no markup, no HTML, no line breaks."""
    value = escape(str(value), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", value).replace("\r", " ").replace("\n", " ")


def _block(block) -> list[str]:
    if isinstance(block, str):
        return [text(block)]
    if isinstance(block, Heading):
        return [f"### {text(block.text)}"]
    if isinstance(block, Plot):
        return [f"_({text(block.alt)}: plot in the HTML report)_"]
    if isinstance(block, Table):
        lines = ["| " + " | ".join(text(h) for h in block.headers) + " |", "|" + "---|" * len(block.headers)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
        lines += [f"_{text(block.note)}_"] if block.note else []
        opened = {c.summary: c.text for row in block.rows for c in row if isinstance(c, Details)}
        return lines + [""] * bool(opened) + [f"- **{text(k)}**: {text(v)}" for k, v in opened.items()]
    if isinstance(block, Details):
        return [f"**{text(block.summary)}**: {text(block.text)}"]
    raise TypeError(f"unknown report block {type(block).__name__}")


def _cell(cell) -> str:
    if isinstance(cell, (Link, Anchor)):
        return text(cell.text)
    if isinstance(cell, Code):
        return "<code>" + text(cell.text) + "</code>"
    if isinstance(cell, Details):
        return text(cell.summary)  # a cell holds one line: the explanations follow the table
    if isinstance(cell, Conn):
        return text(short_id(cell.id, cell.full))
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, (int, float)):
        return number(cell)
    return "-" if cell is None else text(cell)
