"""Latency percentiles from a bounded structure: a log-bucket histogram with <= 1 % relative error."""

from __future__ import annotations

import math

GROWTH = 1.02  # bucket i holds (GROWTH**i, GROWTH**(i+1)]; its geometric midpoint is within 0.995 %
_LOG_GROWTH = math.log(GROWTH)
# Named in every output that shows percentiles: analyze, report, `plots.latency_percentiles` all use this.
PERCENTILE_METHOD = "p50/p90/p99 nearest-rank, from log buckets (within 1 % of the exact value)"


def percentile(values, q: float) -> float | None:
    """The percentile every output uses (PERCENTILE_METHOD) of some values, e.g. per interval in a notebook."""
    return LogHistogram.of(values).percentile(q)


class LogHistogram:
    """Counts values (milliseconds) in logarithmic buckets; memory grows with the value range, not the count."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.non_positive = 0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    @classmethod
    def of(cls, values) -> "LogHistogram":
        histogram = cls()
        for value in values:
            histogram.add(value)
        return histogram

    @classmethod
    def from_state(cls, state: dict) -> "LogHistogram":
        """The histogram `state()` describes (the native core hands its histograms over this way)."""
        histogram = cls()
        histogram.count, histogram.non_positive = state["count"], state["non_positive"]
        if histogram.count:  # an empty one's infinite min and max are null in JSON
            histogram.min, histogram.max = state["min"], state["max"]
        histogram.buckets = {index: n for index, n in state["buckets"]}
        return histogram

    def state(self) -> dict:
        """Everything the histogram holds, as JSON values: buckets as [index, count] by index."""
        return {"count": self.count, "non_positive": self.non_positive, "min": self.min, "max": self.max,
                "buckets": [[index, n] for index, n in sorted(self.buckets.items())]}

    def merge(self, other: "LogHistogram") -> None:
        """Adds another histogram's counts (exact: the buckets are the same)."""
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.non_positive += other.non_positive
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def add(self, value: float) -> None:
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0:
            self.non_positive += 1
            return
        index = math.floor(math.log(value) / _LOG_GROWTH)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (q in 0..100), within 1 % of the exact value."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        if rank <= self.non_positive:
            return self.min
        seen = self.non_positive
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                estimate = GROWTH ** (index + 0.5)
                return min(max(estimate, self.min), self.max)
        return self.max
