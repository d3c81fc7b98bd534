"""Recording a wss:// upstream named by HOST NAME (as users record wss://<host>.liveperson.net): the
proxy must send SNI and verify the certificate against the name. A real TLS websockets server on
"localhost" (bound to the loopback addresses the name resolves to), `mwtap record` and plain
`mitmdump -s recorder/addon.py` as subprocesses, a plain ws:// client, then the capture checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from cryptography import x509
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from analysis.capture import CaptureFile, host_port, payload_bytes
from conftest import Processes, free_port, wait_port
from test_record_e2e import RECORDERS, TIMEOUT, recorder_command, server_handler
from test_record_wss import PATH, REQUEST, RESPONSE, server_context, start_wss_recorder, write_certificate

HOST = "localhost"


@pytest.fixture(scope="module")
def localhost_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """Self-signed, SAN DNS:localhost only (no IP address): only the name can match."""
    return write_certificate(tmp_path_factory.mktemp("tls-localhost"), x509.DNSName(HOST))


@pytest.fixture(scope="module")
def other_name_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """Self-signed, SAN DNS:other.test: trusted as a CA but issued for another name."""
    return write_certificate(tmp_path_factory.mktemp("tls-other"), x509.DNSName("other.test"))


def localhost_addresses() -> list[str]:
    """The addresses "localhost" resolves to here (127.0.0.1, maybe ::1), each checked to be loopback."""
    addresses = sorted({info[4][0] for info in socket.getaddrinfo(HOST, None, type=socket.SOCK_STREAM)})
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    return addresses


def start_hostname_recorder(procs: Processes, kind: str, out: Path,
                            ca: Path) -> tuple[subprocess.Popen, int, int]:
    """The recorder of `kind` in front of wss://localhost:PORT, trusting the certificate `ca`."""
    if kind == "mwtap":
        return start_wss_recorder(procs, out, "--upstream-ca", str(ca), host=HOST)
    server_port, proxy_port = free_port(), free_port()
    # confdir set explicitly: mitmproxy then loads its CA store when the option is set, not only once it
    # runs. Otherwise, with mitmproxy 12 (its tlsconfig `request` hook serves a CRL), a request that comes
    # after the port opens but before `running` fails there (certstore None) and mitmdump exits ("Error
    # logged during startup"): a third to half of the runs here, where lazy connections read it at once.
    command = recorder_command(kind, server_port, proxy_port, out, f"ssl_verify_upstream_trusted_ca={ca}",
                               "connection_strategy=lazy", f"confdir={out.parent / 'mitmproxy-conf'}", quiet=False)
    command[command.index("--mode") + 1] = f"reverse:https://{HOST}:{server_port}"
    proc = procs.start(command, kind)
    wait_port(proxy_port, proc=proc)
    return proc, server_port, proxy_port


def serve_as_localhost(certificate: tuple[Path, Path], port: int, received_sni: list[str | None]):
    """The test server as wss://localhost:PORT on the loopback addresses; every TLS handshake appends
    the SNI name the client sent to `received_sni` (None: none)."""
    context = server_context(certificate)
    context.sni_callback = lambda _ssl_object, server_name, _context: received_sni.append(server_name)
    return serve(server_handler, localhost_addresses(), port, ssl=context, ping_interval=None)


def through_recorder(procs: Processes, kind: str, out: Path, certificate: tuple[Path, Path],
                     client: Callable[[str], Awaitable[Any]]) -> tuple[Any, list[str | None], int, str]:
    """Run `client(proxy_url)` through the recorder of `kind` in front of wss://localhost serving
    `certificate` (which the recorder trusts), then stop the recorder.
    Returns what the client returned, the SNI names the server received, its port and the recorder's log."""
    proc, server_port, proxy_port = start_hostname_recorder(procs, kind, out, certificate[0])
    received_sni: list[str | None] = []

    async def session() -> Any:
        async with serve_as_localhost(certificate, server_port, received_sni):
            return await client(f"ws://127.0.0.1:{proxy_port}{PATH}")
    result = asyncio.run(session())
    assert procs.stop(proc) == 0, proc.log_path.read_text()
    return result, received_sni, server_port, proc.log_path.read_text()


async def request_and_close(url: str) -> None:
    async with connect(url, proxy=None, ping_interval=None) as ws:
        await ws.send(REQUEST)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == RESPONSE
        await ws.close(1000, "bye")


async def rejected_upgrade(url: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, proxy=None, open_timeout=TIMEOUT)
    return refused.value


@pytest.mark.parametrize("kind", RECORDERS)
def test_wss_upstream_by_host_name_sends_sni_and_is_recorded(kind, localhost_certificate, procs, tmp_path):
    out = tmp_path / "wss-hostname.jsonl"
    _, received_sni, server_port, _ = through_recorder(procs, kind, out, localhost_certificate, request_and_close)
    assert received_sni == [HOST]

    capture = CaptureFile(str(out))
    records = list(capture.records())
    assert capture.damage == []
    assert [r["rec"] for r in records] == ["open", "msg", "msg", "close"]
    opened = records[0]
    # url: the name the proxy was given; server: the address it connected to; Host: rewritten to the upstream
    assert opened["url"] == f"wss://{HOST}:{server_port}{PATH}"
    assert opened["server"] in {host_port(address, server_port) for address in localhost_addresses()}
    assert dict(opened["request_headers"])["Host"] == f"{HOST}:{server_port}"
    assert (opened["status"], opened["tls"]) == (101, False)
    assert [(r["dir"], payload_bytes(r)) for r in records[1:3]] == [("c2s", REQUEST.encode()),
                                                                    ("s2c", RESPONSE.encode())]
    assert (records[2]["type"], records[2]["reqId"]) == ("GetClockResponse", "7")
    assert (records[-1]["code"], records[-1]["reason"], records[-1]["by"]) == (1000, "bye", "client")


@pytest.mark.parametrize("kind", RECORDERS)
def test_certificate_for_another_name_is_refused(kind, other_name_certificate, procs, tmp_path):
    out = tmp_path / "wrong-name.jsonl"
    rejection, received_sni, server_port, log = through_recorder(procs, kind, out, other_name_certificate,
                                                                 rejected_upgrade)
    assert received_sni == [HOST]  # the name was sent; the certificate then failed the check against it
    # mitmproxy 11.0.2 and 12.3.1 both say "Certificate verify failed: hostname mismatch" (OpenSSL's text)
    assert rejection.response.status_code == 502
    assert "hostname mismatch" in rejection.response.body.decode().lower()
    assert "Server TLS handshake failed" in log

    records = list(CaptureFile(str(out)).records())
    assert [r["rec"] for r in records] == ["refused"]
    refused = records[0]
    assert (refused["url"], refused["status"]) == (f"wss://{HOST}:{server_port}{PATH}", None)
    assert refused["error"].startswith("Certificate verify failed") and "hostname mismatch" in refused["error"].lower()
