"""`mwtap analyze`: check captures against the protocol and summarise them (no mitmproxy imported)."""

from __future__ import annotations

import sys

import click

from recorder.cli import FOUND_EXIT, BadInput
from recorder.cli.progress import reading


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
@click.option("--fail-on", type=click.Choice(["error", "warning", "never"]), default="never", show_default=True,
              help=f"Exit with status {FOUND_EXIT} when a violation at or above this severity exists.")
@click.option("--response-timeout", "response_timeout_s", type=float, help="Seconds before unanswered-request [30].")
@click.option("--keepalive-limit", "keepalive_limit_s", type=float, help="Longest allowed client silence, s [60].")
@click.option("--min-reconnect-delay", "min_reconnect_delay_s", type=float, help="fast-reconnect below this, s [1].")
@click.option("--accept-timeout", "accept_timeout_s", type=float, help="Seconds before missing-accept [10].")
@click.option("--max-violations", type=int, help="Violations listed in the output, errors first [1000].")
@click.option("--full-ids", is_flag=True, help="Connection ids in full (text, Markdown; JSON always has them).")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Cores to use: processes for many recordings, threads for one [all this process may use].")
@click.option("--dask", "dask_address", metavar="SCHEDULER", help="Run on this Dask scheduler (pip install mwtap[dask]).")
def analyze(paths: tuple[str, ...], fmt: str, fail_on: str, full_ids: bool, jobs: int | None,
            dask_address: str | None, **options) -> None:
    """Analyse one or more captures (.jsonl or .jsonl.gz; rotated parts and several recordings are
    merged by time) and report violations of the Messaging Window protocol."""
    import orjson

    from analysis import Config
    from analysis.parallel import analyze as run_analysis
    from analysis.render import render
    from analysis.rules import SEVERITY_RANK

    from recorder.dask_workers import DaskWorkers

    workers = DaskWorkers(dask_address) if dask_address else None
    try:
        with reading("analyze"):
            summary, damage = run_analysis(list(paths), Config.from_options(**options), jobs=jobs, workers=workers)
    except (RuntimeError, OSError) as e:  # no dask, scheduler unreachable
        raise BadInput(str(e)) from None
    for d in damage:
        click.echo(str(d), err=True)
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    else:
        click.echo(render(summary, markdown=fmt == "markdown", full_ids=full_ids), nl=False)
    if fail_on != "never":
        limit = SEVERITY_RANK[fail_on]
        if any(SEVERITY_RANK[sev] <= limit for sevs in summary["violation_counts"].values() for sev in sevs):
            sys.exit(FOUND_EXIT)
