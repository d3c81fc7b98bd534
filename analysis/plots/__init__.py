"""Figures of an analysed capture (`analysis.load`), drawn without pyplot so they never open a
window: each function takes the Capture and returns a `matplotlib.figure.Figure`, one that says
"no data" when there is nothing to draw.

    from analysis import load, plots
    cap = load("capture.jsonl")
    plots.plot_latency(cap).savefig("latency.png")
"""

from analysis.plots.keepalive import plot_keepalive
from analysis.plots.latency import latency_percentiles, plot_latency
from analysis.plots.reconnects import chain_summary, plot_reconnects
from analysis.plots.streams import plot_streams, stream_notifications
from analysis.plots.timeline import plot_timeline, worst_connections

__all__ = ["chain_summary", "latency_percentiles", "plot_keepalive", "plot_latency", "plot_reconnects",
           "plot_streams", "plot_timeline", "stream_notifications", "worst_connections"]
