"""`mwtap serve`: run the built-in Messaging Window server until SIGINT/SIGTERM."""

from __future__ import annotations

import click

from analysis.capture import host_port
from recorder.cli import BadInput
from recorder.cli.record import is_loopback, parse_listen
from recorder.server.config import DEFAULT_PORT, SEQUENCE_FAULTS


def parse_delay(values: tuple[str, ...]) -> dict[str, int]:
    delays = {}
    for value in values:
        request_type, sep, ms = value.partition("=")
        if not sep or not request_type or not ms.isdigit():
            raise click.BadParameter(f"{value!r}: expected REQUEST_TYPE=MILLISECONDS, e.g. ms.PublishEvent=500")
        delays[request_type] = int(ms)
    return delays


@click.command()
@click.option("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", show_default=True, metavar="HOST:PORT",
              help="Address to serve the WebSocket and IDP endpoints on (port 0: any free port).")
@click.option("--token-lifetime", type=float, default=3600.0, show_default=True,
              help="Seconds a token is valid; then the connection is closed with 4401.")
@click.option("--identity-window", type=float, default=None,
              help="Seconds a signup identity is valid without extension; then 4407. Default: never.")
@click.option("--idle-timeout", type=float, default=60.0, show_default=True,
              help="Close a connection whose client sent nothing (no frame, no ping) for this long.")
@click.option("--idle-close-code", type=int, default=1000, show_default=True, help="Close code for idle connections.")
@click.option("--agent-reply-delay", type=float, default=0.5, show_default=True,
              help="Seconds the built-in agent types before answering.")
@click.option("--agent-close-after-messages", type=int, default=None,
              help="The agent closes a conversation after answering this many consumer messages.")
@click.option("--agent-close-after-seconds", type=float, default=None,
              help="The agent closes a conversation this many seconds after it opened.")
@click.option("--delay", "delays", multiple=True, metavar="TYPE=MS",
              help="Fault: delay responses to a request type, e.g. --delay ms.PublishEvent=500 (repeatable).")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fault: share of responses never sent.")
@click.option("--sequence-fault", type=click.Choice(SEQUENCE_FAULTS), default=None,
              help="Fault: duplicate or skip some event sequence numbers.")
@click.option("--sequence-fault-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of sequenced events hit by --sequence-fault.")
@click.option("--close-after", type=float, default=None,
              help="Fault: close every connection this many seconds after it opened.")
@click.option("--close-code", type=int, default=1011, show_default=True, help="Close code used by --close-after.")
@click.option("--unknown-subscription-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fault: share of conversation notifications followed by one for a subscription never issued.")
@click.option("--seed", type=int, default=None, help="Seed of the fault RNG, for repeatable runs.")
@click.option("--max-outbox", type=click.IntRange(1), default=1000, show_default=True,
              help="Limit: frames waiting for one client; a client that lets more pile up is closed with 1013.")
@click.option("--max-subscriptions", type=click.IntRange(1), default=100, show_default=True,
              help="Limit: conversation subscriptions per connection; more are answered 429.")
@click.option("--max-conversations", type=click.IntRange(1), default=100, show_default=True,
              help="Limit: conversations kept per consumer (the oldest closed one makes room; all open: 429).")
@click.option("--max-events", type=click.IntRange(1), default=10_000, show_default=True,
              help="Limit: events a consumer may publish into one conversation; more are answered 429.")
@click.option("--retention", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Seconds a consumer's conversations are kept after its last connection closed.")
@click.option("--tls", "tls_cert", type=click.Path(dir_okay=False, writable=True), default=None, metavar="CERT",
              help="Serve https/wss with a certificate generated now and written to CERT (PEM): "
                   "node-agent-sdk needs TLS; run it with NODE_EXTRA_CA_CERTS=CERT.")
@click.option("--agent-session-lifetime", type=click.FloatRange(min=0, min_open=True), default=3600.0,
              show_default=True, help="Seconds an agent login lives without a refresh; then its sockets "
                                      "are closed with 4401.")
@click.option("--ring-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds a bot has to accept a ring before the built-in agent takes the conversation.")
@click.option("--advertise", default=None, metavar="HOST:PORT",
              help="The address the agent's domain lookup names (default: the one it was asked on); "
                   "give mwtap record's --listen address to record bots.")
def serve(listen, token_lifetime, identity_window, idle_timeout, idle_close_code, agent_reply_delay,
          agent_close_after_messages, agent_close_after_seconds, delays, drop_rate, sequence_fault,
          sequence_fault_rate, close_after, close_code, unknown_subscription_rate, seed,
          max_outbox, max_subscriptions, max_conversations, max_events, retention, tls_cert,
          agent_session_lifetime, ring_timeout, advertise) -> None:
    """Run the built-in Messaging Window server: consumer WebSocket and IDP (signup/authenticate, with
    CORS), the agent (bot) side as node-agent-sdk uses it (domain lookup, login, refresh, brand
    WebSocket) on one port, and a built-in agent, with optional fault injection. All faults are off by
    default; the limits bound the server's memory whatever clients do."""
    import asyncio
    import logging

    from recorder.server import ServerConfig

    host, port = parse_listen(listen)
    config = ServerConfig(
        token_lifetime=token_lifetime, identity_window=identity_window, idle_timeout=idle_timeout,
        idle_close_code=idle_close_code, agent_reply_delay=agent_reply_delay,
        agent_close_after_messages=agent_close_after_messages, agent_close_after_seconds=agent_close_after_seconds,
        response_delays_ms=parse_delay(delays), drop_rate=drop_rate, sequence_fault=sequence_fault,
        sequence_fault_rate=sequence_fault_rate, close_after=close_after, close_code=close_code,
        unknown_subscription_rate=unknown_subscription_rate, seed=seed, max_outbox=max_outbox,
        max_subscriptions=max_subscriptions, max_conversations=max_conversations, max_events=max_events,
        retention=retention, agent_session_lifetime=agent_session_lifetime, ring_timeout=ring_timeout,
        advertise=advertise)
    if advertise is not None:
        try:
            parse_listen(advertise)  # the same HOST:PORT form, checked now
        except click.BadParameter as e:
            raise click.BadParameter(e.message, param_hint="--advertise") from None
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}, which is not a loopback address: "
                   "anyone who can reach it can use this fake server", err=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)  # one line per connection is ours
    tls = None
    if tls_cert:
        from recorder.server.tls import server_context
        try:
            tls = server_context(tls_cert, host)
        except OSError as e:
            raise click.BadParameter(f"cannot write the certificate to {tls_cert}: {e.strerror or e}",
                                     param_hint="--tls") from None
    try:
        asyncio.run(_serve(config, host, port, tls, tls_cert))
    except OSError as e:
        raise BadInput(f"cannot listen on {host_port(host, port)}: {e.strerror or e}") from None


async def _serve(config, host: str, port: int, tls, tls_cert: str | None) -> None:
    from recorder.cli.signals import stop_event
    from recorder.server import DEFAULT_ACCOUNT, MessagingServer

    stop = stop_event()
    async with MessagingServer(config, host, port, tls) as server:
        click.echo(f"mwtap serve: WebSocket {server.url(DEFAULT_ACCOUNT)}")
        click.echo(f"mwtap serve: IDP       POST {server.idp_url(DEFAULT_ACCOUNT)}/signup "
                   "(also /authenticate, /anonymous/authorize, /app/{connector}/authenticate)")
        click.echo(f"mwtap serve: agents    csdsDomain {host_port(host, server.port)} (login with any username "
                   "and password; brand WebSocket /ws_api/account/{account}/messaging/brand/{bearer})")
        if tls_cert:
            click.echo(f"mwtap serve: TLS certificate {tls_cert} (Node: NODE_EXTRA_CA_CERTS={tls_cert})")
        click.echo("(any account id works in both paths; Ctrl-C to stop)")
        await stop.wait()
    click.echo("mwtap serve: stopped")
