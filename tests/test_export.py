"""`mwtap export --parquet`: one Parquet file per table, 0600, row groups, no token, and the DuckDB
query of docs/export.md runs on it."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import analysis
from analysis.capture import CaptureError
from analysis.engine import TABLES
from analysis.export import ROW_GROUP_CHARS, export_parquet
from analysis.synth import CaptureBuilder
from conftest import BIN, REPO, holds_jwt

JWT = ("eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(b'{"sub":"export-user"}').decode().rstrip("=")
       + ".ZXhwb3J0LXNpZ25hdHVyZQ")
OPAQUE = "opaque-init-token-4Kq9"


def unredacted_capture(path, connections: int = 30) -> None:
    """A capture recorded with redaction off: tokens in the URL, the Authorization header, InitConnection."""
    b = CaptureBuilder(redaction=False)
    t = 1_795_600_000.0
    for c in range(connections):
        conn = f"conn-{c}"
        b.record({"rec": "open", "t": t, "conn": conn, "url": f"ws://127.0.0.1:9000/consumer?token={JWT}",
                  "client": f"10.0.0.{c}:5000", "server": "127.0.0.1:9000", "t_request": t,
                  "request_headers": [["Authorization", f"jwt {JWT}"]], "status": 101, "response_headers": [],
                  "extensions": None, "subprotocol": None, "tls": False})
        b.c2s(conn, t + 0.01, {"kind": "req", "id": "0", "type": "InitConnection", "headers": [
            {"type": ".ams.headers.ConsumerAuthentication", "jwt": OPAQUE}]})
        b.s2c(conn, t + 0.02, {"kind": "resp", "reqId": "0", "code": 200, "type": "GenericResponse"})
        for i in range(1, 40):
            b.c2s(conn, t + 0.03 * i, {"kind": "req", "id": str(i), "type": "GetClock", "note": JWT})
            b.s2c(conn, t + 0.03 * i + 0.005, {"kind": "resp", "reqId": str(i), "code": 200,
                                                "type": "GetClockResponse"})
        b.close(conn, t + 2, 4401, f"token {JWT} expired", "server")
        t += 3
    b.write(path)


@pytest.fixture
def exported(tmp_path):
    capture = tmp_path / "plain.jsonl"
    unredacted_capture(capture)
    out = tmp_path / "parquet"
    counts, damage = export_parquet(str(capture), str(out), row_group_rows=500)
    return capture, out, counts


def test_every_table_is_a_private_parquet_file_matching_the_analysis(exported):
    capture, out, counts = exported
    cap = analysis.load(capture)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    for table in TABLES:
        path = out / f"{table}.parquet"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        data = pq.read_table(path).to_pandas()
        assert len(data) == counts[table] == len(getattr(cap, table)), table
    pairs = pq.read_table(out / "pairs.parquet").to_pandas()
    assert pairs.latency_ms.sum() == pytest.approx(cap.pairs.latency_ms.sum())
    drift = [abs((a - b).total_seconds()) for a, b in zip(sorted(pairs.t), sorted(cap.pairs.t))]
    assert max(drift) <= 1e-6  # microsecond timestamps
    connections = pq.read_table(out / "connections.parquet").to_pandas()
    assert set(connections.close_code) == {4401} and str(connections.t.dtype) == "datetime64[us, UTC]"


def test_big_tables_are_written_in_row_groups_a_filter_on_time_skips(exported):
    _, out, counts = exported
    frames = pq.ParquetFile(out / "frames.parquet")
    groups = frames.metadata.num_row_groups
    assert counts["frames"] > 2000 and groups == -(-counts["frames"] // 500)
    # every row group bounds its times (and numbers), so a reader filtering on `t` reads one of them
    t = frames.schema_arrow.get_field_index("t")
    last = frames.metadata.row_group(groups - 1).column(t).statistics
    assert last.has_min_max and all(frames.metadata.row_group(g).column(t).statistics.max < last.min
                                    for g in range(groups - 1))
    fragment = next(iter(ds.dataset(out / "frames.parquet").get_fragments()))
    assert len(fragment.split_by_row_group(ds.field("t") >= last.min)) == 1
    # string columns carry no bounds (they would skip nothing and cost a quarter of the writing)
    conn = frames.schema_arrow.get_field_index("conn")
    assert not any(frames.metadata.row_group(g).column(conn).is_stats_set for g in range(groups))


def test_the_export_holds_no_token(exported):
    capture, out, _ = exported
    assert JWT in capture.read_text() and OPAQUE in capture.read_text()
    seen = []
    for table in TABLES:
        for column in pq.read_table(out / f"{table}.parquet").to_pylist():
            seen.extend(str(v) for v in column.values() if v is not None)
    text = "\n".join(seen)
    assert JWT not in text and OPAQUE not in text and not holds_jwt(text)
    assert "[redacted sha256:" in text
    for path in out.iterdir():  # also not in the raw bytes (dictionary pages, statistics)
        data = path.read_bytes()
        assert JWT.encode() not in data and JWT[-20:].encode() not in data and OPAQUE.encode() not in data


def test_cli_refuses_to_overwrite_and_the_documented_duckdb_query_runs(exported):
    capture, out, _ = exported
    again = subprocess.run([str(BIN / "mwtap"), "export", str(capture), "--parquet", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    doc = (REPO / "docs" / "export.md").read_text()
    [query] = re.findall(r"```sql\n(.*?)```", doc, re.S)
    rows = duckdb.sql(query.replace("OUT_DIR", str(out))).fetchall()
    assert rows and rows[0][0] == "GetClock" and rows[0][1] == 30 * 39


def test_big_payloads_are_written_in_row_groups_of_bounded_size(tmp_path):
    """300 MB of payloads in fewer rows than a row group: the export writes them as it goes."""
    from test_report_memory import PEAK_MB, chat_capture, peak_rss_mb
    capture, out = tmp_path / "big.jsonl", tmp_path / "parquet"
    chat_capture(capture, 3_000, 100_000)
    peak = peak_rss_mb([str(BIN / "mwtap"), "export", "--parquet", str(out), str(capture)])
    assert peak < PEAK_MB, f"peak RSS {peak:.0f} MB"
    frames = pq.ParquetFile(out / "frames.parquet")
    assert frames.metadata.num_rows == 3_003 and frames.metadata.num_row_groups >= 300_000_000 // ROW_GROUP_CHARS


def test_a_bad_input_leaves_no_table_behind(tmp_path):
    """The tables are created before the capture is read: when it cannot be, none is left behind,
    and the export of the right file then goes into the same folder without --force."""
    bad = tmp_path / "notes.jsonl"
    bad.write_text("not a capture\n")
    out = tmp_path / "out"
    with pytest.raises(CaptureError):
        export_parquet(str(bad), str(out))
    assert not list(out.glob("*.parquet"))
    b = CaptureBuilder()
    b.open("c1", 1.0)
    b.close("c1", 2.0)
    b.write(tmp_path / "cap.jsonl")
    counts, _ = export_parquet(str(tmp_path / "cap.jsonl"), str(out))
    assert counts["connections"] == 1


def test_times_are_the_recorded_seconds_rounded_half_to_even_to_the_microsecond(tmp_path):
    """The core writes the big tables' times itself: as `round(seconds * 1e6)` rounds them, ties to even."""
    b = CaptureBuilder()
    b.open("c", 1_795_600_000.0)
    times = [1_795_600_000.0 + i * 0.0000013 + k for i in range(1500) for k in (0.0000005, 0.25000049)]
    for i, t in enumerate(times):
        b.c2s("c", t, {"kind": "req", "id": str(i), "type": "GetClock"})
    capture = tmp_path / "times.jsonl"
    b.write(capture)
    export_parquet(str(capture), str(tmp_path / "out"), row_group_rows=700)
    frames = pq.read_table(tmp_path / "out" / "frames.parquet")
    assert str(frames.schema.field("t").type) == "timestamp[us, tz=UTC]"
    assert str(frames.schema.field("text").type) == "string"
    micros = frames.column("t").cast("int64").to_pylist()
    assert micros == [round(t * 1_000_000) for t in times]
    assert len({m % 10 for m in micros}) > 1  # not all cut the same way


@pytest.fixture(scope="module")
def incompressible(tmp_path_factory):
    """A capture whose frames.parquet spans two row groups and over a megabyte, and that file's size."""
    import random
    tmp = tmp_path_factory.mktemp("incompressible")
    b = CaptureBuilder()
    b.open("c", 1_795_600_000.0)
    noise = random.Random(7)
    for i in range(30_000):  # more than a row group of payloads Parquet cannot squeeze much
        b.c2s("c", 1_795_600_000.0 + i / 1000, {"kind": "req", "id": str(i), "type": "GetClock",
                                                 "pad": "".join(noise.choices("abcdefghijklmnopqrstuvwxyz", k=60))})
    b.close("c", 1_795_600_100.0)
    b.write(tmp / "cap.jsonl")
    export_parquet(str(tmp / "cap.jsonl"), str(tmp / "whole"))
    return tmp / "cap.jsonl", (tmp / "whole" / "frames.parquet").stat().st_size


@pytest.mark.parametrize("short_by", [None, 20_000, 1], ids=["mid-pass", "last-row-group", "footer"])
def test_a_write_that_fails_stops_the_export_with_one_line_and_leaves_no_table(tmp_path, incompressible, short_by):
    """Row groups are written on a thread of their own: a write that fails there (the file size limit
    here, as a full disk would), early, in the last row group or in the file's footer, still stops the
    export with a one-line error, exit 2, and no table left (a rerun would be refused otherwise)."""
    import resource
    import signal
    capture, size = incompressible
    limit = 300_000 if short_by is None else size - short_by
    out = tmp_path / "parquet"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    run = subprocess.run([str(BIN / "mwtap"), "export", str(capture), "--parquet", str(out)],
                         capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert run.returncode == 2
    assert run.stderr == f"Error: {out}: File too large\n"
    assert list(out.iterdir()) == []


def test_a_table_file_that_cannot_be_made_leaves_no_table_and_no_thread(tmp_path):
    """A dangling link where a table goes (not an existing table, so not refused up front): the file
    cannot be made; the tables made before it are removed and the writing thread ends."""
    import threading
    b = CaptureBuilder()
    b.open("c1", 1.0)
    b.close("c1", 2.0)
    b.write(tmp_path / "cap.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "pairs.parquet").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        export_parquet(str(tmp_path / "cap.jsonl"), str(out))
    assert [p.name for p in out.iterdir()] == ["pairs.parquet"] and not (tmp_path / "nowhere").exists()
    assert "mwtap-write" not in [t.name for t in threading.enumerate()]
