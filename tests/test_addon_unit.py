"""recorder.addon.Recorder driven with mitmproxy's test flows: records, trimming, failures contained."""

from __future__ import annotations

import asyncio
import time

import pytest
from mitmproxy import exceptions, http
from mitmproxy.flow import Error
from mitmproxy.test import taddons, tflow
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from analysis.capture import CaptureFile
from recorder.addon import Recorder, ScriptRecorder


def ws_flow(*messages: WebSocketMessage) -> http.HTTPFlow:
    flow = tflow.twebsocketflow(messages=False)
    flow.websocket.messages[:] = messages  # twebsocketflow comes with messages of its own
    return flow


def text(content: bytes, from_client: bool = True) -> WebSocketMessage:
    return WebSocketMessage(Opcode.TEXT, from_client, content, time.time())


def run_messages(recorder: Recorder, flow: http.HTTPFlow, *messages: WebSocketMessage) -> None:
    for message in messages:
        flow.websocket.messages.append(message)
        recorder.websocket_message(flow)


@pytest.mark.parametrize("trim", [False, True])
def test_messages_are_numbered_recorded_and_trimmed_only_when_asked(tmp_path, trim):
    seen: list[dict] = []
    recorder = Recorder(observers=[seen.append])
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, mwtap_out=str(tmp_path / "c.jsonl"), mwtap_trim_messages=trim)
        flow = ws_flow()
        recorder.websocket_start(flow)
        run_messages(recorder, flow, text(b'{"kind":"req","id":1,"type":"GetClock"}'), text(b"ok\xff", False),
                     WebSocketMessage(Opcode.BINARY, True, b"\x00\x01", time.time()))
        # trimmed, the last one kept for later addons; else whole for -w, hardump, mitmweb
        assert len(flow.websocket.messages) == (1 if trim else 3)
        recorder.websocket_end(flow)
        recorder.done()
    kinds = [r["rec"] for r in seen]
    assert kinds == ["open", "msg", "msg", "msg", "close"]
    first, bad_utf8, binary = seen[1:4]
    assert (first["n"], first["id"], first["type"]) == (0, "1", "GetClock")
    assert (bad_utf8["n"], bad_utf8["utf8"], bad_utf8["b64"], bad_utf8["dir"]) == (1, False, "b2v/", "s2c")
    assert (binary["op"], binary["b64"]) == ("binary", "AAE=")
    assert seen[0]["url"] == "ws://example.com/ws" and seen[0]["status"] == 101
    assert list(CaptureFile(str(tmp_path / "c.jsonl")).records()) == seen


def test_a_failing_hook_is_counted_and_does_not_propagate(tmp_path, caplog):
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, mwtap_out=str(tmp_path / "c.jsonl"))
        flow = ws_flow()
        broken = [text(b"x"), text(b"y")]
        for message in broken:
            message.content = None  # type: ignore[assignment] - a message the recorder cannot handle
        run_messages(recorder, flow, *broken, text(b"fine"))
        assert len(flow.websocket.messages) == 3
        recorder.done()
    assert recorder.errors["_message"] == 2
    assert sum("failed (logged once" in r.getMessage() for r in caplog.records) == 1
    records = list(CaptureFile(str(tmp_path / "c.jsonl")).records())
    assert [r["rec"] for r in records] == ["drop", "msg", "close"] and records[0]["count"] == 2
    assert records[1]["text"] == "fine" and records[1]["n"] == 2


def test_observer_errors_never_break_recording(tmp_path):
    def broken_observer(record: dict) -> None:
        raise RuntimeError("checker bug")
    recorder = Recorder(observers=[broken_observer])
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, mwtap_out=str(tmp_path / "c.jsonl"))
        run_messages(recorder, ws_flow(), text(b"a"), text(b"b"))
        recorder.done()
    assert recorder.errors["observer"] == 3 and recorder.dropped == 0  # 2 msg + the close at `done`
    records = list(CaptureFile(str(tmp_path / "c.jsonl")).records())
    assert [r.get("text") for r in records] == ["a", "b", None]
    assert (records[-1]["rec"], records[-1]["code"], records[-1]["by"]) == ("close", 1006, None)
    assert records[-1]["recorder_stopped"] is True  # the analysis takes it as open at the end


def test_refused_upgrade_recorded_once(tmp_path):
    seen: list[dict] = []
    recorder = Recorder(observers=[seen.append])
    with taddons.context(recorder):
        flow = tflow.twebsocketflow(messages=False)
        flow.websocket = None
        flow.response.status_code = 403
        recorder.response(flow)
        recorder.error(flow)
        plain = tflow.tflow(resp=True)
        recorder.response(plain)
    assert [(r["rec"], r["status"], r["url"]) for r in seen] == [("refused", 403, "ws://example.com/ws")]


def test_redaction_switch_and_header(tmp_path):
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, mwtap_out=str(tmp_path / "c.jsonl"), mwtap_redact=False)
        jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"
        run_messages(recorder, ws_flow(), text(jwt.encode()))
        recorder.done()
    capture = CaptureFile(str(tmp_path / "c.jsonl"))
    assert [r["text"] for r in capture.records() if r["rec"] == "msg"] == [jwt]
    assert capture.header["redaction"]["enabled"] is False and capture.header["mitmproxy"]


def test_as_a_script_a_refused_option_is_logged_at_startup_and_rejected_once_running(tmp_path, caplog):
    """mitmdump would print the script's traceback for an exception at startup (then exit on the
    logged error); once running, mitmproxy must see the exception to reject the change."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    recorder = ScriptRecorder()

    async def startup_then_running() -> None:  # `running` arms the flush tick on the event loop
        with taddons.context(recorder) as tctx:
            tctx.configure(recorder, mwtap_out=str(shared / "a.jsonl"))
            assert recorder.writer is None and "writable by every user" in caplog.text
            recorder.running()
            with pytest.raises(exceptions.OptionsError, match="writable by every user"):
                tctx.configure(recorder, mwtap_out=str(shared / "b.jsonl"))
            tctx.configure(recorder, mwtap_out=str(tmp_path / "c.jsonl"))
            assert recorder.writer is not None
            recorder.done()

    asyncio.run(startup_then_running())
    assert not (shared / "a.jsonl").exists() and not (shared / "b.jsonl").exists()


def test_after_done_nothing_is_relayed_that_the_capture_could_not_hold(tmp_path):
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, mwtap_out=str(tmp_path / "c.jsonl"))
        flow = ws_flow()
        recorder.websocket_start(flow)
        run_messages(recorder, flow, text(b"before"))
        recorder.done()
        late = text(b"after")
        run_messages(recorder, flow, late)
        recorder.websocket_end(flow)
        upgrade = tflow.twebsocketflow(messages=False)
        assert upgrade.error is None
        recorder.response(upgrade)
    assert late.dropped and recorder.unrelayed == 1  # mitmproxy does not forward a dropped message
    assert upgrade.error.msg == Error.KILLED_MESSAGE  # a 101 that would open an unrecorded connection
    records = list(CaptureFile(str(tmp_path / "c.jsonl")).records())
    assert [(r["rec"], r.get("text"), r.get("by")) for r in records] == [("open", None, None), ("msg", "before", None),
                                                                       ("close", None, None)]
    assert (recorder.written, recorder.dropped) == (3, 0)
