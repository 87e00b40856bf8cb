//! Percentiles of measured durations, as the benchmarks report them.

use std::time::Duration;

/// Sorted samples, read at any quantile (nearest rank).
pub(crate) struct Samples(Vec<Duration>);

impl Samples {
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self(samples)
    }

    /// The sample at quantile `q` (0.0 to 1.0); zero when there is none.
    pub(crate) fn at(&self, q: f64) -> Duration {
        let last = self.0.len().saturating_sub(1);
        let index = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        self.0.get(index.min(last)).copied().unwrap_or_default()
    }
}

/// Milliseconds, for reports.
pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Microseconds, for reports.
pub(crate) fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// `value` rounded to `decimals` places, for readable reports.
pub(crate) fn rounded(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(samples.at(0.5), Duration::from_millis(51));
        assert_eq!(samples.at(0.99), Duration::from_millis(99));
        assert_eq!(samples.at(1.0), Duration::from_millis(100));
        assert_eq!(Samples::new(Vec::new()).at(0.5), Duration::ZERO);
    }

    #[test]
    fn rounding_for_reports() {
        assert_eq!(rounded(1.23456, 1), 1.2);
        assert_eq!(rounded(30.588517999999997, 3), 30.589);
        assert_eq!(rounded(ms(Duration::from_micros(2_149)), 1), 2.1);
    }
}
