//! Peer states for UI: which peers a node has peer connections with, and
//! whether messages flow to each. The messenger publishes a [`PeerStates`]
//! snapshot in a `watch` each time it hears that a peer connection changed
//! state or a data channel opened or closed; [`RtcNode::peer_states`]
//! hands out receivers.
//!
//! [`RtcNode::peer_states`]: super::RtcNode::peer_states

use std::collections::BTreeMap;

use tether_rtc::{ConnectionId, PeerState, PeerStatus};
use tether_signal::protocol::PeerId;

/// How one peer is connected now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLinkState {
    /// The state of the newest peer connection to the peer; `Closed` once
    /// it was closed (by either side, or forgotten with
    /// [`RtcNode::disconnect_peer`](super::RtcNode::disconnect_peer)) and no
    /// new one is being built.
    pub connection: PeerState,
    /// Whether that peer connection's data channel is open.
    pub channel_open: bool,
    /// Which peer connection: they are numbered 1, 2, … per peer and never
    /// reused, so a higher id is a replacement (an ICE restart keeps the
    /// id). `None` until the first peer connection is built.
    pub connection_id: Option<ConnectionId>,
    /// Whether direct ICE paths to the peer failed and recovery escalated
    /// it to relay-only ICE (a TURN server carries every packet; see
    /// [`RtcNode::peer_route`](super::RtcNode::peer_route) for the route).
    /// Holds until the peer connection is closed on purpose.
    pub relay_escalated: bool,
}

impl PeerLinkState {
    /// Whether messages flow: the peer connection is connected and its data
    /// channel open (as [`RtcNode::connected_peers`] counts it).
    ///
    /// [`RtcNode::connected_peers`]: super::RtcNode::connected_peers
    pub fn is_connected(&self) -> bool {
        self.connection == PeerState::Connected && self.channel_open
    }

    /// The state the peer set reports for a peer, or, when it no longer
    /// knows the peer (closed and forgotten), the last known peer
    /// connection, closed.
    pub(crate) fn observe(status: Option<PeerStatus>, last: Option<PeerLinkState>) -> Self {
        match status {
            Some(status) => Self {
                // A peer is known from its first connect on; until the
                // first peer connection is built it is connecting.
                connection: status.state.unwrap_or(PeerState::Connecting),
                channel_open: status.channel_open,
                connection_id: status.connection_id,
                relay_escalated: status.relay_escalated,
            },
            None => Self {
                connection: PeerState::Closed,
                channel_open: false,
                connection_id: last.and_then(|last| last.connection_id),
                relay_escalated: false,
            },
        }
    }
}

/// Every peer this node has had a peer connection with since it started,
/// and how each is connected now. Peers stay in the snapshot once seen (a
/// closed one shows [`PeerState::Closed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStates {
    peers: BTreeMap<PeerId, PeerLinkState>,
}

impl PeerStates {
    /// How `peer` is connected; `None` if this node never had a peer
    /// connection with it.
    pub fn get(&self, peer: &PeerId) -> Option<PeerLinkState> {
        self.peers.get(peer).copied()
    }

    /// Whether messages flow to `peer` now.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some_and(|state| state.is_connected())
    }

    /// The peers messages flow to now, sorted.
    pub fn connected(&self) -> impl Iterator<Item = &PeerId> {
        self.iter().filter(|(_, state)| state.is_connected()).map(|(peer, _)| peer)
    }

    /// Every peer and its state, sorted by peer id.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, PeerLinkState)> {
        self.peers.iter().map(|(peer, state)| (peer, *state))
    }

    /// How many peers the snapshot holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the node has had no peer connection yet.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Sets `peer`'s state; returns whether anything changed.
    pub(crate) fn set(&mut self, peer: &PeerId, state: PeerLinkState) -> bool {
        match self.peers.get_mut(peer) {
            Some(current) if *current == state => false,
            Some(current) => {
                *current = state;
                true
            }
            None => {
                self.peers.insert(peer.clone(), state);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(connection: u64, state: Option<PeerState>, channel_open: bool) -> PeerStatus {
        let connection_id = (connection > 0).then_some(ConnectionId::new(connection));
        PeerStatus {
            connection_id,
            state,
            channel_open,
            relay_escalated: false,
            data_held: false,
            replacing: false,
        }
    }

    fn id(name: &str) -> PeerId {
        PeerId::new(name).unwrap()
    }

    #[test]
    fn connected_needs_a_connected_peer_connection_and_an_open_channel() {
        let up = PeerLinkState::observe(Some(status(2, Some(PeerState::Connected), true)), None);
        assert!(up.is_connected());
        assert_eq!(up.connection_id, Some(ConnectionId::new(2)));
        let no_channel =
            PeerLinkState::observe(Some(status(2, Some(PeerState::Connected), false)), None);
        assert!(!no_channel.is_connected());
        let ice_down =
            PeerLinkState::observe(Some(status(2, Some(PeerState::Disconnected), true)), None);
        assert!(!ice_down.is_connected());
        let first = PeerLinkState::observe(Some(status(0, None, false)), None);
        assert_eq!((first.connection, first.connection_id), (PeerState::Connecting, None));
        let forgotten = PeerLinkState::observe(None, Some(up));
        assert_eq!(
            (forgotten.connection, forgotten.connection_id),
            (PeerState::Closed, Some(ConnectionId::new(2)))
        );
        assert!(!forgotten.is_connected());
    }

    #[test]
    fn setting_reports_changes_only() {
        let mut states = PeerStates::default();
        let up = PeerLinkState::observe(Some(status(1, Some(PeerState::Connected), true)), None);
        let (bob, carol) = (id("bob"), id("carol"));
        assert!(states.set(&bob, up));
        assert!(!states.set(&bob, up));
        assert!(states.is_connected(&bob) && !states.is_connected(&carol));
        let down = PeerLinkState::observe(None, Some(up));
        assert!(states.set(&bob, down));
        assert!(states.set(&carol, up));
        assert_eq!(states.connected().collect::<Vec<_>>(), [&carol]);
        assert_eq!(states.len(), 2);
        assert_eq!(states.iter().map(|(peer, _)| peer).collect::<Vec<_>>(), [&bob, &carol]);
    }
}
