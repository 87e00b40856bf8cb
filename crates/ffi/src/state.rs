//! The connection state for UI, and the action and failure kinds results
//! and states name.

/// One recovery action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ActionKind {
    /// Ping the live signaling socket.
    Probe,
    /// Make signaling healthy, then ICE-restart every peer that was connected.
    Restore,
    /// Cleanup then Restore, with new peer connections where needed.
    Reconnect,
    /// The path is confirmed offline: close signaling, keep peer state.
    Disconnect,
    /// Tear everything down.
    Cleanup,
}

/// How a failed action failed, as far as recovery decisions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum FailureKind {
    /// A bounded step ran out of time.
    Timeout,
    /// The server or peer could not be reached.
    Unreachable,
    /// Credentials were refused; recovery parks.
    AuthRejected,
    /// The configuration was refused; recovery parks.
    ConfigRejected,
    /// Anything else; treated as transient.
    Internal,
}

/// Why recovery is parked, and what unparks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ParkReason {
    /// The user logged out; only `ForceReconnect(ManualReconnect)` unparks.
    UserLogout,
    /// The app is terminating; only `ForceReconnect(ManualReconnect)` unparks.
    AppTerminating,
    /// The server refused the credentials; a forced reconnect unparks.
    AuthRejected,
    /// The server refused the configuration; a forced reconnect unparks.
    ConfigRejected,
}

/// The connection state an app shows ("Reconnecting…").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ConnectionState {
    /// Signaling is believed healthy and nothing is being repaired.
    Connected,
    /// A recovery action runs, is waiting to run, or waits for a retry.
    Recovering {
        /// The action running or next to run.
        action: ActionKind,
        /// 1 for a first try, k for the k-th consecutive try.
        attempt: u32,
    },
    /// The path is confirmed offline.
    Offline,
    /// The connections were cleaned up and nothing has reconnected since.
    Closed,
    /// Recovery is parked until the app intervenes.
    Parked {
        /// Why.
        reason: ParkReason,
    },
}

impl From<tether::ActionKind> for ActionKind {
    fn from(value: tether::ActionKind) -> Self {
        match value {
            tether::ActionKind::Probe => Self::Probe,
            tether::ActionKind::Restore => Self::Restore,
            tether::ActionKind::Reconnect => Self::Reconnect,
            tether::ActionKind::Disconnect => Self::Disconnect,
            tether::ActionKind::Cleanup => Self::Cleanup,
        }
    }
}

impl From<ActionKind> for tether::ActionKind {
    fn from(value: ActionKind) -> Self {
        match value {
            ActionKind::Probe => Self::Probe,
            ActionKind::Restore => Self::Restore,
            ActionKind::Reconnect => Self::Reconnect,
            ActionKind::Disconnect => Self::Disconnect,
            ActionKind::Cleanup => Self::Cleanup,
        }
    }
}

impl From<tether::FailureKind> for FailureKind {
    fn from(value: tether::FailureKind) -> Self {
        match value {
            tether::FailureKind::Timeout => Self::Timeout,
            tether::FailureKind::Unreachable => Self::Unreachable,
            tether::FailureKind::AuthRejected => Self::AuthRejected,
            tether::FailureKind::ConfigRejected => Self::ConfigRejected,
            // `FailureKind` is non-exhaustive; a kind added later is
            // reported as the catch-all until this crate names it.
            _ => Self::Internal,
        }
    }
}

impl From<FailureKind> for tether::FailureKind {
    fn from(value: FailureKind) -> Self {
        match value {
            FailureKind::Timeout => Self::Timeout,
            FailureKind::Unreachable => Self::Unreachable,
            FailureKind::AuthRejected => Self::AuthRejected,
            FailureKind::ConfigRejected => Self::ConfigRejected,
            FailureKind::Internal => Self::Internal,
        }
    }
}

impl From<tether::ParkReason> for ParkReason {
    fn from(value: tether::ParkReason) -> Self {
        match value {
            tether::ParkReason::UserLogout => Self::UserLogout,
            tether::ParkReason::AppTerminating => Self::AppTerminating,
            tether::ParkReason::AuthRejected => Self::AuthRejected,
            tether::ParkReason::ConfigRejected => Self::ConfigRejected,
        }
    }
}

impl From<tether::ConnectionState> for ConnectionState {
    fn from(value: tether::ConnectionState) -> Self {
        match value {
            tether::ConnectionState::Connected => Self::Connected,
            tether::ConnectionState::Recovering { action, attempt } => {
                Self::Recovering { action: action.into(), attempt }
            }
            tether::ConnectionState::Offline => Self::Offline,
            tether::ConnectionState::Closed => Self::Closed,
            tether::ConnectionState::Parked { reason } => Self::Parked { reason: reason.into() },
        }
    }
}
