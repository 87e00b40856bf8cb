//! What a caller hears about its event.

use std::fmt;

use tether_recovery::{ActionKind, FailureKind, NetworkEvent, NoAction, ParkReason};

/// The answer to one event: what it led to and how that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEventResult {
    /// The event, as the caller sent it.
    pub event: NetworkEvent,
    /// The action the event led to, or that subsumed it; `None` when no
    /// action was needed (stale, duplicate, state only) or possible.
    pub action: Option<ActionKind>,
    /// Whether the caller can consider the event handled: the action
    /// succeeded, or none was needed.
    pub success: bool,
    /// Why not, when `success` is false.
    pub error: Option<EventError>,
    /// Milliseconds from the call to this answer.
    pub duration_ms: u64,
    /// Whether the event shared an action another event started.
    pub coalesced: bool,
    /// Why no action ran, when none did.
    pub no_action: Option<NoAction>,
}

/// Why an event's work did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The action failed (a retry may follow on its own).
    #[error("{action} failed ({kind}): {message}")]
    ActionFailed {
        /// Which action.
        action: ActionKind,
        /// How the Supervisor classified it.
        kind: FailureKind,
        /// The executor's message.
        message: String,
    },
    /// The action was cancelled by a cleanup or by the path going offline.
    #[error("{action} was cancelled")]
    Cancelled {
        /// Which action.
        action: ActionKind,
    },
    /// The work was dropped before it started (a cleanup or an offline
    /// commit took its place, or the path came back within the grace).
    #[error("superseded before it started")]
    Superseded,
    /// Recovery is parked; nothing was recovered.
    #[error("recovery is parked ({})", ParkName(.reason))]
    Parked {
        /// Why recovery is parked.
        reason: Option<ParkReason>,
    },
}

struct ParkName<'a>(&'a Option<ParkReason>);

impl fmt::Display for ParkName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.map_or("unknown reason", ParkReason::name))
    }
}
