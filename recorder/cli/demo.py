"""`mwtap demo`: a whole recorded and analysed session on 127.0.0.1, no account needed."""

from __future__ import annotations

import time
from pathlib import Path

import click

from recorder.cli import refuse_to_overwrite

OUTPUTS = ("capture.jsonl", "analysis.txt", "analysis.json", "report.html")


@click.command()
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the capture and the analysis [./mwtap-demo-YYYYmmdd-HHMMSS].")
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds the consumers run.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the server's injected fault.")
@click.option("--force", is_flag=True, help="Overwrite the files of an earlier demo in the folder.")
def demo(out_dir: Path | None, duration: float, seed: int, force: bool) -> None:
    """Run the built-in Messaging Window server, the recorder in front of it and eight scripted
    consumers (five misbehave on purpose), then analyse the capture.

    The server's idle timeout and token lifetime are shortened so that keep-alive and token
    problems happen within the run; the analysis is given the same limits."""
    import asyncio

    import orjson

    import matplotlib
    matplotlib.use("Agg")

    from analysis import load
    from analysis.render import render
    from analysis.report import build_report, render_html
    from recorder.cli.report import write_private
    from recorder.demo import DemoSettings, run_demo

    out_dir = out_dir or Path(f"mwtap-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    refuse_to_overwrite([out_dir / name for name in OUTPUTS], force, remove=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = DemoSettings(duration=duration, seed=seed)

    def started(server, proxy) -> None:
        click.echo(f"server    {server.url()}")
        click.echo(f"recorder  127.0.0.1:{proxy.port} -> {out_dir / 'capture.jsonl'}")
        click.echo(f"running {len(settings.consumers())} consumers for {duration:g} s ...")

    results = asyncio.run(run_demo(out_dir, settings, on_start=started))
    for name, stats in results.items():
        codes = ", ".join(str(c) for c in stats.close_codes)
        click.echo(f"  {name:16} {stats.connections} connection(s), close codes {codes}")

    cap = load(out_dir / "capture.jsonl", **settings.analysis_options())
    text = render(cap.summary())
    write_private(out_dir / "analysis.txt", text)
    write_private(out_dir / "analysis.json", orjson.dumps(cap.summary(), option=orjson.OPT_INDENT_2).decode())
    write_private(out_dir / "report.html", render_html(build_report(cap)))
    flags = " ".join(settings.analysis_flags())
    click.echo()
    click.echo(f"analysed with {flags} (limits shortened like the server's; the same numbers: "
               f"mwtap analyze {out_dir / 'capture.jsonl'} {flags})")
    click.echo()
    click.echo(text, nl=False)
    click.echo()
    click.echo(f"capture:  {out_dir / 'capture.jsonl'}")
    click.echo(f"analysis: {out_dir / 'analysis.txt'}, {out_dir / 'analysis.json'}")
    click.echo(f"report:   {out_dir / 'report.html'}")
