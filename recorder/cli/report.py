"""`mwtap report`: a capture's analysis as one self-contained HTML file (or Markdown)."""

from __future__ import annotations

import os

import click

from analysis.preload import preload
from recorder.cli import BadInput, refuse_to_overwrite
from recorder.cli.progress import Stages, reading

REPORT_MODE = 0o600  # a report holds payloads: only its owner reads it


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True),
              help="Report file ('-': standard output)  [default: report.html, report.md for markdown]")
@click.option("--force", is_flag=True, help="Overwrite the report file if it exists.")
@click.option("--format", "fmt", type=click.Choice(["html", "markdown"]), default="html", show_default=True)
@click.option("--keepalive-limit", "keepalive_limit_s", type=float, help="Longest allowed client silence, s [60].")
@click.option("--response-timeout", "response_timeout_s", type=float, help="Seconds before unanswered-request [30].")
@click.option("--min-reconnect-delay", "min_reconnect_delay_s", type=float, help="fast-reconnect below this, s [1].")
@click.option("--accept-timeout", "accept_timeout_s", type=float, help="Seconds before missing-accept [10].")
@click.option("--full-ids", is_flag=True, help="Connection ids in full (HTML shows the full id on hover anyway).")
def report(paths: tuple[str, ...], output: str | None, force: bool, fmt: str, full_ids: bool, **options) -> None:
    """Analyse captures and write a report: summary, violations by rule linked to their frames,
    latency, slowest requests with payloads, connections, reconnects, keep-alive and streams."""
    # pandas and matplotlib (most of a second) load while the core reads the capture without the GIL
    content_loaded = preload("analysis.report.content")
    from analysis.report.stream import stream_capture

    output = output or ("report.md" if fmt == "markdown" else "report.html")
    if output != "-":
        refuse_to_overwrite([output], force)
    with reading("report: reading"):
        cap = stream_capture(list(paths), **options)
    content_loaded.join()
    import matplotlib
    matplotlib.use("Agg")

    from analysis.report import build_report, render_html, render_markdown
    from analysis.report.content import STAGES
    for d in cap.damage:
        click.echo(str(d), err=True)
    with Stages("report: building", len(STAGES)) as progress:
        built = build_report(cap, progress=progress, full_ids=full_ids)
    text = render_markdown(built) if fmt == "markdown" else render_html(built)
    if output == "-":
        click.echo(text, nl=False)
        return
    write_private(output, text)
    click.echo(f"report written to {output}", err=True)


def write_private(path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600, also when the file existed)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, REPORT_MODE)
        os.fchmod(fd, REPORT_MODE)  # also when the file existed with another mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise BadInput(f"{path}: cannot write ({e.strerror})") from None

