"""Keep-alive: how long clients stayed silent, against the limit."""

from __future__ import annotations

import numpy as np

from analysis.plots._figure import ALERT_COLOR, new_figure, no_data

BINS = 50
MIN_S = 0.001  # log bins: shorter silences are counted in the first bin


def plot_keepalive(cap, *, limit_s: float | None = None):
    """Histogram (log-log) of every client silence (`cap.silences`: open to first activity, between
    activities, last activity to close), and each connection's longest, with the keep-alive limit
    drawn (default: the limit the capture was analysed with)."""
    title = "Client silences (keep-alive)"
    limit_s = cap.config.keepalive_limit_s if limit_s is None else limit_s
    silences = cap.silences
    if silences.empty:
        return no_data(title, "no client connections")
    values = np.maximum(silences.silence_s.to_numpy(dtype=float), MIN_S)
    longest = silences.groupby("conn").silence_s.max().to_numpy(dtype=float).clip(MIN_S)
    top = max(float(values.max()), limit_s) * 1.5
    bins = np.geomspace(MIN_S, top, BINS)
    fig = new_figure(10, 4.5)
    ax = fig.add_subplot()
    ax.hist(values, bins=bins, color="#9ecae1", label=f"all silences ({len(values)})")
    ax.hist(longest, bins=bins, histtype="step", color="black", linewidth=1.2,
            label=f"longest per connection ({len(longest)})")
    ax.axvline(limit_s, color=ALERT_COLOR, linestyle="--", linewidth=1.5, label=f"keep-alive limit {limit_s:g} s",
               gid="keepalive-limit")
    over = int((values > limit_s).sum())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("client silence (s, log scale)")
    ax.set_ylabel("silences (log scale)")
    ax.set_title(f"{title}: {over} over the limit in {int((longest > limit_s).sum())} of "
                 f"{len(longest)} connections")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return fig
