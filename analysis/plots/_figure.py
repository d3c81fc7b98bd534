"""Figures without pyplot (so nothing ever opens a window), the "no data" figure, and the
conversions every plot needs (table times to matplotlib dates, long names shortened)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


C2S_COLOR = "#1f77b4"
S2C_COLOR = "#ff7f0e"
ALERT_COLOR = "#d62728"


def new_figure(width: float = 10.0, height: float = 5.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def no_data(title: str, why: str = "no data") -> Figure:
    """A small figure that says there is nothing to draw (empty capture, nothing selected)."""
    fig = new_figure(6.0, 2.0)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=14, color="grey", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def utc(times) -> np.ndarray:
    """Table times (tz-aware UTC) as naive UTC datetime64, which matplotlib draws as dates."""
    import pandas as pd
    series = pd.Series(times)
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert(None)
    return series.to_numpy(dtype="datetime64[ns]")


def date_axis(ax, label: str = "time (UTC)") -> None:
    import matplotlib.dates as mdates
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel(label)


def short(text, width: int = 28) -> str:
    """A capture's string as a plot shows it: shortened, and with every `$` escaped (matplotlib
    reads text between two `$` as math: `$\\foo$` from a capture would be a parse error)."""
    import pandas as pd
    text = "-" if pd.isna(text) else str(text)  # None, NaN or pandas' NA (a missing closed_by)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def shown_of(shown: int, total: int, what: str) -> str:
    """'12 streams' or 'top 10 of 2,000 streams' for titles."""
    return f"{total} {what}" if shown >= total else f"top {shown} of {total} {what}"
