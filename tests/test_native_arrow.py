"""Tables leave the native core as Arrow record batches (core/src/arrow_out.rs) and
`analysis.load.frame_from_arrow` makes of them exactly the DataFrame `analysis.load.to_frame` makes of
the same rows (dtypes, values, NaT/NA, order): on every table the native engine produces, on every
capture the tests ship, on a generated one, on hand-made edge records, and value by value on
generated rows of every table (ints beyond int64, floats with and without fraction, bools in int
columns, NaN/inf/huge times, non-string values in str columns, non-ASCII and NUL in text)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from analysis import _core
from analysis.native import ANALYZERS
from analysis.capture import CaptureError
from analysis.load import frame_from_arrow, to_frame
from analysis.synth import CaptureBuilder
from analysis.tables import COLUMNS
from sample_capture import generate
from test_native_engine import SHIPPED


def assert_same_tables(path: str) -> list[str]:
    """Every table of `path` by way of Arrow and by way of lists; the tables compared."""
    analyzers = list(ANALYZERS)
    tables = [name for name in COLUMNS if name != "violations"]
    lists = _core.analyze_native([path], None, analyzers, tables)
    arrow = _core.analyze_native([path], None, analyzers, tables, arrow=True)
    assert_frame_equal(frame_from_arrow("frames", arrow["frames_table"]), to_frame("frames", lists["frames_table"]),
                       check_dtype=True)
    assert arrow["tables"].keys() == lists["tables"].keys()
    for name, rows in lists["tables"].items():
        assert_frame_equal(frame_from_arrow(name, arrow["tables"][name]), to_frame(name, rows), check_dtype=True)
    return ["frames", *lists["tables"]]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path):
    try:
        _core.analyze_native([str(path)])
    except CaptureError as e:  # the documented frames tests/data also ships: the same error either way
        with pytest.raises(CaptureError, match=re.escape(str(e))):
            _core.analyze_native([str(path)], arrow=True)
        return
    assert {"frames", "keepalive", "silences", "pings"} <= set(assert_same_tables(str(path)))


def test_generated_capture(tmp_path):
    generate(tmp_path / "sample.jsonl")
    assert_same_tables(str(tmp_path / "sample.jsonl"))


def test_edge_records(tmp_path):
    """Frame numbers and codes beyond int64, int and fractional times, non-ASCII and NUL in text and
    ids, records out of time order (the frames are sorted by `t`, stable)."""
    b = CaptureBuilder()
    b.open("c1", 1_700_000_000, token="t")
    b.records.extend([
        {"rec": "msg", "conn": "c1", "t": 1_700_000_002, "n": 2**63, "dir": "c2s", "op": "text",
         "text": "h\u00e9llo \u0000 \u2713", "size": 2**64 - 1, "type": "x\u0000\u00e9", "id": "1"},
        {"rec": "msg", "conn": "c1", "t": 1_700_000_001.123456789, "n": -2**63, "dir": "s2c", "code": 2**63,
         "text": '{"kind":"resp","code":7,"reqId":"1"}'},
        {"rec": "msg", "conn": "c1", "t": 1_700_000_001.123456789, "n": 3, "dir": "s2c", "code": 1.0, "size": 0},
        {"rec": "ping", "conn": "c1", "t": 1_700_000_003, "dir": "s2c"},
    ])
    path = tmp_path / "edge.jsonl"
    b.write(path)
    assert_same_tables(str(path))
    frames = frame_from_arrow("frames", _core.analyze_native([str(path)], arrow=True)["frames_table"])
    assert frames["frame"].tolist() == [-2**63, 3, pd.NA]  # 2**63 is beyond int64
    assert frames["text"].iloc[2] == "h\u00e9llo \u0000 \u2713"


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**126, 2**126), st.integers(-2**64, 2**64), st.integers(-3, 3),
    st.floats(), st.floats(-1e10, 1e10), st.sampled_from([0.0, -0.0, 1.0, 1.5, 2.0**53, 2.0**63, 9e9, 1e300]),
    st.text(st.characters(exclude_categories=("Cs",))), st.sampled_from(["", "5", "1e3", "inf", "\u0000", "\u00e9"]))


@st.composite
def tables(draw) -> tuple[str, list[dict]]:
    """Rows of any table, each column drawn from every kind of scalar (bool columns: bools and None, as
    pandas' `astype("boolean")` refuses the rest), some columns left out."""
    table = draw(st.sampled_from(sorted(COLUMNS)))
    column = st.one_of(scalars, st.just(()))  # () leaves the column out of the row
    rows = draw(st.lists(st.fixed_dictionaries({
        name: st.one_of(st.none(), st.booleans()) if kind == "bool" else column for name, kind in COLUMNS[table]
    }), max_size=8))
    return table, [{name: v for name, v in row.items() if v != ()} for row in rows]


@settings(max_examples=500, deadline=None)
@given(tables())
def test_values_converted_as_to_frame(table_rows):
    table, rows = table_rows
    assert_frame_equal(frame_from_arrow(table, _core.arrow_rows(table, rows)), to_frame(table, rows),
                       check_dtype=True)


@pytest.mark.parametrize("values", [[1, 0, None], [1.0, float("nan")], [True, None, False]])
def test_bool_columns_take_bool_like_values(values):
    rows = [{"conn": "c", "t": 1.0, "start": 0.5, "over_limit": v} for v in values]
    assert_frame_equal(frame_from_arrow("silences", _core.arrow_rows("silences", rows)), to_frame("silences", rows))


@pytest.mark.parametrize("values", [[True, 1], [2, 0], ["yes"]])
def test_bool_columns_refuse_other_values(values):
    rows = [{"conn": "c", "over_limit": v} for v in values]
    with pytest.raises(TypeError):
        to_frame("silences", rows)
    with pytest.raises(ValueError, match="over_limit"):
        _core.arrow_rows("silences", rows)


def test_to_frame_converts_each_value_on_its_own():
    """A value's conversion does not depend on the other values of its column (pandas types a column
    of ints and None float64, and parses strings in numeric columns)."""
    rows = [{"conn": "c", "t": "12", "id": 5, "frame": 2**53 + 1, "latency_ms": True}, {"conn": "c", "t": 1.5}]
    df = to_frame("pairs", rows)
    assert df["id"].tolist() == [pd.NA, "5"]  # sorted by t: the string time is missing (last)
    assert df["frame"].tolist() == [pd.NA, 2**53 + 1]
    assert df["t"].isna().tolist() == [False, True]
    assert df["latency_ms"].isna().all()
