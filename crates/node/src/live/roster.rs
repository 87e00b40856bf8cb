//! The roster: which peers this node keeps connections to, and which peer
//! connections it is closing on purpose. Shared by the executor (which
//! revives the roster's peers and records deliberate closes), the signaling
//! bridge (presence) and the messenger (which asks, before it reports a
//! peer connection lost, whether it was closed on purpose).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tether_rtc::ConnectionId;
use tether_signal::protocol::PeerId;

#[derive(Debug, Default)]
struct Members {
    /// Peers the node keeps connected: asked for by the application, or
    /// that opened a channel with us.
    wanted: BTreeSet<PeerId>,
    /// Per peer, the newest peer connection this node closed on purpose
    /// (cleanup, reconnect), and every older one with it: their channels
    /// closing is no loss.
    closed_on_purpose: HashMap<PeerId, ConnectionId>,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Roster {
    members: Mutex<Members>,
}

impl Roster {
    fn lock(&self) -> MutexGuard<'_, Members> {
        // The sets stay consistent whatever panicked while holding the lock.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `peer` connected from now on. Returns whether it is new.
    pub(crate) fn want(&self, peer: &PeerId) -> bool {
        let mut members = self.lock();
        !members.wanted.contains(peer) && members.wanted.insert(peer.clone())
    }

    /// Stops keeping `peer` connected.
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.lock().wanted.remove(peer);
    }

    /// The peers to keep connected.
    pub(crate) fn wanted(&self) -> Vec<PeerId> {
        self.lock().wanted.iter().cloned().collect()
    }

    /// Records that peer connection `connection` of `peer`, and every older
    /// one, is being closed on purpose.
    pub(crate) fn closing_on_purpose(&self, peer: &PeerId, connection: ConnectionId) {
        let mut members = self.lock();
        let newest = members.closed_on_purpose.entry(peer.clone()).or_insert(connection);
        *newest = (*newest).max(connection);
    }

    /// Whether peer connection `connection` of `peer` was closed on purpose.
    pub(crate) fn closed_on_purpose(&self, peer: &PeerId, connection: ConnectionId) -> bool {
        self.lock().closed_on_purpose.get(peer).is_some_and(|&upto| connection <= upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposeful_closes_cover_older_connections_only() {
        let (bob, carol) = (PeerId::new("bob").unwrap(), PeerId::new("carol").unwrap());
        let connection = ConnectionId::new;
        let roster = Roster::default();
        assert!(roster.want(&bob));
        assert!(!roster.want(&bob));
        roster.closing_on_purpose(&bob, connection(3));
        roster.closing_on_purpose(&bob, connection(2));
        assert!(roster.closed_on_purpose(&bob, connection(1)));
        assert!(roster.closed_on_purpose(&bob, connection(3)));
        assert!(!roster.closed_on_purpose(&bob, connection(4)));
        assert!(!roster.closed_on_purpose(&carol, connection(1)));
        roster.forget(&bob);
        assert!(roster.wanted().is_empty());
    }
}
