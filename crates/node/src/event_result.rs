//! What a caller hears about its event: [`Handled`] when the node dealt
//! with it, [`EventError`] when it did not.

use std::time::Duration;

use tether_recovery::{ActionError, ActionKind, NetworkEvent, NoAction, ParkReason};

use crate::NodeError;

/// An event the node dealt with: the action it led to (or that absorbed
/// it) succeeded, or it needed none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The event, as the caller sent it.
    pub event: NetworkEvent,
    /// What dealt with it.
    pub by: HandledBy,
    /// Whether the event shared an action another event started.
    pub coalesced: bool,
    /// From the call to this answer.
    pub elapsed: Duration,
}

impl Handled {
    /// The action that dealt with the event, if one ran.
    pub fn action(&self) -> Option<ActionKind> {
        match self.by {
            HandledBy::Action(kind) => Some(kind),
            HandledBy::NoAction(_) => None,
        }
    }
}

/// What dealt with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandledBy {
    /// This action ran and succeeded.
    Action(ActionKind),
    /// None was needed (stale, duplicate, or a state change only).
    NoAction(NoAction),
}

/// Why an event was not dealt with. The work an event started may go on
/// after some of these (a retry after a failure, the action after a
/// result timeout); each variant says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The action failed (a retry may follow on its own).
    #[error("{action} failed ({}): {}", .failure.kind, .failure.message)]
    ActionFailed {
        /// Which action.
        action: ActionKind,
        /// How it failed, as the executor reported it.
        failure: ActionError,
        /// Whether the event shared an action another event started.
        coalesced: bool,
    },
    /// The action was cancelled by a cleanup or by the path going offline.
    #[error("{action} was cancelled")]
    Cancelled {
        /// Which action.
        action: ActionKind,
        /// Whether the event shared an action another event started.
        coalesced: bool,
    },
    /// The work was dropped before it started (a cleanup or an offline
    /// commit took its place, or the path came back within the grace).
    #[error("superseded before it started")]
    Superseded,
    /// Recovery is parked; nothing was recovered.
    #[error("recovery is parked ({})", .0.name())]
    Parked(ParkReason),
    /// The node did not answer: it is shut down, its mailbox was full, or
    /// no answer came within the result timeout (the work goes on).
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl EventError {
    /// The action that ran for the event, when one did.
    pub fn action(&self) -> Option<ActionKind> {
        match self {
            Self::ActionFailed { action, .. } | Self::Cancelled { action, .. } => Some(*action),
            Self::Superseded | Self::Parked(_) | Self::Node(_) => None,
        }
    }
}
