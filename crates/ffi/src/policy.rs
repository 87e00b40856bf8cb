//! The decision policy and the simulated executor's script, as foreign
//! records.

use std::time::Duration;

use tether_recovery::scenario::{DEFAULT_DURATION_MS, Effects, FailRule};

use crate::{ActionKind, FailureKind, TetherError};

/// Overrides of the decision policy (docs/POLICY.md). Every field left unset
/// keeps tether's default (policy v1), so `Policy()` is policy v1.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct Policy {
    /// How long an Unavailable path may last before the node commits to
    /// offline (default 400 ms).
    #[uniffi(default = None)]
    pub offline_grace_ms: Option<i64>,
    /// A foreground after at least this long in the background reconnects
    /// instead of probing (default 30 000 ms).
    #[uniffi(default = None)]
    pub long_background_ms: Option<i64>,
    /// Delay before the first retry after a failure (default 250 ms).
    #[uniffi(default = None)]
    pub backoff_base_ms: Option<i64>,
    /// Upper bound of the retry delay before jitter (default 8 000 ms).
    #[uniffi(default = None)]
    pub backoff_cap_ms: Option<i64>,
    /// Relative jitter of every retry delay, in `[0, 1)` (default 0.2).
    #[uniffi(default = None)]
    pub jitter: Option<f64>,
    /// Seed of the jitter RNG (default 1); any value.
    #[uniffi(default = None)]
    pub seed: Option<i64>,
    /// Consecutive failed restores after which retries reconnect
    /// (default 2, at least 1).
    #[uniffi(default = None)]
    pub restore_failures_before_reconnect: Option<i32>,
}

impl Policy {
    /// tether's policy with these overrides, checked.
    pub(crate) fn to_config(&self) -> Result<tether::PolicyConfig, TetherError> {
        let mut config = tether::PolicyConfig::default();
        let ms = |field: &'static str, value: i64| {
            u64::try_from(value).map(Duration::from_millis).map_err(|_| {
                TetherError::InvalidConfig(format!("{field} must not be negative (got {value})"))
            })
        };
        if let Some(v) = self.offline_grace_ms {
            config.offline_grace = ms("Policy.offline_grace_ms", v)?;
        }
        if let Some(v) = self.long_background_ms {
            config.long_background = ms("Policy.long_background_ms", v)?;
        }
        if let Some(v) = self.backoff_base_ms {
            config.backoff_base = ms("Policy.backoff_base_ms", v)?;
        }
        if let Some(v) = self.backoff_cap_ms {
            config.backoff_cap = ms("Policy.backoff_cap_ms", v)?;
        }
        if let Some(v) = self.jitter {
            config.jitter = v;
        }
        if let Some(v) = self.seed {
            config.seed = v.cast_unsigned();
        }
        if let Some(v) = self.restore_failures_before_reconnect {
            config.restore_failures_before_reconnect = u32::try_from(v).map_err(|_| {
                TetherError::InvalidConfig(format!(
                    "Policy.restore_failures_before_reconnect must not be negative (got {v})"
                ))
            })?;
        }
        config.validate().map_err(|err| TetherError::InvalidConfig(err.to_string()))?;
        Ok(config)
    }
}

/// The `nth` start of `action` fails with `kind` (a scenario's `fail`
/// rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct SimulatedFailure {
    /// The action kind.
    pub action: ActionKind,
    /// Which start of that kind, counted from 1.
    pub nth: i64,
    /// How it fails.
    pub kind: FailureKind,
}

/// How the simulated node's actions behave: every action takes
/// `duration_ms` and succeeds unless a failure rule names it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SimulatedEffects {
    /// How long every action takes; unset: the scenario default (30 ms).
    #[uniffi(default = None)]
    pub duration_ms: Option<i64>,
    /// Which starts fail, and how.
    #[uniffi(default)]
    pub failures: Vec<SimulatedFailure>,
}

impl SimulatedEffects {
    pub(crate) fn to_effects(&self) -> Result<Effects, TetherError> {
        let duration_ms = match self.duration_ms {
            None => DEFAULT_DURATION_MS,
            Some(v) => u64::try_from(v).map_err(|_| {
                TetherError::InvalidConfig(format!(
                    "SimulatedEffects.duration_ms must not be negative (got {v})"
                ))
            })?,
        };
        let failures = self
            .failures
            .iter()
            .map(|rule| {
                let nth = u32::try_from(rule.nth).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    TetherError::InvalidConfig(format!(
                        "SimulatedFailure.nth must be at least 1 (got {})",
                        rule.nth
                    ))
                })?;
                Ok(FailRule { action: rule.action.into(), nth, error: rule.kind.into() })
            })
            .collect::<Result<_, TetherError>>()?;
        Ok(Effects { duration_ms, failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_is_policy_v1() {
        assert_eq!(Policy::default().to_config().unwrap(), tether::PolicyConfig::default());
    }

    #[test]
    fn out_of_range_policy_names_the_field() {
        let negative = Policy { offline_grace_ms: Some(-1), ..Policy::default() };
        let err = negative.to_config().unwrap_err().to_string();
        assert!(err.contains("offline_grace_ms"), "{err}");
        let jitter = Policy { jitter: Some(f64::NAN), ..Policy::default() };
        assert!(jitter.to_config().unwrap_err().to_string().contains("jitter"));
        let zero = Policy { restore_failures_before_reconnect: Some(0), ..Policy::default() };
        assert!(zero.to_config().is_err());
    }

    #[test]
    fn effects_reject_a_zeroth_start() {
        let rule =
            SimulatedFailure { action: ActionKind::Restore, nth: 0, kind: FailureKind::Timeout };
        let effects = SimulatedEffects { duration_ms: Some(5), failures: vec![rule] };
        assert!(effects.to_effects().unwrap_err().to_string().contains("nth"));
        let ok = SimulatedEffects { duration_ms: None, failures: Vec::new() };
        assert_eq!(ok.to_effects().unwrap().duration_ms, DEFAULT_DURATION_MS);
    }
}
