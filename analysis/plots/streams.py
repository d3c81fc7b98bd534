"""Subscription streams: notifications over time (total rate, and the busiest streams one by one)
with their subscribe and unsubscribe."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plots._figure import ALERT_COLOR, date_axis, new_figure, no_data, short, shown_of, utc

RATE_BINS = 60


def stream_notifications(cap) -> pd.DataFrame:
    """One row per notification counted in a stream: conn, key (subscription or dialog id), t, frame.

    Conversation streams are matched on the notification's subscriptionId, messaging-event streams
    on the dialogId of the sequences table (one row per notification frame), each to the latest
    stream of that key on that connection that started before it.
    """
    frames = cap.frames
    conversation = frames.loc[(frames.category == "notification") & frames.subscription_id.notna(),
                              ["conn", "subscription_id", "t", "frame"]].rename(columns={"subscription_id": "key"})
    messaging = cap.sequences.loc[cap.sequences.dialog_id.notna(), ["conn", "dialog_id", "t", "frame"]]
    messaging = messaging.rename(columns={"dialog_id": "key"}).drop_duplicates(["conn", "frame", "key"])
    notes = pd.concat([conversation, messaging], ignore_index=True).dropna(subset=["t"])
    streams = stream_keys(cap.streams).dropna(subset=["start"])
    if notes.empty or streams.empty:
        return pd.DataFrame({"conn": pd.Series(dtype="string"), "key": pd.Series(dtype="string"),
                             "t": pd.Series(dtype="datetime64[ns, UTC]"), "frame": pd.Series(dtype="Int64"),
                             "stream": pd.Series(dtype="int64")})
    matched = pd.merge_asof(notes.sort_values("t"), streams.sort_values("start"), left_on="t", right_on="start",
                            by=["conn", "key"], direction="backward")
    return matched.dropna(subset=["stream"]).astype({"stream": "int64"})[["conn", "key", "t", "frame", "stream"]]


def stream_keys(streams: pd.DataFrame) -> pd.DataFrame:
    """conn, key, start (first of request, confirmation, first notification) and stream (row index)."""
    start = streams.t.fillna(streams.t_confirmed).fillna(streams.t_first)
    return pd.DataFrame({"conn": streams.conn, "key": streams.subscription_id.fillna(streams.dialog_id),
                         "start": start, "stream": streams.index.to_numpy()})


def plot_streams(cap, *, max_streams: int = 10):
    """Notifications per minute over all streams, and the cumulative notifications of the
    `max_streams` busiest streams with their subscribe (●) and unsubscribe (■)."""
    title = "Subscription streams"
    streams = cap.streams
    notes = stream_notifications(cap)
    if streams.empty or notes.empty:
        return no_data(title, "no notifications in subscription streams")
    fig = new_figure(12, 7)
    rate_ax, streams_ax = fig.subplots(2, 1, height_ratios=[1, 2], sharex=True)
    _rate(rate_ax, notes)
    busiest = streams.notifications.fillna(0).sort_values(ascending=False, kind="stable").head(max_streams).index
    for index in busiest:
        row = streams.loc[index]
        key = row.subscription_id if pd.notna(row.subscription_id) else row.dialog_id
        times = utc(notes.t[notes.stream == index].sort_values())
        line, = streams_ax.step(times, np.arange(1, len(times) + 1), where="post", gid="stream",
                                label=f"{short(row.kind, 16)} {short(key, 22)} "
                                      f"on {short(row.conn, 10)}")
        for when, marker in ((row.t, "o"), (row.t_unsubscribed, "s")):
            if pd.notna(when):
                drawn_at = np.searchsorted(times, utc([when])[0], side="right")
                streams_ax.plot(utc([when]), [drawn_at], marker, color=line.get_color(), markersize=7,
                                markeredgecolor=ALERT_COLOR if marker == "s" else "black",
                                gid="unsubscribe" if marker == "s" else "subscribe")
    streams_ax.set_ylabel("notifications received (cumulative)")
    streams_ax.set_title(f"{shown_of(len(busiest), len(streams), 'streams')} by notifications "
                         "(● subscribe, ■ unsubscribe)", fontsize=10)
    streams_ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    streams_ax.grid(True, alpha=0.3)
    date_axis(streams_ax)
    fig.suptitle(title)
    return fig


def _rate(ax, notes: pd.DataFrame) -> None:
    seconds = (notes.t - notes.t.min()).dt.total_seconds().to_numpy()
    span = max(float(seconds.max()), 1.0)
    counts, edges = np.histogram(seconds, bins=RATE_BINS, range=(0, span))
    per_minute = counts * 60.0 / (span / RATE_BINS)
    starts = utc(notes.t.min() + pd.to_timedelta(edges[:-1], unit="s"))
    ax.step(starts, per_minute, where="post", color="black", gid="rate")
    ax.set_ylabel("notifications / min")
    ax.set_title(f"all streams: {len(notes)} notifications", fontsize=10)
    ax.grid(True, alpha=0.3)
