"""Connection timelines: every frame as a tick (client above, server below), WebSocket pings,
client silences over the keep-alive limit, violations and the close, one row per connection."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plots._figure import ALERT_COLOR, C2S_COLOR, S2C_COLOR, date_axis, new_figure, no_data, short, utc

LABEL_LEVELS = 3  # lines of rule names under a row of marks
LABEL_CHAR = 5.0 / (8.5 * 72)  # a 7-point character (with room) as a fraction of the axes' width (12-inch figure)
LABELLED_VIOLATIONS = 12  # more than this on one row are drawn without their rule names
C2S_ROW, S2C_ROW = 1.0, 0.0


def worst_connections(cap, n: int = 1) -> list[str]:
    """The `n` connections with the most violations (then the most frames)."""
    conns = cap.connections[cap.connections.state != "refused"]
    if conns.empty:
        return []
    counts = cap.violations.conn.value_counts()
    ranked = pd.DataFrame({"conn": conns.conn.to_numpy(),
                           "violations": conns.conn.map(counts).fillna(0).to_numpy(),
                           "frames": (conns.frames_c2s.fillna(0) + conns.frames_s2c.fillna(0)).to_numpy()})
    ranked = ranked.sort_values(["violations", "frames", "conn"], ascending=[False, False, True], kind="stable")
    return ranked.conn.drop_duplicates().head(n).tolist()  # an id reused (or read twice) is drawn once


def plot_timeline(cap, conns=None, *, limit_s: float | None = None, max_connections: int = 6):
    """The timeline of one connection id or a list of them (default: the connections with the most
    violations), stacked, at most `max_connections`; `limit_s` defaults to the capture's keep-alive limit."""
    title = "Connection timeline"
    if conns is None:
        conns = worst_connections(cap, max_connections)
    elif isinstance(conns, str):
        conns = [conns]
    known = set(cap.connections.conn.dropna())
    conns = [c for c in conns if c in known][:max_connections]
    if not conns:
        return no_data(title, "no connection to show")
    limit_s = cap.config.keepalive_limit_s if limit_s is None else limit_s
    pings, silences = cap.pings, cap.silences
    fig = new_figure(12, 1.0 + 2.2 * len(conns))
    axes = np.atleast_1d(fig.subplots(len(conns), 1, squeeze=False)[:, 0])
    for ax, conn in zip(axes, conns):
        _connection_row(ax, cap, conn, pings[pings.conn == conn], silences[silences.conn == conn], limit_s)
    axes[0].legend(handles=_legend(axes[0], limit_s), fontsize="x-small", loc="upper left",
                   bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{title}{'s' if len(conns) > 1 else ''} (keep-alive limit {limit_s:g} s)")
    return fig


def _connection_row(ax, cap, conn: str, pings, silences, limit_s: float) -> None:
    row = cap.connections[cap.connections.conn == conn].iloc[0]
    frames = cap.frames[cap.frames.conn == conn]
    for direction, y, color in (("c2s", C2S_ROW, C2S_COLOR), ("s2c", S2C_ROW, S2C_COLOR)):
        times = utc(frames.t[frames.dir == direction])
        ax.vlines(times, y - 0.3, y + 0.3, color=color, linewidth=0.8, gid=f"frames-{direction}")
        sent = pings[pings.dir == direction]
        ax.plot(utc(sent.t), np.full(len(sent), y + 0.4), "v", color="green", markersize=4, gid=f"pings-{direction}")
    for gap in silences[silences.silence_s > limit_s].itertuples():
        start, end = utc([gap.start, gap.t])
        limit_at = utc([gap.start + pd.Timedelta(seconds=limit_s)])[0]
        ax.axvspan(start, end, color=ALERT_COLOR, alpha=0.15, gid="silence-over-limit")
        ax.axvline(limit_at, color=ALERT_COLOR, linestyle="--", linewidth=1, gid="keepalive-limit")
        ax.text(limit_at, 1.75, f" silent {gap.silence_s:.0f} s", color=ALERT_COLOR, fontsize=7, va="top")
    _violations(ax, cap.violations[cap.violations.conn == conn], frames)
    _ends(ax, row)
    ax.set_ylim(-0.8, 1.8)
    ax.set_yticks([S2C_ROW, C2S_ROW], ["server→client", "client→server"])
    ax.set_title(f"{short(conn, 40)}  ({row.frames_c2s} c2s, {row.frames_s2c} s2c frames, "
                 f"{row.pings_c2s} client pings)", fontsize=9, loc="left")
    date_axis(ax)


def _violations(ax, violations, frames) -> None:
    if violations.empty:
        return
    # a frame number can repeat on a connection id (an id reused, a line recorded twice): its first direction
    direction = violations.frame.map(frames.drop_duplicates("frame").set_index("frame").dir)
    direction = direction.astype(object).fillna("").to_numpy(dtype=object)
    # on the row of the frame it concerns; between the rows when it concerns no frame (a close, a gap)
    y = np.select([direction == "c2s", direction == "s2c"], [C2S_ROW, S2C_ROW], 0.5)
    times = utc(violations.t)
    ax.plot(times, y, "X", color=ALERT_COLOR, markersize=8, markeredgecolor="black", markeredgewidth=0.5,
            gid="violations")
    if len(violations) <= LABELLED_VIOLATIONS:
        frame_times = utc(frames.t)
        lo = min(times.min(), frame_times.min()) if len(frame_times) else times.min()
        hi = max(times.max(), frame_times.max()) if len(frame_times) else times.max()
        span = max(hi - lo, np.timedelta64(1, "ms"))
        taken: dict[tuple, list] = {}  # (row, level) -> the spans (axes fraction) of its labels
        for t, y_, rule in sorted(zip(times, y, violations.rule), key=lambda v: v[0]):
            x = (t - lo) / span
            right_half = x > 0.5  # labelled towards the middle: never past the axes' edge
            width = (len(rule) + 1) * LABEL_CHAR
            extent = (x - width, x) if right_half else (x, x + width)
            level = next((n for n in range(LABEL_LEVELS) if all(
                extent[1] < a or extent[0] > b for a, b in taken.get((y_, n), ()))), None)
            if level is None:  # no free line under the mark: the mark alone (its rule is in the tables)
                continue
            taken.setdefault((y_, level), []).append(extent)
            ax.annotate(rule, (t, y_), xytext=(-4 if right_half else 4, -11 - 8 * level),
                        textcoords="offset points", fontsize=7, color=ALERT_COLOR,
                        ha="right" if right_half else "left", gid="violation-label")


def _ends(ax, row) -> None:
    if pd.notna(row.opened_at):
        ax.axvline(utc([row.opened_at])[0], color="black", linewidth=1.5, gid="open")
    if pd.notna(row.closed_at):
        closed = utc([row.closed_at])[0]
        ax.axvline(closed, color="black", linewidth=1.5, gid="close")
        reason = f" {short(row.close_reason, 24)}" if pd.notna(row.close_reason) and row.close_reason else ""
        # above the axes, at the right: inside them it would cover the violations' labels
        ax.text(1.0, 1.02, f"close {row.close_code}{reason} by {short(row.closed_by, 12)}", ha="right",
                va="bottom", fontsize=8, transform=ax.transAxes, gid="close-label")


def _legend(ax, limit_s: float) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    return [Line2D([], [], color=C2S_COLOR, marker="|", linestyle="none", label="client frame"),
            Line2D([], [], color=S2C_COLOR, marker="|", linestyle="none", label="server frame"),
            Line2D([], [], color="green", marker="v", linestyle="none", label="WebSocket ping/pong"),
            Patch(color=ALERT_COLOR, alpha=0.15, label=f"client silence > {limit_s:g} s"),
            Line2D([], [], color=ALERT_COLOR, linestyle="--", label=f"keep-alive limit ({limit_s:g} s) reached"),
            Line2D([], [], color=ALERT_COLOR, marker="X", linestyle="none", label="violation"),
            Line2D([], [], color="black", label="open / close")]
