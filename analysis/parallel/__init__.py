"""`mwtap analyze` over many files on all local cores (ProcessPoolExecutor) or a Dask cluster, with
the result exactly equal to the single-process run (docs/export.md, "Scale-out").

    summary, damage = analysis.parallel.analyze(paths, config, jobs=4)
    summary, damage = analysis.parallel.analyze(paths, config, dask_address="tcp://127.0.0.1:8786")

1. Every file is surveyed in parallel (recording, time range, connection ids, tokens).
2. Recordings that share an identity, or that are too close in time, form one partition
   (`plan.partitions`); with fewer than two partitions the input is analysed in one process.
3. Partitions are analysed in parallel (`run.analyze_partition`), their summary rows tagged with
   their place in the single-process order, then replayed in that order into one `Summary`;
   the analyzers' counts and histograms are added up.
4. If a partition reports that its rows could not be placed exactly, the whole input is analysed
   in one process instead.
"""

from __future__ import annotations

import os
from typing import Callable

from analysis.analyzers.sequences import READ_WAIT_S
from analysis.config import Config
from analysis.engine import Engine
from analysis.histogram import LogHistogram
from analysis.imports import SourceLimits
from analysis.parallel.plan import partitions, survey
from analysis.parallel.run import COUNTERS, PartitionResult, analyze_partition
from analysis.reader import Paths
from analysis.summary import Summary


def analyze(paths: Paths, config: Config | None = None, *, jobs: int | None = None,
            dask_address: str | None = None) -> tuple[dict, list]:
    """The summary of `paths` (what `analysis.analyze` returns) computed by `jobs` local processes
    (default: the number of cores) or by the Dask scheduler at `dask_address`."""
    from analysis.load import analyze as analyze_here

    config = config or Config()
    paths = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    jobs = jobs or os.cpu_count() or 1
    if dask_address is None and (jobs == 1 or len(paths) == 1):
        return analyze_here(paths, config)
    with _Workers(jobs, dask_address) as run_all:
        surveys = run_all(survey, list(enumerate(paths)))
        limits = SourceLimits.of(s.header for s in surveys)
        analysis_config = limits.config(config)
        gap = max(config.reconnect_window_s, config.response_timeout_s, config.accept_timeout_s, READ_WAIT_S)
        plan = partitions(surveys, gap)
        if len(plan) < 2:
            return analyze_here(paths, config)
        end_t = plan[-1].t_max
        results = run_all(analyze_partition, [
            (i, part.files, analysis_config, end_t if i + 1 < len(plan) else None,
             plan[i + 1].t_min if i + 1 < len(plan) else None) for i, part in enumerate(plan)])
    if not all(r.safe for r in results) or results[-1].last_t != end_t:  # (a damaged line may hold a later t)
        return analyze_here(paths, config)
    return limits.annotate(_merge(results, analysis_config)), _damage(results)


class _Workers:
    """`run_all(fn, [args, ...])` -> results in order, on local processes or a Dask cluster."""

    def __init__(self, jobs: int, dask_address: str | None):
        self.jobs = jobs
        self.dask_address = dask_address

    def __enter__(self) -> Callable:
        if self.dask_address is not None:
            try:
                from distributed import Client
            except ImportError:
                raise RuntimeError("--dask needs dask.distributed (pip install 'mwtap[dask]')") from None
            self.client = Client(self.dask_address, set_as_default=False)
            return lambda fn, tasks: self.client.gather(self.client.map(fn, *zip(*tasks), pure=False))
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        return lambda fn, tasks: list(self.pool.map(fn, *zip(*tasks)))

    def __exit__(self, *exc) -> None:
        if self.dask_address is not None:
            self.client.close()
        else:
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
                self.unknown_records[kind] = self.unknown_records.get(kind, 0) + n


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
