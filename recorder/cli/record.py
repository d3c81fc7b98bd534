"""`mwtap record`: relay WebSocket traffic through mitmproxy and write it to a capture."""

from __future__ import annotations

import glob
import ipaddress
import os
from pathlib import Path

import click

from analysis.capture import DEFAULT_MAX_PAYLOAD, host_port
from recorder.cli import BadInput, refuse_to_overwrite

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT, or [IPV6]:PORT: an IPv6 address needs its brackets (in ::1:8080 the port is ambiguous)."""
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or (":" in host) != bracketed \
            or "[" in host or "]" in host:
        raise click.BadParameter(f"expected HOST:PORT or [IPV6]:PORT (PORT 0 picks a free one), not {value!r}",
                                 param_hint="--listen")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rotated_parts(out: Path) -> list[Path]:
    """The rotated parts an earlier recording left beside OUT (OUT.partN.jsonl): --force removes them
    with OUT, so that a new recording is never read together with the old one's parts."""
    from recorder.writer import part_path

    prefix, _, suffix = part_path(out, 2).name.rpartition("part2")
    return sorted(path for path in out.parent.glob(f"{glob.escape(prefix)}part*{glob.escape(suffix)}")
                  if path.name[len(prefix) + 4:len(path.name) - len(suffix)].isdigit())


def recording_status(recorder) -> str:
    """The live status line: connections open, frames, records dropped, capture size (all parts)."""
    from recorder.cli.progress import size

    writer = recorder.writer
    written = 0
    for path in writer.paths if writer else ():
        try:
            written += os.path.getsize(path)
        except OSError:  # a part not created yet
            pass
    return (f"record  {recorder.open_connections} connection(s) open, {recorder.messages} frames, "
            f"{recorder.dropped} dropped, capture {size(written)}")


@click.command()
@click.option("--upstream", metavar="URL", help="The WebSocket server to relay to: ws://HOST:PORT or wss://HOST:PORT "
              "(reverse proxy; clients connect to --listen instead).")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT",
              help="Where the proxy listens; port 0 picks a free port (printed).")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Capture file to create (JSONL, mode 0600).")
@click.option("--mode", metavar="MODE", help="A mitmproxy mode instead of --upstream, e.g. 'regular' "
              "(clients use the proxy as their HTTP proxy).")
@click.option("--rotate-mb", type=click.IntRange(min=0), default=0, show_default=True,
              help="Start a new part (OUT.partN.jsonl) every N MiB; 0 = one file.")
@click.option("--no-redact", is_flag=True, help="Keep tokens and cookies in the capture (redacted by default).")
@click.option("--max-payload", type=click.IntRange(min=0), default=DEFAULT_MAX_PAYLOAD, show_default=True,
              metavar="BYTES", help="Bytes kept of each message; longer ones are truncated (size keeps the length).")
@click.option("--live", is_flag=True, help="Check the Messaging Window protocol while recording and print each "
              "violation the moment it happens (time, connection, severity, rule, message).")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="Trust the wss upstream's certificate if signed by (or equal to) this PEM certificate.")
@click.option("--upstream-insecure", is_flag=True, help="Do not verify the wss upstream's certificate at all.")
@click.option("--force", is_flag=True, help="Overwrite OUT (and remove its rotated parts) if it exists.")
@click.option("--allow-shared-dir", is_flag=True, help="Write OUT even into a directory every user may write to "
              "(such as /tmp), which is refused otherwise.")
def record(upstream: str | None, listen: str, out: Path, mode: str | None, rotate_mb: int, no_redact: bool,
           max_payload: int, live: bool, force: bool, allow_shared_dir: bool, upstream_ca: Path | None,
           upstream_insecure: bool) -> None:
    """Relay WebSocket connections through mitmproxy and record every frame to OUT.

    Stop with Ctrl-C (or SIGTERM): everything is flushed and a summary is printed.
    """
    if (upstream is None) == (mode is None):
        raise click.UsageError("give exactly one of --upstream URL (reverse proxy) and --mode MODE")
    if upstream_ca is not None and upstream_insecure:
        raise click.UsageError("give at most one of --upstream-ca FILE and --upstream-insecure")
    host, port = parse_listen(listen)
    if not is_loopback(host):
        click.echo(f"mwtap record: warning: listening on {host}, not loopback: anyone who reaches it can use "
                   f"the proxy", err=True)
    if no_redact:
        click.echo("mwtap record: warning: --no-redact: tokens and cookies are written to the capture in clear",
                   err=True)
    if upstream_insecure:
        click.echo("mwtap record: warning: --upstream-insecure: the upstream's certificate is not verified; "
                   "anyone between the proxy and the upstream can read and change the traffic", err=True)
    if out.is_dir():
        raise BadInput(f"{out}: is a directory; -o names the capture file to create")
    refuse_to_overwrite([out, *rotated_parts(out)], force, remove=True)

    import asyncio

    from mitmproxy.exceptions import OptionsError

    try:
        asyncio.run(_run(upstream, out, host, port, mode, not no_redact, rotate_mb, max_payload, live, allow_shared_dir,
                         upstream_ca, upstream_insecure))
    except (OptionsError, OSError, ValueError) as e:
        raise BadInput(str(e)) from None


async def _run(upstream: str | None, out: Path, host: str, port: int, mode: str | None, redact: bool,
               rotate_mb: int, max_payload: int, live: bool, allow_shared_dir: bool, upstream_ca: Path | None,
               upstream_insecure: bool) -> None:
    import logging

    from recorder.cli.progress import EchoHandler, StatusLine
    from recorder.cli.signals import stop_event
    from recorder.proxy import RecordingProxy

    status = StatusLine(lambda: recording_status(proxy.recorder))
    handler = EchoHandler(status, logging.WARNING)
    handler.setFormatter(logging.Formatter("mwtap record: %(levelname)s: %(message)s"))

    stop = stop_event()
    proxy = RecordingProxy(upstream, out, listen_host=host, listen_port=port, mode=mode, redact=redact,
                           rotate_mb=rotate_mb, max_payload=max_payload,
                           live=(lambda line: status.echo(f"mwtap live: {line}", err=False)) if live else None,
                           force=allow_shared_dir,
                           upstream_ca=upstream_ca, upstream_insecure=upstream_insecure)
    async with proxy:
        # Only now: a failure to start (address in use, ...) is the one Error line, not mitmproxy's log too.
        logging.getLogger().addHandler(handler)
        target = upstream if upstream else f"mode {mode}"
        click.echo(f"mwtap record: listening on {host_port(host, proxy.port)} -> {target}; writing {out}")
        with status:
            await stop.wait()
    recorder = proxy.recorder
    parts = len(recorder.writer.paths) if recorder.writer else 1
    more = f" (+{parts - 1} rotated parts)" if parts > 1 else ""
    unrelayed = (f"; {recorder.unrelayed} messages that arrived while stopping were not relayed"
                 if recorder.unrelayed else "")
    click.echo(f"mwtap record: stopped; {recorder.messages} messages, {recorder.written} records written to "
               f"{out}{more}; {recorder.dropped} dropped{unrelayed}")
    if proxy.live is not None:
        click.echo(f"mwtap record: {proxy.live.violations} protocol violation(s) reported live")
