"""The index of whole captures in one pass. With a second core, the protocol engine reads the
capture in a child process (exactly as `mwtap analyze` does) while this process records where
every line is; what the engine found (pairs, violations, reconnects, connection rows) then comes
back and is attached to the frames. So building the index takes about the time of the analysis
alone, not the sum of both."""

from __future__ import annotations

import multiprocessing
import os

from analysis.config import Config
from analysis.engine import Engine
from analysis.reader import CaptureSet
from analysis.view.index import ViewIndex
from analysis.view.source import Sources

_TABLES = ("pairs", "violations", "reconnects", "connections")


class _Found:
    """The engine's sink in the child: the rows the index wants, pairs reduced to their frames."""

    def __init__(self) -> None:
        self.rows: dict[str, list] = {table: [] for table in _TABLES}

    def adder(self, table: str):
        if table == "pairs":
            keep = self.rows["pairs"].append
            return lambda row: keep((row["conn"], row["frame"], row["response_frame"])) \
                if row["frame"] is not None and row["response_frame"] is not None else None
        return self.rows[table].append if table in self.rows else None


def _engine_pass(paths: list[str], config: Config, send) -> None:
    found = _Found()
    engine = Engine(config, sink=found)
    feed = engine.feed
    for rec in CaptureSet(paths).records():
        feed(rec)
    engine.finish()
    send.send(found.rows)
    send.close()


def build(sources: Sources, config: Config | None = None, processes: int | None = None) -> ViewIndex:
    """The index of every file of `sources`. `processes`: 2 runs the engine beside the indexing
    (the default with two cores or more), 1 runs both in this process."""
    index = ViewIndex(config)
    streams = [sources.records(i) for i in range(len(sources.paths))]
    if (processes or min(2, os.cpu_count() or 1)) < 2:
        add = index.add
        for rec, file, offset, length in sources.ordered(streams):
            add(rec, file, offset, length)
        index.finish()
    else:
        context = multiprocessing.get_context("fork")  # no threads run yet: the view starts them later
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_engine_pass, args=(sources.paths, index.config, send), daemon=True,
                                name="mwtap-view-engine")
        child.start()
        send.close()
        locate = index.locate
        for rec, file, offset, length in sources.ordered(streams):
            locate(rec, file, offset, length)
        try:
            found = receive.recv()
        except EOFError:
            raise RuntimeError(f"the analysis process ended with status {child.exitcode}") from None
        finally:
            child.join()
        for conn, frame, response_frame in found.pop("pairs"):
            index.pair(conn, frame, response_frame)
        for table, rows in found.items():
            attach = index.adder(table)
            for row in rows:
                attach(row)
    for capture, _ in streams:
        sources.damage.extend(capture.damage)
    return index
