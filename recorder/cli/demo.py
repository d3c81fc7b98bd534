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
@click.option("--no-bot", is_flag=True, help="Leave the conversations to the built-in agent (no node-agent-sdk bot).")
def demo(out_dir: Path | None, duration: float, seed: int, force: bool, no_bot: bool) -> None:
    """Run the built-in Messaging Window server, the recorder in front of it and eight scripted
    consumers (five misbehave on purpose), then analyse the capture.

    When Node and npm are on the machine, a bot written against LivePerson's node-agent-sdk takes
    the consumers' conversations through the same recorder (the SDK is installed once, with npm
    ci, into ~/.cache/mwtap); otherwise the server's built-in agent answers them.

    The server's idle timeout and token lifetime are shortened so that keep-alive and token
    problems happen within the run; the analysis is given the same limits."""
    import asyncio

    import orjson

    import matplotlib
    matplotlib.use("Agg")

    from analysis import load
    from analysis.render import render
    from analysis.report import build_report, render_html
    from recorder import demo_bot
    from recorder.cli.report import write_private
    from recorder.demo import DemoSettings, run_demo

    out_dir = out_dir or Path(f"mwtap-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    refuse_to_overwrite([out_dir / name for name in OUTPUTS], force, remove=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = DemoSettings(duration=duration, seed=seed)
    with_bot = not no_bot

    def no_bot_because(problem) -> None:
        click.echo(f"no node-agent-sdk bot ({problem}): the built-in agent answers the consumers")

    if with_bot:
        try:
            demo_bot.install(status=click.echo)
        except (demo_bot.BotUnavailable, OSError) as e:
            no_bot_because(e)
            with_bot = False

    def started(server, proxy, bot_problem: str | None) -> None:
        if bot_problem is not None:
            no_bot_because(bot_problem)
        click.echo(f"server    {server.url()}")
        click.echo(f"recorder  127.0.0.1:{proxy.port} -> {out_dir / 'capture.jsonl'}")
        bot = with_bot and bot_problem is None
        agent = f"a node-agent-sdk {demo_bot.SDK_VERSION} bot" if bot else "the built-in agent"
        click.echo(f"running {len(settings.consumers())} consumers for {duration:g} s, answered by {agent} ...")

    result = asyncio.run(run_demo(out_dir, settings, on_start=started, with_bot=with_bot))
    for name, stats in result.consumers.items():
        codes = ", ".join(str(c) for c in stats.close_codes)
        click.echo(f"  {name:16} {stats.connections} connection(s), close codes {codes}")
    if result.bot is not None:
        events = result.bot
        click.echo(f"  {'bot (agent)':16} {events['connected']} connection(s), {events['ring-accepted']} ring(s) "
                   f"accepted, {events['answered']} answer(s), {events['error']} error(s)")

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
