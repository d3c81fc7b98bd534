"""The engine on awkward real-world input: missing records, odd fields, clocks stepping back,
and the bounded latency histogram."""

from __future__ import annotations

import random

import orjson
import pytest

from analysis import Config, Engine
from analysis.histogram import LogHistogram
from analysis.load import analyze
from analysis.synth import CaptureBuilder

GET_CLOCK = {"kind": "req", "id": "1", "type": "GetClock"}
RESPONSE = {"kind": "resp", "reqId": "1", "code": 200, "type": "GetClock$Response"}


def feed_all(records: list[dict]) -> tuple[Engine, list]:
    found: list = []
    engine = Engine(Config(), on_violation=found.append)
    for rec in records:
        engine.feed(rec)
    engine.finish()
    return engine, found


def test_odd_records_are_counted_not_fatal():
    b = CaptureBuilder()
    b.c2s("late", 1.0, GET_CLOCK)                       # capture started after this connection opened
    b.s2c("late", 1.1, RESPONSE)
    b.close("late", 2.0)
    b.ping("late", 2.5)                                  # logged after the close
    records = b.records[1:] + [
        {"rec": "msg", "conn": "x", "dir": "c2s"},       # no t
        {"rec": "msg", "t": 3.0, "dir": "c2s"},          # no conn
        {"rec": "msg", "t": 3.0, "conn": "y", "dir": "sideways", "text": "{}"},
        {"rec": "open", "t": 3.0, "conn": "z", "request_headers": "garbage", "url": 5},
        {"rec": "msg", "t": 3.1, "conn": "z", "n": 0, "dir": "c2s", "op": "text", "text": '{"kind":"req"',
         "truncated": True, "size": 10_000_000},
        {"rec": "close", "t": 4.0, "conn": "z", "code": "x", "by": "nobody"},
        {"rec": "drop", "t": 5.0, "count": 3},
        {"rec": "msg", "t": 5.1, "conn": "z2", "dir": "c2s", "text": b"bytes"},  # no capture line holds these
        {"rec": "msg", "t": 5.2, "conn": "z2", "dir": "c2s", "text": "\ud800"},
        {"t": "no rec"},                                 # not a capture record: passed over
    ]
    engine, found = feed_all(records)
    assert engine.malformed_records == 5 and engine.records_after_close == 1
    assert engine.frames == 3 and engine.dropped_records == 3
    assert [v.rule for v in found if v.severity != "info"] == []


def test_records_nested_deeper_than_orjson_writes_are_checked():
    """A capture line may nest up to 1,023 levels (orjson reads that many, writes 254): such a record
    reaches the core like any other, in `record --live`, `view --follow` and HAR imports alike."""
    deep = [[]]
    for _ in range(1000):
        deep = [deep]
    b = CaptureBuilder()
    b.open("c", 1.0)
    b.c2s("c", 1.1, GET_CLOCK)
    records = b.records[1:]
    records[0]["request_headers"] = deep
    records[1]["extra"] = deep
    engine, found = feed_all(records + [{"rec": "msg", "t": 1.2, "conn": "c", "dir": "s2c", "text": "[",
                                         "nested": deep}])
    assert engine.frames == 2
    assert [v.rule for v in found] == ["invalid-json", "unanswered-request"]


def test_lines_fed_as_read_are_checked_as_the_records_they_hold():
    """`feed_line` (what `view --follow` feeds): a record's line as read, numbers past a double in
    fields no rule reads included; a line holding no record is counted as malformed, not raised."""
    b = CaptureBuilder()
    b.open("c", 1.0)
    b.c2s("c", 1.1, GET_CLOCK)
    lines = [orjson.dumps(rec)[:-1] + b',"x":[-1e400]}\n' for rec in b.records[1:]]
    found: list = []
    engine = Engine(Config(), on_violation=found.append)
    for line in [*lines, b"[1]\n", b'{"rec":5}\n']:
        engine.feed_line(line)
    engine.finish()
    assert (engine.frames, engine.malformed_records) == (1, 2)
    assert [v.rule for v in found] == ["unanswered-request"]


def test_clock_stepping_back_a_little_does_not_confuse_pairing(tmp_path):
    b = CaptureBuilder()
    b.open("c", 1.0)
    b.c2s("c", 1.000, GET_CLOCK)
    b.s2c("c", 0.998, RESPONSE)  # processing-time stamps may step back by a few ms
    b.close("c", 2.0)
    b.write(tmp_path / "c.jsonl")
    summary, _ = analyze(tmp_path / "c.jsonl")
    assert summary["requests"]["answered"] == 1 and summary["violations"] == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_within_one_percent(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(3, 1.5) for _ in range(5000)] + [0.0, -1.0]
    histogram = LogHistogram()
    for v in values:
        histogram.add(v)
    ordered = sorted(values)
    for q in (50, 90, 99):
        exact = ordered[max(1, -(-q * len(values) // 100)) - 1]
        assert histogram.percentile(q) == pytest.approx(exact, rel=0.01)
    assert histogram.max == max(values) and histogram.count == len(values)
    assert len(histogram.buckets) < 1000  # bounded by the value range, not the count
