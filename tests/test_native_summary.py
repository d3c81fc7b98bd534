"""`mwtap analyze` reads captures in the native core (analysis.load.analyze): its summary is the one
the records make fed to the core one at a time (the road of HAR and flow files, `analysis.load._fed`),
key for key and type for type (`repr` equal), on every capture the tests ship, on generated captures,
on captures with more violations or connections than the core hands over at a time, with options,
with several files, and on the damaged-capture fuzz of tests/test_native_engine.py."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given

from analysis.capture import CaptureError
from analysis.config import Config
from analysis.load import analyze
from analysis.synth import CaptureBuilder
from sample_capture import generate
from test_fuzz_engine import fuzz_settings
from test_native_engine import SHIPPED, capture_files, written
from test_reliability_load import soak_size

LOAD = sys.modules["analysis.load"]  # `analysis.load` is the function the package exports
DEFAULT_CASES = 300
SOAK_CASES = soak_size(300, 10_000)


def fed_summary(paths, config: Config) -> tuple[dict, list[str]]:
    with mock.patch.object(LOAD, "all_captures", lambda paths: False):
        summary, damage = analyze(paths, config)
    return summary, [str(d) for d in damage]


def assert_same(paths: list[str], config: Config | None = None) -> dict:
    config = config or Config()
    try:
        expected = fed_summary(paths, config)
    except CaptureError as e:
        with pytest.raises(CaptureError) as raised:
            analyze(paths, config)
        assert str(raised.value) == str(e)
        return {}
    summary, damage = analyze(paths, config)
    assert (summary, [str(d) for d in damage]) == expected
    assert repr(summary) == repr(expected[0])  # the same types too: 1 == 1.0 == True for ==
    return summary


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path):
    assert_same([str(path)])


def test_generated_captures_with_options(tmp_path):
    paths = []
    for seed in (1, 2, 3):
        paths.append(str(tmp_path / f"sample{seed}.jsonl"))
        generate(Path(paths[-1]), seed=seed)
        assert assert_same(paths[-1:])["violations_total"] > 0
    assert_same(paths)  # three recordings merged by time
    config = Config(response_timeout_s=0.5, keepalive_limit_s=2.0, accept_timeout_s=1.0, max_violations=7,
                    severity={"sequence-gap": "error", "keepalive-gap": "info"})
    summary = assert_same(paths, config)
    assert summary["violations_omitted"] > 0 and summary["latency"] and summary["messaging"]


def test_more_violations_than_one_batch(tmp_path):
    """The core hands violations over a few thousand at a time: every one is counted, the listed
    ones are the first of each severity, as in one pass."""
    b = CaptureBuilder()
    b.open("c1", 1.0)
    for i in range(10_000):  # every request without an id, every second one with its id reused
        b.c2s("c1", 2.0 + i / 1000, {"kind": "req", "type": "GetClock", **({"id": "1"} if i % 2 else {})})
    b.close("c1", 20.0)
    path = tmp_path / "many.jsonl"
    b.write(path)
    summary = assert_same([str(path)], Config(max_violations=5000))
    assert summary["violations_total"] > 9000 and len(summary["violations"]) == 5000


def test_more_connections_than_one_batch(tmp_path):
    """The summary's own tables leave the core 25,000 rows at a time: every connection and
    reconnect is in the summary, in the one-pass order."""
    b = CaptureBuilder()
    for i in range(26_000):
        b.open(f"c{i}", 1.0 + i / 100, token=None)
        b.close(f"c{i}", 1.005 + i / 100, code=1006, by="server")
    path = tmp_path / "storm.jsonl"
    b.write(path)
    summary = assert_same([str(path)])
    assert summary["capture"]["connections"] == 26_000 and summary["reconnects"]["total"] > 25_000


def test_the_cli_analyze_reads_in_the_core(tmp_path, monkeypatch):
    """`analyze` has the core read a capture file: it feeds no records one at a time
    (`analysis.engine.Engine`, the road of HAR files, through the Python reader)."""
    import analysis.engine

    def refuse(*args, **kwargs):
        raise AssertionError("records were fed one at a time")
    monkeypatch.setattr(analysis.engine.Engine, "__init__", refuse)
    sample = tmp_path / "s.jsonl"
    generate(sample, seed=4)
    assert analyze(str(sample))[0]["capture"]["frames"] > 0


def check(files) -> None:
    with written(files) as paths:
        assert_same(paths)


@fuzz_settings(DEFAULT_CASES)
@given(capture_files())
def test_fuzz_native_summary_equals_fed(files):
    check(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_native_summary_equals_fed_soak(files):
    check(files)
