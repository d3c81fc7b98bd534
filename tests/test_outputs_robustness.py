"""`report`, `export`, `convert` and `analysis.load` read whatever `analyze` reads (issue 15: what an
outside fuzz run broke), each case through the real command on a small hand-written input."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

import analysis
from analysis import plots
from analysis.capture import CaptureError, CaptureFile
from analysis.export import export_parquet
from analysis.report import build_report, render_html, render_markdown
from analysis.synth import T0, CaptureBuilder
from analysis.tables import COLUMNS
from conftest import BIN
from test_import_har import WS_URL, entry, message

DATA = Path(__file__).parent / "data"
V7_FLOWS = DATA / "flows-v7-websocket.mitm"
GET_CLOCK = {"kind": "req", "id": "1", "type": "GetClock"}
U64 = 18446744073709551615  # JSON holds it, int64 does not


def mwtap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mwtap"), *map(str, args)], capture_output=True, text=True, timeout=180)


def every_output(tmp_path: Path, *paths: Path) -> dict:
    """What analyze --format json, report (HTML and Markdown) and export make of `paths`, in this
    process (the commands run these functions; a few tests below run the commands themselves).
    Returns the analysis summary."""
    summary, _ = analysis.analyze(list(paths))
    orjson.dumps(summary)  # mwtap analyze --format json
    built = build_report(analysis.load(list(paths)))
    render_html(built), render_markdown(built)
    export_parquet(list(paths), str(tmp_path / "pq"))
    return summary


def answered(b: CaptureBuilder, conn: str, t: float, request: dict, code=200) -> None:
    b.c2s(conn, t, request)
    b.s2c(conn, t + 0.1, {"kind": "resp", "reqId": request["id"], "code": code})


def test_json_summary_of_a_request_without_type(tmp_path):
    b = CaptureBuilder()
    b.open("c1", T0)
    answered(b, "c1", T0 + 1, {"kind": "req", "id": "1"}, code=400)  # the server answers 400 to such a request
    b.write(tmp_path / "c.jsonl")
    analyzed = mwtap("analyze", "--format", "json", tmp_path / "c.jsonl")
    assert analyzed.returncode == 0, analyzed.stderr
    summary = json.loads(analyzed.stdout)
    assert summary["latency"] == {"(no type)": {"count": 1, "p50_ms": pytest.approx(100, abs=1),
                                                "p90_ms": pytest.approx(100, abs=1),
                                                "p99_ms": pytest.approx(100, abs=1),
                                                "max_ms": pytest.approx(100, abs=1)}}


def test_report_of_exactly_one_answered_request(tmp_path):
    b = CaptureBuilder()
    b.open("c1", T0)
    answered(b, "c1", T0 + 1, GET_CLOCK)
    b.close("c1", T0 + 2)
    b.write(tmp_path / "c.jsonl")
    report = mwtap("report", tmp_path / "c.jsonl", "-o", tmp_path / "r.html")
    assert report.returncode == 0, report.stderr
    legend = plots.plot_latency(analysis.load(tmp_path / "c.jsonl")).axes[0].get_legend()
    assert [text.get_text() for text in legend.texts] == ["GetClock (n=1)"]


def test_report_prints_one_line_whatever_the_capture_holds(tmp_path):
    """Characters matplotlib's font does not have (a request type in CJK) and a capture of one
    instant: matplotlib's warnings about them do not reach the terminal."""
    b = CaptureBuilder()
    b.open("c1", T0)
    b.c2s("c1", T0, {"kind": "req", "id": "1", "type": "時間"})
    b.write(tmp_path / "c.jsonl")
    report = mwtap("report", tmp_path / "c.jsonl", "-o", tmp_path / "r.html")
    assert report.returncode == 0 and report.stderr == f"report written to {tmp_path / 'r.html'}\n"


def reused_connection_id(path: Path) -> None:
    """One connection id opened twice, closed with 4401 each time: a reconnect on the same id."""
    b = CaptureBuilder()
    for k in range(2):
        b.open("c1", T0 + 10 * k)
        answered(b, "c1", T0 + 10 * k + 1, GET_CLOCK)
        b.close("c1", T0 + 10 * k + 2, 4401, "", "server")
    b.write(path)


def test_the_same_connection_ids_in_two_files(tmp_path):
    reused_connection_id(tmp_path / "a.jsonl")
    summary = every_output(tmp_path, tmp_path / "a.jsonl", tmp_path / "a.jsonl")
    assert summary["capture"]["connections"] == 4
    assert pq.read_table(tmp_path / "pq" / "connections.parquet").num_rows == 4
    fig = plots.plot_reconnects(analysis.load([tmp_path / "a.jsonl"]))
    assert [t.get_text() for t in fig.axes[0].texts] == ["4401 server ", "4401 server ", "+8.0 s"]


def test_a_frame_number_recorded_twice(tmp_path):
    b = CaptureBuilder()
    b.open("c1", T0)
    request = b.c2s("c1", T0 + 1, GET_CLOCK)
    b.record(dict(request))  # the same line twice: frame 0 twice, a duplicate-id violation on it
    b.close("c1", T0 + 2, 1006, None, "server")
    b.write(tmp_path / "c.jsonl")
    summary = every_output(tmp_path, tmp_path / "c.jsonl")
    assert summary["capture"]["frames"] == 2


def test_integers_beyond_int64_are_missing_values_not_a_crash(tmp_path):
    path = tmp_path / "c.jsonl"
    b = CaptureBuilder()
    b.open("c1", T0)
    b.c2s("c1", T0 + 1, GET_CLOCK)
    b.write(path)
    with open(path, "ab") as f:
        f.write(b'{"rec":"msg","t":%r,"conn":"c1","n":1,"dir":"s2c","op":"text","size":%d,"text":"{}",'
                b'"kind":"resp","reqId":"1","code":%d}\n' % (T0 + 1.5, U64, U64))
        f.write(b'{"rec":"msg","t":%r,"conn":"c1","n":2,"dir":"s2c","op":"text","size":2,"text":"{}",'
                b'"kind":"resp","reqId":"1","code":1e300}\n' % (T0 + 1.6))
        f.write(b'{"rec":"close","t":%r,"conn":"c1","code":%d,"by":"server"}\n' % (T0 + 2, U64))
        f.write(b'{"rec":"refused","t":%r,"conn":"c2","status":%d}\n' % (T0 + 3, U64))
    every_output(tmp_path, path)
    cap = analysis.load(path)
    assert cap.frames["size"].tolist() == [len(orjson.dumps(GET_CLOCK)), pd.NA, 2]
    assert cap.frames["code"].isna().tolist() == [True, True, True]
    assert cap.connections.close_code.isna().all() and cap.connections.refused_status.isna().all()
    exported = pq.read_table(tmp_path / "pq" / "frames.parquet").column("size").to_pylist()
    assert exported == [len(orjson.dumps(GET_CLOCK)), None, 2]


def test_every_time_column_has_one_resolution(tmp_path):
    """pandas 3 picks a datetime resolution from the values (whole seconds: us, fractions: ns), and
    merging two tables' times of different resolutions fails: the subscription stream plot merges
    the notifications' times (fractional) with the streams' (whole seconds here)."""
    b = CaptureBuilder()
    b.open("c1", T0)
    b.c2s("c1", T0 + 1, {"kind": "req", "id": "1", "type": "cqm.SubscribeExConversations", "body": {}})
    b.s2c("c1", T0 + 2, {"kind": "resp", "reqId": "1", "code": 200,
                         "type": "cqm.SubscribeExConversationsResponse", "body": {"subscriptionId": "s1"}})
    b.s2c("c1", T0 + 2.25, {"kind": "notification", "type": "cqm.ExConversationChangeNotification",
                            "body": {"subscriptionId": "s1", "changes": []}})
    b.write(tmp_path / "c.jsonl")
    cap = analysis.load(tmp_path / "c.jsonl")
    units = {str(getattr(cap, table)[name].dtype) for table, columns in COLUMNS.items()
             for name, kind in columns if kind == "time"}
    assert units == {"datetime64[ns, UTC]"}
    assert len(plots.stream_notifications(cap)) == 1
    every_output(tmp_path, tmp_path / "c.jsonl")


def test_times_centuries_apart(tmp_path):
    """A connection open from 1688 to 2252 (times within the reader's range): longer than a pandas
    Timedelta holds."""
    b = CaptureBuilder()
    b.open("c1", -8.9e9)
    b.c2s("c1", 8.8e9, GET_CLOCK)
    b.open("c2", 8.8e9)
    b.close("c2", 8.85e9, 4401, "", "server")
    b.write(tmp_path / "c.jsonl")
    every_output(tmp_path, tmp_path / "c.jsonl")


def test_strings_that_matplotlib_would_read_as_math(tmp_path):
    """A request type, close reason and side between two `$`: matplotlib parses such text as math
    (`$\\foo$`: ParseFatalException). The plots show them as they are."""
    b = CaptureBuilder()
    b.open("c1", T0)
    answered(b, "c1", T0 + 1, {"kind": "req", "id": "1", "type": "$\\foo$"})
    b.close("c1", T0 + 2, 4401, "$\\sqrt{$", "$\\by$")
    b.write(tmp_path / "c.jsonl")
    every_output(tmp_path, tmp_path / "c.jsonl")
    legend = plots.plot_latency(analysis.load(tmp_path / "c.jsonl")).axes[0].get_legend()
    assert [text.get_text() for text in legend.texts] == [r"\$\foo\$ (n=1)"]


def test_a_connection_known_only_by_its_close(tmp_path):
    """A close record of a connection whose open is not in the file (found by tests/test_fuzz_outputs.py):
    its bar was drawn from NaT, its label years away from the axis (FreeType: raster overflow)."""
    b = CaptureBuilder()
    b.close("c1", 1_905_006_492, 1000, "", "client")
    b.write(tmp_path / "c.jsonl")
    every_output(tmp_path, tmp_path / "c.jsonl")
    chains = plots.chain_summary(analysis.load(tmp_path / "c.jsonl").connections)
    assert chains["first"].tolist() == chains["last"].tolist() == [pd.Timestamp(1_905_006_492, unit="s", tz="UTC")]


def write_har(path: Path, *entries: dict) -> Path:
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": list(entries)}}))
    return path


def test_har_with_an_infinite_time(tmp_path):
    har = dict(entry(WS_URL, 101, []), time=float("inf"))  # Python's json writes Infinity
    broken = {"type": "send", "time": float("nan"), "opcode": 1, "data": "{}"}
    later = entry(WS_URL, 101, [broken, message("send", T0 + 5, GET_CLOCK)], started=T0 + 1)
    summary = every_output(tmp_path, write_har(tmp_path / "x.har", har, later))
    assert summary["capture"]["connections"] == 2 and summary["capture"]["frames"] == 1
    assert summary["capture"]["damage"] == [f"{tmp_path / 'x.har'}:0: entry 1 message 0: "
                                            "no usable time, opcode (1 or 2) or data, skipped"]


def test_har_with_a_lone_surrogate_in_its_url(tmp_path):
    path = write_har(tmp_path / "x.har", entry(WS_URL + "&x=\ud800", 101, [message("send", T0 + 1, GET_CLOCK)]))
    summary = every_output(tmp_path, path)
    assert summary["connections"][0]["url"].endswith("&x=\\ud800")
    assert mwtap("convert", path, "-o", tmp_path / "c.jsonl").returncode == 0
    assert analysis.analyze(tmp_path / "c.jsonl")[0]["capture"]["frames"] == 1


@pytest.mark.parametrize("version", ["\ud800", [1], {"v": 1}])
def test_har_creator_version_of_any_type(tmp_path, version):
    path = tmp_path / "x.har"
    path.write_text(json.dumps({"log": {"creator": {"name": "mitmproxy", "version": version},
                                        "entries": [entry(WS_URL, 101, [message("send", T0 + 1, GET_CLOCK)])]}}))
    converted = tmp_path / "c.jsonl"
    assert mwtap("convert", path, "-o", converted).returncode == 0
    header = json.loads(converted.read_text().splitlines()[0])
    assert header["mitmproxy"] == ("\\ud800" if version == "\ud800" else None)


def test_har_binary_data_with_characters_outside_ascii(tmp_path):
    bad = {"type": "receive", "time": T0 + 1, "opcode": 2, "data": "é"}
    good = message("receive", T0 + 2, b"\x00\x01", opcode=2)
    summary = every_output(tmp_path, write_har(tmp_path / "x.har", entry(WS_URL, 101, [bad, good])))
    assert summary["capture"]["frames"] == 1
    assert summary["capture"]["damage"][0].endswith("entry 0 message 0: binary data is not base64, skipped")
    assert base64.b64decode(good["data"]) == b"\x00\x01"


@pytest.mark.parametrize("content, problem", [
    (b"0:~", "not an mwtap capture (no JSON header line)"),
    (b"42\n", "not an mwtap capture (first line is not a header)"),
    (b"12:{not a flow}", "not an mwtap capture"),
    (b"11:4:type;1:x;}", "not a flow file mitmproxy reads"),  # a tnetstring dictionary, not a flow
])
def test_a_file_starting_with_a_digit_is_not_taken_for_a_flow_file(tmp_path, content, problem):
    path = tmp_path / "x.mitm"
    path.write_bytes(content)
    commands = [("analyze",), ("convert", "-o", tmp_path / "c.jsonl")]
    if content == b"42\n":
        commands += [("report", "-o", tmp_path / "r.html"), ("export", "--parquet", tmp_path / "pq")]
    for command in commands:
        result = mwtap(command[0], path, *command[1:])
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.count("\n") == 1 and problem in result.stderr and str(path) in result.stderr


def test_a_header_holding_a_number_past_a_double_is_refused_in_one_line(tmp_path):
    """The header is read whole: 1e400 in a field the records' reader would pass over (the core
    used to panic there) makes the file no capture, in the same words for every command and for
    Python's line-at-a-time reader."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"rec":"header","t":1.0,"format":"mwtap-capture","version":1,"recording":"r","part":1,'
                     b'"x":1e400}\n{"rec":"ping","t":2,"conn":"c"}\n')
    problem = f"{path}:1: not an mwtap capture (no JSON header line)"
    for command in (("analyze",), ("report", "-o", tmp_path / "r.html"), ("export", "--parquet", tmp_path / "pq")):
        result = mwtap(command[0], path, *command[1:])
        assert result.returncode == 2 and result.stdout == "" and result.stderr == f"Error: {problem}\n", result
    with pytest.raises(CaptureError, match=re.escape(problem)):
        list(CaptureFile(str(path)).records())


def test_mitmproxy_flow_files_of_format_7(tmp_path):
    """tests/data/flows-v7-websocket.mitm: the first three flows of mitmproxy's own
    test/mitmproxy/data/dumpfile-7-websocket.mitm (mitmproxy 6: a handshake flow, then the WebSocket in
    a flow of its own, twice), then one more such pair with a GetClock and a binary message. Text
    content is `str` and times `int` in that format."""
    for command in (("analyze",), ("report", "-o", tmp_path / "r.html"), ("export", "--parquet", tmp_path / "pq")):
        result = mwtap(command[0], V7_FLOWS, *command[1:])
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    summary, damage = analysis.analyze(V7_FLOWS)
    cap = summary["capture"]
    assert (cap["connections"], cap["refused"], cap["frames"], cap["damaged_lines"]) == (3, 0, 7, 0)
    by_conn = {c["conn"]: c for c in summary["connections"]}
    assert by_conn["468a3735-e4c2-4dea-b6e7-827a47751b36"]["url"] == "ws://echo.websocket.org/?encoding=text"
    assert by_conn["468a3735-e4c2-4dea-b6e7-827a47751b36"]["close_code"] == 1005
    assert by_conn["0c0ffee0-0000-4000-8000-000000000001"]["url"] == \
        "wss://echo.websocket.org/ws_api/account/123/messaging/consumer?v=3"
    assert (by_conn["0c0ffee0-0000-4000-8000-000000000001"]["close_code"],
            by_conn["0c0ffee0-0000-4000-8000-000000000001"]["closed_by"]) == (1000, "server")
    assert summary["requests"]["answered"] == 1 and list(summary["latency"]) == ["GetClock"]
    converted = tmp_path / "c.jsonl"
    assert mwtap("convert", V7_FLOWS, "-o", converted).returncode == 0
    messages = [r for r in map(json.loads, converted.read_text().splitlines()) if r["rec"] == "msg"]
    assert messages[0]["text"] == "Rock it with HTML5 WebSocket" and messages[0]["t"] == 1612375501.0
    assert base64.b64decode(messages[-1]["b64"]) == b"\x00\x01binary"


def test_damage_is_counted_not_kept_line_by_line(tmp_path):
    """100,000 damaged lines of four kinds and 25,000 records of as many made-up kinds: the first 20
    lines of each kind are listed, the rest counted, and memory stays flat (before: every line kept,
    ~22 MB here, 220 MB at a million lines, and a 6 MB summary)."""
    import tracemalloc

    path = tmp_path / "damaged.jsonl"
    broken = [b"{}", b"not json", b'{"rec":"msg","t":1e300}', b'{"rec":"msg","t":1,"conn":5,"dir":"c2s"}']
    with open(path, "wb") as f:
        f.write(orjson.dumps({"rec": "header", "t": T0, "format": "mwtap-capture", "version": 1}) + b"\n")
        for i in range(125_000):
            f.write((broken[i % 5] if i % 5 < 4 else b'{"rec":"kind-%d","t":1}' % i) + b"\n")
    tracemalloc.start()
    try:
        summary, damage = analysis.analyze(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000
    cap = summary["capture"]
    assert cap["damaged_lines"] == 100_000 and len(damage) == 4 * 21
    assert [str(d) for d in damage if d.more] == [f"{path}: 24,980 more line(s) with: {kind}" for kind in (
        "not a capture record", "invalid JSON", "time out of range",
        "field 'conn' of a msg record has the wrong type")]
    assert len(cap["unknown_records"]) == 21 and cap["unknown_records"]["(other kinds)"] == 25_000 - 20
    assert len(orjson.dumps(summary)) < 20_000
    printed = mwtap("analyze", path)
    assert printed.returncode == 0 and len(printed.stderr.splitlines()) == 4 * 21
    assert max(map(len, printed.stdout.splitlines())) < 1000
