//! What the Supervisor believes about the world, as seen from outside:
//! the connection state for UI (docs/POLICY.md, connection states), the path and the app phase.

use std::fmt;

use crate::{ActionKind, Availability, CleanupReason};

/// The connection state an app shows ("Reconnecting…").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Signaling is believed healthy and nothing is being repaired.
    Connected,
    /// A recovery action runs, is waiting to run, or is waiting for a retry.
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

impl ConnectionState {
    /// `connected|recovering|offline|closed|parked`, as printed by
    /// `tether replay`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Recovering { .. } => "recovering",
            Self::Offline => "offline",
            Self::Closed => "closed",
            Self::Parked { .. } => "parked",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recovering { action, attempt } => {
                write!(f, "recovering ({action}, attempt {attempt})")
            }
            Self::Parked { reason } => write!(f, "parked ({})", reason.name()),
            other => f.write_str(other.name()),
        }
    }
}

/// Why recovery is parked, and what unparks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParkReason {
    /// The user logged out; only a manual reconnect unparks.
    UserLogout,
    /// The app is terminating; only a manual reconnect unparks.
    AppTerminating,
    /// The server refused the credentials; a forced reconnect or new
    /// credentials unpark.
    AuthRejected,
    /// The server refused the configuration; a forced reconnect or new
    /// credentials unpark.
    ConfigRejected,
}

impl ParkReason {
    /// A stable snake-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::UserLogout => "user_logout",
            Self::AppTerminating => "app_terminating",
            Self::AuthRejected => "auth_rejected",
            Self::ConfigRejected => "config_rejected",
        }
    }

    pub(crate) fn from_cleanup(reason: CleanupReason) -> Option<Self> {
        match reason {
            CleanupReason::UserLogout => Some(Self::UserLogout),
            CleanupReason::AppTerminating => Some(Self::AppTerminating),
            CleanupReason::StaleConnectionSuspected | CleanupReason::ManualReset => None,
        }
    }

    /// Whether only `ForceReconnect{ManualReconnect}` lifts this park.
    pub fn needs_manual_reconnect(self) -> bool {
        matches!(self, Self::UserLogout | Self::AppTerminating)
    }
}

/// The path as last reported by the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathStatus {
    /// The last accepted snapshot was Available.
    Online,
    /// The last accepted snapshot was Unavailable.
    Offline,
    /// The last accepted snapshot was Unknown, or none arrived yet.
    Unknown,
}

impl PathStatus {
    /// `online|offline|unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Unknown => "unknown",
        }
    }

    pub(crate) fn of(availability: Availability) -> Self {
        match availability {
            Availability::Available => Self::Online,
            Availability::Unavailable => Self::Offline,
            Availability::Unknown => Self::Unknown,
        }
    }
}

/// The app's lifecycle phase as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// In the foreground.
    Foreground,
    /// In the background: no recovery action starts.
    Background,
    /// Nothing reported yet (cold start); counts as foreground.
    Unknown,
}

impl Phase {
    /// `foreground|background|unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Foreground => "foreground",
            Self::Background => "background",
            Self::Unknown => "unknown",
        }
    }
}
