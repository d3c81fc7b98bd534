"""The report as one self-contained HTML page: inline CSS, plots as base64 PNG, no script, no
external URL. Every capture-derived string goes through `escape`."""

from __future__ import annotations

import base64
import io
import warnings
from html import escape

from analysis.ids import short_id
from analysis.report.model import Anchor, Code, Conn, Details, Heading, Link, Plot, Report, Table

DPI = 90

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 1em 2em; max-width: 1400px; color: #222; }
h1 { border-bottom: 2px solid #444; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:target, td:target { background: #fff3b0; }
pre { margin: 0; max-width: 60em; max-height: 12em; overflow: auto; white-space: pre-wrap; word-break: break-all;
      font-size: 12px; background: #f8f8f8; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #666; font-size: 12px; }
details > summary { cursor: pointer; }
details > p { max-width: 60em; margin: .3em 0 .6em 1em; color: #333; }
"""


def render_html(report: Report) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{escape(report.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{escape(report.title)}</h1>",
           "<nav>" + "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in report.sections) + "</nav>"]
    for section in report.sections:
        out.append(f'<section id="{section.id}">')
        out.append(f"<h2>{escape(section.title)}</h2>")
        out += [_block(block) for block in section.blocks]
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _block(block) -> str:
    if isinstance(block, str):
        return f"<p>{escape(block)}</p>"
    if isinstance(block, Heading):
        return f'<h3 id="{block.id}">{escape(block.text)}</h3>'
    if isinstance(block, Plot):
        return f'<figure><img alt="{escape(block.alt)}" src="data:image/png;base64,{png(block.figure)}"></figure>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Details):
        return _details(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def png(figure) -> str:
    """The figure as base64 PNG, drawn once: `savefig` draws a figure with a layout engine twice
    (the first time only to lay it out), about a quarter of the report's plotting time. The same bytes."""
    import matplotlib.image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    dpi, canvas = figure.dpi, figure.canvas  # given back as savefig does: a notebook may show the figure
    try:
        figure.set_dpi(DPI)
        agg = FigureCanvasAgg(figure)
        with warnings.catch_warnings():  # a capture's characters missing from matplotlib's font, odd date ranges
            warnings.simplefilter("ignore", UserWarning)
            agg.draw()
        buffer = io.BytesIO()
        matplotlib.image.imsave(buffer, agg.buffer_rgba(), format="png", origin="upper", dpi=DPI)
    finally:
        figure.set_dpi(dpi)
        figure.set_canvas(canvas)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(table: Table) -> str:
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in table.headers) + "</tr>"
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    return f"<table>\n{head}\n{body}\n</table>{note}"


def _cell(cell) -> str:
    if isinstance(cell, Link):
        return f'<td><a href="#{cell.target}">{escape(cell.text)}</a></td>'
    if isinstance(cell, Anchor):
        return f'<td id="{cell.id}">{escape(cell.text)}</td>'
    if isinstance(cell, Code):
        return f"<td><pre>{escape(cell.text)}</pre></td>"
    if isinstance(cell, Details):
        return f"<td>{_details(cell)}</td>"
    if isinstance(cell, Conn):
        return f'<td title="{escape(cell.id)}">{escape(short_id(cell.id, cell.full))}</td>'
    if isinstance(cell, bool):
        return f"<td>{'yes' if cell else 'no'}</td>"
    if isinstance(cell, (int, float)):
        return f'<td class="num">{number(cell)}</td>'
    return f"<td>{'-' if cell is None else escape(str(cell))}</td>"


def _details(details: Details) -> str:
    return f"<details><summary>{escape(details.summary)}</summary><p>{escape(details.text)}</p></details>"


def number(value: int | float) -> str:
    """Counts, codes and ids as protocol values: never a thousands separator ("4401")."""
    return str(value) if isinstance(value, int) else f"{value:.1f}"
