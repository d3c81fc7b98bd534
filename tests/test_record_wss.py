"""`mwtap record` in front of a wss:// upstream with a self-signed certificate: a real websockets
server with TLS, the recorder as a subprocess, a plain ws:// client, then the capture checked."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from analysis.capture import CaptureFile, payload_bytes
from conftest import BIN, Processes, free_port, wait_port
from test_record_e2e import TIMEOUT, server_handler

REQUEST = json.dumps({"kind": "req", "id": 7, "type": "GetClock"})
RESPONSE = json.dumps({"kind": "resp", "reqId": "7", "code": 200, "type": "GetClockResponse",
                       "body": {"currentTime": 1}})
PATH = "/ws_api/account/123/messaging/consumer?v=3"


def write_certificate(directory: Path, *names: x509.GeneralName) -> tuple[Path, Path]:
    """A self-signed certificate whose subject alternative names are `names` (cert.pem, key.pem in `directory`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mwtap test upstream")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem)."""
    return write_certificate(tmp_path_factory.mktemp("tls"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def start_wss_recorder(procs: Processes, out: Path, *extra: str,
                       host: str = "127.0.0.1") -> tuple[subprocess.Popen, int, int]:
    server_port, proxy_port = free_port(), free_port()
    proc = procs.start([str(BIN / "mwtap"), "record", "--upstream", f"wss://{host}:{server_port}",
                        "--listen", f"127.0.0.1:{proxy_port}", "-o", str(out), *extra], "mwtap")
    wait_port(proxy_port, proc=proc)
    return proc, server_port, proxy_port


@pytest.mark.parametrize("trust", ["ca", "insecure"])
def test_wss_upstream_recorded(trust, certificate, procs, tmp_path):
    out = tmp_path / "wss.jsonl"
    options = ["--upstream-ca", str(certificate[0])] if trust == "ca" else ["--upstream-insecure"]
    proc, server_port, proxy_port = start_wss_recorder(procs, out, *options)

    async def session() -> None:
        async with serve(server_handler, "127.0.0.1", server_port, ssl=server_context(certificate),
                         ping_interval=None):
            async with connect(f"ws://127.0.0.1:{proxy_port}{PATH}", proxy=None, ping_interval=None) as ws:
                await ws.send(REQUEST)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == RESPONSE
                await asyncio.wait_for(await ws.ping(b"alive"), TIMEOUT)
                await ws.send("echo me")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "echo me"
                await ws.close(1000, "bye")
    asyncio.run(session())
    assert procs.stop(proc) == 0
    log = proc.log_path.read_text()
    assert ("upstream's certificate is not verified" in log) == (trust == "insecure")

    capture = CaptureFile(str(out))
    records = list(capture.records())
    assert capture.damage == []
    assert [r["rec"] for r in records] == ["open", "msg", "msg", "ping", "pong", "msg", "msg", "close"]
    opened = records[0]
    assert opened["url"] == f"wss://127.0.0.1:{server_port}{PATH}"
    assert (opened["status"], opened["server"], opened["tls"]) == (101, f"127.0.0.1:{server_port}", False)
    msgs = [r for r in records if r["rec"] == "msg"]
    assert [(r["dir"], payload_bytes(r)) for r in msgs] == [
        ("c2s", REQUEST.encode()), ("s2c", RESPONSE.encode()), ("c2s", b"echo me"), ("s2c", b"echo me")]
    assert [r["n"] for r in msgs] == [0, 1, 2, 3]
    assert (msgs[1]["type"], msgs[1]["reqId"]) == ("GetClockResponse", "7")
    assert [(r["rec"], r["dir"], r["payload"]) for r in records if r["rec"] in ("ping", "pong")] == [
        ("ping", "c2s", "b'alive'"), ("pong", "s2c", "b'alive'")]
    assert (records[-1]["code"], records[-1]["reason"], records[-1]["by"]) == (1000, "bye", "client")


def test_untrusted_upstream_certificate_refused(certificate, procs, tmp_path):
    out = tmp_path / "refused.jsonl"
    proc, server_port, proxy_port = start_wss_recorder(procs, out)

    async def session() -> InvalidStatus:
        async with serve(server_handler, "127.0.0.1", server_port, ssl=server_context(certificate)):
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{proxy_port}{PATH}", proxy=None, open_timeout=TIMEOUT)
            return refused.value
    rejection = asyncio.run(session())
    assert procs.stop(proc) == 0
    # mitmproxy answers the client itself with 502; the upstream answered nothing (status null)
    assert rejection.response.status_code == 502
    assert "Certificate verify failed" in rejection.response.body.decode()
    assert "Server TLS handshake failed" in proc.log_path.read_text()

    records = list(CaptureFile(str(out)).records())
    assert [r["rec"] for r in records] == ["refused"]
    refused = records[0]
    assert refused["url"] == f"wss://127.0.0.1:{server_port}{PATH}"
    assert (refused["status"], refused["error"]) == (None, "Certificate verify failed: self-signed certificate")


def test_bad_upstream_trust_options_are_one_line_errors(tmp_path):
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    out = tmp_path / "never.jsonl"
    base = [str(BIN / "mwtap"), "record", "--upstream", "wss://127.0.0.1:9", "--listen", "127.0.0.1:0", "-o", str(out)]
    cases = [(["--upstream-ca", str(not_pem)], f"{not_pem}: not a PEM certificate"),
             (["--upstream-ca", str(tmp_path / "missing.pem")], "does not exist"),
             (["--upstream-ca", str(not_pem), "--upstream-insecure"], "at most one of --upstream-ca")]
    for extra, message in cases:
        result = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not out.exists()
