//! The roster: which peers this node keeps connections to, and which peer
//! connections it is closing on purpose. Shared by the executor (which
//! revives the roster's peers and records deliberate closes), the signaling
//! bridge (presence) and the messenger (which asks, before it reports a
//! peer connection lost, whether it was closed on purpose).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct Members {
    /// Peers the node keeps connected: asked for by the application, or
    /// that opened a channel with us.
    wanted: BTreeSet<String>,
    /// Per peer, the highest peer-connection generation this node closed on
    /// purpose (cleanup, reconnect): its channel closing is no loss.
    closed_on_purpose: HashMap<String, u64>,
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
    pub(crate) fn want(&self, peer: &str) -> bool {
        self.lock().wanted.insert(peer.to_owned())
    }

    /// Stops keeping `peer` connected.
    pub(crate) fn forget(&self, peer: &str) {
        self.lock().wanted.remove(peer);
    }

    /// The peers to keep connected.
    pub(crate) fn wanted(&self) -> Vec<String> {
        self.lock().wanted.iter().cloned().collect()
    }

    /// Records that every peer connection up to `generation` of `peer` is
    /// being closed on purpose.
    pub(crate) fn closing_on_purpose(&self, peer: &str, generation: u64) {
        let mut members = self.lock();
        let entry = members.closed_on_purpose.entry(peer.to_owned()).or_default();
        *entry = (*entry).max(generation);
    }

    /// Whether generation `generation` of `peer` was closed on purpose.
    pub(crate) fn closed_on_purpose(&self, peer: &str, generation: u64) -> bool {
        self.lock().closed_on_purpose.get(peer).is_some_and(|&upto| generation <= upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposeful_closes_cover_older_generations_only() {
        let roster = Roster::default();
        assert!(roster.want("bob"));
        assert!(!roster.want("bob"));
        roster.closing_on_purpose("bob", 3);
        roster.closing_on_purpose("bob", 2);
        assert!(roster.closed_on_purpose("bob", 1) && roster.closed_on_purpose("bob", 3));
        assert!(!roster.closed_on_purpose("bob", 4));
        assert!(!roster.closed_on_purpose("carol", 1));
        roster.forget("bob");
        assert!(roster.wanted().is_empty());
    }
}
