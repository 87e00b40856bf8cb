//! Relay escalation: when ICE could not keep a peer connection up over direct paths, the next
//! peer connections to that peer gather relayed (TURN) candidates only.
//!
//! With ICE transport policy `all` a peer connection pairs host, reflexive and relayed
//! candidates, and a restart re-checks all of them. When that restart still leaves ICE failed
//! while a TURN server is configured, the node asks for escalation
//! ([`crate::PeerSet::escalate_to_relay`]) before it replaces the peer connection: the
//! replacement is built with policy `relay`, so every check goes through the TURN server and
//! none is spent on direct pairs that do not work (webrtc-rs 0.21 relays over UDP only). The
//! escalation holds until the peer is closed ([`crate::PeerSet::close`] /
//! [`crate::PeerSet::close_all`]): a later fresh start tries direct paths again.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tether_signal::protocol::PeerId;

use crate::config::{IceServer, IceTransportPolicy};

/// What [`crate::PeerSet::escalate_to_relay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Escalation {
    /// The peer's next peer connections use relay-only ICE.
    Escalated,
    /// Nothing to do: the peer already uses relay-only ICE (configured, or escalated before).
    AlreadyRelayOnly,
    /// Not escalated: no TURN server is configured or granted, so relay-only ICE would have
    /// no candidate at all.
    NoTurnServer,
}

/// The peers escalated to relay-only ICE.
#[derive(Debug, Default)]
pub(crate) struct RelayEscalations(Mutex<HashSet<PeerId>>);

impl RelayEscalations {
    fn lock(&self) -> MutexGuard<'_, HashSet<PeerId>> {
        // Single inserts and removals: a panic elsewhere cannot leave the set inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Escalates `peer` unless it is relay-only already or no server in `servers` is a TURN
    /// server.
    pub(crate) fn escalate(
        &self,
        peer: &PeerId,
        configured: IceTransportPolicy,
        servers: &[IceServer],
    ) -> Escalation {
        if configured == IceTransportPolicy::Relay || self.lock().contains(peer) {
            return Escalation::AlreadyRelayOnly;
        }
        if !servers.iter().any(is_turn_server) {
            return Escalation::NoTurnServer;
        }
        self.lock().insert(peer.clone());
        Escalation::Escalated
    }

    /// Whether `peer` was escalated.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.lock().contains(peer)
    }

    /// The policy for a new peer connection to `peer`.
    pub(crate) fn policy_for(
        &self,
        peer: &PeerId,
        configured: IceTransportPolicy,
    ) -> IceTransportPolicy {
        if self.contains(peer) { IceTransportPolicy::Relay } else { configured }
    }

    /// Forgets `peer`'s escalation.
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.lock().remove(peer);
    }

    /// Forgets every escalation.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

fn is_turn_server(server: &IceServer) -> bool {
    server.urls.iter().any(|url| url.starts_with("turn:") || url.starts_with("turns:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn() -> IceServer {
        IceServer {
            urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
            username: "u".into(),
            credential: "c".into(),
        }
    }

    fn stun() -> IceServer {
        IceServer { urls: vec!["stun:192.0.2.1:3478".into()], ..IceServer::default() }
    }

    #[test]
    fn a_peer_escalates_once_and_only_with_a_turn_server() {
        let escalations = RelayEscalations::default();
        let bob = PeerId::new("bob").unwrap();
        let all = IceTransportPolicy::All;
        assert_eq!(escalations.escalate(&bob, all, &[stun()]), Escalation::NoTurnServer);
        assert_eq!(escalations.policy_for(&bob, all), IceTransportPolicy::All);
        assert_eq!(escalations.escalate(&bob, all, &[stun(), turn()]), Escalation::Escalated);
        assert_eq!(escalations.policy_for(&bob, all), IceTransportPolicy::Relay);
        assert_eq!(escalations.escalate(&bob, all, &[turn()]), Escalation::AlreadyRelayOnly);
        escalations.forget(&bob);
        assert_eq!(escalations.policy_for(&bob, all), IceTransportPolicy::All);
        let relay = IceTransportPolicy::Relay;
        assert_eq!(escalations.escalate(&bob, relay, &[turn()]), Escalation::AlreadyRelayOnly);
        assert!(!escalations.contains(&bob), "configured relay-only is not an escalation");
    }
}
