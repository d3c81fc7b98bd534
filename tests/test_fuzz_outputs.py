"""Property-based fuzzing of what reads captures besides `analyze`: `analysis.load` (the notebook
API), the report (HTML and Markdown), the Parquet export and the imports (HAR, mitmproxy flow files,
`convert`). Inputs: the reader's damaged lines and wrong-typed fields, valid-looking records with
integers beyond int64, floats with fractions in integer fields, a number past a double (1e400) in a
field the core does not decode, times at the ends of the reader's
range, the same file read twice (every connection id twice), a connection id reused, gzip cut short;
HAR entries with any JSON in any field (lone surrogates, NaN/Infinity, huge numbers, deep nesting);
flow files (mitmproxy's current format and format 7) with bytes cut or changed.

Whatever `analyze` reads, the others read too: nothing raises but a one-line CaptureError for a
file that is not an input at all, every table has its documented dtypes, and the export holds the
rows `load` gives."""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import warnings
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import analysis
from analysis.capture import MAX_TIME, CaptureError
from analysis.export import export_parquet
from analysis.imports.convert import convert
from analysis.report import build_report, render_html, render_markdown, stream_capture
from analysis.tables import COLUMNS
from test_fuzz_engine import fuzz_settings, junk, record
from test_fuzz_reader import HEADER, line
from test_reliability_load import soak_size

DATA = Path(__file__).parent / "data"
DTYPES = {"str": "string", "time": "datetime64[ns, UTC]", "float": "float64", "int": "Int64", "bool": "boolean"}

# Values at the edges of what a JSON reader hands over, for any field of a valid-looking record.
EDGE = st.sampled_from([2**64 - 1, 2**63, 2**63 - 1, -2**63, 1e300, -1e300, 1.5, 200.5, 0, -0.0,
                        MAX_TIME * 0.99, -MAX_TIME * 0.99, 5e-324, "", "$\\foo$", True, None, [], {}])
FIELDS = st.sampled_from(["t", "n", "size", "code", "status", "count", "conn", "dir", "op", "reason", "by",
                          "kind", "type", "id", "reqId", "subscriptionId", "url", "client", "truncated"])


def edged(rec: dict, edits: list) -> dict:
    return {**rec, **dict(edits)}


edge_record = st.builds(edged, record, st.lists(st.tuples(FIELDS, EDGE), min_size=1, max_size=3))
# A number past a double in a field the core does not decode: orjson refuses the line, the core reads it.
past_a_double = record.map(lambda rec: json.dumps({**rec, "x": 0}).replace('"x": 0}', '"x": [-1e400]}').encode())
capture_line = st.one_of(record.map(json.dumps).map(str.encode), edge_record.map(json.dumps).map(str.encode),
                         line, past_a_double)


def write_capture(tmp: Path, lines: list[bytes], compress: bool, cut: int) -> Path:
    data = HEADER + b"".join(line + b"\n" for line in lines)
    path = tmp / ("c.jsonl.gz" if compress else "c.jsonl")
    if compress:
        data = gzip.compress(data)
        data = data[:max(len(data) - cut, 20)]  # a damaged gzip stream: cut before its end
    path.write_bytes(data)
    return path


def check_tables(cap) -> None:
    for table, columns in COLUMNS.items():
        frame = getattr(cap, table)
        assert [str(frame[name].dtype) for name, _ in columns] == [DTYPES[kind] for _, kind in columns], table


def check_outputs(tmp: Path, paths: list[Path]) -> None:
    """analyze (JSON), load, report (of the tables `load` gives, and as `mwtap report` streams it) and
    export of `paths` all succeed, or all refuse in one line."""
    try:
        summary, _ = analysis.analyze(paths)
    except CaptureError as e:
        assert "\n" not in str(e)
        with pytest.raises(CaptureError):
            analysis.load(paths)
        return
    orjson.dumps(summary)
    cap = analysis.load(paths)
    check_tables(cap)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib: glyphs missing from its font, odd date ranges
        built = build_report(cap)
        render_html(built)
    render_markdown(built)
    render_markdown(build_report(stream_capture(paths)))  # what `mwtap report` reads: two passes of the file
    counts, _ = export_parquet(paths, str(tmp / "pq"))
    assert counts == {table: len(getattr(cap, table)) for table in COLUMNS}
    assert pq.read_table(tmp / "pq" / "frames.parquet").num_rows == len(cap.frames)


def check_capture(tmp: Path, lines: list[bytes], twice: bool, compress: bool, cut: int) -> None:
    path = write_capture(tmp, lines, compress, cut)
    check_outputs(tmp, [path, path] if twice else [path])


OUTPUT_EXAMPLES, OUTPUT_SOAK = 20, soak_size(150, 1_500)
captures = (st.lists(capture_line, max_size=30), st.booleans(), st.booleans(), st.integers(1, 30))


@fuzz_settings(OUTPUT_EXAMPLES)
@given(*captures)
def test_load_report_and_export_read_what_analyze_reads(tmp_path_factory, lines, twice, compress, cut):
    check_capture(tmp_path_factory.mktemp("c"), lines, twice, compress, cut)


@pytest.mark.soak
@fuzz_settings(OUTPUT_SOAK)
@given(*captures)
def test_load_report_and_export_read_what_analyze_reads_soak(tmp_path_factory, lines, twice, compress, cut):
    check_capture(tmp_path_factory.mktemp("c"), lines, twice, compress, cut)


# HAR: any JSON where a field is expected, strings with lone surrogates, Python's NaN and Infinity.
lone_surrogate = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
har_junk = junk | lone_surrogate | st.sampled_from([math.nan, math.inf, -math.inf, 10**30, 1e300, -1.0])
T0 = 1_795_600_000.0


def maybe(strategy):
    return st.one_of(strategy, strategy, strategy, har_junk)


har_message = st.fixed_dictionaries({
    "type": maybe(st.sampled_from(["send", "receive"])),
    "time": maybe(st.floats(T0, T0 + 100) | st.sampled_from([math.nan, math.inf, 1e300])),
    "opcode": maybe(st.sampled_from([1, 2])),
    "data": maybe(st.sampled_from(['{"kind":"req","id":"1","type":"GetClock"}',
                                   '{"kind":"resp","reqId":"1","code":200}', "AAE=", "é", "{"]) | lone_surrogate)})
har_entry = st.fixed_dictionaries({
    "startedDateTime": maybe(st.sampled_from(["2026-11-24T18:13:20Z", "2026-11-24T18:13:21.5+00:00", "bad"])),
    "time": maybe(st.floats(0, 1e4)),
    "request": maybe(st.fixed_dictionaries({
        "url": maybe(st.sampled_from(["wss://127.0.0.1/ws?v=3", "ws://[::1]:80/", "wss://[x/"])
                     | lone_surrogate.map(lambda s: "wss://127.0.0.1/" + s)),
        "headers": maybe(st.lists(st.fixed_dictionaries({"name": maybe(st.just("Upgrade")),
                                                         "value": maybe(st.just("websocket"))}), max_size=2))})),
    "response": maybe(st.fixed_dictionaries({"status": maybe(st.sampled_from([101, 403])), "_error": har_junk,
                                             "headers": maybe(st.just([]))})),
    "serverIPAddress": maybe(st.just("127.0.0.1")), "_clientAddress": maybe(st.just("127.0.0.1:1")),
    "_resourceType": maybe(st.just("websocket")),
    "_webSocketMessages": maybe(st.lists(maybe(har_message), max_size=4))})
# Nested arrays deeper than Python's json goes: a marker, replaced by the brackets once the document is written.
deep = st.integers(1, 5000).map(lambda depth: f"<deep {depth}>")
har_document = st.fixed_dictionaries({"log": maybe(st.fixed_dictionaries({
    "entries": maybe(st.lists(maybe(har_entry) | deep, max_size=5)),
    "creator": maybe(st.fixed_dictionaries({"name": st.just("mitmproxy"), "version": har_junk}))}))})


def check_har(tmp: Path, document: dict, compress: bool, cut: int) -> None:
    data = json.dumps(document).encode()  # Python's json: NaN, Infinity, lone surrogates as escapes
    data = re.sub(rb'"<deep (\d+)>"', lambda m: b"[" * int(m[1]) + b"]" * int(m[1]), data)
    path = tmp / ("x.har.gz" if compress else "x.har")
    path.write_bytes(gzip.compress(data)[:-cut or None] if compress else data)
    try:
        converted = tmp / "converted.jsonl"
        convert(str(path), str(converted))
    except CaptureError as e:
        assert "\n" not in str(e)
    else:
        assert analysis.analyze(converted)[0]["capture"]["damaged_lines"] == 0  # convert writes good lines
    check_outputs(tmp, [path])


HAR_EXAMPLES, HAR_SOAK = 40, soak_size(150, 1_500)
hars = (har_document, st.booleans(), st.integers(0, 30))


@fuzz_settings(HAR_EXAMPLES)
@given(*hars)
def test_any_har_is_read_or_refused_in_one_line(tmp_path_factory, document, compress, cut):
    check_har(tmp_path_factory.mktemp("h"), document, compress, cut)


@pytest.mark.soak
@fuzz_settings(HAR_SOAK)
@given(*hars)
def test_any_har_is_read_or_refused_in_one_line_soak(tmp_path_factory, document, compress, cut):
    check_har(tmp_path_factory.mktemp("h"), document, compress, cut)


def flow_files() -> list[bytes]:
    """A flow file of mitmproxy's current format (a WebSocket and a refused upgrade) and one of format 7."""
    from mitmproxy import io as flow_io
    from mitmproxy.test import tflow

    out = io.BytesIO()
    writer = flow_io.FlowWriter(out)
    writer.add(tflow.twebsocketflow())
    refused = tflow.tflow(resp=True)
    refused.request.headers["Upgrade"] = "websocket"
    refused.response.status_code = 403
    writer.add(refused)
    return [out.getvalue(), (DATA / "flows-v7-websocket.mitm").read_bytes()]


FLOW_FILES = flow_files()
flow_damage = st.lists(st.tuples(st.sampled_from(["cut", "flip", "insert"]), st.integers(0, 10**6),
                                 st.binary(min_size=1, max_size=4)), min_size=1, max_size=3)


def damaged_flows(data: bytes, edits: list) -> bytes:
    for edit, at, junk_bytes in edits:
        at %= len(data) + 1
        if edit == "cut":
            data = data[:at]
        elif edit == "flip":
            data = data[:at] + junk_bytes + data[at + len(junk_bytes):]
        else:
            data = data[:at] + junk_bytes + data[at:]
    return data or b"0"


def check_flows(tmp: Path, which: int, edits: list) -> None:
    path = tmp / "x.mitm"
    path.write_bytes(damaged_flows(FLOW_FILES[which], edits))
    try:
        summary, damage = analysis.analyze(path)
        orjson.dumps(summary)
        check_tables(analysis.load(path))
    except CaptureError as e:
        assert "\n" not in str(e) and str(path) in str(e)


FLOW_EXAMPLES, FLOW_SOAK = 150, soak_size(500, 5_000)
flows = (st.integers(0, len(FLOW_FILES) - 1), flow_damage)


@fuzz_settings(FLOW_EXAMPLES)
@given(*flows)
def test_any_damaged_flow_file_is_read_or_refused_in_one_line(tmp_path_factory, which, edits):
    check_flows(tmp_path_factory.mktemp("f"), which, edits)


@pytest.mark.soak
@fuzz_settings(FLOW_SOAK)
@given(*flows)
def test_any_damaged_flow_file_is_read_or_refused_in_one_line_soak(tmp_path_factory, which, edits):
    check_flows(tmp_path_factory.mktemp("f"), which, edits)
