"""`mwtap export`: the analysis tables of captures as Parquet files."""

from __future__ import annotations

import os

import click

from recorder.cli import BadInput, refuse_to_overwrite
from recorder.cli.progress import reading


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--parquet", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for frames.parquet, pairs.parquet, … (one file per table, mode 0600).")
@click.option("--force", is_flag=True, help="Overwrite the table files if DIR holds them.")
@click.option("--response-timeout", "response_timeout_s", type=float, help="Seconds before unanswered-request [30].")
@click.option("--keepalive-limit", "keepalive_limit_s", type=float, help="Longest allowed client silence, s [60].")
def export(paths: tuple[str, ...], out_dir: str, force: bool, **options) -> None:
    """Analyse captures (or HAR / flow files) and write the frames, pairs, streams, sequences,
    connections, reconnects, keepalive and violations tables as Parquet (docs/export.md)."""
    from analysis import Config
    from analysis.export import TABLES, export_parquet

    refuse_to_overwrite([os.path.join(out_dir, f"{table}.parquet") for table in TABLES], force, remove=True)
    try:
        with reading("export"):
            counts, damage = export_parquet(list(paths), out_dir, Config.from_options(**options))
    except OSError as e:  # a table file exists, the directory cannot be made
        raise BadInput(str(e) if isinstance(e, FileExistsError) else f"{out_dir}: {e.strerror}") from None
    for d in damage:
        click.echo(str(d), err=True)
    click.echo(f"{out_dir}: " + ", ".join(f"{table} {n}" for table, n in counts.items()) + " rows", err=True)
