"""`mwtap analyze` over many files on all local cores (ProcessPoolExecutor) or other workers (the
Dask cluster of `recorder.dask_workers`: the network stays out of `analysis/`), with the result
exactly equal to the single-process run (docs/export.md, "Scale-out").

    summary, damage = analysis.parallel.analyze(paths, config, jobs=4)
    summary, damage = analysis.parallel.analyze(paths, config, workers=DaskWorkers("tcp://127.0.0.1:8786"))

1. Every file's recording and approximate time range are read (header, first record, last lines).
2. Recordings too close in time form one partition (`plan.partitions`); with fewer than two
   partitions the input is analysed in one process.
3. Partitions are analysed in parallel by the native core (`run.analyze_partition`), their
   summary rows handed back with their place in the single-process order, then replayed in that
   order into one `Summary`; the analyzers' counts and histograms are added up.
4. What the plan assumed is checked on the exact values the runs report (time gaps, deadlines, no
   connection id, token or JWT `sub` in two partitions); if it does not hold, the whole input is
   analysed in one process instead.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

from analysis import _core
from analysis.capture import as_paths, count_unknown
from analysis.config import Config
from analysis.histogram import LogHistogram
from analysis.imports import SourceLimits, all_captures
from analysis.native import Counters, cores
from analysis.parallel.plan import partitions, survey
from analysis.parallel.run import COUNTERS, END, FINISH, PartitionResult, analyze_partition
from analysis.reader import Paths
from analysis.summary import Summary


def analyze(paths: Paths, config: Config | None = None, *, jobs: int | None = None,
            workers: Workers | None = None) -> tuple[dict, list]:
    """The summary of `paths` (what `analysis.analyze` returns) computed by `workers` (default:
    `jobs` local processes, the number of cores unless given). One recording is analysed in this
    process, its lines parsed on threads (`jobs` cores in all)."""
    from analysis.load import analyze as analyze_here

    config = config or Config()
    paths = as_paths(paths)
    jobs = jobs or cores()
    if not all_captures(paths):  # HAR and flow files are converted to records in one process
        return analyze_here(paths, config)
    if workers is None:
        if jobs == 1 or len(paths) == 1:
            return analyze_here(paths, config, jobs)
        workers = LocalWorkers(jobs)
    gap = max(config.reconnect_window_s, config.response_timeout_s, config.accept_timeout_s, _core.READ_WAIT_S)
    with workers as run_all:
        surveys = run_all(survey, list(enumerate(paths)))
        limits = SourceLimits.of(s.header for s in surveys)
        analysis_config = limits.config(config)
        plan = partitions(surveys, gap)
        if len(plan) < 2:
            return analyze_here(paths, config, jobs)
        last = len(plan) - 1
        end_t = plan[-1].t_max
        results = run_all(analyze_partition, [(i, part.files, analysis_config, end_t if i < last else None)
                                              for i, part in enumerate(plan)])
        if not _independent(results, gap):
            return analyze_here(paths, config, jobs)
        exact_end = results[-1].t_max  # the planned end came from the last lines only
        rerun = [i for i, r in enumerate(results[:-1]) if r.open_at_end and end_t != exact_end]
        for i, result in zip(rerun, run_all(analyze_partition, [(i, plan[i].files, analysis_config, exact_end)
                                                                 for i in rerun])):
            results[i] = result
    return limits.annotate(_merge(results, analysis_config)), _damage(results)


def _independent(results: list[PartitionResult], gap: float) -> bool:
    """Whether the partitions really are what the plan assumed: apart by more than `gap`, every
    deadline left at a partition's end before the next one starts, no shared identity."""
    for before, after in zip(results, results[1:]):
        if after.t_min - before.t_max <= gap or before.latest_fired > after.t_min:
            return False
    owner: dict[tuple, int] = {}
    for r in results:
        for row in (row for tables in r.tables for row in tables.get("connections", ())):
            keys = [("conn", row["conn"]), ("token", row.get("token")), ("sub", row.get("sub"))]
            for key in keys:
                if key[1] is not None and owner.setdefault(key, r.index) != r.index:
                    return False
    return True


RunAll = Callable[[Callable, list[tuple]], list]
"""`run_all(fn, [args, ...])` -> `[fn(*args), ...]` in order, computed wherever the workers are."""


class Workers(Protocol):
    """A context manager giving a `RunAll` while it is open."""

    def __enter__(self) -> RunAll: ...

    def __exit__(self, *exc) -> None: ...


class LocalWorkers:
    """Local processes."""

    def __init__(self, jobs: int):
        self.jobs = jobs

    def __enter__(self) -> RunAll:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        # Workers fork from a clean server process that has the analysis imported: quick to start,
        # and safe when the caller has threads (a plain fork is not).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["analysis.parallel.run", "analysis.parallel.plan"])
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=context)
        return lambda fn, tasks: [future.result() for future in [self.pool.submit(fn, *args) for args in tasks]]

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()


class _Files:
    """What `Summary.result` reads of a CaptureSet, rebuilt from the partitions in input order."""

    def __init__(self, results: list[PartitionResult]):
        per_file = sorted(f for r in results for f in r.files)
        self.files = [_Path(path) for _, path, _, _ in per_file]
        self.damage = [d for _, _, damage, _ in per_file for d in damage]
        self.unknown_records: dict[str, int] = {}
        for _, _, _, unknown in per_file:
            for kind, n in unknown.items():
                count_unknown(self.unknown_records, kind, n)  # bounded over all files, as in one process


class _Path:
    def __init__(self, path: str):
        self.path = path


def _damage(results: list[PartitionResult]) -> list:
    return _Files(results).damage


def _merge(results: list[PartitionResult], config: Config) -> dict:
    """One `Summary` from the partitions' rows replayed in the single-process order: per table, a
    partition's rows made during its records, then those of its deadlines fired at the end (at the
    next partition's first record), and the rows of the connections still open at the end after
    everything; violations by the record and the deadline queue they were found at."""
    rank: dict[float, int] = {}  # timer delays in the order the single-process run first used them
    for r in results:
        for delay in r.delays:
            rank.setdefault(delay, len(rank))

    def place(r: PartitionResult, segment: tuple) -> tuple:
        at, delay, _ = segment
        if at == FINISH:
            return math.inf, r.index
        if at == END:
            return r.index + 1, -1, 0, rank[delay]
        return (r.index, at, 1, -1) if delay is None else (r.index, at, 0, rank[delay])

    summary = Summary(config.max_violations)
    for tables in [t for r in results for t in r.tables[:2]] + [r.tables[2] for r in results]:
        for name, rows in tables.items():
            add = summary.adder(name)
            for row in rows:
                add(row)
    add = summary.adder("violations")
    for _, (_, _, rows) in sorted(((place(r, s), s) for r in results for s in r.violations), key=lambda p: p[0]):
        for row in rows:
            add(row)
    counters = {name: sum(r.counters[name] for r in results) for name in COUNTERS}
    return summary.result(Counters({**counters, "stats": _merged_stats(results)}), _Files(results))


def _merged_stats(results: list[PartitionResult]) -> dict:
    """The analyzers' statistics over all partitions: counts added, histograms merged (the same
    buckets: exact), the accept percentiles worked out from the merged accept times."""
    stats: dict = {}
    accepts = LogHistogram()
    for r in results:
        for section, values in r.stats.items():
            if section == "accept_ms":
                accepts.merge(LogHistogram.from_state(values))
            elif section == "latency":
                latency = stats.setdefault(section, {})
                for key, state in values.items():
                    latency.setdefault(key, LogHistogram()).merge(LogHistogram.from_state(state))
            else:
                total = stats.setdefault(section, {})
                for key, value in values.items():
                    total[key] = total.get(key, 0) + value if value.__class__ is int else value
    if "latency" in stats:
        stats["latency"] = {key: histogram.state() for key, histogram in stats["latency"].items()}
    if "messaging" in stats:
        stats["messaging"]["accept_p50_ms"] = accepts.percentile(50)
        stats["messaging"]["accept_p90_ms"] = accepts.percentile(90)
    return stats
