"""The capture report (`mwtap report`): one self-contained HTML file, or Markdown for a bug report.

    from analysis.report import build_report, render_html, render_markdown, stream_capture
    report = build_report(stream_capture("capture.jsonl"))  # bounded memory (or a loaded `analysis.load`)
    html = render_html(report)
"""

import importlib

# Each name loads its module on first use, so that reading a capture (`stream`) does not wait for
# pandas and matplotlib (`content`, most of a second): `mwtap report` loads them meanwhile.
_MODULES = {"Report": "content", "build_report": "content", "render_html": "html", "render_markdown": "markdown",
            "stream_capture": "stream"}

__all__ = ["Report", "build_report", "render_html", "render_markdown", "stream_capture"]


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
