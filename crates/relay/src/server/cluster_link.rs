//! The server's side of the cluster (cluster mode only): the room watches
//! that turn other instances' presence into `peer_joined` / `peer_left` for
//! local members, the supersede notices that close local sessions, and the
//! per-session forwarding of frames arriving from the bus.
//!
//! Architecture invariant: presence changes of peers held by this instance
//! are announced to local members by the registry, as on one server; a
//! room watch only announces peers held elsewhere, so nobody hears of a
//! local change twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OnceCell;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::cluster::{
    Cluster, ClusterError, ClusterEvent, ClusterEvents, Inbox, InstanceId, PresenceChange,
    RoomMembers, RoomWatch,
};
use crate::metrics::{ServerMetrics, SessionEnd};
use tether_signal::protocol::{
    ErrorCode, PeerId, RoomId, ServerMessage, close_code, encode_server_message,
};

use super::ServerState;
use super::registry::Registry;
use super::session::SessionHandle;

/// One followed room: its watch starts once, for the first local member.
struct FollowedRoom {
    members: OnceCell<RoomMembers>,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for FollowedRoom {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

/// This instance's link to the cluster, shared by every session.
pub(super) struct ClusterLink {
    pub(super) cluster: Cluster,
    registry: Arc<Registry>,
    /// Rooms with local members: how many sessions use each, and its watch.
    rooms: Mutex<HashMap<RoomId, (usize, Arc<FollowedRoom>)>>,
}

impl ClusterLink {
    pub(super) fn new(cluster: Cluster, registry: Arc<Registry>) -> ClusterLink {
        ClusterLink { cluster, registry, rooms: Mutex::new(HashMap::new()) }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomId, (usize, Arc<FollowedRoom>)>> {
        // Nothing panics while holding the lock; the map stays valid.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn instance(&self) -> &InstanceId {
        self.cluster.instance_id()
    }

    /// Counts a session in `room` and makes sure the room is watched;
    /// returns the room's members across the cluster. Every call, failed
    /// or not, is paired with [`release_room`](Self::release_room).
    pub(super) async fn acquire_room(&self, room: &RoomId) -> Result<RoomMembers, ClusterError> {
        let followed = {
            let mut rooms = self.rooms();
            let entry = rooms.entry(room.clone()).or_insert_with(|| {
                let followed = FollowedRoom { members: OnceCell::new(), task: Mutex::new(None) };
                (0, Arc::new(followed))
            });
            entry.0 += 1;
            entry.1.clone()
        };
        let members = followed
            .members
            .get_or_try_init(|| async {
                let watch = self.cluster.watch_room(room).await?;
                let members = watch.members_view();
                let task = tokio::spawn(follow_room(
                    watch,
                    self.registry.clone(),
                    self.instance().clone(),
                ));
                *followed.task.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(task.abort_handle());
                Ok::<_, ClusterError>(members)
            })
            .await?;
        Ok(members.clone())
    }

    /// Undoes one [`acquire_room`](Self::acquire_room); the last one stops
    /// the room's watch.
    pub(super) fn release_room(&self, room: &RoomId) {
        let mut rooms = self.rooms();
        if let Some(entry) = rooms.get_mut(room) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                rooms.remove(room);
            }
        }
    }

    /// The instance holding `peer` in `room`, as the room's watch sees it.
    pub(super) fn member_instance(&self, room: &RoomId, peer: &PeerId) -> Option<InstanceId> {
        let followed = self.rooms().get(room).map(|(_, followed)| followed.clone())?;
        followed.members.get()?.instance_of(peer)
    }
}

/// Announces other instances' presence changes in `watch`'s room to the
/// local members, until the watch ends or is aborted.
async fn follow_room(mut watch: RoomWatch, registry: Arc<Registry>, own: InstanceId) {
    let room = watch.room().clone();
    while let Some(change) = watch.next().await {
        let (peer, instance, message, kind) = match change {
            PresenceChange::Joined { peer, instance } => {
                let message = ServerMessage::PeerJoined { peer_id: peer.clone() };
                (peer, instance, message, "peer_joined")
            }
            PresenceChange::Left { peer, instance, .. } => {
                let message = ServerMessage::PeerLeft { peer_id: peer.clone() };
                (peer, instance, message, "peer_left")
            }
        };
        // Local peers are announced by the registry (a peer that moved here
        // by its new session, so its old instance's leave is not news).
        if instance == own || (kind == "peer_left" && registry.holds(&peer)) {
            continue;
        }
        debug!(name: "signal.server.cluster_presence", %room, %peer, %instance, kind);
        let frame = Utf8Bytes::from(encode_server_message(&message));
        for member in registry.room_handles(&room, &peer) {
            member.deliver(frame.clone());
        }
    }
}

/// Closes local sessions whose registration another instance took over,
/// until the cluster is gone or `stop` is cancelled.
pub(super) async fn handle_events(mut events: ClusterEvents, state: Arc<ServerState>) {
    loop {
        let event = tokio::select! {
            () = state.shutdown.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(ClusterEvent::Superseded(superseded)) => {
                let Some(handle) =
                    state.registry.at_cluster_revision(&superseded.peer, superseded.revision)
                else {
                    continue;
                };
                debug!(
                    name: "signal.server.replaced",
                    peer = %superseded.peer,
                    by = %superseded.by,
                    old_connection_id = handle.connection_id
                );
                replace(&handle, &state.metrics);
            }
        }
    }
}

/// Tells a session a newer registration of its peer id took over, and
/// closes it: the same error and close code on one server or across a
/// cluster.
pub(super) fn replace(handle: &SessionHandle, metrics: &ServerMetrics) {
    metrics.rejected(ErrorCode::Replaced);
    handle.deliver_message(&ServerMessage::Error {
        code: ErrorCode::Replaced,
        message: "a newer connection registered this peer id".into(),
        id: None,
    });
    handle.close(close_code::REPLACED, "replaced", SessionEnd::Replaced);
}

/// Writes the frames other instances publish for this session's peer to
/// its socket, until `stop` is cancelled (the session closes) or the
/// connection to the broker ends for good. A frame from another room is
/// dropped: rooms are a boundary across instances too.
pub(super) async fn forward_inbox(
    mut inbox: Inbox,
    handle: SessionHandle,
    room: Option<RoomId>,
    stop: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            frame = inbox.next() => frame,
        };
        let Some(frame) = frame else {
            warn!(name: "signal.server.cluster_inbox_closed", peer = %inbox.peer());
            return;
        };
        if frame.room != room {
            debug!(name: "signal.server.cluster_room_mismatch", peer = %inbox.peer(), from = %frame.from);
            continue;
        }
        handle.deliver(Utf8Bytes::from(frame.text));
    }
}
