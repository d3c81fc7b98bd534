"""`analysis.load.load` on the native core, its tables handed over in batches while the capture is
read (analysis.load.streamed, core/src/batches.rs), against the records fed to the core one at a time
(`analysis.load._fed`, the road of HAR and flow files): every DataFrame identical (values and dtypes)
and the same summary, however the tables are cut into batches; batches of the size asked for, handed
over in the order of their rows. HAR and flow files load as the capture `mwtap convert` makes of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.capture import watch_reads
from analysis.config import Config
from analysis.export import export_parquet
from analysis.engine import TABLES
from analysis.imports.convert import convert
from analysis.load import load, streamed, to_frame
from analysis.report import build_report, render_markdown, stream_capture
from sample_capture import generate
from test_native_engine import ROOT, SHIPPED

LOAD = sys.modules["analysis.load"]  # `analysis.load` is the function the package exports

CAPTURES = [path for path in SHIPPED if path.name.endswith(".jsonl.gz")]  # the others are corpora, not captures


def fed_rows(paths, **config) -> tuple[dict, dict]:
    """The rows of every table, in the order the core made them, and the summary, with the records
    read by the Python reader and fed to the core one at a time, as HAR and flow files are."""
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    with mock.patch.object(LOAD, "all_captures", lambda paths: False):
        summary, _ = streamed(paths, Config.from_options(**config), TABLES,
                              lambda table, batch: tables[table].extend(batch))
    return tables, summary


def fed_load(paths, **config) -> tuple[dict, dict]:
    """The DataFrames and summary of the records fed to the core one at a time."""
    rows, summary = fed_rows(paths, **config)
    return {name: to_frame(name, table) for name, table in rows.items()}, summary


def assert_loads_alike(paths, expected: tuple[dict, dict] | None = None, **config) -> None:
    """`load(paths)` gives the DataFrames and summary `expected` (default: `fed_load`'s)."""
    frames, summary = expected or fed_load(paths, **config)
    cap = load(paths, **config)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(cap, name), frames[name], check_dtype=True, obj=name)
    assert cap.summary() == summary


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    """A benchmarks/gen_capture.py capture of 30,000 frames: thousands of rows per table, so the
    analyzers' tables leave the core in several batches."""
    path = tmp_path_factory.mktemp("gen") / "gen.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_capture.py"), str(path), "--frames", "30000",
                    "--clients", "40"], check=True, capture_output=True)
    return str(path)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_shipped_captures(path):
    assert_loads_alike(str(path))


def test_sample_captures_with_other_limits(tmp_path):
    paths = []
    for seed in (3, 6):
        paths.append(tmp_path / f"sample{seed}.jsonl")
        generate(paths[-1], seed)
    assert_loads_alike([str(p) for p in paths], response_timeout_s=2, keepalive_limit_s=20)


def test_generated_capture(generated):
    assert_loads_alike(generated)


def test_batches_of_the_size_asked_in_row_order(generated):
    """Small batches put together give the one-pass tables, rows in the order the core made them
    fed one at a time; each batch but a table's last holds the rows asked for (the frames: or fewer once their
    payloads reach the bytes asked for)."""
    expected, summary = fed_rows(generated)
    handed: dict[str, list] = {name: [] for name in TABLES}
    result, _ = streamed(generated, Config(), TABLES, lambda table, batch: handed[table].append(batch),
                         rows=997, payload_bytes=200_000)
    assert result == summary
    for name in ("frames", "pairs", "sequences", "silences", "pings"):
        sizes = [batch.num_rows for batch in handed[name]]
        assert len(sizes) >= 2 and sizes[-1] <= 997, name
        if name != "frames":
            assert set(sizes[:-1]) == {997}, name
        made = [(row["conn"], float(row["t"])) for row in expected[name]]
        assert [key for batch in handed[name] for key in zip(batch["conn"].to_pylist(), batch["t"].to_pylist())] == made
    by_payloads = 0
    for batch in handed["frames"][:-1]:  # full, or cut on the frame whose payload fills the bytes asked for
        payloads = [len(text.encode()) if text else 0 for text in batch["text"].to_pylist()]
        by_payloads += batch.num_rows < 997
        assert batch.num_rows == 997 or sum(payloads) >= 200_000 > sum(payloads) - payloads[-1]
    assert by_payloads
    for name in ("connections", "reconnects", "keepalive", "streams", "violations"):
        assert [row for rows in handed[name] for row in rows] == expected[name], name


def test_row_dicts_come_at_most_1024_at_a_time(generated):
    """Whatever batch size is asked for: a dict per row is heavy (the summary's tables come as dicts)."""
    expected, _ = fed_rows(generated)
    handed: list[list[dict]] = []
    streamed(generated, Config(), ["pairs"], lambda table, batch: handed.append(batch), rows=5000, dicts=["pairs"])
    assert len(expected["pairs"]) > 3000 and [len(b) for b in handed[:-1]] == [1024] * (len(handed) - 1)
    assert [row for rows in handed for row in rows] == expected["pairs"]


def test_an_error_in_the_consumer_stops_the_analysis(generated):
    """The error comes out, and the reading stopped there: nothing more is read (or kept)."""
    calls = []

    def fail(table, batch):
        calls.append(table)
        raise RuntimeError(f"disk full writing {table}")
    files = []
    with watch_reads(files.append), pytest.raises(RuntimeError, match="disk full writing"):
        streamed(generated, Config(), ["frames"], fail, rows=100)
    assert calls == ["frames"]
    assert files and files[0].bytes_read < os.path.getsize(generated) / 2


def test_export_alike(generated, tmp_path, monkeypatch):
    """Every Parquet file of `export_parquet` identical (values, types, row groups) on both roads."""
    native_counts, _ = export_parquet(generated, str(tmp_path / "native"), row_group_rows=5_000)
    monkeypatch.setattr(LOAD, "all_captures", lambda paths: False)  # records fed one at a time, as for HAR files
    fed_counts, _ = export_parquet(generated, str(tmp_path / "fed"), row_group_rows=5_000)
    assert native_counts == fed_counts
    for table in TABLES:
        native, fed = (pq.ParquetFile(tmp_path / side / f"{table}.parquet") for side in ("native", "fed"))
        assert native.metadata.num_row_groups == fed.metadata.num_row_groups, table
        assert native.read().equals(fed.read()), table


def test_report_alike(generated, monkeypatch):
    """The first pass of `mwtap report` keeps the same rows, and the report reads the same."""
    def report(paths):
        cap = stream_capture(paths)
        return cap, render_markdown(build_report(cap))
    native, native_text = report(generated)
    monkeypatch.setattr(LOAD, "all_captures", lambda paths: False)  # records fed one at a time, as for HAR files
    fed, fed_text = report(generated)
    assert native_text == fed_text
    assert native.sampled == fed.sampled and native.summary() == fed.summary()
    for name in (*TABLES, "listed_pairs"):
        pd.testing.assert_frame_equal(getattr(native, name), getattr(fed, name), check_dtype=True, obj=name)


def test_har_and_flow_files_load_as_their_converted_captures(tmp_path):
    """HAR and flow files become records that are fed to the core one at a time (`analysis.engine.Engine`):
    the same DataFrames and summary as the capture `mwtap convert` writes of them, read by the core,
    alone or beside a capture file."""
    from test_import_har import chrome_har, write_har
    chrome, many, sample = tmp_path / "chrome.har", tmp_path / "many.har", tmp_path / "sample.jsonl"
    chrome.write_bytes(orjson.dumps(chrome_har()))
    write_har(many, entries=30, messages=40, padding=10, apart=0.5)
    generate(sample, 4)
    flows = str(ROOT / "tests" / "data" / "flows-v7-websocket.mitm")
    converted = {}
    for source in (str(chrome), str(many), flows):
        converted[source] = str(tmp_path / f"{Path(source).name}.jsonl")
        convert(source, converted[source])
    for paths in ([str(chrome)], [str(many)], [flows], [str(chrome), str(sample)], [flows, str(many)]):
        as_captures = [converted.get(path, path) for path in paths]
        for config in ({}, {"response_timeout_s": 0.2, "keepalive_limit_s": 1}):
            cap = load(as_captures, **config)
            summary = cap.summary()
            summary["capture"]["files"] = paths  # the summary names the files read
            expected = {name: getattr(cap, name) for name in TABLES}, summary
            assert_loads_alike(paths, expected, **config)
