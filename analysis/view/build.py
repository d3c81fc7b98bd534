"""The index of whole captures in one pass over their lines, with the analysis beside it: the protocol
engine (the native core, as `mwtap analyze` runs it) reads the captures in a child process while
this process records where every line is; what the engine
found (pairs, violations, reconnects, connection rows) then comes back and is attached to the frames.
With two cores building the index takes about the longer of the two passes, not their sum. (`mwtap
view --follow` feeds the index one record at a time instead: `ViewIndex.add`.)"""

from __future__ import annotations

import multiprocessing
import os

from analysis.config import Config
from analysis.load import streamed
from analysis.native import cores
from analysis.view.index import ViewIndex
from analysis.view.source import Sources

_TABLES = ("pairs", "violations", "reconnects", "connections")


def _found(paths: list[str], config: Config, jobs: int | None = None) -> dict[str, list]:
    """The rows the index wants of the engine's tables, pairs reduced to their frames, read on
    `jobs` cores (`analysis.native.open_captures`)."""
    rows: dict[str, list] = {table: [] for table in _TABLES}

    def keep(table: str, batch: list[dict]) -> None:
        if table == "pairs":
            rows["pairs"].extend((row["conn"], row["frame"], row["response_frame"]) for row in batch
                                 if row["frame"] is not None and row["response_frame"] is not None)
        else:
            rows[table].extend(batch)
    streamed(paths, config, _TABLES, keep, jobs=jobs, dicts=list(_TABLES))
    return rows


def _engine_pass(paths: list[str], config: Config, send) -> None:
    # The indexing holds one core: the engine's reading threads get the others.
    send.send(_found(paths, config, max(1, cores() - 1)))
    send.close()


def build(sources: Sources, config: Config | None = None, processes: int | None = None) -> ViewIndex:
    """The index of every file of `sources`. `processes`: 2 runs the engine beside the indexing
    (the default with two cores or more), 1 runs it after the indexing, in this process."""
    index = ViewIndex(config)
    streams = [sources.records(i) for i in range(len(sources.paths))]
    locate = index.locate
    if (processes or min(2, os.cpu_count() or 1)) < 2:
        for rec, file, offset, length in sources.ordered(streams):
            locate(rec, file, offset, length)
        found = _found(sources.paths, index.config)
    else:
        # A clean server process with the analysis imported forks the child: quick to start, and safe
        # when this process has threads (a test runner's, a following view's), which a plain fork is not.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_engine_pass, args=(sources.paths, index.config, send), daemon=True,
                                name="mwtap-view-engine")
        child.start()
        send.close()
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
