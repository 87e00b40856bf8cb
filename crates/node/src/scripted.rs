//! An executor that plays a scenario's `effects`: every action takes the
//! scripted time and fails when a `fail` rule names its kind and start
//! number — the simulated executor of scenarios/README.md, on real tokio
//! time. Used by tests, by `tether bench handle`, and to run scenario files
//! live through a node.
//!
//! It plays effects only. A scenario's link events (`signaling_lost`,
//! `peer_lost`) are inputs, not effects: whoever plays the scenario reports
//! them through the [`LinkReporter`](crate::LinkReporter) whose events the
//! node was spawned with.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tether_recovery::ActionKind;
use tether_recovery::scenario::Effects;

use crate::ActionError;
use crate::executor::{ActionContext, ActionResult, RecoveryExecutor};

/// Plays scripted effects: every action takes the scripted time and fails
/// when a `fail` rule names its kind and start number.
#[derive(Debug)]
pub struct ScriptedExecutor {
    effects: Effects,
    state: Mutex<ScriptState>,
}

#[derive(Debug, Default)]
struct ScriptState {
    /// Starts so far, per kind.
    starts: HashMap<ActionKind, u32>,
}

impl ScriptedExecutor {
    /// Plays `effects`.
    pub fn new(effects: Effects) -> Self {
        Self { effects, state: Mutex::new(ScriptState::default()) }
    }

    /// Every action takes `duration` and succeeds.
    pub fn succeeding(duration: Duration) -> Self {
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Self::new(Effects { duration_ms, failures: Vec::new() })
    }

    /// How many times `kind` started.
    pub fn starts(&self, kind: ActionKind) -> u32 {
        self.lock().starts.get(&kind).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ScriptState> {
        // A panic while holding this lock cannot leave the counters torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn play(&self, ctx: ActionContext) -> ActionResult {
        let nth = {
            let mut state = self.lock();
            let count = state.starts.entry(ctx.kind).or_default();
            *count += 1;
            *count
        };
        if self.effects.duration_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.effects.duration_ms)).await;
        }
        self.effects.outcome(ctx.kind, nth).map_err(|kind| {
            ActionError::new(kind, format!("scripted failure of {} #{nth}", ctx.kind))
        })
    }
}

impl RecoveryExecutor for ScriptedExecutor {
    async fn probe(&self, ctx: ActionContext) -> ActionResult {
        self.play(ctx).await
    }

    async fn restore(&self, ctx: ActionContext) -> ActionResult {
        self.play(ctx).await
    }

    async fn reconnect(&self, ctx: ActionContext) -> ActionResult {
        self.play(ctx).await
    }

    async fn disconnect(&self, ctx: ActionContext) -> ActionResult {
        self.play(ctx).await
    }

    async fn cleanup(&self, ctx: ActionContext) -> ActionResult {
        self.play(ctx).await
    }
}
