"""`mwtap view`: browse captures in the web browser, served on a loopback address with a token."""

from __future__ import annotations

import sys
import time

import click

from analysis.capture import host_port
from analysis.preload import preload
from recorder.cli import BadInput
from recorder.cli.record import is_loopback


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to serve on (127.0.0.1, ::1 or localhost; others are refused).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@click.option("--follow", is_flag=True,
              help="Keep reading the capture as it grows (beside `mwtap record`); one plain .jsonl file.")
@click.option("--response-timeout", "response_timeout_s", type=float, help="Seconds before unanswered-request [30].")
@click.option("--keepalive-limit", "keepalive_limit_s", type=float, help="Longest allowed client silence, s [60].")
@click.option("--min-reconnect-delay", "min_reconnect_delay_s", type=float, help="fast-reconnect below this, s [1].")
@click.option("--accept-timeout", "accept_timeout_s", type=float, help="Seconds before missing-accept [10].")
def view(paths: tuple[str, ...], host: str, port: int, no_browser: bool, follow: bool, **options) -> None:
    """Open a page that browses the captures: consumers and their reconnect chains, every frame
    with its pair, stream and ACCEPT/READ, a timeline, and the violations (the same engine as
    `mwtap analyze`). The index is built in one pass; frames are read from disk when shown.
    A gzip capture is decompressed once to a private temporary file."""
    import asyncio
    import threading

    # the server's modules (aiohttp above all: a third of a second) load while the core builds the index
    server_loaded = preload("recorder.view.server")
    from analysis import Config
    from analysis.imports import SourceLimits
    from analysis.view.build import build
    from analysis.view.index import ViewIndex
    from analysis.view.queries import Queries
    from analysis.view.source import Sources

    if not is_loopback(host):
        raise click.BadParameter(f"{host!r} is not a loopback address: the view serves this machine only",
                                 param_hint="--host")
    if follow and len(paths) != 1:
        raise click.BadParameter("--follow reads one capture file", param_hint="--follow")
    config = Config.from_options(**options)
    sources = Sources(list(paths))
    try:
        if follow and sources.paths[0] != sources.names[0]:
            raise click.BadParameter("--follow needs a plain .jsonl capture (a gzip file cannot grow)",
                                     param_hint="--follow")
        started = time.monotonic()
        lock = threading.Lock()
        follower = None
        if follow:
            server_loaded.join()
            from recorder.view.server import Follower
            capture, _ = sources.records(0)  # checks the header now: a file that is not a capture fails here
            index = ViewIndex(SourceLimits.of([capture.header]).config(config))  # the limits `build` applies
            follower = Follower(index, lambda wait: sources.records(0, wait), lock)
            follower.start()
            follower.caught_up.wait()
            if follower.error is not None:
                raise follower.error
        else:
            index = build(sources, config)
        for d in sources.damage:
            click.echo(str(d), err=True)
        click.echo(f"mwtap view: {len(index.columns):,} records, {len(index.connections):,} connections, "
                   f"{index.violation_total:,} violations indexed in {time.monotonic() - started:.2f} s", err=True)
        queries = Queries(index, sources.paths, sources.names)
        server_loaded.join()
        from recorder.view.server import View  # raises here if loading it failed
        page = View(queries, lock, lambda: follower is not None and follower.is_alive())
        try:
            asyncio.run(_serve(page, host, port, not no_browser))
        finally:
            if follower is not None:
                follower.stop.set()
                follower.join(5)
            queries.close()
    finally:
        sources.close()


async def _serve(page, host: str, port: int, open_browser: bool) -> None:
    from aiohttp import web

    from recorder.cli.signals import stop_event

    stop = stop_event()
    runner = web.AppRunner(page.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise BadInput(f"cannot listen on {host_port(host, port)}: {e.strerror}") from None
    bound = runner.addresses[0]
    url = f"http://{host_port(bound[0], bound[1])}/{page.token}/"
    click.echo(url)
    sys.stdout.flush()
    if open_browser:
        import webbrowser
        webbrowser.open(url)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
