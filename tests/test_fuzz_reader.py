"""Property-based fuzzing of the capture reader: random bytes, truncated lines, wrong types in the
fields of every record kind, deeply nested JSON, huge numbers, NaN/Infinity literals. Reading never
raises anything but a one-line CaptureError (for a file that is not a capture at all), every
damaged line is reported with its line number, and `analysis.analyze` still summarises the rest."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import analyze
from analysis.capture import MAX_TIME, CaptureError, CaptureFile, dumps
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings, junk, record

HEADER = dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1, "recording": "r", "part": 1})
# The documented type of each field the analysis reads (docs/capture-format.md), restated: "-" = may be absent.
ID = (str, type(None), "-")
DOCUMENTED = {
    "msg": {"conn": (str,), "n": (int, "-"), "dir": (str,), "op": (str, "-"), "size": (int, "-"), "text": (str, "-"),
            "b64": (str, "-"), "kind": ID, "type": ID, "id": ID, "reqId": ID, "subscriptionId": ID,
            "code": (int, float, str, bool, type(None), "-")},
    "open": {"conn": (str,), "url": ID, "client": ID, "request_headers": (list, type(None), "-"),
             "status": (int, type(None), "-")},
    "refused": {"conn": (str,), "url": ID, "client": ID, "status": (int, type(None), "-"), "error": ID},
    "ping": {"conn": (str,), "dir": ID},
    "pong": {"conn": (str,), "dir": ID},
    "close": {"conn": (str,), "code": (int, type(None), "-"), "reason": ID, "by": ID},
    "drop": {"count": (int, type(None), "-"), "reason": ID},
}

wrong_typed = st.builds(lambda rec, key, value: {**rec, key: value}, record,
                        st.sampled_from(["t", "conn", "rec", "n", "dir", "op", "size", "text", "b64", "url", "code",
                                         "by", "count", "status", "request_headers"]), junk)
damaged = st.one_of(
    st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\n", b" ")),
    st.builds(lambda rec, cut: json.dumps(rec).encode()[:cut], record, st.integers(1, 60)),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.sampled_from([b'{"rec":"msg","t":NaN}', b'{"rec":"msg","t":Infinity}', b'{"rec":"close","t":-Infinity}',
                     b'{"rec":"open","t":1e400}', b'{"rec":"open","t":1e300,"conn":"c1"}',
                     b'{"rec":"msg","t":1,"n":123456789012345678901234567890}', b"[]", b"null", b'"rec"',
                     b'{"rec":5}', b"\xef\xbb\xbf{}",
                     # a number past a double where the reader passes over it, with or without other damage
                     b'{"rec":"ping","t":1,"conn":"c1","x":[1e400]}', b'{"rec":"ping","t":1,"conn":"c1","n":"2","x":-1e400}',
                     b'{"rec":"msg","t":1,"conn":"c1","dir":"c2s","code":123456789012345678901234567890,"x":1e400}']),
)
line = st.one_of(record.map(lambda r: json.dumps(r).encode()),
                 wrong_typed.map(lambda r: json.dumps(r).encode()),
                 damaged)


def expected_problem(data: bytes) -> bool:
    """Whether the reader must report this line (the contract, restated independently)."""
    rec = readable(data)
    if rec is None:
        return True
    if not isinstance(rec, dict) or not isinstance(rec.get("rec"), str):
        return True
    t = rec.get("t")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and not -MAX_TIME < t < MAX_TIME:
        return True
    fields = DOCUMENTED.get(rec["rec"], {})
    return any(("-" not in allowed) if key not in rec else type(rec[key]) not in allowed
               for key, allowed in fields.items())


def readable(data: bytes):
    """The JSON value of a line a reader reads (None: not JSON it reads)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return past_a_double_in_x(data)


def past_a_double_in_x(data: bytes) -> dict | None:
    """The record of a line orjson refuses only for numbers past a double in "x", a field the
    format does not define (readers pass over it), without that field; None for any other line."""
    def refuse(constant):
        raise ValueError(constant)
    try:
        rec = json.loads(data, parse_constant=refuse)
        rec.pop("x")
        return orjson.loads(json.dumps(rec, allow_nan=False))
    except (ValueError, RecursionError, AttributeError, KeyError, TypeError):
        return None


def check_reader(lines: list[bytes], cut_last: bool, compress: bool) -> None:
    data = HEADER + b"".join(line + b"\n" for line in lines)
    if cut_last and lines:
        data = data[:-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("c.jsonl.gz" if compress else "c.jsonl")
        path.write_bytes(gzip.compress(data) if compress else data)
        capture = CaptureFile(str(path))
        records = list(capture.records())
        expected = [n for n, line in enumerate(lines, 2) if expected_problem(line)]
        listed = [d.line for d in capture.damage if not d.more]  # the first DAMAGE_EXAMPLES of each kind
        assert sum(d.lines for d in capture.damage) == len(expected)
        assert listed == sorted(listed) and set(listed) <= set(expected)
        assert len(listed) == len(expected) or any(d.more for d in capture.damage)
        assert all(str(d).startswith(f"{path}:{d.line}: ") for d in capture.damage if not d.more)
        mid_file_headers = sum(readable(line).get("rec") == "header" for line in lines if not expected_problem(line))
        assert len(records) + len(expected) + sum(capture.unknown_records.values()) + mid_file_headers == len(lines)
        summary, damage = analyze([str(path)])  # whatever the lines held: the rest is analysed
        assert summary["capture"]["damaged_lines"] == sum(d.lines for d in damage) == len(expected)
        # The core's reader and this one (view --follow, replay, diff) damn the same lines in the same words.
        assert [(d.line, d.problem, d.kind, d.more) for d in damage] == \
            [(d.line, d.problem, d.kind, d.more) for d in capture.damage]


lines_strategy = st.lists(line, max_size=30)


@fuzz_settings(DEFAULT_EXAMPLES)
@given(lines_strategy, st.booleans(), st.booleans())
def test_reader_reports_every_damaged_line(lines, cut_last, compress):
    check_reader(lines, cut_last, compress)


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES)
@given(lines_strategy, st.booleans(), st.booleans())
def test_reader_reports_every_damaged_line_soak(lines, cut_last, compress):
    check_reader(lines, cut_last, compress)


@fuzz_settings(DEFAULT_EXAMPLES)
@given(st.binary(max_size=200), st.booleans())
def test_any_bytes_are_a_capture_error_or_read(data, compress):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jsonl"
        path.write_bytes(gzip.compress(data)[:len(data) // 2 + 10] if compress else data)
        try:
            list(CaptureFile(str(path)).records())
        except CaptureError as e:
            assert "\n" not in str(e) and str(path) in str(e)
