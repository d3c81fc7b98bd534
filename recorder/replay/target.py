"""Where a replay may send: only the URL the user gave, and only to loopback unless allowed; the
bearer an agent's URL carries in its path; the certificates a `wss` target is trusted by.

A host name is resolved and EVERY address it resolves to must be loopback (127.0.0.0/8, ::1);
otherwise the replay needs `--allow-remote`. The check runs before any connection is attempted,
and the replay then connects to the addresses that were checked, never resolving the name again (a
name that later resolves elsewhere cannot redirect it). It tries them in order, as any client tries
the addresses of a name: a server listening on only one of 127.0.0.1 and ::1 is still reached.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from urllib.parse import quote, urlsplit, urlunsplit

from analysis.capture import split_url


class TargetError(Exception):
    """A target the replay refuses (one line)."""


def target_url(target: str, recorded_url: str) -> str:
    """The URL to open: the target's, with the recorded path and query when the target has no path."""
    parts = urlsplit(target)
    if parts.path not in ("", "/") or parts.query:
        return target
    recorded = split_url(recorded_url)
    return urlunsplit((parts.scheme, parts.netloc, recorded.path or "/", recorded.query, ""))


def path_bearer(url: str) -> int | None:
    """Which segment of `url`'s path holds a bearer: the one after `/messaging/brand/` (an agent's)
    or `/messaging/consumer/` (a v2 consumer's); None when there is none."""
    segments = split_url(url).path.split("/")
    for i in range(len(segments) - 2):
        if segments[i] == "messaging" and segments[i + 1] in ("brand", "consumer") and segments[i + 2]:
            return i + 2
    return None


def with_path_bearer(url: str, token: str) -> str:
    """`url` with the bearer in its path (`path_bearer`) replaced by `token`."""
    index = path_bearer(url)
    if index is None:
        return url
    parts = split_url(url)
    segments = parts.path.split("/")
    segments[index] = quote(token, safe="")
    return urlunsplit(parts._replace(path="/".join(segments)))


def target_tls(ca: str | None) -> ssl.SSLContext | None:
    """The TLS context of a `wss` target trusted by the PEM file `ca` alone (None: the system's roots)."""
    if ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca)
    except ssl.SSLError as e:
        raise TargetError(f"--target-ca {ca}: not a PEM certificate ({e.reason or e})") from None
    except OSError as e:
        raise TargetError(f"--target-ca {ca}: {e.strerror or e}") from None


def check_target(target: str, allow_remote: bool) -> list[str]:
    """Refuse a target the replay may not send to; returns the checked loopback addresses to connect
    to, in the order to try them (none with `allow_remote`: the name is resolved as usual)."""
    expected = (f"--target {target!r}: expected ws://HOST:PORT[/PATH] or wss://… "
                "(an IPv6 address in brackets: ws://[::1]:PORT)")
    try:
        parts = urlsplit(target)
    except ValueError:  # a bracket without its pair
        raise TargetError(expected) from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TargetError(expected)
    try:
        parts.port
    except ValueError:
        raise TargetError(f"--target {target!r}: invalid port") from None
    if allow_remote:
        return []
    addresses = resolve(parts.hostname)
    remote = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    if remote:
        raise TargetError(f"--target {parts.hostname} is not a loopback address ({', '.join(remote)}); "
                          "replaying to another host needs --allow-remote")
    return addresses


def resolve(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise TargetError(f"--target {host}: cannot resolve the host name ({e.strerror})") from None
    return sorted({info[4][0].split("%")[0] for info in infos})
