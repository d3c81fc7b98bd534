"""Latency per request type: CDFs on a log axis (the percentiles are a table of the report, not of the figure)."""

from __future__ import annotations

import numpy as np

from analysis.plots._figure import new_figure, no_data, short, shown_of
from analysis.histogram import LogHistogram
from analysis.summary import NO_TYPE

CURVE_POINTS = 400  # a CDF drawn from this many quantiles looks the same as one from every sample
FEW = 20  # requests of a type drawn with a marker at each
MIN_MS = 0.01  # log axis: a 0 ms latency is drawn here


def latency_percentiles(pairs, percentiles=(50, 90, 99)):
    """count, pXX_ms and max_ms per request type of the answered requests, most requests first: the
    numbers `mwtap analyze` prints (`analysis.histogram.PERCENTILE_METHOD`)."""
    import pandas as pd
    answered = pairs[(pairs.status == "answered") & pairs.latency_ms.notna()]
    columns = ["type", "count", *(f"p{p}_ms" for p in percentiles), "max_ms"]
    rows = []
    for type_, values in answered.groupby(answered.type.fillna(NO_TYPE), sort=False).latency_ms:
        histogram = LogHistogram.of(values.to_numpy(dtype=float).tolist())
        rows.append([type_, histogram.count, *(round(histogram.percentile(p), 3) for p in percentiles),
                     round(histogram.max, 3)])
    table = pd.DataFrame(rows, columns=columns).astype({"count": "int64"})
    return table.sort_values(["count", "type"], ascending=[False, True], ignore_index=True)


def plot_latency(cap, *, max_types: int = 8):
    """The latency CDF of the `max_types` most frequent request types (log x axis); the legend sits
    beside the axes so that it covers no curve."""
    title = "Response latency per request type"
    table = latency_percentiles(cap.pairs)
    if table.empty:
        return no_data(title, "no answered requests")
    answered = cap.pairs[(cap.pairs.status == "answered") & cap.pairs.latency_ms.notna()]
    types = table.type.head(max_types)
    fig = new_figure(13, 5)
    curve_ax = fig.add_subplot()
    levels = np.linspace(0, 1, CURVE_POINTS)
    answered_types = answered.type.fillna(NO_TYPE)
    for type_ in types:
        # a mask, not groupby().get_group(): pandas 3.1 finds no group in a one-row grouper of strings
        values = answered.latency_ms[answered_types == type_].to_numpy(dtype=float)
        x = np.quantile(values, levels) if len(values) > CURVE_POINTS else np.sort(values)
        y = levels if len(values) > CURVE_POINTS else np.arange(1, len(values) + 1) / len(values)
        curve_ax.step(np.maximum(x, MIN_MS), y, where="post", label=f"{short(type_, 36)} (n={len(values)})",
                      marker="." if len(values) <= FEW else None)  # a single request is a point, not a line
    curve_ax.set_xscale("log")
    _plain_log_ticks(curve_ax)
    curve_ax.set_ylim(0, 1.01)
    curve_ax.set_xlabel("latency (ms, log scale)")
    curve_ax.set_ylabel("fraction of requests answered within")
    curve_ax.grid(True, which="both", alpha=0.3)
    curve_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    curve_ax.set_title(f"{title} ({shown_of(len(types), len(table), 'types')})")
    return fig


def _plain_log_ticks(ax) -> None:
    """Milliseconds as plain numbers ("0.5", "20", not "5×10⁻¹"); the 2s and 5s between the powers
    of ten labelled only when the axis spans at most two decades (beyond, they would overlap)."""
    from matplotlib.ticker import FuncFormatter
    low, high = ax.get_xlim()
    few_decades = high / max(low, MIN_MS) <= 100
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if few_decades and f"{v:.0e}"[0] in "25" else ""))
