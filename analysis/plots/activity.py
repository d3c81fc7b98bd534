"""What the plots need beyond the analysis tables: the WebSocket pings and pongs (the tables count
them per connection but keep no times) and every client silence (the keepalive table keeps only
the longest per connection). Both are derived here from the capture files and the tables."""

from __future__ import annotations

import os

import pandas as pd

from analysis.capture import PING, PONG
from analysis.reader import CaptureSet, Paths

PING_COLUMNS = ["conn", "t", "rec", "dir"]


def read_pings(paths: Paths) -> pd.DataFrame:
    """The ping and pong records of captures: conn, t (UTC), rec ('ping'/'pong'), dir."""
    rows = [(r.get("conn"), r.get("t"), r["rec"], r.get("dir"))
            for r in CaptureSet(paths).records() if r["rec"] in (PING, PONG)]
    df = pd.DataFrame.from_records(rows, columns=PING_COLUMNS)
    df["t"] = pd.to_datetime(pd.to_numeric(df["t"], errors="coerce"), unit="s", utc=True)
    return df.dropna(subset=["conn", "t"]).astype({"conn": "string", "rec": "string", "dir": "string"})


def pings_of(cap) -> pd.DataFrame:
    """The pings and pongs of a loaded capture, read again from its files (none if they are gone)."""
    files = [f for f in cap.summary().get("capture", {}).get("files", []) if os.path.isfile(f)]
    if not files or not _has_pings(cap.connections):
        return read_pings([])
    return read_pings(files)


def _has_pings(connections: pd.DataFrame) -> bool:
    return bool(len(connections)) and bool((connections.pings_c2s.fillna(0) + connections.pings_s2c.fillna(0)).sum())


def seconds(times: pd.Series) -> pd.Series:
    """Epoch seconds (float) of a UTC time column."""
    return (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def client_silences(cap, pings: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every silence of every client: conn, start and end (epoch s), silence_s.

    A silence runs from the open (or a client message, ping or pong) to the next client activity,
    and the last one to the close or the end of the capture, as the keepalive analysis counts them.
    """
    pings = pings_of(cap) if pings is None else pings
    opened = cap.connections[cap.connections.state != "refused"][["conn", "opened_at"]]
    ends = cap.keepalive[["conn", "t"]]
    client_frames = cap.frames.loc[cap.frames.dir == "c2s", ["conn", "t"]]
    client_pings = pings.loc[pings.dir == "c2s", ["conn", "t"]]
    events = pd.concat([opened.rename(columns={"opened_at": "t"}), client_frames, client_pings, ends],
                       ignore_index=True).dropna()
    events = events[events.conn.isin(ends.conn)]
    if events.empty:
        return pd.DataFrame({"conn": pd.Series(dtype="string"), "start": pd.Series(dtype="float64"),
                             "end": pd.Series(dtype="float64"), "silence_s": pd.Series(dtype="float64")})
    events = pd.DataFrame({"conn": events.conn.astype("string"), "end": seconds(events.t)})
    events = events.sort_values(["conn", "end"], kind="stable", ignore_index=True)
    events["start"] = events.groupby("conn", sort=False)["end"].shift()
    gaps = events.dropna(subset=["start"]).copy()
    gaps["silence_s"] = gaps.end - gaps.start
    return gaps[["conn", "start", "end", "silence_s"]].reset_index(drop=True)
