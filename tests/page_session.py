"""A documented page's frames (tests/data) analysed as one connection: the pages show no times, so
the frames come one every half second, in the page's order."""

from __future__ import annotations

from analysis import Config, Engine
from analysis.synth import CaptureBuilder

STEP_S = 0.5


class Tables:
    """A sink keeping the rows of the named tables."""

    def __init__(self, *tables: str):
        self.rows = {table: [] for table in tables}

    def adder(self, table: str):
        rows = self.rows.get(table)
        return rows.append if rows is not None else None


def analyse_page(frames: list[dict], tables: tuple[str, ...], **open_options) -> tuple[list, dict[str, list[dict]]]:
    """(violations, rows by table) of one connection carrying `frames` ({"dir", "frame"} each);
    `open_options` go to CaptureBuilder.open (url, token)."""
    b = CaptureBuilder()
    b.open("c", 0.0, **open_options)
    for i, line in enumerate(frames):
        b.msg("c", 1 + STEP_S * i, line["frame"], from_client=line["dir"] == "c2s")
    b.close("c", 1 + STEP_S * len(frames))
    sink, found = Tables(*tables), []
    engine = Engine(Config(), sink=sink, on_violation=found.append)
    for rec in b.records[1:]:
        engine.feed(rec)
    engine.finish()
    return found, sink.rows
