"""The plots of analysis.plots on the notebooks' sample capture, an empty capture and 10,000 connections."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from matplotlib.figure import Figure

import analysis
from analysis import plots
from analysis.synth import CaptureBuilder
from conftest import REPO

ALL_PLOTS = [plots.plot_latency, plots.plot_timeline, plots.plot_streams, plots.plot_reconnects,
             plots.plot_keepalive]


@pytest.fixture(scope="module")
def cap(sample_capture):
    return analysis.load(sample_capture)


@pytest.fixture
def empty_cap(tmp_path):
    path = tmp_path / "empty.jsonl"
    CaptureBuilder().write(path)
    return analysis.load(path)


def by_gid(fig: Figure, gid: str) -> list:
    return fig.findobj(lambda artist: artist.get_gid() == gid)


def texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and a is not fig))


def titles(fig: Figure) -> str:
    return " ".join([ax.get_title(loc) for ax in fig.axes for loc in ("left", "center")]
                    + [fig._suptitle.get_text() if fig._suptitle else ""])


def test_latency_cdf_per_type_with_the_legend_beside_the_curves(cap):
    fig = plots.plot_latency(cap)
    (curves,) = fig.axes  # the percentiles are the report's table, not a second one in the figure
    answered = cap.pairs[cap.pairs.status == "answered"]
    assert len(curves.get_lines()) == answered.type.nunique()
    assert "latency" in titles(fig).lower()
    for line in curves.get_lines():  # each CDF ends at 1 at the type's slowest request
        assert line.get_ydata()[-1] == pytest.approx(1.0)
    fig.canvas.draw()
    legend = curves.get_legend().get_window_extent()
    assert legend.x0 >= curves.get_window_extent().x1  # beside the axes: it covers no curve


def test_latency_percentiles_are_analyzes_numbers(cap, sample_capture):
    """One percentile method: the DataFrame helper gives what `mwtap analyze` prints, and both are
    the nearest-rank percentile within 1 %."""
    table = plots.latency_percentiles(cap.pairs).set_index("type")
    summary, _ = analysis.analyze(sample_capture)
    for type_, row in summary["latency"].items():
        assert [table.loc[type_, c] for c in ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms")] == \
            [row[c] for c in ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms")]
    clock = cap.pairs[(cap.pairs.type == "GetClock") & (cap.pairs.status == "answered")].latency_ms.sort_values()
    nearest_rank = clock.iloc[int(np.ceil(0.9 * len(clock))) - 1]
    assert table.loc["GetClock", "p90_ms"] == pytest.approx(nearest_rank, rel=0.01)
    assert table.loc["GetClock", "max_ms"] == pytest.approx(clock.max(), abs=1e-3)


def test_worst_connections_have_the_most_violations(cap):
    counts = cap.violations.conn.value_counts()
    worst = plots.worst_connections(cap, 3)
    assert [counts[c] for c in worst] == sorted(counts, reverse=True)[:3]


def test_timeline_of_a_connection_with_a_long_silence(cap):
    conn = cap.violations[cap.violations.rule == "keepalive-gap"].conn.iloc[0]
    fig = plots.plot_timeline(cap, conn)
    assert len(fig.axes) == 1
    frames = cap.frames[cap.frames.conn == conn]
    for direction in ("c2s", "s2c"):
        drawn, = by_gid(fig, f"frames-{direction}")
        assert len(drawn.get_segments()) == (frames.dir == direction).sum()
    row = cap.connections.set_index("conn").loc[conn]
    pings, = by_gid(fig, "pings-c2s")
    assert len(pings.get_xdata()) == row.pings_c2s
    marks, = by_gid(fig, "violations")
    assert len(marks.get_xdata()) == (cap.violations.conn == conn).sum()
    gaps = cap.keepalive.set_index("conn").loc[conn].gaps_over_limit
    assert gaps >= 1 and len(by_gid(fig, "keepalive-limit")) == gaps == len(by_gid(fig, "silence-over-limit"))
    close, = by_gid(fig, "close-label")
    assert f"close {row.close_code}" in close.get_text() and f"by {row.closed_by}" in close.get_text()
    assert "keep-alive limit 60 s" in titles(fig)


def test_timeline_stacks_a_reconnect_chain_and_follows_the_limit(cap):
    chain = cap.connections.chain.value_counts().index[0]
    conns = cap.connections[cap.connections.chain == chain].conn.tolist()
    fig = plots.plot_timeline(cap, conns, limit_s=20)
    assert len(fig.axes) == len(conns) == 3
    silences = cap.silences
    over = silences[silences.conn.isin(conns) & (silences.silence_s > 20)]
    assert len(over) > 1 and len(by_gid(fig, "keepalive-limit")) == len(over)


def test_streams_count_every_notification_and_mark_unsubscribe(cap):
    notes = plots.stream_notifications(cap)
    assert notes.groupby("stream").size().reindex(cap.streams.index, fill_value=0).tolist() == \
        cap.streams.notifications.tolist()
    fig = plots.plot_streams(cap, max_streams=30)
    rate_ax, streams_ax = fig.axes
    rate, = by_gid(fig, "rate")
    finals = sorted(len(line.get_ydata()) and int(line.get_ydata()[-1]) for line in by_gid(fig, "stream"))
    assert finals == sorted(cap.streams.notifications)
    unsubscribed = cap.streams.unsubscribed.fillna(False).sum()
    assert unsubscribed >= 1 and len(by_gid(fig, "unsubscribe")) == unsubscribed
    assert "notifications / min" in rate_ax.get_ylabel()


def test_streams_top_n_title_says_how_many(cap):
    fig = plots.plot_streams(cap, max_streams=3)
    assert f"top 3 of {len(cap.streams)} streams" in titles(fig)


def test_reconnect_chains_bars_codes_and_gaps(cap):
    fig = plots.plot_reconnects(cap)
    bars = sum(len(row.get_paths()) for row in by_gid(fig, "connection"))
    assert bars == (cap.connections.state != "refused").sum()
    labels = [t.get_text().strip() for t in by_gid(fig, "close-code")]
    assert "4401 server" in labels and "1006 server" in labels and "open at end" in labels
    assert len(by_gid(fig, "gap")) == len(cap.reconnects)
    assert "Reconnect chains" in titles(fig)


def test_keepalive_histogram_and_limit(cap):
    fig = plots.plot_keepalive(cap)
    ax, = fig.axes
    limit, = by_gid(fig, "keepalive-limit")
    assert limit.get_xdata()[0] == 60
    silences = cap.silences
    assert silences.over_limit.sum() == cap.keepalive.gaps_over_limit.sum() >= 1
    assert sum(bar.get_height() for bar in ax.containers[0]) == len(silences)
    assert "s, log scale" in ax.get_xlabel()
    limit, = by_gid(plots.plot_keepalive(cap, limit_s=15), "keepalive-limit")
    assert limit.get_xdata()[0] == 15


@pytest.mark.parametrize("plot", ALL_PLOTS, ids=lambda f: f.__name__)
def test_empty_capture_says_no_data(empty_cap, plot, tmp_path):
    fig = plot(empty_cap)
    assert isinstance(fig, Figure)
    assert "no " in texts(fig)
    fig.savefig(tmp_path / "empty.png")


def test_ten_thousand_connections_render_in_bounded_time(tmp_path):
    path = tmp_path / "big.jsonl"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "gen_capture.py"), str(path), "--frames", "60000",
                    "--clients", "10000"], check=True, timeout=60)
    big = analysis.load(path)
    assert (big.connections.state != "refused").sum() >= 10_000
    for plot in ALL_PLOTS:
        started = time.monotonic()
        plot(big).savefig(tmp_path / f"{plot.__name__}.png", dpi=60)
        assert time.monotonic() - started < 20, plot.__name__
    fig = plots.plot_reconnects(big)
    assert "top 20 of" in titles(fig)
    curves = plots.plot_latency(big).axes[0]
    assert all(len(line.get_xdata()) <= 400 for line in curves.get_lines())


def _overlapping(texts) -> list:
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_text()]
    return [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if box.overlaps(other)]


@pytest.mark.parametrize("capture", ["sample", "demo"])
def test_reconnect_labels_never_overlap(capture, cap):
    """The demo's reconnects come a few ms after the close: labels of short bars would overlap."""
    cap = cap if capture == "sample" else analysis.load(REPO / "notebooks" / "data" / "demo.jsonl.gz")
    fig = plots.plot_reconnects(cap)
    fig.canvas.draw()
    labels = by_gid(fig, "close-code") + by_gid(fig, "gap")
    assert labels and not _overlapping(labels)


def test_timeline_labels_never_overlap():
    """Violations' rule names find a free line under their marks (or are left out); the close is
    said above the axes, away from them."""
    cap = analysis.load(REPO / "notebooks" / "data" / "demo.jsonl.gz")
    fig = plots.plot_timeline(cap)
    fig.canvas.draw()
    from matplotlib.text import Annotation
    rules = 0
    for ax in fig.axes:
        names = [t for t in ax.texts if isinstance(t, Annotation)]
        rules += len(names)
        assert not _overlapping(names + [t for t in ax.texts if t.get_text().startswith("close ")])
        inside = ax.get_window_extent()
        assert all(inside.x0 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= inside.x1 + 1
                   for t in names)
    assert rules >= 20


def test_one_connection_capture_draws_without_warnings(tmp_path):
    b = CaptureBuilder()
    b.open("c1", 1.0)
    b.c2s("c1", 1.1, {"kind": "req", "id": "1", "type": "GetClock"})
    b.s2c("c1", 1.2, {"kind": "resp", "reqId": "1", "code": 200, "type": "GetClockResponse"})
    b.close("c1", 2.0, 4401, "expired", "server")
    b.write(tmp_path / "one.jsonl")
    one = analysis.load(tmp_path / "one.jsonl")
    import io
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for plot in ALL_PLOTS:
            plot(one).savefig(io.BytesIO(), format="png")
