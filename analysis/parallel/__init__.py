"""`mwtap analyze` over many files on all local cores (ProcessPoolExecutor) or other workers (the
Dask cluster of `recorder.dask_workers`: the network stays out of `analysis/`), with the result
exactly equal to the single-process run (docs/export.md, "Scale-out").

    summary, damage = analysis.parallel.analyze(paths, config, jobs=4)
    summary, damage = analysis.parallel.analyze(paths, config, workers=DaskWorkers("tcp://127.0.0.1:8786"))

1. Every file's recording and approximate time range are read (header, first record, last lines).
2. Recordings too close in time form one partition (`plan.partitions`); with fewer than two
   partitions the input is analysed in one process.
3. Partitions are analysed in parallel (`run.analyze_partition`), their summary rows tagged with
   their place in the single-process order, then replayed in that order into one `Summary`;
   the analyzers' counts and histograms are added up.
4. What the plan assumed is checked on the exact values the runs report (time gaps, deadlines, no
   connection id, token or JWT `sub` in two partitions); if it does not hold, the whole input is
   analysed in one process instead.
"""

from __future__ import annotations

import os
from typing import Callable, Protocol

from analysis.analyzers.sequences import READ_WAIT_S
from analysis.capture import as_paths, count_unknown
from analysis.config import Config
from analysis.engine import Engine
from analysis.histogram import LogHistogram
from analysis.imports import SourceLimits
from analysis.parallel.plan import partitions, survey
from analysis.parallel.run import COUNTERS, PartitionResult, analyze_partition
from analysis.reader import Paths
from analysis.summary import Summary


def analyze(paths: Paths, config: Config | None = None, *, jobs: int | None = None,
            workers: Workers | None = None) -> tuple[dict, list]:
    """The summary of `paths` (what `analysis.analyze` returns) computed by `workers` (default:
    `jobs` local processes, the number of cores unless given)."""
    from analysis.load import analyze as analyze_here

    config = config or Config()
    paths = as_paths(paths)
    jobs = jobs or os.cpu_count() or 1
    if workers is None:
        if jobs == 1 or len(paths) == 1:
            return analyze_here(paths, config)
        workers = LocalWorkers(jobs)
    gap = max(config.reconnect_window_s, config.response_timeout_s, config.accept_timeout_s, READ_WAIT_S)
    with workers as run_all:
        surveys = run_all(survey, list(enumerate(paths)))
        limits = SourceLimits.of(s.header for s in surveys)
        analysis_config = limits.config(config)
        plan = partitions(surveys, gap)
        if len(plan) < 2:
            return analyze_here(paths, config)
        last = len(plan) - 1
        end_t = plan[-1].t_max
        results = run_all(analyze_partition, [(i, part.files, analysis_config, end_t if i < last else None)
                                              for i, part in enumerate(plan)])
        if not _independent(results, gap):
            return analyze_here(paths, config)
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
        for _, table, row in r.rows:
            if table != "connections":
                continue
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
    rank: dict[float, int] = {}
    for r in sorted(results, key=lambda r: r.index):
        for delay in r.delays:
            rank.setdefault(delay, len(rank))

    def order(tagged):
        (partition, record, phase, delay, origin, seq), _, _ = tagged
        return partition, record, phase, -1 if delay is None else rank[delay], origin, seq

    summary = Summary(config.max_violations)
    adders: dict[str, Callable] = {}
    for _, table, row in sorted((row for r in results for row in r.rows), key=order):
        add = adders.get(table) or adders.setdefault(table, summary.adder(table))
        add(row)
    engine = Engine(config)
    for name in COUNTERS:
        setattr(engine, name, sum(r.counters[name] for r in results))
    for r in results:
        for analyzer, aggregates in zip(engine.analyzers, r.aggregates):
            _add(analyzer, aggregates)
    return summary.result(engine, _Files(results))


def _add(analyzer, aggregates: dict) -> None:
    for name, value in aggregates.items():
        current = getattr(analyzer, name)
        if isinstance(value, LogHistogram):
            _add_histogram(current, value)
            continue
        for key, item in value.items():
            if isinstance(item, LogHistogram):
                _add_histogram(current.setdefault(key, LogHistogram()), item)
            else:
                current[key] = current.get(key, 0) + item


def _add_histogram(total: LogHistogram, part: LogHistogram) -> None:
    for index, n in part.buckets.items():
        total.buckets[index] = total.buckets.get(index, 0) + n
    total.non_positive += part.non_positive
    total.count += part.count
    total.min = min(total.min, part.min)
    total.max = max(total.max, part.max)
