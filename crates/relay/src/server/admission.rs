//! Bounds on connections that have not registered yet: unauthenticated
//! sockets are cheap to open, so they get a global cap and a cap per source
//! address. At the global cap the oldest unregistered connection of the
//! source holding the most is closed to admit the new one (an attacker
//! holding sockets open cannot starve newcomers from elsewhere); over the
//! per-source cap the new connection is refused.
//!
//! Architecture invariant: every accepted connection holds exactly one
//! [`Pending`] until it registers or ends; dropping it is the only release.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Tables {
    next_id: u64,
    /// Unregistered connections by admission order (oldest first).
    pending: BTreeMap<u64, (IpAddr, CancellationToken)>,
    /// Each source's unregistered connections, oldest first.
    per_source: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Tables {
    fn forget(&mut self, id: u64) -> Option<CancellationToken> {
        let (source, evict) = self.pending.remove(&id)?;
        if let Some(ids) = self.per_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.per_source.remove(&source);
            }
        }
        Some(evict)
    }

    /// The oldest connection of the source with the most (ties: the one
    /// whose oldest is oldest).
    fn eviction_candidate(&self) -> Option<u64> {
        self.per_source
            .values()
            .filter_map(|ids| Some((ids.len(), std::cmp::Reverse(*ids.first()?))))
            .max()
            .map(|(_, std::cmp::Reverse(id))| id)
    }
}

/// The unregistered-connection table of one server.
#[derive(Debug)]
pub(super) struct Admission {
    max_total: usize,
    max_per_source: usize,
    tables: Mutex<Tables>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Its source address already has `max_per_source` unregistered sockets.
    PerSource,
}

/// An admitted connection and whether an older one was evicted for it.
pub(super) struct Admitted {
    pub(super) pending: Pending,
    pub(super) evicted_other: bool,
}

impl Admission {
    pub(super) fn new(max_total: usize, max_per_source: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            tables: Mutex::new(Tables::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // Nothing panics while holding the lock; the tables stay valid.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `source`.
    pub(super) fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let mut tables = self.lock();
        if tables.per_source.get(&source).map_or(0, BTreeSet::len) >= self.max_per_source {
            return Err(Refusal::PerSource);
        }
        let mut evicted_other = false;
        if tables.pending.len() >= self.max_total
            && let Some(victim) = tables.eviction_candidate()
            && let Some(evict) = tables.forget(victim)
        {
            evict.cancel();
            evicted_other = true;
        }
        let id = tables.next_id;
        tables.next_id += 1;
        let evicted = CancellationToken::new();
        tables.pending.insert(id, (source, evicted.clone()));
        tables.per_source.entry(source).or_default().insert(id);
        Ok(Admitted {
            pending: Pending { admission: Arc::clone(self), id, evicted },
            evicted_other,
        })
    }

    /// Closes the unregistered connection eviction would pick (the oldest
    /// of the source holding the most); `false` when there is none.
    pub(super) fn evict_one(&self) -> bool {
        let mut tables = self.lock();
        let Some(victim) = tables.eviction_candidate() else {
            return false;
        };
        match tables.forget(victim) {
            Some(evict) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }

    /// Unregistered connections now.
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.lock().pending.len()
    }
}

/// One unregistered connection's place in the table; dropped when the
/// connection registers or ends.
#[derive(Debug)]
pub(super) struct Pending {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
}

impl Pending {
    /// Cancelled when this connection is evicted to make room.
    pub(super) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admission.lock().forget(self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_source_over_its_cap_is_refused_until_one_of_its_sockets_goes() {
        let admission = Admission::new(10, 2);
        let first = admission.admit(ip(2)).unwrap();
        let _second = admission.admit(ip(2)).unwrap();
        assert_eq!(admission.admit(ip(2)).err(), Some(Refusal::PerSource));
        assert!(admission.admit(ip(3)).is_ok(), "other sources are not affected");
        drop(first);
        assert!(admission.admit(ip(2)).is_ok());
    }

    #[test]
    fn at_the_global_cap_the_oldest_is_evicted() {
        let admission = Admission::new(2, 10);
        let oldest = admission.admit(ip(2)).unwrap();
        let middle = admission.admit(ip(3)).unwrap();
        let newest = admission.admit(ip(4)).unwrap();
        assert!(newest.evicted_other);
        assert!(oldest.pending.evicted().is_cancelled());
        assert!(!middle.pending.evicted().is_cancelled());
        assert_eq!(admission.count(), 2);
        // The evicted one's late drop does not release anyone else.
        drop(oldest);
        assert_eq!(admission.count(), 2);
        drop(middle);
        assert_eq!(admission.count(), 1);
    }

    #[test]
    fn eviction_takes_from_the_source_holding_the_most() {
        let admission = Admission::new(4, 10);
        let legitimate = admission.admit(ip(1)).unwrap();
        let hostile: Vec<_> = (0..3).map(|_| admission.admit(ip(2)).unwrap()).collect();
        let newcomer = admission.admit(ip(3)).unwrap();
        assert!(newcomer.evicted_other);
        assert!(!legitimate.pending.evicted().is_cancelled(), "older, but its source holds one");
        assert!(hostile[0].pending.evicted().is_cancelled(), "the hostile source's oldest goes");
        assert!(!hostile[1].pending.evicted().is_cancelled());
    }
}
