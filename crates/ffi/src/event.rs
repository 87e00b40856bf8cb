//! The event model as foreign records and enums, and its
//! validated conversion into tether's.
//!
//! Integers a foreign caller fills in are signed (`i64`): Kotlin and Swift
//! apps hold `Long`/`Int64` clocks and counters, and Python has no unsigned
//! type. A negative sequence or duration is rejected here with
//! [`TetherError::InvalidArgument`] before anything reaches the node.

use crate::TetherError;

/// Whether the platform believes the network path can carry traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Availability {
    /// The path is usable (`NWPath.Status.satisfied`, a validated network).
    Available,
    /// No usable path (`.unsatisfied`, `onLost`).
    Unavailable,
    /// The path exists but is not known to work: a captive portal, a path
    /// that requires a connection first, a network not yet validated.
    Unknown,
}

/// One kind of link a path can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum Transport {
    /// Wi-Fi.
    Wifi,
    /// Cellular data.
    Cellular,
    /// Wired Ethernet.
    Ethernet,
    /// A VPN tunnel.
    Vpn,
    /// Anything else (loopback, Bluetooth PAN, ...).
    Other,
}

/// What the platform's path monitor saw at one moment.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct NetworkSnapshot {
    /// Increases with every snapshot the adapter emits (from 1); a snapshot
    /// whose sequence is not greater than the last accepted one is stale.
    /// Must not be negative.
    pub sequence: i64,
    /// Whether the path is usable.
    pub availability: Availability,
    /// The links the path uses (order and repeats do not matter).
    #[uniffi(default)]
    pub transports: Vec<Transport>,
    /// Metered (cellular, personal hotspot).
    #[uniffi(default = false)]
    pub is_expensive: bool,
    /// Low Data Mode / data saver.
    #[uniffi(default = false)]
    pub is_constrained: bool,
    /// An opaque identity of the route (for example a hash of the
    /// interface names and addresses), 0 when unknown. Two snapshots with
    /// the same transports and different nonzero ids are different routes
    /// (a roam to another Wi-Fi network). Any 64-bit value, negative ones
    /// included.
    #[uniffi(default = 0)]
    pub path_id: i64,
}

/// The application's lifecycle as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum AppLifecycleState {
    /// The app went to the background (or was suspended).
    Background,
    /// The app came to the foreground.
    Foreground {
        /// Time spent in the background, in milliseconds, measured on a
        /// monotonic clock that keeps counting while the device sleeps
        /// (`ContinuousClock` on iOS, `SystemClock.elapsedRealtime()` on
        /// Android). Must not be negative.
        background_duration_ms: i64,
    },
}

/// Why the application asks to tear every connection down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum CleanupReason {
    /// The process is about to be terminated; recovery parks.
    AppTerminating,
    /// The user logged out; recovery parks.
    UserLogout,
    /// The app suspects the connections are stale; later path events may
    /// recover again.
    StaleConnectionSuspected,
    /// An explicit reset; later path events may recover again.
    ManualReset,
}

/// Why the application asks for a full reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum ReconnectReason {
    /// The platform's path changed in a way the app cares about.
    NetworkPathChanged,
    /// The app was in the background for long.
    LongBackground,
    /// The app's own liveness probe failed.
    ProbeFailed,
    /// The user asked (the only reason that unparks after a logout).
    ManualReconnect,
    /// The app suspects the connections are stale.
    StaleConnectionSuspected,
}

/// One thing the platform or the application reports.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum NetworkEvent {
    /// The path monitor emitted a snapshot.
    NetworkPathChanged {
        /// The snapshot.
        snapshot: NetworkSnapshot,
    },
    /// The app moved between foreground and background.
    AppLifecycleChanged {
        /// The new lifecycle state.
        state: AppLifecycleState,
    },
    /// Tear every connection down.
    CleanupConnections {
        /// Why.
        reason: CleanupReason,
    },
    /// Rebuild every connection from scratch.
    ForceReconnect {
        /// Why.
        reason: ReconnectReason,
    },
}

/// `value` as a non-negative `u64`, or an error naming `field`.
pub(crate) fn non_negative(field: &'static str, value: i64) -> Result<u64, TetherError> {
    u64::try_from(value)
        .map_err(|_| TetherError::invalid(field, format!("must not be negative (got {value})")))
}

/// `value` as an `i64`, saturating: values tether reports back were once
/// foreign `i64`s, so saturation never happens in practice.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl From<Availability> for tether::Availability {
    fn from(value: Availability) -> Self {
        match value {
            Availability::Available => Self::Available,
            Availability::Unavailable => Self::Unavailable,
            Availability::Unknown => Self::Unknown,
        }
    }
}

impl From<tether::Availability> for Availability {
    fn from(value: tether::Availability) -> Self {
        match value {
            tether::Availability::Available => Self::Available,
            tether::Availability::Unavailable => Self::Unavailable,
            tether::Availability::Unknown => Self::Unknown,
        }
    }
}

impl From<Transport> for tether::Transport {
    fn from(value: Transport) -> Self {
        match value {
            Transport::Wifi => Self::Wifi,
            Transport::Cellular => Self::Cellular,
            Transport::Ethernet => Self::Ethernet,
            Transport::Vpn => Self::Vpn,
            Transport::Other => Self::Other,
        }
    }
}

impl From<tether::Transport> for Transport {
    fn from(value: tether::Transport) -> Self {
        match value {
            tether::Transport::Wifi => Self::Wifi,
            tether::Transport::Cellular => Self::Cellular,
            tether::Transport::Ethernet => Self::Ethernet,
            tether::Transport::Vpn => Self::Vpn,
            tether::Transport::Other => Self::Other,
        }
    }
}

impl TryFrom<NetworkSnapshot> for tether::NetworkSnapshot {
    type Error = TetherError;

    fn try_from(value: NetworkSnapshot) -> Result<Self, TetherError> {
        let sequence = non_negative("NetworkSnapshot.sequence", value.sequence)?;
        let transports = value.transports.into_iter().map(tether::Transport::from).collect();
        Ok(tether::NetworkSnapshot::new(sequence, value.availability.into(), transports)
            .with_expensive(value.is_expensive)
            .with_constrained(value.is_constrained)
            .with_path_id(value.path_id.cast_unsigned()))
    }
}

impl From<tether::NetworkSnapshot> for NetworkSnapshot {
    fn from(value: tether::NetworkSnapshot) -> Self {
        Self {
            sequence: saturating_i64(value.sequence),
            availability: value.availability.into(),
            transports: value.transports.iter().map(Transport::from).collect(),
            is_expensive: value.is_expensive,
            is_constrained: value.is_constrained,
            path_id: value.path_id.cast_signed(),
        }
    }
}

impl TryFrom<AppLifecycleState> for tether::AppLifecycleState {
    type Error = TetherError;

    fn try_from(value: AppLifecycleState) -> Result<Self, TetherError> {
        Ok(match value {
            AppLifecycleState::Background => Self::Background,
            AppLifecycleState::Foreground { background_duration_ms } => Self::Foreground {
                background_duration_ms: non_negative(
                    "AppLifecycleState.Foreground.background_duration_ms",
                    background_duration_ms,
                )?,
            },
        })
    }
}

impl From<tether::AppLifecycleState> for AppLifecycleState {
    fn from(value: tether::AppLifecycleState) -> Self {
        match value {
            tether::AppLifecycleState::Background => Self::Background,
            tether::AppLifecycleState::Foreground { background_duration_ms } => {
                Self::Foreground { background_duration_ms: saturating_i64(background_duration_ms) }
            }
        }
    }
}

impl From<CleanupReason> for tether::CleanupReason {
    fn from(value: CleanupReason) -> Self {
        match value {
            CleanupReason::AppTerminating => Self::AppTerminating,
            CleanupReason::UserLogout => Self::UserLogout,
            CleanupReason::StaleConnectionSuspected => Self::StaleConnectionSuspected,
            CleanupReason::ManualReset => Self::ManualReset,
        }
    }
}

impl From<tether::CleanupReason> for CleanupReason {
    fn from(value: tether::CleanupReason) -> Self {
        match value {
            tether::CleanupReason::AppTerminating => Self::AppTerminating,
            tether::CleanupReason::UserLogout => Self::UserLogout,
            tether::CleanupReason::StaleConnectionSuspected => Self::StaleConnectionSuspected,
            tether::CleanupReason::ManualReset => Self::ManualReset,
        }
    }
}

impl From<ReconnectReason> for tether::ReconnectReason {
    fn from(value: ReconnectReason) -> Self {
        match value {
            ReconnectReason::NetworkPathChanged => Self::NetworkPathChanged,
            ReconnectReason::LongBackground => Self::LongBackground,
            ReconnectReason::ProbeFailed => Self::ProbeFailed,
            ReconnectReason::ManualReconnect => Self::ManualReconnect,
            ReconnectReason::StaleConnectionSuspected => Self::StaleConnectionSuspected,
        }
    }
}

impl From<tether::ReconnectReason> for ReconnectReason {
    fn from(value: tether::ReconnectReason) -> Self {
        match value {
            tether::ReconnectReason::NetworkPathChanged => Self::NetworkPathChanged,
            tether::ReconnectReason::LongBackground => Self::LongBackground,
            tether::ReconnectReason::ProbeFailed => Self::ProbeFailed,
            tether::ReconnectReason::ManualReconnect => Self::ManualReconnect,
            tether::ReconnectReason::StaleConnectionSuspected => Self::StaleConnectionSuspected,
        }
    }
}

impl TryFrom<NetworkEvent> for tether::NetworkEvent {
    type Error = TetherError;

    fn try_from(value: NetworkEvent) -> Result<Self, TetherError> {
        Ok(match value {
            NetworkEvent::NetworkPathChanged { snapshot } => {
                Self::NetworkPathChanged { snapshot: snapshot.try_into()? }
            }
            NetworkEvent::AppLifecycleChanged { state } => {
                Self::AppLifecycleChanged { state: state.try_into()? }
            }
            NetworkEvent::CleanupConnections { reason } => {
                Self::CleanupConnections { reason: reason.into() }
            }
            NetworkEvent::ForceReconnect { reason } => {
                Self::ForceReconnect { reason: reason.into() }
            }
        })
    }
}

impl From<tether::NetworkEvent> for NetworkEvent {
    fn from(value: tether::NetworkEvent) -> Self {
        match value {
            tether::NetworkEvent::NetworkPathChanged { snapshot } => {
                Self::NetworkPathChanged { snapshot: snapshot.into() }
            }
            tether::NetworkEvent::AppLifecycleChanged { state } => {
                Self::AppLifecycleChanged { state: state.into() }
            }
            tether::NetworkEvent::CleanupConnections { reason } => {
                Self::CleanupConnections { reason: reason.into() }
            }
            tether::NetworkEvent::ForceReconnect { reason } => {
                Self::ForceReconnect { reason: reason.into() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(sequence: i64) -> NetworkSnapshot {
        NetworkSnapshot {
            sequence,
            availability: Availability::Available,
            transports: vec![Transport::Cellular, Transport::Wifi, Transport::Wifi],
            is_expensive: true,
            is_constrained: false,
            path_id: -7,
        }
    }

    #[test]
    fn snapshots_round_trip_with_path_id_bits_kept() {
        let core = tether::NetworkSnapshot::try_from(snapshot(3)).unwrap();
        assert_eq!(core.sequence, 3);
        assert_eq!(core.path_id, (-7i64).cast_unsigned());
        assert!(core.transports.contains(tether::Transport::Wifi));
        let back = NetworkSnapshot::from(core);
        assert_eq!(back.path_id, -7);
        assert_eq!(back.transports, [Transport::Wifi, Transport::Cellular]);
    }

    #[test]
    fn negative_integers_name_the_field() {
        let err = tether::NetworkSnapshot::try_from(snapshot(-1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument NetworkSnapshot.sequence: must not be negative (got -1)"
        );
        let fg = AppLifecycleState::Foreground { background_duration_ms: -5 };
        let err = tether::AppLifecycleState::try_from(fg).unwrap_err();
        assert!(err.to_string().contains("background_duration_ms"), "{err}");
        let event = NetworkEvent::AppLifecycleChanged { state: fg };
        assert!(matches!(
            tether::NetworkEvent::try_from(event),
            Err(TetherError::InvalidArgument { .. })
        ));
    }
}
