//! What a caller hears about its event.

use crate::{ActionKind, FailureKind, NetworkEvent, ParkReason};

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
        /// Why recovery is parked, when known.
        reason: Option<ParkReason>,
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
            tether::NoAction::Parked => Self::Parked,
            tether::NoAction::Superseded => Self::Superseded,
        }
    }
}

impl From<&tether::EventError> for EventError {
    fn from(value: &tether::EventError) -> Self {
        match value {
            tether::EventError::ActionFailed { action, kind, message } => Self::ActionFailed {
                action: (*action).into(),
                kind: (*kind).into(),
                message: message.clone(),
            },
            tether::EventError::Cancelled { action } => {
                Self::Cancelled { action: (*action).into() }
            }
            tether::EventError::Superseded => Self::Superseded,
            tether::EventError::Parked { reason } => {
                Self::Parked { reason: reason.map(ParkReason::from) }
            }
            // `EventError` is non-exhaustive: keep its words.
            other => Self::Other { message: other.to_string() },
        }
    }
}

impl From<tether::NetworkEventResult> for NetworkEventResult {
    fn from(value: tether::NetworkEventResult) -> Self {
        Self {
            event: value.event.into(),
            action: value.action.map(ActionKind::from),
            success: value.success,
            error: value.error.as_ref().map(EventError::from),
            error_message: value.error.as_ref().map(ToString::to_string),
            duration_ms: value.duration_ms,
            coalesced: value.coalesced,
            no_action: value.no_action.map(NoAction::from),
        }
    }
}
