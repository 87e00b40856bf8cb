//! The public event model: what the platform reports.
//!
//! These types mirror what iOS (`NWPathMonitor`, scene phases), Android
//! (`ConnectivityManager`, process lifecycle) and a Linux path monitor see.
//! They carry no behaviour; the [`Supervisor`](crate::Supervisor) decides what
//! they mean.

use std::fmt;

/// Whether the platform believes the network path can carry traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    /// The path is usable (`NWPath.Status.satisfied`).
    Available,
    /// No usable path (`.unsatisfied`).
    Unavailable,
    /// The path exists but is not known to work, e.g. a captive portal or a
    /// path that requires a connection first (`.requiresConnection`).
    Unknown,
}

impl Availability {
    /// The lower-case name used in scenario files and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
        }
    }
}

/// One kind of link a path can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl Transport {
    /// Every transport, in a stable order.
    pub const ALL: [Transport; 5] = [
        Transport::Wifi,
        Transport::Cellular,
        Transport::Ethernet,
        Transport::Vpn,
        Transport::Other,
    ];

    /// The lower-case name used in scenario files and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wifi => "wifi",
            Self::Cellular => "cellular",
            Self::Ethernet => "ethernet",
            Self::Vpn => "vpn",
            Self::Other => "other",
        }
    }

    /// Parses a lower-case transport name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Transport`]s, stored as a bit set so that snapshots are `Copy`
/// and comparing two paths costs one instruction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransportSet(u8);

impl TransportSet {
    /// The empty set.
    pub const EMPTY: TransportSet = TransportSet(0);

    /// A set holding exactly `transport`.
    pub fn only(transport: Transport) -> Self {
        Self(transport.bit())
    }

    /// Adds `transport`.
    pub fn insert(&mut self, transport: Transport) {
        self.0 |= transport.bit();
    }

    /// Whether `transport` is in the set.
    pub fn contains(self, transport: Transport) -> bool {
        self.0 & transport.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The transports in the set, in [`Transport::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Transport> {
        Transport::ALL.into_iter().filter(move |t| self.contains(*t))
    }
}

impl FromIterator<Transport> for TransportSet {
    fn from_iter<I: IntoIterator<Item = Transport>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for transport in iter {
            set.insert(transport);
        }
        set
    }
}

impl fmt::Debug for TransportSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What the platform's path monitor saw at one moment.
///
/// Build one with [`NetworkSnapshot::new`] (or [`available`](Self::available)
/// / [`unavailable`](Self::unavailable)) and the `with_*` methods; the
/// fields stay readable and writable, and new ones can be added without
/// breaking callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkSnapshot {
    /// Increases with every snapshot the source emits; a snapshot whose
    /// sequence is not greater than the last accepted one is stale.
    pub sequence: u64,
    /// Whether the path is usable.
    pub availability: Availability,
    /// The links the path uses.
    pub transports: TransportSet,
    /// Metered (cellular, personal hotspot).
    pub is_expensive: bool,
    /// Low Data Mode / data saver.
    pub is_constrained: bool,
    /// An opaque identity of the route, 0 when the source cannot tell (for
    /// example a hash of the interfaces and local addresses the path uses).
    /// Two snapshots with the same transports but different nonzero path
    /// ids are different routes: a Wi-Fi roam to a new network, or a
    /// renumbering, kills the old sockets just like a Wi-Fi to cellular
    /// handoff does.
    pub path_id: u64,
}

impl NetworkSnapshot {
    /// A snapshot with no metered flags and no path id.
    pub fn new(sequence: u64, availability: Availability, transports: TransportSet) -> Self {
        Self {
            sequence,
            availability,
            transports,
            is_expensive: false,
            is_constrained: false,
            path_id: 0,
        }
    }

    /// An Available snapshot over `transports`.
    pub fn available(sequence: u64, transports: TransportSet) -> Self {
        Self::new(sequence, Availability::Available, transports)
    }

    /// An Unavailable snapshot.
    pub fn unavailable(sequence: u64) -> Self {
        Self::new(sequence, Availability::Unavailable, TransportSet::EMPTY)
    }

    /// With the metered flag set to `expensive`.
    #[must_use]
    pub fn with_expensive(self, expensive: bool) -> Self {
        Self { is_expensive: expensive, ..self }
    }

    /// With the Low Data Mode flag set to `constrained`.
    #[must_use]
    pub fn with_constrained(self, constrained: bool) -> Self {
        Self { is_constrained: constrained, ..self }
    }

    /// With the route identity `path_id`.
    #[must_use]
    pub fn with_path_id(self, path_id: u64) -> Self {
        Self { path_id, ..self }
    }

    /// Whether `self` and `other` describe the same path for recovery
    /// purposes: same availability, same transports, and no two different
    /// known path ids. The metered flags are not part of the comparison
    /// (they never warrant an action).
    pub fn same_route(&self, other: &NetworkSnapshot) -> bool {
        let ids_differ = self.path_id != 0 && other.path_id != 0 && self.path_id != other.path_id;
        self.availability == other.availability
            && self.transports == other.transports
            && !ids_differ
    }
}

/// The application's lifecycle as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppLifecycleState {
    /// The app went to the background (or was suspended).
    Background,
    /// The app came to the foreground after `background_duration_ms` in the
    /// background, measured on a monotonic clock by the platform adapter.
    Foreground {
        /// Time spent in the background, in milliseconds.
        background_duration_ms: u64,
    },
}

/// Why the application asks to tear every connection down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl CleanupReason {
    /// Every reason, in a stable order.
    pub const ALL: [CleanupReason; 4] =
        [Self::AppTerminating, Self::UserLogout, Self::StaleConnectionSuspected, Self::ManualReset];

    /// The snake-case name used in scenario files and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::AppTerminating => "app_terminating",
            Self::UserLogout => "user_logout",
            Self::StaleConnectionSuspected => "stale_connection_suspected",
            Self::ManualReset => "manual_reset",
        }
    }

    /// Parses a snake-case reason name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether this cleanup parks recovery until a manual reconnect.
    pub fn parks(self) -> bool {
        matches!(self, Self::AppTerminating | Self::UserLogout)
    }
}

/// Why the application asks for a full reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl ReconnectReason {
    /// Every reason, in a stable order.
    pub const ALL: [ReconnectReason; 5] = [
        Self::NetworkPathChanged,
        Self::LongBackground,
        Self::ProbeFailed,
        Self::ManualReconnect,
        Self::StaleConnectionSuspected,
    ];

    /// The snake-case name used in scenario files and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::NetworkPathChanged => "network_path_changed",
            Self::LongBackground => "long_background",
            Self::ProbeFailed => "probe_failed",
            Self::ManualReconnect => "manual_reconnect",
            Self::StaleConnectionSuspected => "stale_connection_suspected",
        }
    }

    /// Parses a snake-case reason name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One thing the platform or the application reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl NetworkEvent {
    /// A short stable name for logs and results.
    pub fn name(&self) -> &'static str {
        match self {
            Self::NetworkPathChanged { .. } => "network_path_changed",
            Self::AppLifecycleChanged { .. } => "app_lifecycle_changed",
            Self::CleanupConnections { .. } => "cleanup_connections",
            Self::ForceReconnect { .. } => "force_reconnect",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_set_round_trips_names_and_members() {
        let set: TransportSet = [Transport::Cellular, Transport::Wifi].into_iter().collect();
        assert!(set.contains(Transport::Wifi));
        assert!(!set.contains(Transport::Vpn));
        let names: Vec<_> = set.iter().map(Transport::name).collect();
        assert_eq!(names, ["wifi", "cellular"]);
        for t in Transport::ALL {
            assert_eq!(Transport::from_name(t.name()), Some(t));
        }
        assert_eq!(Transport::from_name("wifi6"), None);
    }

    #[test]
    fn same_route_ignores_metered_flags_only() {
        let a = NetworkSnapshot {
            sequence: 1,
            availability: Availability::Available,
            transports: TransportSet::only(Transport::Wifi),
            is_expensive: false,
            is_constrained: false,
            path_id: 0,
        };
        let metered = NetworkSnapshot { sequence: 2, is_expensive: true, ..a };
        let cellular = NetworkSnapshot { transports: TransportSet::only(Transport::Cellular), ..a };
        assert!(a.same_route(&metered));
        assert!(!a.same_route(&cellular));
        // Path ids: unknown (0) matches anything; two known ones must agree.
        let roam_a = a.with_path_id(7);
        let roam_b = a.with_path_id(8);
        assert!(a.same_route(&roam_a) && roam_a.same_route(&a));
        assert!(!roam_a.same_route(&roam_b));
        assert!(roam_a.same_route(&roam_a.with_expensive(true)));
    }
}
