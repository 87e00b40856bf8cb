//! Action reports: a stream of every action's start and end, for timelines
//! (`tether demo`), tests and metrics.

use std::time::Duration;

use tether_recovery::{ActionId, ActionKind, ActionOutcome};
use tokio::time::Instant;

use crate::ActionError;

/// One action started or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionReport {
    /// The node started the action (its future is about to be polled).
    Started {
        /// The action's id.
        id: ActionId,
        /// What.
        kind: ActionKind,
        /// 1 for a first try, k for the k-th consecutive try.
        attempt: u32,
        /// When (tokio time, so paused-time tests see virtual time).
        at: Instant,
    },
    /// The action ended.
    Ended {
        /// The action's id.
        id: ActionId,
        /// What.
        kind: ActionKind,
        /// How.
        outcome: ActionOutcome,
        /// When.
        at: Instant,
        /// How long it ran.
        elapsed: Duration,
        /// The executor's error, when it failed.
        error: Option<ActionError>,
    },
}

impl ActionReport {
    /// The action's id.
    pub fn id(&self) -> ActionId {
        match self {
            Self::Started { id, .. } | Self::Ended { id, .. } => *id,
        }
    }

    /// The action's kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Started { kind, .. } | Self::Ended { kind, .. } => *kind,
        }
    }

    /// When it happened.
    pub fn at(&self) -> Instant {
        match self {
            Self::Started { at, .. } | Self::Ended { at, .. } => *at,
        }
    }
}
