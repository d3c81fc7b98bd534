"""Reconnect chains: each client's connections as bars, labelled with their close code and side,
and the gap before each reconnect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plots._figure import ALERT_COLOR, date_axis, new_figure, no_data, short, shown_of, utc

TOKEN_CLOSE_CODES = (4401, 4407)
WIDTH_IN = 12
AXES_PT = (WIDTH_IN - 2) * 72  # the bars' axes in points: the figure less the chain labels
CHAR_PT = 4.5  # the width of a character of a 6-7 point label, on average


def connection_ends(conns: pd.DataFrame) -> pd.Series:
    """When each connection ended: its close, or the end of the capture for those still open."""
    ends = pd.to_datetime(_seconds(conns.opened_at) + conns.duration_s, unit="s", utc=True)
    return conns.closed_at.fillna(ends.astype(conns.closed_at.dtype))


def _seconds(times: pd.Series) -> pd.Series:
    """Table times as epoch seconds (a capture's times span up to 570 years, a Timedelta only 292)."""
    return (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def connection_spans(conns: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(start, end) of each connection; one whose open was not recorded (only its close or its
    messages were) starts when it ends, one with neither time has NaT for both."""
    ends = connection_ends(conns)
    starts = conns.opened_at.fillna(ends)
    return starts, ends.fillna(starts)


def chain_summary(connections: pd.DataFrame) -> pd.DataFrame:
    """One row per chain: chain, connections, first open and last end, most connections first."""
    opened = connections[connections.state != "refused"]
    starts, ends = connection_spans(opened)
    table = pd.DataFrame({"chain": opened.chain, "opened_at": starts, "end": ends})
    chains = table.groupby("chain").agg(connections=("chain", "size"), first=("opened_at", "min"),
                                        last=("end", "max")).reset_index()
    return chains.sort_values(["connections", "first"], ascending=[False, True], ignore_index=True)


def plot_reconnects(cap, *, max_chains: int = 20):
    """The `max_chains` chains with the most connections, one row each: a bar per connection
    (red edge: closed by the server) with its close code, and the delay before each reconnect."""
    title = "Reconnect chains"
    chains = chain_summary(cap.connections)
    if chains.empty:
        return no_data(title, "no connections")
    shown = chains.head(max_chains)
    fig = new_figure(WIDTH_IN, 2.5 + 0.45 * len(shown))  # at least the height of the axis label
    ax = fig.add_subplot()
    conns = cap.connections[cap.connections.chain.isin(shown.chain)]
    # by connection id and opening time: an id can be reused (or read twice from two files)
    delays = cap.reconnects.drop_duplicates(["conn", "t"]).set_index(["conn", "t"]).delay_s
    starts, ends = connection_spans(conns)
    span_s = (_seconds(ends).max() - _seconds(starts).min()) if starts.notna().any() else 0.0
    pt_per_s = AXES_PT / span_s if span_s > 0 else 0.0
    for y, chain in enumerate(shown.chain):
        _chain_row(ax, y, conns[conns.chain == chain].sort_values("opened_at"), delays, pt_per_s)
    ax.set_yticks(range(len(shown)), [f"{short(c, 14)} ({n})" for c, n in zip(shown.chain, shown.connections)],
                  fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_ylabel("chain (first connection, connections)")
    date_axis(ax)
    ax.grid(True, axis="x", alpha=0.3)
    reconnects = int(chains.connections.sum() - len(chains))
    ax.set_title(f"{title}: {shown_of(len(shown), len(chains), 'chains')}, {reconnects} reconnects "
                 "\n(label: close code and side; orange: closed with 4401/4407; red edge: closed by the server)")
    return fig


def _chain_row(ax, y: int, conns: pd.DataFrame, delays: pd.Series, pt_per_s: float) -> None:
    """A chain's bars; a label is drawn only where it fits (a close code inside its bar, a delay
    clear of the previous one) so that no two labels overlap."""
    starts, ends = connection_spans(conns)
    # a connection without any time is not drawn: its label would land at a date matplotlib cannot
    # reach from the axis (FreeType "raster overflow")
    conns, starts, ends = conns[starts.notna()], utc(starts[starts.notna()]), utc(ends[starts.notna()])
    by_server = (conns.closed_by == "server").fillna(False).to_numpy()
    token_close = conns.close_code.isin(TOKEN_CLOSE_CODES).fillna(False).to_numpy()
    labels = [f"{code} {short(by, 12)}" for code, by in zip(conns.close_code.astype(object).fillna("?"),
                                                  conns.closed_by.astype(object).fillna("?"))]
    labels = ["open at end" if state == "open-at-end" else label for state, label in zip(conns.state, labels)]
    import matplotlib.dates as mdates
    left = mdates.date2num(starts)  # in days: a datetime64[ns] difference overflows beyond 292 years
    # one collection for the row (a patch per bar cost a tenth of a second per 100 bars); its bars'
    # left ends stop the axis as barh's do, so that the label fits computed above hold
    bars = ax.broken_barh(list(zip(left, mdates.date2num(ends) - left)), (y - 0.3, 0.6),
                          facecolors=["#ffbb78" if t else "#aec7e8" for t in token_close],
                          edgecolors=[ALERT_COLOR if s else "black" for s in by_server], gid="connection")
    bars.sticky_edges.x.extend(left)
    first_s = starts[0].astype("datetime64[ns]").astype("int64") / 1e9 if len(starts) else 0.0
    at_pt = lambda t: (t.astype("datetime64[ns]").astype("int64") / 1e9 - first_s) * pt_per_s  # float seconds:
    # a difference of datetime64[ns] overflows beyond 292 years
    free_from_pt = -np.inf  # where the previous delay label ends
    for start, end, conn, opened, label in zip(starts, ends, conns.conn, conns.opened_at, labels):
        if (len(label) + 1) * CHAR_PT <= at_pt(end) - at_pt(start):
            # inside its bar: left out of the layout, which would otherwise lay out every label once more
            ax.text(end, y, f"{label} ", ha="right", va="center", fontsize=7, gid="close-code", in_layout=False)
        delay = delays.get((conn, opened))
        text = f"+{delay:.1f} s" if delay is not None and pd.notna(delay) else ""
        if text and at_pt(start) - len(text) * CHAR_PT >= free_from_pt:
            free_from_pt = at_pt(start) + CHAR_PT
            ax.annotate(text, (start, y - 0.3), xytext=(0, 2), textcoords="offset points",
                        ha="right", va="bottom", fontsize=6, color="dimgrey", gid="gap")
