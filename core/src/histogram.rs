//! Latency percentiles from a bounded structure (analysis/histogram.py): a log-bucket histogram
//! within 1 % of the exact value, whose memory grows with the value range, not the count.

use std::collections::BTreeMap;

/// Bucket i holds (GROWTH^i, GROWTH^(i+1)]; its geometric midpoint is within 0.995 % of any value in it.
const GROWTH: f64 = 1.02;

#[derive(Debug, Clone)]
pub struct LogHistogram {
    pub buckets: BTreeMap<i64, u64>,
    pub non_positive: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            buckets: BTreeMap::new(),
            non_positive: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl LogHistogram {
    /// Counts a value (milliseconds). NaN counts but lands in no bucket, as in Python.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        if value <= 0.0 {
            self.non_positive += 1;
            return;
        }
        if value.is_nan() {
            // math.floor(nan) raises in Python; a NaN latency cannot come from a usable time.
            return;
        }
        let index = (value.ln() / GROWTH.ln()).floor() as i64;
        *self.buckets.entry(index).or_insert(0) += 1;
    }

    /// Nearest-rank percentile (q in 0..100), within 1 % of the exact value.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q / 100.0 * self.count as f64).ceil() as u64).max(1);
        if rank <= self.non_positive {
            return Some(self.min);
        }
        let mut seen = self.non_positive;
        for (&index, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let estimate = GROWTH.powf(index as f64 + 0.5);
                return Some(estimate.max(self.min).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Everything the histogram holds, as analysis.histogram.LogHistogram.state() gives it
    /// (an infinite min or max, of an empty histogram, is null).
    pub fn state(&self) -> serde_json::Value {
        let buckets: Vec<serde_json::Value> = self
            .buckets
            .iter()
            .map(|(i, n)| serde_json::json!([i, n]))
            .collect();
        serde_json::json!({
            "count": self.count, "non_positive": self.non_positive,
            "min": self.min, "max": self.max, "buckets": buckets,
        })
    }

    /// Adds another histogram's counts (the partitions of `--jobs`).
    pub fn merge(&mut self, other: &LogHistogram) {
        for (&index, &n) in &other.buckets {
            *self.buckets.entry(index).or_insert(0) += n;
        }
        self.non_positive += other.non_positive;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_within_one_percent() {
        let mut h = LogHistogram::default();
        for v in 1..=1000 {
            h.add(f64::from(v));
        }
        for (q, exact) in [(50.0, 500.0), (90.0, 900.0), (99.0, 990.0)] {
            let p = h.percentile(q).unwrap();
            assert!((p - exact).abs() / exact < 0.01, "{q}: {p}");
        }
        let top = h.percentile(100.0).unwrap();
        assert!(top <= 1000.0 && top > 990.0, "{top}");
        assert_eq!(LogHistogram::default().percentile(50.0), None);
    }

    #[test]
    fn non_positive_values_rank_first_and_merge_adds() {
        let mut a = LogHistogram::default();
        a.add(-3.0);
        a.add(0.0);
        let mut b = LogHistogram::default();
        b.add(10.0);
        a.merge(&b);
        assert_eq!((a.count, a.non_positive, a.min, a.max), (3, 2, -3.0, 10.0));
        assert_eq!(a.percentile(50.0), Some(-3.0));
        assert!((a.percentile(99.0).unwrap() - 10.0).abs() < 0.1);
    }
}
