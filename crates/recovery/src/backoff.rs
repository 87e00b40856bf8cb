//! Retry delays: capped exponential backoff with seeded jitter (docs/POLICY.md, failures).
//!
//! `delay(k) = min(base * 2^(k-1), cap) * U(1 - jitter, 1 + jitter)`.
//! The randomness comes from a SplitMix64 generator seeded by the policy, so
//! the same seed always gives the same schedule.

use std::time::Duration;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for
/// jitter. Not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct JitterRng {
    state: u64,
}

impl JitterRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (`n > 0`); the tiny modulo bias is irrelevant for
    /// workload generation, its only use.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The retry schedule of one Supervisor.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
    rng: JitterRng,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration, jitter: f64, seed: u64) -> Self {
        Self { base, cap, jitter, rng: JitterRng::new(seed) }
    }

    /// The delay before retry number `failures` (1 for the first retry),
    /// rounded to whole milliseconds: timers (tokio's included) tick in
    /// milliseconds, so a live node and `tether replay` fire at the same
    /// instant.
    pub(crate) fn delay(&mut self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        let unjittered = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        let factor = 1.0 + self.jitter * (2.0 * self.rng.next_unit() - 1.0);
        let jittered = unjittered.mul_f64(factor);
        Duration::from_millis(jittered.as_secs_f64().mul_add(1000.0, 0.5) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64) -> Backoff {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(8), 0.2, seed)
    }

    #[test]
    fn delays_double_up_to_the_cap_within_jitter() {
        let mut b = schedule(7);
        for (k, nominal_ms) in [(1, 250.0), (2, 500.0), (3, 1000.0), (6, 8000.0), (40, 8000.0)] {
            let d = b.delay(k).as_secs_f64() * 1000.0;
            assert!(
                (nominal_ms * 0.8..=nominal_ms * 1.2).contains(&d),
                "retry {k}: {d} ms is outside {nominal_ms} ms ±20 %"
            );
        }
    }

    #[test]
    fn delays_are_whole_milliseconds() {
        let mut b = schedule(5);
        for k in 1..10 {
            assert_eq!(b.delay(k).subsec_nanos() % 1_000_000, 0);
        }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let run = |seed| (1..20).map(|k| schedule(seed).delay(k)).collect::<Vec<_>>();
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn jitter_spreads_over_the_whole_band() {
        let mut b = schedule(11);
        let samples: Vec<f64> = (0..2000).map(|_| b.delay(1).as_secs_f64() * 1000.0).collect();
        let min = samples.iter().cloned().fold(f64::MAX, f64::min);
        let max = samples.iter().cloned().fold(f64::MIN, f64::max);
        assert!(min < 205.0 && max > 295.0, "band [{min}, {max}] too narrow");
    }
}
