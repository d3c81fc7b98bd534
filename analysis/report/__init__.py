"""The capture report (`mwtap report`): one self-contained HTML file, or Markdown for a bug report.

    from analysis.report import build_report, render_html, render_markdown, stream_capture
    report = build_report(stream_capture("capture.jsonl"))  # bounded memory (or a loaded `analysis.load`)
    html = render_html(report)
"""

from analysis.report.content import Report, build_report
from analysis.report.html import render_html
from analysis.report.markdown import render_markdown
from analysis.report.stream import stream_capture

__all__ = ["Report", "build_report", "render_html", "render_markdown", "stream_capture"]
