"""`mwtap replay`: send a recorded session again, to a target server (client side) or to a live
client (`--as-server`), recording what happens."""

from __future__ import annotations

import sys
from collections import Counter

import click

from analysis.ids import short_id
from recorder.cli import FOUND_EXIT, BadInput, refuse_to_overwrite

INTERRUPTED_EXIT = 130


@click.command()
@click.argument("capture", type=click.Path())
@click.option("--target", metavar="URL", help="ws://HOST:PORT[/PATH?QUERY] to replay to (the recorded path and "
                                              "query are used when it has none; required without --as-server).")
@click.option("--target-ca", metavar="FILE", help="Trust a wss:// target's certificate by this PEM file only "
                                                  "(e.g. the one `mwtap serve --tls FILE` wrote). Default: the "
                                                  "system's roots.")
@click.option("--conn", "conn_ids", multiple=True, metavar="ID",
              help="Replay only this recorded connection (id or unique prefix; repeatable). Default: all.")
@click.option("--timing", type=click.Choice(["wait", "original", "fast"]), default="wait", show_default=True,
              help="wait: send each frame once the target answered what the recorded client had seen; "
                   "original: recorded gaps / --speed; fast: no pacing.")
@click.option("--speed", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="With --timing original: play this many times faster.")
@click.option("--parallel", is_flag=True, help="Replay the connections at the same time (at their recorded "
                                                "offsets with --timing original) instead of one after another.")
@click.option("--fresh-ids", is_flag=True, help="Give every request a new unique id instead of the recorded one.")
@click.option("--wait-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for a response, notification or assigned value before reporting it missing.")
@click.option("-o", "--out", type=click.Path(dir_okay=False),
              help="Capture of the replay (required without --as-server); with --as-server, of the live "
                   "clients' connections.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="List every substituted value (text format; json always has them).")
@click.option("--token", help="Token for the Authorization header and InitConnection.")
@click.option("--token-env", metavar="NAME", help="Read the token from this environment variable.")
@click.option("--token-command", metavar="CMD",
              help="Shell command printing a fresh token; run again whenever one is needed (4401/4407). "
                   "Its output is never logged.")
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not a loopback address.")
@click.option("--as-server", is_flag=True, help="Play the recorded server side to live clients instead.")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="With --as-server: where to listen (port 0: any free port).")
def replay(capture, target, target_ca, conn_ids, timing, speed, parallel, fresh_ids, wait_timeout, out, force, fmt,
           verbose, token, token_env, token_command, allow_remote, as_server, listen) -> None:
    """Replay the session recorded in CAPTURE.

    Client side (default): opens a WebSocket to --target per recorded connection and sends the
    recorded client frames, byte for byte except for server-assigned values (conversation,
    subscription and dialog ids, receipt sequences), which are rewritten to what the target assigned,
    and tokens (a bot's bearer in the URL path too; the token command is told the side in
    MWTAP_TOKEN_SIDE: agent or consumer). Only loopback targets unless --allow-remote (host names
    must resolve to loopback only). The replay is recorded to -o OUT; compare it with
    `mwtap diff CAPTURE OUT`.

    Server side (--as-server): answers live clients with the recorded responses and notifications,
    recording the live connections to -o OUT when given."""
    from analysis.capture import CaptureError
    from recorder.replay.plan import PlanError, load_plan
    from recorder.replay.target import TargetError, check_target, target_tls
    from recorder.replay.tokens import TokenError, TokenSource

    try:
        plan = load_plan(capture).select(conn_ids)
        if out:
            refuse_to_overwrite([out], force)  # now, before anything runs; removed when it is created
        if as_server:
            _serve(plan, listen, out, force)
            return
        if not target:
            raise BadInput("--target URL is required (or --as-server)")
        if not out:
            raise BadInput("-o OUT is required: the replay is recorded there")
        addresses = check_target(target, allow_remote)
        tls = target_tls(target_ca)
        source = TokenSource.from_options(token, token_env, token_command)
    except (CaptureError, PlanError, TargetError, TokenError) as e:
        raise BadInput(str(e)) from None
    users = [c for c in plan.connections if c.uses_token]
    if users and source is None:
        how = ("an Authorization header" if users[0].header_token else "a bearer in its URL path"
               if users[0].path_token else "an InitConnection jwt")
        raise BadInput(f"{capture}: connection {users[0].id} used a token ({how}); the capture holds only its "
                       "redaction marker: give --token, --token-env or --token-command")
    from recorder.replay.tokens import TokenPool

    tokens = TokenPool(source)
    recording = _recording(out, force, lambda: tokens.secrets)
    _announce(plan, target, timing, out)
    result = _run_client(plan, target, tokens, recording, timing=timing, speed=speed, parallel=parallel,
                         fresh_ids=fresh_ids, wait_timeout=wait_timeout, addresses=addresses, tls=tls)
    if fmt == "json":
        import orjson
        sys.stdout.buffer.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    else:
        click.echo(render_result(result, verbose), nl=False)
    if result.interrupted:
        click.echo("mwtap replay: interrupted; the capture holds what was replayed so far", err=True)
        sys.exit(INTERRUPTED_EXIT)
    incomplete = result.incomplete
    if incomplete:
        unsent = sum(c.frames_unsent for c in incomplete)
        not_made = sum(1 for c in incomplete if not c.replayed)
        click.echo(f"mwtap replay: could not send everything: {unsent} of "
                   f"{sum(c.frames_total for c in result.connections)} frame(s) unsent, {not_made} of "
                   f"{len(result.connections)} connection(s) not made (see above; the capture is in {out})", err=True)
        sys.exit(FOUND_EXIT)  # a connection could not be made or frames were left unsent


def _recording(out: str, force: bool, secrets):
    """The replay's capture at `out` (redacting the tokens `secrets()` lists), or a one-line error."""
    from recorder.replay.recording import ReplayRecording
    from recorder.writer import creation_problem

    refuse_to_overwrite([out], force, remove=True)
    try:
        return ReplayRecording(out, secrets)
    except OSError as e:
        raise BadInput(f"cannot create {out}: {creation_problem(e)}") from None


def _announce(plan, target: str, timing: str, out: str) -> None:
    from analysis.redact import redact_url
    from recorder.replay.target import target_url

    frames = sum(len(c.frames) for c in plan.connections)
    click.echo(f"mwtap replay: {len(plan.connections)} connection(s), {frames} client frame(s) from {plan.path}, "
               f"timing {timing}, recording to {out}", err=True)
    for conn in plan.connections:
        auth = ("token in header" if conn.header_token else "bearer in the URL path" if conn.path_token
                else "token in InitConnection" if conn.init_tokens else "no token")
        if conn.uses_token:
            auth += f" (identity {conn.identity})"
        click.echo(f"  {conn.id}: {len(conn.frames)} frame(s), {conn.requests} request(s), {auth} "
                   f"-> {redact_url(target_url(target, conn.url))}", err=True)


def _run_client(plan, target: str, tokens, recording, **options):
    import asyncio

    from recorder.cli.progress import amount, frames
    from recorder.cli.signals import on_stop_signal
    from recorder.replay.client import ReplayOptions, Replayer

    total = sum(len(c.frames) for c in plan.connections)
    replayer = Replayer(plan, ReplayOptions(target, **options), tokens, recording,
                        log=lambda line: status.echo(f"  {line}"))

    async def main():
        on_stop_signal(replayer.request_stop)
        return await replayer.run()

    with amount("replay", lambda: (sum(r.result.frames_sent for r in replayer.replays), total), frames) as status:
        return asyncio.run(main())


def render_result(result, verbose: bool) -> str:
    lines = []
    for c in result.connections:
        codes = ", ".join(str(code) for code in c.close_codes) or "-"
        lines.append(f"connection {c.recorded} -> {', '.join(c.replayed) or '(not connected)'}")
        lines.append(f"  {c.frames_sent}/{c.frames_total} frames sent, {c.responses} responses, "
                     f"{c.notifications} notifications, close {codes}, {c.reconnects} reconnect(s)")
        lines.extend(f"  ! {event}" for event in c.events)
    kinds = Counter(s.kind for s in result.substitutions)
    lines.append(f"substitutions: {len(result.substitutions)}"
                 + (f" ({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}; -v lists each)"
                    if kinds and not verbose else ""))
    if result.substitutions and verbose:
        lines.append(f"  {'connection':10} {'frame':>5}  {'request':28} {'kind':8} recorded -> replayed")
        for s in result.substitutions:
            lines.append(f"  {short_id(s.conn):10} {s.n:>5}  {str(s.request_type):28} {s.kind:8} {s.recorded} -> {s.replayed}")
    return "\n".join(lines) + "\n"


def _serve(plan, listen: str, out: str | None, force: bool) -> None:
    import asyncio

    from analysis.capture import host_port
    from recorder.cli.record import is_loopback, parse_listen
    from recorder.cli.signals import stop_event
    from recorder.replay.mock_server import MockServer

    host, port = parse_listen(listen)
    if not is_loopback(host):
        click.echo(f"mwtap replay --as-server: warning: listening on {host}, not loopback: anyone who reaches it "
                   "is played the recording", err=True)

    async def main():
        stop = stop_event()
        server = MockServer(plan, host, port)
        if out:
            server.recording = _recording(out, force, lambda: server.issued)
        try:
            async with server:
                click.echo(f"mwtap replay --as-server: WebSocket {server.url()}")
                click.echo(f"mwtap replay --as-server: IDP       POST {server.idp_url()}/signup")
                click.echo(f"playing {len(plan.connections)} recorded connection(s) from {plan.path}; Ctrl-C to stop")
                await stop.wait()
        finally:
            if server.recording is not None:
                server.recording.finish()
        click.echo("mwtap replay --as-server: stopped" + (f"; the live connections are in {out}" if out else ""))

    try:
        asyncio.run(main())
    except OSError as e:
        raise BadInput(f"cannot listen on {host_port(host, port)}: {e.strerror or e}") from None
