"""benchmarks/view.py still runs against the real `mwtap view` and prints its figures (10k frames;
no timing asserted)."""

from __future__ import annotations

from test_benchmarks_smoke import run


def test_view_benchmark_prints_its_figures():
    out = run("view.py", "--smoke")
    for figure in ("mwtap view: URL printed after", "first screen", "open a frame", "scroll to a random row",
                   "filter biggest connection", "server RSS"):
        assert figure in out, out
