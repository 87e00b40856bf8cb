//! Peer states for UI ("bob connected"): how a live node is connected to
//! each peer it has had a peer connection with.

/// The state of a peer connection (the W3C `RTCPeerConnectionState`, with
/// `new` reported as `Connecting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PeerConnectionState {
    /// Being built and negotiated, or ICE/DTLS in progress.
    Connecting,
    /// ICE and DTLS are up.
    Connected,
    /// ICE lost connectivity; it may come back by itself or after an ICE
    /// restart.
    Disconnected,
    /// ICE gave up; recovery restarts or replaces it.
    Failed,
    /// Closed, by either side, and no new one is being built.
    Closed,
}

/// How a live node is connected to one peer.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerStatus {
    /// The peer's id.
    pub peer: String,
    /// Whether messages flow: the peer connection is connected and its data
    /// channel open.
    pub connected: bool,
    /// The state of the newest peer connection to the peer.
    pub connection: PeerConnectionState,
    /// Which peer connection (1, 2, …, never reused; 0 before the first):
    /// a higher number is a replacement; an ICE restart keeps the number.
    /// The Rust side's `ConnectionId`, as a number.
    pub generation: u64,
    /// Whether direct ICE paths to the peer failed and recovery escalated
    /// it to relay-only ICE (a TURN server carries every packet), until the
    /// peer connection is closed on purpose.
    pub relay_escalated: bool,
}

/// One end of the ICE candidate pair a peer connection selected.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RouteEnd {
    /// `host`, `srflx`, `prflx` or `relay` (a TURN server's address).
    pub candidate_type: String,
    /// `udp` or `tcp`.
    pub protocol: String,
    /// The IP address (or an mDNS name for a peer that hides its address).
    pub address: String,
    /// The port.
    pub port: u16,
}

/// Which way a peer connection's packets go: the ICE candidate pair it
/// selected.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerRoute {
    /// This node's end.
    pub local: RouteEnd,
    /// The peer's end.
    pub remote: RouteEnd,
    /// Whether a TURN server carries the packets (either end is `relay`).
    pub relayed: bool,
}

impl From<&tether::live::RouteEnd> for RouteEnd {
    fn from(end: &tether::live::RouteEnd) -> Self {
        Self {
            candidate_type: end.kind.as_str().to_owned(),
            protocol: end.protocol.as_str().to_owned(),
            address: end.address.clone(),
            port: end.port,
        }
    }
}

impl From<&tether::live::IceRoute> for PeerRoute {
    fn from(route: &tether::live::IceRoute) -> Self {
        Self {
            local: (&route.local).into(),
            remote: (&route.remote).into(),
            relayed: route.is_relayed(),
        }
    }
}

impl From<tether::live::PeerState> for PeerConnectionState {
    fn from(value: tether::live::PeerState) -> Self {
        match value {
            tether::live::PeerState::Connecting => Self::Connecting,
            tether::live::PeerState::Connected => Self::Connected,
            tether::live::PeerState::Disconnected => Self::Disconnected,
            tether::live::PeerState::Failed => Self::Failed,
            tether::live::PeerState::Closed => Self::Closed,
        }
    }
}

/// Every peer of `states`, sorted by peer id.
pub(crate) fn statuses(states: &tether::PeerStates) -> Vec<PeerStatus> {
    states
        .iter()
        .map(|(peer, state)| PeerStatus {
            peer: peer.to_string(),
            connected: state.is_connected(),
            connection: state.connection.into(),
            generation: state.connection_id.map_or(0, tether::ConnectionId::get),
            relay_escalated: state.relay_escalated,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_connection_state_has_a_foreign_name() {
        use tether::live::PeerState;
        let all = [
            (PeerState::Connecting, PeerConnectionState::Connecting),
            (PeerState::Connected, PeerConnectionState::Connected),
            (PeerState::Disconnected, PeerConnectionState::Disconnected),
            (PeerState::Failed, PeerConnectionState::Failed),
            (PeerState::Closed, PeerConnectionState::Closed),
        ];
        for (state, foreign) in all {
            assert_eq!(PeerConnectionState::from(state), foreign);
        }
        assert!(statuses(&tether::PeerStates::default()).is_empty());
    }
}
