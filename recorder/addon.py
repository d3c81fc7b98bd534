"""The mwtap recorder, a mitmproxy addon: writes every WebSocket connection to a capture file.

    mitmdump -s recorder/addon.py --mode reverse:http://HOST:PORT --set mwtap_out=cap.jsonl

Options: `mwtap_out` (capture path; nothing is written while empty), `mwtap_redact` (default
true), `mwtap_rotate_mb` (0 = one file), `mwtap_max_payload` (bytes kept per message),
`mwtap_force` (write into a world-writable directory anyway), `mwtap_live` (report protocol
violations as they happen; recorder/live.py) and `mwtap_trim_messages` (see below). Add `--set
connection_strategy=lazy` (what `mwtap record` uses) to have an unreachable upstream recorded as
`refused`: with mitmproxy's default (eager) the client connection is closed before any request is
read, so there is nothing to record.
wss upstream with a private certificate: `--mode reverse:https://H:P --set ssl_verify_upstream_trusted_ca=ca.pem`.

mitmproxy keeps every message of a connection in `flow.websocket.messages` until the flow is
released; its flow file (`-w`), HAR dump (`hardump`), web UI and other scripts read that list.
The recorder leaves it whole unless `mwtap_trim_messages` is set, which keeps only the latest
message (memory flat over long connections). It cannot see who else reads the list, so only the
host that knows every addon sets it: `mwtap record`'s lean master does; under mitmdump it is off
unless the user turns it on.

Hooks run on mitmproxy's event loop and every message waits for them, so the per-message path
is kept small: one native call builds the record, redacts it only when a cheap substring check
says so and encodes it into the writer's buffer (`CaptureWriter.lines`), which is written out
when that call says it is full and on the recorder's 250 ms tick. A hook never raises into
mitmproxy: a failure is logged once per hook, counted in `errors`, and reported as lost in the
capture's next `drop` record.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import stat
import time
import uuid
from collections import Counter
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Callable, Iterable

import orjson
from mitmproxy import ctx, exceptions, http
from mitmproxy.net.http.url import hostport
from mitmproxy.version import VERSION as MITMPROXY_VERSION

from analysis._core import message_line
from analysis.capture import (C2S, CLOSE, DEFAULT_MAX_PAYLOAD, OPEN, REFUSED, S2C, authority, header_record,
                              host_port, request_url)
from analysis.protocol_errors import close_sides
from analysis.redact import redact_header_value, redact_headers, redact_text, redact_url, redaction_info
from recorder.live import LiveCheck
from recorder.pings import PingLogHandler
from recorder.writer import CaptureWriter, creation_problem

log = logging.getLogger(__name__)

Observer = Callable[[dict], None]
FLUSH_TICK = 0.25  # seconds between flushes of what is buffered (messages are written out by size or by it)
_REFUSED_MARK = "mwtap_refused"


def _guarded(hook: Callable) -> Callable:
    """Run a hook body so that no exception reaches mitmproxy (the frame is still relayed)."""
    name = hook.__name__

    @functools.wraps(hook)
    def run(self: Recorder, *args):
        try:
            return hook(self, *args)
        except Exception as e:  # noqa: BLE001 - a recorder bug must never stop the relay
            self._failed(name, e)
    return run


def _address(addr: tuple | None) -> str | None:
    return host_port(addr[0], addr[1]) if addr else None


def _header_pairs(headers: http.Headers) -> list[list[str]]:
    return [[name.decode("utf-8", "backslashreplace"), value.decode("utf-8", "backslashreplace")]
            for name, value in headers.fields]


def _is_upgrade(request: http.Request) -> bool:
    return "websocket" in request.headers.get("upgrade", "").lower()


def _check_private_directory(path: Path) -> None:
    """Refuse a directory every user may write to (mode o+w, /tmp included): another user can plant
    files there, e.g. a symlink named like the next rotated part, which the recorder would follow."""
    directory = path.parent
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return  # creating the file reports the problem
    if mode & stat.S_IWOTH:
        raise exceptions.OptionsError(
            f"mwtap_out: {directory} is writable by every user (mode {stat.S_IMODE(mode):o}); choose a private "
            f"directory for {path.name}, or write there anyway with --allow-shared-dir (mitmdump: --set mwtap_force=true)")


class Recorder:
    """Records WebSocket connections; every record goes to the capture file and to `observers`."""

    def __init__(self, observers: Iterable[Observer] = ()):
        self.observers = list(observers)
        self.writer: CaptureWriter | None = None
        self.redact = True
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.trim_messages = False
        self.recording_id = uuid.uuid4().hex
        self._started = time.time()
        self.messages = 0
        self.unrelayed = 0  # messages that arrived after the capture was closed, not relayed
        self.stopped = False
        self.errors: Counter[str] = Counter()
        self._next_n: dict[str, int] = {}
        self._conn_by_peer: dict[object, str] = {}
        self._pings = PingLogHandler(self._control_frame)
        self._tick: asyncio.TimerHandle | None = None

    @property
    def written(self) -> int:
        return self.writer.written if self.writer else 0

    @property
    def dropped(self) -> int:
        return self.writer.dropped if self.writer else 0

    @property
    def open_connections(self) -> int:
        return len(self._next_n)

    # -- lifecycle -------------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("mwtap_out", str, "", "mwtap: capture file to write (JSONL, created 0600).")
        loader.add_option("mwtap_redact", bool, True, "mwtap: redact tokens and cookies (with fingerprints).")
        loader.add_option("mwtap_rotate_mb", int, 0, "mwtap: start a new capture part every N MiB (0 = never).")
        loader.add_option("mwtap_max_payload", int, DEFAULT_MAX_PAYLOAD,
                          "mwtap: bytes of each message kept in the capture (longer ones are truncated).")
        loader.add_option("mwtap_force", bool, False,
                          "mwtap: write the capture even into a world-writable directory (such as /tmp).")
        loader.add_option("mwtap_trim_messages", bool, False,
                          "mwtap: keep only the latest message in flow.websocket.messages (flat memory); only "
                          "when nothing else reads them: flow files (-w), hardump, mitmweb, other scripts.")
        self._pings.install()

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        if "mwtap_redact" in updated:
            self.redact = options.mwtap_redact
        if "mwtap_max_payload" in updated:
            self.max_payload = options.mwtap_max_payload
        if "mwtap_trim_messages" in updated:
            self.trim_messages = options.mwtap_trim_messages
        if "mwtap_rotate_mb" in updated and self.writer:
            self.writer.rotate_bytes = options.mwtap_rotate_mb << 20
        if "mwtap_out" in updated:
            self._open(options.mwtap_out, options.mwtap_rotate_mb << 20)

    def _open(self, path: str, rotate_bytes: int) -> None:
        if self.writer:
            self.writer.close()
            self.writer = None
        if not path:
            return
        if not ctx.options.mwtap_force:
            _check_private_directory(Path(path))
        self._started = time.time()
        try:
            self.writer = CaptureWriter(path, self._header, rotate_bytes=rotate_bytes)
        except OSError as e:
            raise exceptions.OptionsError(f"mwtap_out: cannot create {path}: {creation_problem(e)}") from None

    def _header(self, part: int) -> dict:
        return header_record(self._started if part == 1 else time.time(), mwtap_version=package_version("mwtap"),
                             mitmproxy_version=MITMPROXY_VERSION, redaction=redaction_info(self.redact),
                             recording_id=self.recording_id, part=part)

    def running(self) -> None:
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(FLUSH_TICK, self._flush_tick)

    def _flush_tick(self) -> None:
        if self.writer and self.writer.pending:
            self.writer.flush()
        self._schedule_flush()

    def done(self) -> None:
        """Close the capture. mitmproxy ends the connections still open only after `done` and keeps
        relaying meanwhile; from here on the recorder stops what it could no longer record (see
        websocket_message), so the capture holds every message the proxy relayed."""
        for conn in list(self._next_n):
            self._end(conn, {"rec": CLOSE, "t": time.time(), "conn": conn, "code": 1006, "reason": None, "by": None,
                             "recorder_stopped": True})
        self.stopped = True
        if self._tick:
            self._tick.cancel()
            self._tick = None
        self._pings.uninstall()
        if self.writer:
            self.writer.close()

    # -- records ---------------------------------------------------------------------------------

    def _emit(self, record: dict) -> None:
        """The one way out for every record: the capture file, then the observers."""
        if self.stopped:
            return
        if self.writer:
            self.writer.write(record)
        self._notify(record)

    def _emit_line(self, line: bytes) -> None:
        """`_emit` for a record the core encoded: a dict is built only for observers."""
        if self.stopped:
            return
        if self.writer:
            self.writer.write_line(line)
        if self.observers:
            self._notify(orjson.loads(line))

    def _notify(self, record: dict) -> None:
        for observer in self.observers:
            try:
                observer(record)
            except Exception as e:  # noqa: BLE001 - an observer must never break recording
                self._failed("observer", e, lost=False)

    def _failed(self, kind: str, error: Exception, lost: bool = True) -> None:
        self.errors[kind] += 1
        if self.errors[kind] == 1:
            log.error("mwtap: %s failed (logged once, counted from now on): %r", kind, error, exc_info=error)
        if lost and self.writer:
            self.writer.note_lost(1, f"{kind} failed: {error!r}")

    # -- hooks -----------------------------------------------------------------------------------

    @_guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Bracket an IPv6 upstream in the Host header: in reverse mode mitmproxy (11, 12) writes it as
        `::1:9000`, which is not a valid Host (RFC 9110 §7.2 takes the URI's bracketed form)."""
        request = flow.request
        if ":" in request.host and request.host_header == hostport(request.scheme, request.host, request.port):
            request.host_header = authority(request.scheme, request.host, request.port)

    @_guarded
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None and _is_upgrade(flow.request):
            self._refused(flow)
        elif flow.websocket is not None and self.stopped:
            flow.kill()  # an upgrade completing while the proxy stops: it could not be recorded

    @_guarded
    def error(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None and _is_upgrade(flow.request):
            self._refused(flow)

    def _refused(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(_REFUSED_MARK):
            return
        flow.metadata[_REFUSED_MARK] = True
        request = flow.request
        url = request_url(request.scheme, request.host, request.port, request.path)
        self._emit({
            "rec": REFUSED, "t": time.time(), "conn": flow.id,
            "url": redact_url(url) if self.redact else url,
            "client": _address(flow.client_conn.peername),
            "status": flow.response.status_code if flow.response else None,
            "error": flow.error.msg if flow.error else None,
        })

    @_guarded
    def websocket_start(self, flow: http.HTTPFlow) -> None:
        request, response = flow.request, flow.response
        url = request_url(request.scheme, request.host, request.port, request.path)
        request_headers = _header_pairs(request.headers)
        response_headers = _header_pairs(response.headers)
        if self.redact:
            url = redact_url(url)
            request_headers = redact_headers(request_headers)
            response_headers = redact_headers(response_headers)
        peer = flow.client_conn.peername
        self._conn_by_peer[peer] = flow.id
        self._next_n.setdefault(flow.id, 0)
        protocol = response.headers.get("Sec-WebSocket-Protocol")
        self._emit({
            "rec": OPEN, "t": response.timestamp_end or time.time(), "conn": flow.id, "url": url,
            "client": _address(peer), "server": _address(flow.server_conn.peername or flow.server_conn.address),
            "t_request": request.timestamp_start,
            "request_headers": request_headers, "status": response.status_code, "response_headers": response_headers,
            "extensions": response.headers.get("Sec-WebSocket-Extensions"),
            "subprotocol": redact_header_value("Sec-WebSocket-Protocol", protocol) if protocol and self.redact
            else protocol,
            "tls": flow.client_conn.tls_established,
        })

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        messages = flow.websocket.messages
        if self.stopped:  # the capture is closed: relayed, the message would be missing from it
            messages[-1].drop()
            self.unrelayed += 1
            return
        try:
            self._message(flow.id, messages[-1])
        except Exception as e:  # noqa: BLE001 - as `_guarded`, without a second call on every message
            self._failed("_message", e)
        finally:
            if self.trim_messages:
                del messages[:-1]  # later addons still read messages[-1]

    def _message(self, conn: str, message) -> None:
        n = self._next_n.get(conn, 0)
        self._next_n[conn] = n + 1
        if self.observers:  # they take each record as a dict
            line = message_line(conn, message.timestamp, n, message.from_client, message.is_text, message.content,
                                self.max_payload, self.redact)
            self.messages += 1
            self._emit_line(line)
            return
        # One native call builds, redacts and encodes the record into the writer's buffer; it says
        # when the buffer is full (writing out by time is the tick's: `_flush_tick`).
        writer = self.writer
        full = writer is not None and writer.lines.message(conn, message.timestamp, n, message.from_client,
                                                           message.is_text, message.content, self.max_payload,
                                                           self.redact)
        self.messages += 1
        if full:
            writer.write_out()

    @_guarded
    def websocket_end(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self._next_n:  # already closed by `done`
            return
        ws = flow.websocket
        reason = ws.close_reason
        if reason and self.redact:
            reason = redact_text(reason)
        record = {"rec": CLOSE, "t": ws.timestamp_end or time.time(), "conn": flow.id, "code": ws.close_code,
                  "reason": reason, **close_sides(ws.closed_by_client, ws.close_code, ws.close_reason)}
        self._end(flow.id, record)

    def _end(self, conn: str, record: dict) -> None:
        del self._next_n[conn]
        for peer in [p for p, c in self._conn_by_peer.items() if c == conn]:
            del self._conn_by_peer[peer]
        self._emit(record)
        if self.writer:
            self.writer.flush()

    @_guarded
    def _control_frame(self, t: float, peer: object, kind: str, sender: str, payload: str) -> None:
        conn = self._conn_by_peer.get(peer)
        if conn is None:
            return
        if self.redact:
            payload = redact_text(payload)
        self._emit({"rec": kind, "t": t, "conn": conn, "dir": C2S if sender == "client" else S2C,
                    "payload": payload})


class ScriptRecorder(Recorder):
    """The recorder as `mitmdump -s recorder/addon.py` hosts it. mitmdump prints a script's traceback
    when its configure raises during startup, so an option refused then is logged as one line
    instead (mitmdump exits on an error logged during startup); once running, it is raised, and
    mitmproxy rejects the change."""

    def __init__(self) -> None:
        super().__init__()
        self._is_running = False

    def configure(self, updated: set[str]) -> None:
        try:
            super().configure(updated)
        except exceptions.OptionsError as e:
            if self._is_running:
                raise
            log.error(str(e))

    def running(self) -> None:
        self._is_running = True
        super().running()


_recorder = ScriptRecorder()
addons = [_recorder, LiveCheck(_recorder)]
