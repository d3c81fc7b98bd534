"""The capture report (`mwtap report`): one self-contained HTML file, or Markdown for a bug report.

    from analysis import load
    from analysis.report import build_report, render_html, render_markdown
    report = build_report(load("capture.jsonl"))
    html = render_html(report)
"""

from analysis.report.content import Report, build_report
from analysis.report.html import render_html
from analysis.report.markdown import render_markdown

__all__ = ["Report", "build_report", "render_html", "render_markdown"]
