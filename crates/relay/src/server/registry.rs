//! Which peer id is served by which session, and who shares a room.
//!
//! Architecture invariant: an entry is only ever removed by the session that
//! owns it (same connection id), so a replaced connection that closes late
//! can never unregister its successor.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::metrics::ServerMetrics;
use tether_signal::protocol::{
    IceServerGrant, PROTOCOL_VERSION, PeerId, Registered, RoomId, ServerMessage,
    encode_server_message,
};

use super::session::SessionHandle;

/// One registered peer.
struct Entry {
    handle: SessionHandle,
    room: Option<RoomId>,
    /// The client's instance id and attempt number, when it sent them.
    session: Option<String>,
    generation: Option<u64>,
    /// The registering token's freshness (its expiry; static: the maximum).
    freshness: u64,
    registered_at: Instant,
    /// The revision of this registration in the cluster's registration
    /// bucket (cluster mode only).
    cluster_revision: Option<u64>,
}

#[derive(Default)]
struct Tables {
    peers: HashMap<PeerId, Entry>,
    rooms: HashMap<RoomId, BTreeSet<PeerId>>,
}

impl Tables {
    fn leave_room(&mut self, peer: &PeerId, room: &RoomId) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(peer);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn room_handles(&self, room: &RoomId, except: &PeerId) -> Vec<SessionHandle> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(|member| *member != except)
            .filter_map(|member| self.peers.get(member).map(|entry| entry.handle.clone()))
            .collect()
    }
}

/// A request to register `peer` on the session `handle`.
pub(super) struct Registration {
    pub(super) peer: PeerId,
    pub(super) room: Option<RoomId>,
    pub(super) session: Option<String>,
    pub(super) generation: Option<u64>,
    /// The token's freshness ([`crate::auth::Grant::freshness`]).
    pub(super) freshness: u64,
    /// How long a registration's generation order holds.
    pub(super) generation_fence: Duration,
    pub(super) handle: SessionHandle,
    pub(super) max_frame_bytes: usize,
    /// ICE servers for `registered` (TURN credentials minted for `peer`).
    pub(super) ice_servers: Vec<IceServerGrant>,
    /// The peers `registered` says get an `ice_restart` from `peer` right after it.
    pub(super) ice_restart: Vec<PeerId>,
    /// Cluster mode: the registration's revision in the registration bucket.
    pub(super) cluster_revision: Option<u64>,
    /// Cluster mode: the room's members held by other instances, listed in
    /// `registered` next to the local ones.
    pub(super) remote_peers: Vec<PeerId>,
}

/// What a successful registration requires the caller to do next.
pub(super) struct RegisterEffects {
    /// The session that held the peer id before, to be told and closed.
    pub(super) replaced: Option<SessionHandle>,
    /// Sessions to send `peer_joined` to.
    pub(super) joined_to: Vec<SessionHandle>,
    /// Sessions of the previous room to send `peer_left` to (room changed).
    pub(super) left_to: Vec<SessionHandle>,
    /// The room of the replaced registration, when it differs from the new
    /// one (cluster mode takes the peer out of its presence).
    pub(super) previous_room: Option<RoomId>,
}

/// Where a relay's recipient is, as this server sees it.
pub(super) enum Located {
    /// Registered here, in the sender's room.
    Here(SessionHandle),
    /// Registered here, in another room: as unknown as an offline peer.
    OtherRoom,
    /// Not registered here (another instance may hold it).
    NotHere,
}

pub(super) enum RegisterOutcome {
    Registered(RegisterEffects),
    /// The same client session already registered a newer attempt, within
    /// the generation fence.
    Stale,
    /// The peer id is held under a token that expires later than this one.
    Outdated,
}

/// The peer table, shared by every session of a server.
#[derive(Default)]
pub(super) struct Registry {
    tables: Mutex<Tables>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        // Nothing panics while holding the lock; if something ever did, the
        // tables are still structurally valid, so keep serving.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a peer. The `registered` frame is queued on the new session
    /// while the lock is held, so it precedes anything relayed to the peer.
    pub(super) fn register(
        &self,
        registration: Registration,
        metrics: &ServerMetrics,
    ) -> RegisterOutcome {
        let mut tables = self.lock();
        let Registration {
            peer,
            room,
            session,
            generation,
            freshness,
            generation_fence,
            handle,
            max_frame_bytes,
            ice_servers,
            ice_restart,
            cluster_revision,
            remote_peers,
        } = registration;
        let now = Instant::now();
        if let Some(existing) = tables.peers.get(&peer) {
            if freshness < existing.freshness {
                return RegisterOutcome::Outdated;
            }
            if session.is_some()
                && existing.session == session
                && let (Some(current), Some(new)) = (existing.generation, generation)
                && current >= new
                && now.saturating_duration_since(existing.registered_at) < generation_fence
            {
                return RegisterOutcome::Stale;
            }
        }
        let previous = tables.peers.remove(&peer);
        let mut left_to = Vec::new();
        let mut previous_room = None;
        if let Some(old_room) = previous.as_ref().and_then(|previous| previous.room.as_ref()) {
            tables.leave_room(&peer, old_room);
            if room.as_ref() != Some(old_room) {
                left_to = tables.room_handles(old_room, &peer);
                previous_room = Some(old_room.clone());
            }
        }
        let joined_to = match &room {
            Some(room) => tables.room_handles(room, &peer),
            None => Vec::new(),
        };
        let peers = match &room {
            Some(room) if remote_peers.is_empty() => tables
                .rooms
                .get(room)
                .map(|members| members.iter().cloned().collect())
                .unwrap_or_default(),
            Some(room) => {
                let mut all: BTreeSet<PeerId> = remote_peers.into_iter().collect();
                all.extend(tables.rooms.get(room).into_iter().flatten().cloned());
                all.remove(&peer);
                all.into_iter().collect()
            }
            None => Vec::new(),
        };
        let registered = encode_server_message(&ServerMessage::Registered(Registered {
            version: PROTOCOL_VERSION,
            peer_id: peer.clone(),
            room: room.clone(),
            peers,
            replaced: previous.is_some(),
            max_frame_bytes,
            ice_servers,
            ice_restart,
            // Relayed like every other payload (`session::on_relay`), within the relay budget.
            detour: true,
        }));
        // A fresh session's queue is empty, so this cannot be full; if the
        // session already ended, the peer is unregistered by it right after.
        let _ = handle.outbound.try_send(Utf8Bytes::from(registered));
        if let Some(room) = &room {
            tables.rooms.entry(room.clone()).or_default().insert(peer.clone());
        }
        tables.peers.insert(
            peer,
            Entry {
                handle,
                room,
                session,
                generation,
                freshness,
                registered_at: now,
                cluster_revision,
            },
        );
        metrics.set_peers_registered(tables.peers.len());
        metrics.registered();
        RegisterOutcome::Registered(RegisterEffects {
            replaced: previous.map(|entry| entry.handle),
            joined_to,
            left_to,
            previous_room,
        })
    }

    /// Unregisters `peer` if `connection_id` still owns it; returns the
    /// sessions to send `peer_left` to, or `None` when the entry belongs to
    /// another connection (the peer was replaced).
    pub(super) fn unregister(
        &self,
        peer: &PeerId,
        connection_id: u64,
        metrics: &ServerMetrics,
    ) -> Option<Vec<SessionHandle>> {
        let mut tables = self.lock();
        let owned =
            tables.peers.get(peer).is_some_and(|entry| entry.handle.connection_id == connection_id);
        if !owned {
            return None;
        }
        let entry = tables.peers.remove(peer)?;
        metrics.set_peers_registered(tables.peers.len());
        let notify = match &entry.room {
            Some(room) => {
                tables.leave_room(peer, room);
                tables.room_handles(room, peer)
            }
            None => Vec::new(),
        };
        Some(notify)
    }

    /// Where `peer` is for a sender registered in `room`.
    pub(super) fn locate(&self, peer: &PeerId, room: Option<&RoomId>) -> Located {
        match self.lock().peers.get(peer) {
            Some(entry) if entry.room.as_ref() == room => Located::Here(entry.handle.clone()),
            Some(_) => Located::OtherRoom,
            None => Located::NotHere,
        }
    }

    /// Whether `peer` is registered here (in any room).
    pub(super) fn holds(&self, peer: &PeerId) -> bool {
        self.lock().peers.contains_key(peer)
    }

    /// The sessions of `room`'s local members other than `except`.
    pub(super) fn room_handles(&self, room: &RoomId, except: &PeerId) -> Vec<SessionHandle> {
        self.lock().room_handles(room, except)
    }

    /// The session serving `peer` if its registration is still the one
    /// announced to the cluster at `revision`.
    pub(super) fn at_cluster_revision(
        &self,
        peer: &PeerId,
        revision: u64,
    ) -> Option<SessionHandle> {
        self.lock()
            .peers
            .get(peer)
            .filter(|entry| entry.cluster_revision == Some(revision))
            .map(|entry| entry.handle.clone())
    }
}
