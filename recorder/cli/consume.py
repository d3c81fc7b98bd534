"""`mwtap consume`: scripted Messaging Window consumers against a server, to drive traffic through
record, serve, replay or a proxy without writing code; `mwtap token`: one token from a server's IDP."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections import Counter

import click

from recorder.cli import FOUND_EXIT, BadInput
from recorder.consumer import MISBEHAVIOURS, idp_url_for

RECONNECT_DELAY = 1.5  # above analyze's --min-reconnect-delay (1 s): well-behaved consumers are no fast-reconnect


def parse_behaviours(ctx, param, values: tuple[str, ...]) -> list[str]:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in MISBEHAVIOURS]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(MISBEHAVIOURS)}")
    return names


BEHAVIOURS_EPILOG = "\b\nBehaviours (--behaviour NAME), each tripping the analysis rule named last:\n" + "\n".join(
    f"  {name}\n" + textwrap.fill(what, 76, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
    for name, (_, what) in MISBEHAVIOURS.items())


@click.command(epilog=BEHAVIOURS_EPILOG)
@click.argument("url")
@click.option("--consumers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Consumers running at once, each with its own identity.")
@click.option("--behaviour", "behaviours", multiple=True, callback=parse_behaviours, metavar="NAME[,NAME…]",
              help="Misbehave on purpose (repeatable; names below).")
@click.option("--messages", type=click.IntRange(min=1), default=None,
              help="Texts each consumer sends before closing its conversation  [default: 3; no limit with --duration]")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after which the consumers close their conversations and disconnect.")
@click.option("--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between the agent's answer and the next text.")
@click.option("--auth", type=click.Choice(["header", "init"]), default="header", show_default=True,
              help="Token in the Authorization header or in an InitConnection request.")
@click.option("--keepalive", type=click.Choice(["ping", "getclock"]), default="ping", show_default=True)
@click.option("--keepalive-interval", type=click.FloatRange(min=0.1), default=20.0, show_default=True)
@click.option("--idp", metavar="URL", help="IDP base for the signup call (POST URL/signup)  "
              "[default: http(s)://HOST/api/account/ACCOUNT of URL, as mwtap serve has it]")
@click.option("--token", help="Token for every consumer (instead of the IDP's signup).")
@click.option("--token-env", metavar="NAME", help="Read the token from this environment variable.")
@click.option("--token-command", metavar="CMD", help="Shell command printing a token; run for each consumer and "
              "again on 4401/4407 (with MWTAP_PREVIOUS_TOKEN). Its output is never logged.")
def consume(url, consumers, behaviours, messages, duration, interval, auth, keepalive, keepalive_interval, idp,
            token, token_env, token_command) -> None:
    """Run scripted consumers against the consumer WebSocket URL, e.g.
    ws://127.0.0.1:8765/ws_api/account/mwtap/messaging/consumer?v=3 (mwtap serve, or mwtap record in
    front of it). Each gets a token, subscribes to its conversations, requests one, sends texts and
    ACCEPTs and READs the agent's answers, keeps alive, closes the conversation and sends CSAT;
    reconnects after closes (a fresh token after 4401/4407). Ctrl-C wraps up early.

    Prints what happened; exit status 1 when a consumer could not connect, 2 on bad usage."""
    import asyncio

    from analysis.redact import redact_url
    from recorder.consumer import ConsumerConfig
    from recorder.replay.tokens import TokenError, TokenSource

    if not url.startswith(("ws://", "wss://")):
        raise BadInput(f"{url}: expected a ws:// or wss:// URL")
    try:
        source = TokenSource.from_options(token, token_env, token_command)
    except TokenError as e:
        raise BadInput(str(e)) from None
    if source is not None and idp is not None:
        raise BadInput("give --idp or a token option, not both")
    idp_url = None if source is not None else idp_url_for(idp or url)
    if source is None and idp_url is None:
        raise BadInput(f"{idp or url}: names no account (/ws_api/account/ACCOUNT/ or /api/account/ACCOUNT); "
                         "give --idp URL or --token, --token-env or --token-command")
    config = ConsumerConfig(
        auth=auth, keepalive=keepalive, keepalive_interval=keepalive_interval, message_interval=interval,
        messages=messages if messages or duration else 3, duration=duration, reconnect_delay=RECONNECT_DELAY,
    ).misbehaving(behaviours)
    tokens = f"POST {idp_url}/signup" if idp_url else "the given token" if source.value else "--token-command"
    click.echo(f"mwtap consume: {consumers} consumer(s) -> {redact_url(url)}; tokens from {redact_url(tokens)}"
               + (f"; misbehaving: {', '.join(behaviours)}" if behaviours else ""), err=True)
    started = time.monotonic()
    stats = asyncio.run(_run(url, idp_url or _fetcher(source), config, consumers, started))
    click.echo(summary(stats, time.monotonic() - started), nl=False)
    failed = Counter(s.error for s in stats if not s.connections)
    for error, n in failed.items():
        click.echo(f"mwtap consume: {n} consumer(s) could not connect: {redact_url(error)}", err=True)
    if failed:
        sys.exit(FOUND_EXIT)


def _fetcher(source):
    """The replay's token source as the consumer's TokenFetch (each consumer is its own identity)."""
    from recorder.consumer import TokenUnavailable
    from recorder.replay.tokens import TokenError

    async def fetch(previous: str | None, reason: str) -> str:
        try:
            return await source.fetch(None, reason, previous)
        except TokenError as e:
            raise TokenUnavailable(str(e)) from None
    return fetch


async def _run(url: str, tokens, config, count: int, started: float) -> list:
    import asyncio

    from recorder.cli.progress import StatusLine
    from recorder.cli.signals import on_stop_signal
    from recorder.consumer import ScriptedConsumer

    stop = asyncio.Event()
    on_stop_signal(stop.set)
    running = [ScriptedConsumer(url, tokens, config, stop) for _ in range(count)]
    stats = [c.stats for c in running]
    with StatusLine(lambda: f"consume  {time.monotonic() - started:.0f} s, "
                            f"{sum(s.connections for s in stats)} connection(s), "
                            f"{sum(s.requests_sent for s in stats)} request(s) sent, "
                            f"{sum(s.responses for s in stats)} answered, "
                            f"{sum(s.messages_sent for s in stats)} text(s)"):
        return await asyncio.gather(*(c.run() for c in running))


def summary(stats: list, seconds: float) -> str:
    total = {field: sum(getattr(s, field) for s in stats) for field in (
        "connections", "reconnects", "requests_sent", "responses", "error_responses", "request_timeouts",
        "messages_sent", "agent_messages")}
    closes = Counter(code for s in stats for code in s.close_codes)
    close_text = ", ".join(f"{'none (failed)' if code is None else code} x{n}"
                           for code, n in sorted(closes.items(), key=lambda item: (item[0] is None, item[0] or 0)))
    return (f"consumers    {len(stats)} in {seconds:.1f} s, {sum(s.completed for s in stats)} finished their script\n"
            f"connections  {total['connections']} ({total['reconnects']} reconnect(s))\n"
            f"requests     {total['requests_sent']} sent, {total['responses']} answered "
            f"({total['error_responses']} with an error code), {total['request_timeouts']} timed out\n"
            f"texts        {total['messages_sent']} sent, {total['agent_messages']} agent message(s) received\n"
            f"closes       {close_text or '-'}\n")


@click.command()
@click.argument("url")
def token(url: str) -> None:
    """Print a token from the IDP of the server URL points to (its signup call): URL is the consumer
    WebSocket URL (ws://HOST:PORT/ws_api/account/ACCOUNT/…) or the IDP's (http://HOST:PORT/api/account/ACCOUNT),
    as mwtap serve prints them. For replay's --token-command: when MWTAP_PREVIOUS_TOKEN is set (after
    a 4401/4407), the token extends that token's identity."""
    from recorder.consumer import TokenUnavailable, signup

    idp_url = idp_url_for(url)
    if idp_url is None:
        raise BadInput(f"{url}: names no account (/ws_api/account/ACCOUNT/ or /api/account/ACCOUNT)")
    try:
        click.echo(signup(idp_url, os.environ.get("MWTAP_PREVIOUS_TOKEN") or None))
    except TokenUnavailable as e:
        raise click.ClickException(str(e)) from None  # the IDP could not be reached: exit 1, as consume's
