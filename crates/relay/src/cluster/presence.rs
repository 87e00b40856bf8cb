//! Presence per room: one entry per member in the presence bucket, key
//! `<room hex>.<peer hex>`, value `{"v":1,"instance":"…","room":"…","peer":"…"}`.
//! The bucket's `max_age` is the TTL; the holding instance rewrites each of
//! its entries every TTL/3, by compare-and-set on the revision it last
//! wrote, so it stops the moment another instance takes the entry over.
//!
//! nats-server 2.9 does not tell watchers when `max_age` removes an entry,
//! so a [`RoomWatch`] expires members itself: a member not rewritten for a
//! TTL has left ([`LeftReason::Expired`]). A watch that hears nothing for
//! TTL/2 while its room has members starts over from a fresh snapshot
//! (its consumer may have died with a NATS node), so a lost consumer does
//! not expire members who are still refreshed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tether_signal::protocol::{PeerId, RoomId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Cluster, ClusterError, Counters, InstanceId, subjects};

const RECORD_VERSION: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u8,
    instance: String,
    room: String,
    peer: String,
}

/// A change in a room's membership, seen by a [`RoomWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceChange {
    /// `peer` entered the room, on `instance`.
    Joined {
        /// The member.
        peer: PeerId,
        /// The instance holding it.
        instance: InstanceId,
    },
    /// `peer` is no longer in the room.
    Left {
        /// The former member.
        peer: PeerId,
        /// The instance that last held it.
        instance: InstanceId,
        /// Why.
        reason: LeftReason,
    },
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeftReason {
    /// Its instance removed it ([`Cluster::leave`]).
    Left,
    /// Nobody refreshed it for a TTL: its instance is gone or cut off.
    Expired,
}

struct Held {
    revision: u64,
    value: Bytes,
}

/// The presence half of a [`Cluster`], shared with its refresh task.
pub(super) struct Shared {
    store: kv::Store,
    instance: InstanceId,
    ttl: Duration,
    counters: Arc<Counters>,
    /// Entries this instance owns, by key.
    held: Mutex<HashMap<String, Held>>,
    /// Bumped on every (re)connection to the broker.
    connected: tokio::sync::watch::Receiver<u64>,
}

fn store_error(op: &'static str, err: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store { op, bucket: subjects::PRESENCE_BUCKET, reason: err.to_string() }
}

/// How long ago the broker stored an entry (zero when its clock is ahead).
fn age(created: SystemTime) -> Duration {
    SystemTime::now().duration_since(created).unwrap_or_default()
}

impl Shared {
    pub(super) fn new(
        store: kv::Store,
        instance: InstanceId,
        ttl: Duration,
        counters: Arc<Counters>,
        connected: tokio::sync::watch::Receiver<u64>,
    ) -> Shared {
        Shared { store, instance, ttl, counters, held: Mutex::new(HashMap::new()), connected }
    }

    /// A snapshot of `room` and a watch of every change after it. Changes
    /// between the two may be seen twice, which [`follow`] absorbs.
    async fn start(
        &self,
        room: &RoomId,
    ) -> Result<(BTreeMap<PeerId, Member>, kv::Watch), ClusterError> {
        let mut stream = self.store.stream.clone();
        let last = stream.info().await.map_err(|err| store_error("info", err))?.state.last_sequence;
        let snapshot = self.snapshot(room).await?;
        let watch = self
            .store
            .watch_from_revision(subjects::presence_room_filter(room), last + 1)
            .await
            .map_err(|err| store_error("watch", err))?;
        let now = Instant::now();
        let state = snapshot
            .into_iter()
            .map(|(peer, (instance, age))| {
                (peer, Member { instance, expires_at: now + self.ttl.saturating_sub(age) })
            })
            .collect();
        Ok((state, watch))
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        // Nothing panics while holding the lock; the map stays valid.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn decode(&self, room: &RoomId, entry: &kv::Entry) -> Option<(PeerId, InstanceId)> {
        let peer = subjects::presence_key_peer(room, &entry.key);
        let record = serde_json::from_slice::<Record>(&entry.value).ok();
        match (peer, record) {
            (Some(peer), Some(record))
                if record.v == RECORD_VERSION && record.peer == peer.as_str() =>
            {
                if let Ok(instance) = InstanceId::new(record.instance) {
                    return Some((peer, instance));
                }
            }
            _ => {}
        }
        Counters::bump(&self.counters.malformed);
        warn!(name: "relay.cluster.malformed", kind = "presence", key = %entry.key);
        None
    }

    pub(super) async fn members(
        &self,
        room: &RoomId,
    ) -> Result<BTreeMap<PeerId, InstanceId>, ClusterError> {
        Ok(self
            .snapshot(room)
            .await?
            .into_iter()
            .map(|(peer, (instance, _))| (peer, instance))
            .collect())
    }

    /// The room's live entries with their age.
    async fn snapshot(
        &self,
        room: &RoomId,
    ) -> Result<BTreeMap<PeerId, (InstanceId, Duration)>, ClusterError> {
        let filter = format!("{}{}", self.store.prefix, subjects::presence_room_filter(room));
        let mut subjects_found = self
            .store
            .stream
            .info_with_subjects(filter)
            .await
            .map_err(|err| store_error("list", err))?;
        let mut keys = Vec::new();
        while let Some(found) = subjects_found.next().await {
            let (subject, _count) = found.map_err(|err| store_error("list", err))?;
            if let Some(key) = subject.strip_prefix(&self.store.prefix) {
                keys.push(key.to_owned());
            }
        }
        let mut members = BTreeMap::new();
        for key in keys {
            let Some(entry) = self.store.entry(key).await.map_err(|err| store_error("get", err))?
            else {
                continue;
            };
            let age = age(entry.created.into());
            if entry.operation != Operation::Put || age >= self.ttl {
                continue;
            }
            if let Some((peer, instance)) = self.decode(room, &entry) {
                members.insert(peer, (instance, age));
            }
        }
        Ok(members)
    }

    fn record(&self, room: &RoomId, peer: &PeerId) -> Result<Bytes, ClusterError> {
        let record = Record {
            v: RECORD_VERSION,
            instance: self.instance.as_str().to_owned(),
            room: room.as_str().to_owned(),
            peer: peer.as_str().to_owned(),
        };
        serde_json::to_vec(&record).map(Bytes::from).map_err(|err| store_error("encode", err))
    }

    /// Rewrites one owned entry; see the module docs.
    async fn refresh(&self, key: &str, revision: u64, value: Bytes) {
        match self.store.update(key, value.clone(), revision).await {
            Ok(new) => {
                let released = {
                    let mut held = self.held();
                    match held.get_mut(key) {
                        Some(entry) if entry.revision == revision => {
                            entry.revision = new;
                            false
                        }
                        Some(_) => false,
                        None => true,
                    }
                };
                // Left while we were refreshing: take back what we wrote.
                if released {
                    let _ = self.store.delete_expect_revision(key, Some(new)).await;
                }
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.reclaim(key, revision, value).await;
            }
            Err(err) => {
                Counters::bump(&self.counters.presence_refresh_failures);
                warn!(name: "relay.cluster.presence_refresh_failed", key, error = %err);
            }
        }
    }

    /// The entry changed under us: another instance took it over (stop), or
    /// it expired or vanished (write it again, we still hold the peer).
    async fn reclaim(&self, key: &str, revision: u64, value: Bytes) {
        let current = match self.store.entry(key).await {
            Ok(current) => current,
            Err(err) => {
                Counters::bump(&self.counters.presence_refresh_failures);
                warn!(name: "relay.cluster.presence_refresh_failed", key, error = %err);
                return;
            }
        };
        let ours = |entry: &kv::Entry| {
            serde_json::from_slice::<Record>(&entry.value)
                .is_ok_and(|record| record.instance == self.instance.as_str())
        };
        let rewritten = match current {
            Some(entry) if entry.operation == Operation::Put && ours(&entry) => {
                Some(entry.revision)
            }
            Some(entry) if entry.operation == Operation::Put => {
                debug!(name: "relay.cluster.presence_taken_over", key);
                let mut held = self.held();
                if held.get(key).is_some_and(|entry| entry.revision == revision) {
                    held.remove(key);
                }
                None
            }
            _ => match self.store.put(key, value).await {
                Ok(new) => Some(new),
                Err(err) => {
                    Counters::bump(&self.counters.presence_refresh_failures);
                    warn!(name: "relay.cluster.presence_refresh_failed", key, error = %err);
                    None
                }
            },
        };
        if let Some(new) = rewritten
            && let Some(entry) = self.held().get_mut(key)
            && entry.revision == revision
        {
            entry.revision = new;
        }
    }
}

/// Rewrites this instance's entries every TTL/3, until the cluster is
/// dropped.
pub(super) async fn refresh_loop(shared: Arc<Shared>) {
    let period = (shared.ttl / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let owned: Vec<(String, u64, Bytes)> = shared
            .held()
            .iter()
            .map(|(key, held)| (key.clone(), held.revision, held.value.clone()))
            .collect();
        for (key, revision, value) in owned {
            shared.refresh(&key, revision, value).await;
        }
    }
}

struct Member {
    instance: InstanceId,
    expires_at: Instant,
}

/// A shared, always current view of a [`RoomWatch`]'s members (what
/// [`RoomWatch::members`] returns), readable while the watch itself is
/// being consumed elsewhere. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RoomMembers {
    members: Arc<Mutex<BTreeMap<PeerId, InstanceId>>>,
}

impl RoomMembers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PeerId, InstanceId>> {
        // Nothing panics while holding the lock; the map stays valid.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance holding `peer`, when it is a member.
    pub fn instance_of(&self, peer: &PeerId) -> Option<InstanceId> {
        self.lock().get(peer).cloned()
    }

    /// Every member's peer id, in order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.lock().keys().cloned().collect()
    }
}

/// Follows one room's membership across all instances; made by
/// [`Cluster::watch_room`]. Dropping it stops the watch.
#[derive(Debug)]
pub struct RoomWatch {
    room: RoomId,
    members: Arc<Mutex<BTreeMap<PeerId, InstanceId>>>,
    changes: mpsc::Receiver<PresenceChange>,
    task: AbortHandle,
}

impl Drop for RoomWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoomWatch {
    /// The room watched.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The members as this watch sees them now (the snapshot taken when the
    /// watch started, with every change since applied).
    pub fn members(&self) -> BTreeMap<PeerId, InstanceId> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A view of [`RoomWatch::members`] that stays current and can be read
    /// from elsewhere while this watch is consumed.
    pub fn members_view(&self) -> RoomMembers {
        RoomMembers { members: self.members.clone() }
    }

    /// The next change after the starting snapshot. `None` when the watch
    /// ended (the connection closed for good).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a change is removed only when this returns it.
    pub async fn next(&mut self) -> Option<PresenceChange> {
        self.changes.recv().await
    }
}

/// Applies watched entries and local expiry to `members`, reporting changes;
/// after a reconnection to the broker, starts over from a fresh snapshot and
/// reports the difference.
async fn follow(
    shared: Arc<Shared>,
    room: RoomId,
    mut watch: kv::Watch,
    mut state: BTreeMap<PeerId, Member>,
    members: Arc<Mutex<BTreeMap<PeerId, InstanceId>>>,
    changes: mpsc::Sender<PresenceChange>,
) {
    let publish = |state: &BTreeMap<PeerId, Member>| {
        let view = state.iter().map(|(peer, member)| (peer.clone(), member.instance.clone()));
        *members.lock().unwrap_or_else(PoisonError::into_inner) = view.collect();
    };
    let mut connected = shared.connected.clone();
    connected.borrow_and_update();
    let mut resync_at: Option<Instant> = None;
    // Members are rewritten every TTL/3, so a watch of a room with members
    // that hears nothing for TTL/2 has lost its consumer (e.g. the NATS node
    // holding it died while the client stayed connected to another one):
    // start over before anyone is wrongly expired.
    let silence = shared.ttl / 2;
    let mut last_heard = Instant::now();
    loop {
        let next_expiry = state.values().map(|member| member.expires_at).min();
        let mut out = Vec::new();
        tokio::select! {
            entry = watch.next() => match entry {
                None => return,
                Some(Err(err)) => {
                    warn!(name: "relay.cluster.presence_watch_error", %room, error = %err);
                    continue;
                }
                Some(Ok(entry)) => {
                    last_heard = Instant::now();
                    let Some(peer) = subjects::presence_key_peer(&room, &entry.key) else {
                        continue;
                    };
                    if entry.operation == Operation::Put {
                        let Some((peer, instance)) = shared.decode(&room, &entry) else { continue };
                        let expires_at = Instant::now() + shared.ttl;
                        let member = Member { instance: instance.clone(), expires_at };
                        // A known member's entry rewritten by its instance is
                        // a refresh; rewritten by another, the peer moved
                        // there: a join, as a re-registration on one server.
                        let moved = match state.insert(peer.clone(), member) {
                            None => true,
                            Some(previous) => previous.instance != instance,
                        };
                        if moved {
                            out.push(PresenceChange::Joined { peer, instance });
                        }
                    } else if let Some(member) = state.remove(&peer) {
                        out.push(PresenceChange::Left {
                            peer,
                            instance: member.instance,
                            reason: LeftReason::Left,
                        });
                    }
                }
            },
            () = tokio::time::sleep_until(last_heard + silence), if !state.is_empty() && resync_at.is_none() => {
                debug!(name: "relay.cluster.presence_watch_silent", %room, silent_ms = silence.as_millis() as u64);
                resync_at = Some(Instant::now());
            }
            changed = connected.changed() => {
                if changed.is_err() {
                    // The client is gone; the watch ends with it.
                    return;
                }
                resync_at = Some(Instant::now());
            }
            () = tokio::time::sleep_until(resync_at.unwrap_or_else(Instant::now)), if resync_at.is_some() => {
                match shared.start(&room).await {
                    Ok((fresh, fresh_watch)) => {
                        resync_at = None;
                        last_heard = Instant::now();
                        watch = fresh_watch;
                        for (peer, member) in &state {
                            if !fresh.contains_key(peer) {
                                out.push(PresenceChange::Left {
                                    peer: peer.clone(),
                                    instance: member.instance.clone(),
                                    reason: LeftReason::Left,
                                });
                            }
                        }
                        for (peer, member) in &fresh {
                            if !state.contains_key(peer) {
                                out.push(PresenceChange::Joined {
                                    peer: peer.clone(),
                                    instance: member.instance.clone(),
                                });
                            }
                        }
                        state = fresh;
                        debug!(name: "relay.cluster.presence_resynced", %room, members = state.len());
                    }
                    Err(err) => {
                        warn!(name: "relay.cluster.presence_resync_failed", %room, error = %err);
                        resync_at = Some(Instant::now() + Duration::from_millis(500));
                    }
                }
            }
            () = tokio::time::sleep_until(next_expiry.unwrap_or_else(Instant::now)), if next_expiry.is_some() => {
                let now = Instant::now();
                let expired: Vec<PeerId> = state
                    .iter()
                    .filter(|(_, member)| member.expires_at <= now)
                    .map(|(peer, _)| peer.clone())
                    .collect();
                for peer in expired {
                    if let Some(member) = state.remove(&peer) {
                        debug!(name: "relay.cluster.presence_expired", %room, %peer, instance = %member.instance);
                        out.push(PresenceChange::Left {
                            peer,
                            instance: member.instance,
                            reason: LeftReason::Expired,
                        });
                    }
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        publish(&state);
        for change in out {
            if changes.send(change).await.is_err() {
                return;
            }
        }
    }
}

impl Cluster {
    /// Puts `peer` in `room`'s presence as held by this instance, and keeps
    /// it there (refreshed every TTL/3) until [`leave`](Cluster::leave),
    /// another instance taking it over, or this instance going away.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream does not answer.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelled after the write, the entry exists but is
    /// not refreshed, so it expires within the TTL.
    pub async fn join(&self, room: &RoomId, peer: &PeerId) -> Result<(), ClusterError> {
        let shared = &self.inner.presence;
        let key = subjects::presence_key(room, peer);
        let value = shared.record(room, peer)?;
        let revision =
            shared.store.put(&key, value.clone()).await.map_err(|err| store_error("put", err))?;
        shared.held().insert(key, Held { revision, value });
        debug!(name: "relay.cluster.joined", %room, %peer, revision);
        Ok(())
    }

    /// Takes `peer` out of `room`'s presence if this instance still owns the
    /// entry. Returns whether it removed it (`false`: another instance holds
    /// the peer now, or it was never joined here).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream does not answer (the entry then
    /// expires within the TTL, as it is no longer refreshed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: the entry is no longer refreshed from the first
    /// poll on, so at worst it expires.
    pub async fn leave(&self, room: &RoomId, peer: &PeerId) -> Result<bool, ClusterError> {
        let shared = &self.inner.presence;
        let key = subjects::presence_key(room, peer);
        let Some(held) = shared.held().remove(&key) else { return Ok(false) };
        match shared.store.delete_expect_revision(&key, Some(held.revision)).await {
            Ok(()) => Ok(true),
            // Taken over, or a refresh raced us (it deletes what it wrote).
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(store_error("delete", err)),
        }
    }

    /// Stops refreshing `peer`'s entry in `room` without removing it: the
    /// peer moved to another instance, which rewrites the entry (removing it
    /// would tell every room it left). Returns whether it was refreshed.
    pub fn forget(&self, room: &RoomId, peer: &PeerId) -> bool {
        let key = subjects::presence_key(room, peer);
        self.inner.presence.held().remove(&key).is_some()
    }

    /// Starts following `room`: [`RoomWatch::members`] is the snapshot now,
    /// and [`RoomWatch::next`] yields every change after it, including
    /// members whose instance stopped refreshing them (within the TTL).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream does not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling leaves nothing running.
    pub async fn watch_room(&self, room: &RoomId) -> Result<RoomWatch, ClusterError> {
        let shared = self.inner.presence.clone();
        let (state, watch) = shared.start(room).await?;
        let members = Arc::new(Mutex::new(
            state.iter().map(|(peer, member)| (peer.clone(), member.instance.clone())).collect(),
        ));
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(follow(shared, room.clone(), watch, state, members.clone(), tx))
            .abort_handle();
        Ok(RoomWatch { room: room.clone(), members, changes: rx, task })
    }
}
