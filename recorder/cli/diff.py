"""`mwtap diff`: compare a recorded session with its replay (exit 0 same, 1 different, 2 bad input)."""

from __future__ import annotations

import sys

import click

from recorder.cli import FOUND_EXIT


@click.command()
@click.argument("recorded", type=click.Path())
@click.argument("replayed", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--ignore-field", "ignore_fields", multiple=True, metavar="PATH",
              help="Mask this field too: a name (anywhere) or a dotted path such as body.changes.event.message "
                   "(* matches one name; repeatable).")
@click.option("--latency-tolerance", type=click.FloatRange(min=0), default=500.0, show_default=True,
              metavar="MS", help="A request type whose median latency changed by more than this differs.")
def diff(recorded: str, replayed: str, fmt: str, ignore_fields: tuple[str, ...], latency_tolerance: float) -> None:
    """Align RECORDED and REPLAYED request by request and report what differs: response codes, types
    and bodies (ids, timestamps, sequences and --ignore-field values masked), notifications per type
    and stream, close codes and latency. Exit status 0 when they match, 1 when they differ."""
    import orjson

    from analysis.capture import CaptureFile
    from analysis.diff import diff_sessions, render_text

    captures = [CaptureFile(recorded), CaptureFile(replayed)]
    report = diff_sessions(captures[0].records(), captures[1].records(), ignore_fields, latency_tolerance)
    for capture in captures:
        for damage in capture.damage:
            click.echo(f"warning: {damage}", err=True)
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    else:
        click.echo(render_text(report), nl=False)
    sys.exit(FOUND_EXIT if report.differs else 0)
