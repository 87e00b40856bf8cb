//! Policy knobs of the decision rules (docs/POLICY.md), with their defaults.

use std::time::Duration;

/// The longest delay any timer may be armed for: keeps deadline arithmetic
/// far from `Instant` overflow.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Every tunable of the decision rules. `Default` gives policy v1.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// How long an Unavailable path may last before the node commits to
    /// offline and runs `Disconnect`. Default 400 ms.
    pub offline_grace: Duration,
    /// A foreground after at least this long in the background reconnects
    /// instead of probing. Default 30 s.
    pub long_background: Duration,
    /// Delay before the first retry after a failure. Default 250 ms.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay before jitter. Default 8 s.
    pub backoff_cap: Duration,
    /// Relative jitter applied to every retry delay: the delay is multiplied
    /// by a factor drawn uniformly from `[1 - jitter, 1 + jitter]`.
    /// Must be in `[0, 1)`. Default 0.2.
    pub jitter: f64,
    /// Seed of the jitter RNG: the same seed and inputs give the same
    /// decisions. Default 1.
    pub seed: u64,
    /// Consecutive failed `Restore`s after which retries escalate to
    /// `Reconnect` (while the path is Available). Default 2.
    pub restore_failures_before_reconnect: u32,
    /// Seed-style debounce: when set, a path change never acts at once; the
    /// decision waits for this fixed window after the first path event of a
    /// burst (the seed design used 400 ms). Off by default; kept so that
    /// benchmarks can measure what the seed design cost.
    pub settle_window: Option<Duration>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            offline_grace: Duration::from_millis(400),
            long_background: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(8),
            jitter: 0.2,
            seed: 1,
            restore_failures_before_reconnect: 2,
            settle_window: None,
        }
    }
}

impl PolicyConfig {
    /// The seed design's timing: a fixed 400 ms settle window before deciding.
    pub fn seed_style() -> Self {
        Self { settle_window: Some(Duration::from_millis(400)), ..Self::default() }
    }

    /// Checks that the knobs make sense together.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] naming the field that is out of range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid =
            |field: &'static str, reason: &'static str| Err(PolicyError { field, reason });
        if !(0.0..1.0).contains(&self.jitter) {
            return invalid("jitter", "must be at least 0 and less than 1");
        }
        if self.backoff_base.is_zero() {
            return invalid("backoff_base", "must be greater than zero");
        }
        if self.backoff_cap < self.backoff_base {
            return invalid("backoff_cap", "must not be less than backoff_base");
        }
        let delays = [
            ("offline_grace", Some(self.offline_grace)),
            ("backoff_cap", Some(self.backoff_cap)),
            ("settle_window", self.settle_window),
        ];
        if let Some((field, _)) = delays.into_iter().find(|(_, d)| d.is_some_and(|d| d > MAX_DELAY))
        {
            return invalid(field, "must be at most a year");
        }
        if self.settle_window.is_some_and(|d| d.is_zero()) {
            return invalid("settle_window", "must be greater than zero when set");
        }
        if self.restore_failures_before_reconnect == 0 {
            return invalid("restore_failures_before_reconnect", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_policy_v1_and_valid() {
        let p = PolicyConfig::default();
        assert_eq!(p.offline_grace, Duration::from_millis(400));
        assert_eq!(p.long_background, Duration::from_secs(30));
        assert_eq!(p.settle_window, None);
        p.validate().unwrap();
        PolicyConfig::seed_style().validate().unwrap();
    }

    #[test]
    fn out_of_range_knobs_name_the_field() {
        let bad = PolicyConfig { jitter: 1.0, ..PolicyConfig::default() };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("jitter"), "{err}");
        let nan = PolicyConfig { jitter: f64::NAN, ..PolicyConfig::default() };
        assert!(nan.validate().is_err());
        let cap = PolicyConfig { backoff_cap: Duration::from_millis(1), ..PolicyConfig::default() };
        assert!(cap.validate().unwrap_err().to_string().contains("backoff_cap"));
    }
}

/// A policy knob is out of range: the Supervisor cannot be built with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {field} {reason}")]
pub struct PolicyError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}
