"""`mwtap convert`: a HAR or mitmproxy flow file (or a capture) written as a capture v1 file."""

from __future__ import annotations

import click

from recorder.cli import refuse_to_overwrite
from recorder.cli.progress import reading


@click.command()
@click.argument("path", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Capture file to write (.jsonl).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def convert(path: str, output: str, force: bool) -> None:
    """Convert PATH (HAR with WebSocket messages, mitmproxy flow file, or capture; detected by
    content) to a capture file (mode 0600). Flow files need mitmproxy."""
    from analysis.imports.convert import convert as run_convert

    refuse_to_overwrite([output], force)
    with reading("convert"):
        count, damage = run_convert(path, output, force=force)
    for d in damage:
        click.echo(str(d), err=True)
    click.echo(f"{output}: {count} record(s)", err=True)
