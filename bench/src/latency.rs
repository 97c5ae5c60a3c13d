//! Latency percentiles (nearest rank).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1000.0
        };
        Self {
            samples: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Median, 90th percentile and maximum of a few samples (cold starts: one process each).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spread {
    pub samples: usize,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Spread {
    /// No samples (a figure an older report did not have).
    pub fn empty() -> Self {
        Self::of(&[])
    }

    pub fn of(samples: &[f64]) -> Self {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Self {
            samples: sorted.len(),
            median: at(0.5),
            p90: at(0.9),
            max: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let spread = Spread::of(&[30.0, 10.0, 20.0, f64::NAN]);
        assert_eq!(spread.samples, 3);
        assert_eq!((spread.median, spread.p90, spread.max), (20.0, 30.0, 30.0));
    }
}
