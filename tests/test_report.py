"""`mwtap report`: the HTML file (sections, escaping, self-contained, renders in headless Chromium),
the Markdown variant, the file mode, the progress bar and bad input."""

from __future__ import annotations

import html as html_lib
import io
import json
import re
import stat
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from browser import chromium_binary, open_page
from conftest import BIN, run_on_terminal

SECTIONS = ["verdict", "summary", "violations", "latency", "slowest", "connections", "reconnects", "keepalive", "streams",
            "frames"]
# the sample's hostile agent message, as it appears in the JSON text of its frame
HOSTILE = json.dumps('<script>alert("mwtap")</script><img src=x onerror=alert(1)>')[1:-1]
RULES = ["invalid-json", "binary-frame", "request-without-id", "keepalive-gap", "token-not-refreshed", "fast-reconnect",
         "unanswered-request", "orphan-response", "notification-after-unsubscribe"]


def mwtap(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mwtap"), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


@pytest.fixture(scope="module")
def html_report(tmp_path_factory, sample_capture):
    out = tmp_path_factory.mktemp("report") / "report.html"
    run = mwtap("report", sample_capture, "-o", out)
    assert run.returncode == 0, run.stderr
    return out, run


def test_report_has_every_section_and_violation_rule(html_report):
    out, _ = html_report
    html = out.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    for rule in RULES:
        assert f'<h3 id="rule-{rule}">' in html and f'href="#rule-{rule}"' in html
    assert html.count("data:image/png;base64,") == 5


def test_report_opens_with_the_verdict_and_explains_every_rule_it_shows(html_report):
    from analysis.explain import EXPLANATIONS
    html = html_report[0].read_text()
    assert html.index('<section id="verdict">') < html.index('<section id="summary">')
    verdict = html[html.index('<section id="verdict">'):html.index('<section id="summary">')]
    assert "findings (by consumer and rule, worst first)" in verdict
    for rule in RULES:  # in the verdict and in the rule's own section, the rule opens its explanation
        explained = f"[{rule}]</summary><p>{html_lib.escape(EXPLANATIONS[rule])}</p></details>"
        assert explained in verdict, rule
        assert f"<summary>what this rule means</summary><p>{html_lib.escape(EXPLANATIONS[rule])}</p>" in html


def test_numbers_print_as_protocol_values_and_percentiles_are_analyzes(html_report, sample_capture):
    """Codes and counts without thousands separators; the latency table is analyze's, method named."""
    from analysis.histogram import PERCENTILE_METHOD
    html = html_report[0].read_text()
    assert not re.search(r">\d{1,3},\d{3}<", html) and '<td class="num">4401</td>' in html
    assert html_lib.escape(PERCENTILE_METHOD) in html
    summary = json.loads(mwtap("analyze", "--format", "json", sample_capture).stdout)
    latency = html[html.index('<section id="latency">'):html.index('<section id="slowest">')]
    for type_, row in summary["latency"].items():
        cells = [type_, str(row["count"]), *(f"{row[c]:.1f}" for c in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))]
        assert "<tr><td>" + "</td>".join(cells[:1]) in latency
        assert "".join(f'<td class="num">{c}</td>' for c in cells[1:]) in latency, type_


def test_every_internal_link_has_its_target(html_report):
    html = html_report[0].read_text()
    targets = set(re.findall(r'href="#([^"]+)"', html))
    ids = set(re.findall(r'id="([^"]+)"', html))
    assert targets and targets <= ids
    frame_links = [t for t in targets if t.startswith("f-")]
    assert len(frame_links) >= 5  # violations and slowest requests link to their frames


def test_payloads_are_escaped_and_nothing_is_loaded_from_outside(html_report):
    html = html_report[0].read_text()
    assert html_lib.escape(HOSTILE) in html
    assert "<script" not in html.lower() and "onerror=" not in html.replace("onerror=alert(1)&gt;", "")
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?\s*(https?:|//)""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html


def test_report_file_is_private_and_progress_is_not_drawn_without_a_terminal(html_report, tmp_path, sample_capture):
    out, run = html_report
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert run.stdout == "" and run.stderr.strip() == f"report written to {out}"
    existing = tmp_path / "old.html"
    existing.write_text("old")
    existing.chmod(0o644)
    assert mwtap("report", sample_capture, "-o", existing, "--force").returncode == 0
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600 and "<!DOCTYPE html>" in existing.read_text()


def test_progress_bar_on_a_terminal(tmp_path, sample_capture):
    code, seen = run_on_terminal([BIN / "mwtap", "report", sample_capture, "-o", tmp_path / "r.html"])
    assert code == 0
    assert b"100%" in seen and b"frames" in seen and b"report written to" in seen


def test_markdown_variant(tmp_path, sample_capture):
    out = tmp_path / "report.md"
    run = mwtap("report", sample_capture, "--format", "markdown", "-o", out)
    assert run.returncode == 0, run.stderr
    md = out.read_text()
    for title in ("Summary", "Violations (9)", "Latency", "Slowest requests", "Connections", "Reconnect chains",
                  "Keep-alive", "Subscription streams", "Frames"):
        assert f"\n## {title}" in md
    assert html_lib.escape(HOSTILE, quote=False).replace("\\", "\\\\") in md and "<script" not in md
    assert "| unanswered | 1 |" in md
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    to_stdout = mwtap("report", sample_capture, "--format", "markdown", "-o", "-")
    assert to_stdout.stdout == md


def test_bad_input_is_a_one_line_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    run = mwtap("report", bad, "-o", tmp_path / "r.html")
    assert run.returncode == 2
    assert run.stderr.strip() == f"Error: {bad}:1: not an mwtap capture (no JSON header line)"
    missing = mwtap("report", tmp_path / "nope.jsonl", "-o", tmp_path / "r.html")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "cannot open" in missing.stderr and not (tmp_path / "r.html").exists()


def test_report_of_an_empty_capture(tmp_path):
    from analysis.synth import CaptureBuilder
    empty = tmp_path / "empty.jsonl"
    CaptureBuilder().write(empty)
    run = mwtap("report", empty, "-o", tmp_path / "r.html")
    assert run.returncode == 0, run.stderr
    html = (tmp_path / "r.html").read_text()
    assert "No violations." in html and "No reconnects." in html


@pytest.mark.skipif(chromium_binary() is None, reason="no Chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(html_report, procs, tmp_path):
    out, _ = html_report
    page = open_page(procs, tmp_path, out.as_uri(), {
        "images": "Array.from(document.images).map(i => i.complete && i.naturalWidth > 100)",
        "scripts": "document.scripts.length",
        "hostile_as_text": f"document.body.innerText.includes({json.dumps(HOSTILE)})",
        "broken_links": "Array.from(document.querySelectorAll('a[href^=\"#\"]'))"
                        ".filter(a => !document.getElementById(a.getAttribute('href').slice(1))).length",
        "height": "document.documentElement.scrollHeight",
    })
    assert page.errors == []
    assert page.values["images"] == [True] * 5
    assert page.values["scripts"] == 0 and page.values["hostile_as_text"] is True
    assert page.values["broken_links"] == 0 and page.values["height"] > 3000
    pixels = imread(io.BytesIO(page.screenshot))[..., :3]
    assert pixels.shape[0] > 500 and pixels.std() > 0.05  # not a blank page
    assert (np.abs(pixels - 1.0).sum(axis=2) > 0.3).mean() > 0.01  # some ink on the first screen


def test_each_figure_is_the_image_savefig_makes_of_it(sample_capture):
    """The report draws each figure once (`savefig` lays a figure out in a draw of its own first);
    the PNG is byte for byte what savefig makes of the same figure, and the figure is left as it was."""
    import base64
    from analysis.report import build_report, stream_capture
    from analysis.report.html import DPI, png
    from analysis.report.model import Plot

    def figures():
        report = build_report(stream_capture([sample_capture]))
        return [block.figure for section in report.sections for block in section.blocks if isinstance(block, Plot)]
    drawn_once, saved = figures(), figures()
    assert len(drawn_once) == 5
    for figure, twin in zip(drawn_once, saved):
        buffer = io.BytesIO()
        twin.savefig(buffer, format="png", dpi=DPI)
        dpi, canvas = figure.dpi, figure.canvas
        assert base64.b64decode(png(figure)) == buffer.getvalue()
        assert figure.dpi == dpi and figure.canvas is canvas  # the figure is left as it was
