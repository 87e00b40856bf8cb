//! Global registration: one entry per peer in the registration bucket,
//! replaced by compare-and-set, ordered exactly as the single server orders
//! attempts (`server/registry.rs`): a registration replaces the current one
//! unless both come from the same client session and the current one's
//! generation is at least the new one's.
//!
//! Record (the KV value, JSON): `{"v":1,"instance":"…","session":"…"|null,
//! "generation":5|null}`. When a registration replaces one announced by
//! another instance, the new holder publishes a notice to that instance's
//! subject: `{"v":1,"type":"superseded","peer":"…","revision":12,"by":"…"}`.

use std::sync::Arc;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tether_signal::protocol::PeerId;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Cluster, ClusterError, ClusterEvent, Counters, InstanceId, subjects};

const RECORD_VERSION: u8 = 1;

/// Compare-and-set attempts before giving up with [`ClusterError::Contended`].
const MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u8,
    instance: String,
    session: Option<String>,
    generation: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Notice {
    v: u8,
    #[serde(rename = "type")]
    kind: String,
    peer: String,
    revision: u64,
    by: String,
}

/// The outcome of [`Cluster::announce_registration`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Announcement {
    /// This instance now holds the peer's registration.
    Registered {
        /// The registration's revision: keep it, to release it
        /// ([`Cluster::release_registration`]) and to match
        /// [`Superseded::revision`].
        revision: u64,
        /// The registration it replaced, when there was one.
        replaced: Option<Replaced>,
    },
    /// The same client session already registered a newer attempt, held by
    /// `held_by`; refuse this one as the single server does.
    Stale {
        /// The instance holding the newer attempt.
        held_by: InstanceId,
    },
}

/// A registration replaced by [`Cluster::announce_registration`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The instance that held it (possibly this one).
    pub instance: InstanceId,
    /// Its revision.
    pub revision: u64,
}

/// Another instance took over a peer this instance registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    /// The peer.
    pub peer: PeerId,
    /// The revision of this instance's registration that was replaced: close
    /// the peer's session only if it still holds this revision (a newer
    /// local registration may have happened since).
    pub revision: u64,
    /// The instance holding the peer now.
    pub by: InstanceId,
}

/// The single server's rule: does `current` win over a new attempt?
fn is_stale(current: &Record, session: Option<&str>, generation: Option<u64>) -> bool {
    session.is_some()
        && current.session.as_deref() == session
        && matches!((current.generation, generation), (Some(held), Some(new)) if held >= new)
}

fn store_error(op: &'static str, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store { op, bucket: subjects::REGISTRATION_BUCKET, reason: err.to_string() }
}

impl Cluster {
    /// Makes this instance the holder of `peer`'s registration, unless the
    /// same client `session` already registered a newer `generation`
    /// anywhere ([`Announcement::Stale`]). When the replaced registration
    /// was held by another instance, that instance gets a
    /// [`ClusterEvent::Superseded`].
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream does not answer;
    /// [`ClusterError::Contended`] when the entry kept changing.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelled after the compare-and-set, the
    /// registration is taken but the old holder may not be told.
    pub async fn announce_registration(
        &self,
        peer: &PeerId,
        session: Option<&str>,
        generation: Option<u64>,
    ) -> Result<Announcement, ClusterError> {
        let store = &self.inner.registrations;
        let key = subjects::registration_key(peer);
        let record = Record {
            v: RECORD_VERSION,
            instance: self.inner.instance.as_str().to_owned(),
            session: session.map(str::to_owned),
            generation,
        };
        let value =
            Bytes::from(serde_json::to_vec(&record).map_err(|err| store_error("encode", err))?);
        for _ in 0..MAX_ATTEMPTS {
            let current = store.entry(key.clone()).await.map_err(|err| store_error("get", err))?;
            let previous = match &current {
                Some(entry) if entry.operation == Operation::Put => {
                    match serde_json::from_slice::<Record>(&entry.value) {
                        Ok(previous) if previous.v == RECORD_VERSION => {
                            InstanceId::new(previous.instance.clone())
                                .ok()
                                .map(|instance| (previous, instance, entry.revision))
                        }
                        _ => {
                            Counters::bump(&self.inner.counters.malformed);
                            warn!(name: "relay.cluster.malformed", kind = "registration", %peer);
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some((previous, instance, _)) = &previous
                && is_stale(previous, session, generation)
            {
                return Ok(Announcement::Stale { held_by: instance.clone() });
            }
            let written = match &current {
                Some(entry) => {
                    store.update(&key, value.clone(), entry.revision).await.map_err(|err| match err
                        .kind()
                    {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(store_error("update", err)),
                    })
                }
                None => store.create(&key, value.clone()).await.map_err(|err| match err.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(store_error("create", err)),
                }),
            };
            let revision = match written {
                Ok(revision) => revision,
                Err(None) => continue,
                Err(Some(err)) => return Err(err),
            };
            let replaced = previous.map(|(_, instance, revision)| Replaced { instance, revision });
            if let Some(replaced) = &replaced
                && replaced.instance != self.inner.instance
            {
                self.notify_superseded(peer, replaced).await;
            }
            debug!(name: "relay.cluster.registered", %peer, revision, replaced = ?replaced);
            return Ok(Announcement::Registered { revision, replaced });
        }
        Err(ClusterError::Contended { peer: peer.clone(), attempts: MAX_ATTEMPTS })
    }

    async fn notify_superseded(&self, peer: &PeerId, replaced: &Replaced) {
        let notice = Notice {
            v: RECORD_VERSION,
            kind: "superseded".to_owned(),
            peer: peer.as_str().to_owned(),
            revision: replaced.revision,
            by: self.inner.instance.as_str().to_owned(),
        };
        let Ok(payload) = serde_json::to_vec(&notice) else { return };
        let subject = subjects::instance_subject(&replaced.instance);
        match self.inner.client.publish(subject, payload.into()).await {
            Ok(()) => Counters::bump(&self.inner.counters.superseded_sent),
            // The client is closed; the old holder will be superseded by
            // nothing, but its presence and registration entries still
            // order correctly.
            Err(err) => warn!(name: "relay.cluster.notice_failed", %peer, error = %err),
        }
    }

    /// Removes `peer`'s registration if it is still the one this instance
    /// announced at `revision` (a session ending normally). Returns whether
    /// it was removed; `false` means another registration replaced it.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream does not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the delete either happened or not; the entry is
    /// replaced by the next registration either way.
    pub async fn release_registration(
        &self,
        peer: &PeerId,
        revision: u64,
    ) -> Result<bool, ClusterError> {
        let key = subjects::registration_key(peer);
        match self.inner.registrations.delete_expect_revision(&key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(store_error("delete", err)),
        }
    }

    /// The instance currently holding `peer`'s registration, if any (for
    /// answering a relay to a peer no instance holds).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream does not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn registration_holder(
        &self,
        peer: &PeerId,
    ) -> Result<Option<InstanceId>, ClusterError> {
        let key = subjects::registration_key(peer);
        let entry =
            self.inner.registrations.entry(key).await.map_err(|err| store_error("get", err))?;
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .and_then(|entry| serde_json::from_slice::<Record>(&entry.value).ok())
            .and_then(|record| InstanceId::new(record.instance).ok()))
    }
}

fn decode_notice(payload: &[u8]) -> Result<Superseded, String> {
    let notice: Notice = serde_json::from_slice(payload).map_err(|err| err.to_string())?;
    if notice.v != RECORD_VERSION || notice.kind != "superseded" {
        return Err(format!("unknown notice v{} {:?}", notice.v, notice.kind));
    }
    Ok(Superseded {
        peer: PeerId::new(notice.peer).map_err(|err| err.to_string())?,
        revision: notice.revision,
        by: InstanceId::new(notice.by).map_err(|err| err.to_string())?,
    })
}

/// Reads this instance's control subject until the client closes or the
/// events receiver is gone.
pub(super) async fn listen(
    mut control: async_nats::Subscriber,
    events: mpsc::Sender<ClusterEvent>,
    counters: Arc<Counters>,
    instance: InstanceId,
) {
    while let Some(message) = control.next().await {
        match decode_notice(&message.payload) {
            Ok(superseded) => {
                Counters::bump(&counters.superseded_received);
                debug!(name: "relay.cluster.superseded", %instance, peer = %superseded.peer, by = %superseded.by);
                if events.send(ClusterEvent::Superseded(superseded)).await.is_err() {
                    return;
                }
            }
            Err(reason) => {
                Counters::bump(&counters.malformed);
                warn!(name: "relay.cluster.malformed", kind = "notice", %instance, %reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(session: Option<&str>, generation: Option<u64>) -> Record {
        Record { v: 1, instance: "a".into(), session: session.map(str::to_owned), generation }
    }

    #[test]
    fn staleness_follows_the_single_server() {
        // Same session: only a strictly newer generation replaces.
        assert!(is_stale(&record(Some("s"), Some(5)), Some("s"), Some(5)));
        assert!(is_stale(&record(Some("s"), Some(5)), Some("s"), Some(4)));
        assert!(!is_stale(&record(Some("s"), Some(5)), Some("s"), Some(6)));
        // Another session, or missing fields: the newcomer wins.
        assert!(!is_stale(&record(Some("s"), Some(5)), Some("t"), Some(1)));
        assert!(!is_stale(&record(None, Some(5)), None, Some(1)));
        assert!(!is_stale(&record(Some("s"), None), Some("s"), Some(1)));
        assert!(!is_stale(&record(Some("s"), Some(5)), Some("s"), None));
    }

    #[test]
    fn notices_decode_strictly() {
        let good = br#"{"v":1,"type":"superseded","peer":"p.1","revision":3,"by":"b"}"#;
        let superseded = decode_notice(good).unwrap();
        assert_eq!(superseded.peer.as_str(), "p.1");
        assert_eq!(superseded.revision, 3);
        for bad in [
            &b""[..],
            br#"{"v":2,"type":"superseded","peer":"p","revision":3,"by":"b"}"#,
            br#"{"v":1,"type":"other","peer":"p","revision":3,"by":"b"}"#,
            br#"{"v":1,"type":"superseded","peer":"p q","revision":3,"by":"b"}"#,
            br#"{"v":1,"type":"superseded","peer":"p","revision":-3,"by":"b"}"#,
            br#"{"v":1,"type":"superseded","peer":"p","revision":3,"by":""}"#,
        ] {
            assert!(decode_notice(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
