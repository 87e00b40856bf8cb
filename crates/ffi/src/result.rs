//! What a caller hears about its event.

use std::time::Duration;

use tokio::time::Instant;

use crate::{ActionKind, FailureKind, NetworkEvent, ParkReason, TetherError};

/// Why no action ran for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum NoAction {
    /// A snapshot whose sequence was not greater than the last accepted one.
    Stale,
    /// Nothing changed: same path, or the same lifecycle phase again.
    Duplicate,
    /// The event changed what the node believes but warrants no action.
    StateOnly,
    /// Recovery is parked; the event was recorded but recovers nothing.
    Parked,
    /// The work was dropped before it started (a cleanup or an offline
    /// commit took its place, or the path came back within the grace).
    Superseded,
}

/// Why an event's work did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum EventError {
    /// The action failed (a retry may follow on its own).
    ActionFailed {
        /// Which action.
        action: ActionKind,
        /// How the failure was classified.
        kind: FailureKind,
        /// The executor's message.
        message: String,
    },
    /// The action was cancelled by a cleanup or by the path going offline.
    Cancelled {
        /// Which action.
        action: ActionKind,
    },
    /// The work was dropped before it started.
    Superseded,
    /// Recovery is parked; nothing was recovered.
    Parked {
        /// Why recovery is parked.
        reason: ParkReason,
    },
    /// A kind of failure this version of the bindings does not name.
    Other {
        /// What happened.
        message: String,
    },
}

/// The answer to one event: what it led to and how that ended.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetworkEventResult {
    /// The event, as the caller sent it.
    pub event: NetworkEvent,
    /// The action the event led to, or that subsumed it; none when no
    /// action was needed (stale, duplicate, state only) or possible.
    pub action: Option<ActionKind>,
    /// Whether the caller can consider the event handled: the action
    /// succeeded, or none was needed.
    pub success: bool,
    /// Why not, when `success` is false.
    pub error: Option<EventError>,
    /// `error` in words, for logs.
    pub error_message: Option<String>,
    /// Milliseconds from the call to this answer.
    pub duration_ms: u64,
    /// Whether the event shared an action another event started.
    pub coalesced: bool,
    /// Why no action ran, when none did.
    pub no_action: Option<NoAction>,
}

impl From<tether::NoAction> for NoAction {
    fn from(value: tether::NoAction) -> Self {
        match value {
            tether::NoAction::Stale => Self::Stale,
            tether::NoAction::Duplicate => Self::Duplicate,
            tether::NoAction::StateOnly => Self::StateOnly,
        }
    }
}

impl EventError {
    /// The record's view of a node error that is not a failure of the call
    /// itself (those become [`TetherError`]s), with the no-action reason
    /// the seed-compatible record gives it.
    fn flattened(error: &tether::EventError) -> (Self, Option<NoAction>) {
        match error {
            tether::EventError::ActionFailed { action, failure, .. } => (
                Self::ActionFailed {
                    action: (*action).into(),
                    kind: failure.kind.into(),
                    message: failure.message.clone(),
                },
                None,
            ),
            tether::EventError::Cancelled { action, .. } => {
                (Self::Cancelled { action: (*action).into() }, None)
            }
            tether::EventError::Superseded => (Self::Superseded, Some(NoAction::Superseded)),
            tether::EventError::Parked(reason) => {
                (Self::Parked { reason: (*reason).into() }, Some(NoAction::Parked))
            }
            // `EventError` is non-exhaustive: keep its words.
            other => (Self::Other { message: other.to_string() }, None),
        }
    }
}

/// Flattens a node's typed answer into the seed-compatible record, at the
/// FFI edge only. A call that the node did not answer (shut down, mailbox
/// full, result timeout) is an error of the call, not a record.
pub(crate) fn flatten(
    event: tether::NetworkEvent,
    answer: Result<tether::Handled, tether::EventError>,
    started: Instant,
) -> Result<NetworkEventResult, TetherError> {
    let record = match answer {
        Ok(handled) => {
            let (action, no_action) = match handled.by {
                tether::HandledBy::Action(kind) => (Some(kind.into()), None),
                tether::HandledBy::NoAction(reason) => (None, Some(reason.into())),
            };
            NetworkEventResult {
                event: handled.event.into(),
                action,
                success: true,
                error: None,
                error_message: None,
                duration_ms: millis(handled.elapsed),
                coalesced: handled.coalesced,
                no_action,
            }
        }
        Err(tether::EventError::Node(error)) => return Err(error.into()),
        Err(error) => {
            let (flat, no_action) = EventError::flattened(&error);
            let coalesced = match error {
                tether::EventError::ActionFailed { coalesced, .. }
                | tether::EventError::Cancelled { coalesced, .. } => coalesced,
                _ => false,
            };
            NetworkEventResult {
                event: event.into(),
                action: error.action().map(ActionKind::from),
                success: false,
                error: Some(flat),
                error_message: Some(error.to_string()),
                duration_ms: millis(started.elapsed()),
                coalesced,
                no_action,
            }
        }
    };
    Ok(record)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
