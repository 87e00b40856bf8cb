//! The part of a peer's state other tasks read without a round trip to its task.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::PeerConnection;

use crate::event::{ConnectionId, PeerState};

/// A snapshot of one peer, readable without waiting for its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// The current (or last) peer connection: peer connections built for this peer by this set
    /// are numbered 1, 2, ..., across closes too (see [`ConnectionId`]); `None` before the first.
    pub connection_id: Option<ConnectionId>,
    /// The current peer connection's state; `None` before the first was built.
    pub state: Option<PeerState>,
    /// Whether the data channel is open, so that [`crate::PeerSet::send`] can succeed.
    pub channel_open: bool,
    /// Whether direct paths to this peer failed and its peer connections are now relay-only
    /// ([`crate::PeerSet::escalate_to_relay`]).
    pub relay_escalated: bool,
    /// Whether data to this peer should wait: the current peer connection's candidate pair is
    /// gone or being replaced (an ICE restart is under way, or the pair leaves from a local
    /// address the device no longer has), so anything written now would be lost into it and
    /// wait for SCTP's retransmission timer. Clears when the restart completes, the peer
    /// connection reports `connected` again, or a new peer connection replaces it
    /// ([`crate::RtcEvent::HoldReleased`] says so).
    pub data_held: bool,
    /// Whether this side's negotiation closed the current peer connection to replace it: the
    /// next one is being built (or asked of the offerer), so its closing is no loss of the
    /// peer. A failed replacement is reported on its own ([`crate::RtcEvent::PeerLost`]).
    /// Clears when the next peer connection is built.
    pub replacing: bool,
}

/// The part of a peer's state other tasks read directly.
#[derive(Default)]
pub(crate) struct PeerView(Mutex<ViewState>);

#[derive(Default)]
struct ViewState {
    connection_id: Option<ConnectionId>,
    state: Option<PeerState>,
    channel: Option<Arc<dyn DataChannel>>,
    /// The current peer connection, for reading its selected route; dropped when it closes.
    connection: Option<Arc<dyn PeerConnection>>,
    /// See [`PeerStatus::data_held`].
    held: bool,
    /// See [`PeerStatus::replacing`].
    replacing: bool,
}

impl PeerView {
    fn lock(&self) -> MutexGuard<'_, ViewState> {
        // A panic while holding this lock cannot leave the plain fields inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let view = self.lock();
        PeerStatus {
            connection_id: view.connection_id,
            state: view.state,
            channel_open: view.channel.is_some(),
            relay_escalated: false,
            data_held: view.held,
            replacing: view.replacing,
        }
    }

    pub(crate) fn channel(&self) -> Option<Arc<dyn DataChannel>> {
        self.lock().channel.clone()
    }

    /// The current peer connection, unless it is closed.
    pub(crate) fn connection(&self) -> Option<Arc<dyn PeerConnection>> {
        self.lock().connection.clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        let view = self.lock();
        view.state == Some(PeerState::Connected) && view.channel.is_some()
    }

    /// Whether peer connection `id` is the current one and has ICE and DTLS up (what comes
    /// next is SCTP and the data channel).
    pub(super) fn transport_up(&self, id: ConnectionId) -> bool {
        let view = self.lock();
        view.connection_id == Some(id) && view.state == Some(PeerState::Connected)
    }

    pub(super) fn begin_connection(&self, id: ConnectionId, pc: &Arc<dyn PeerConnection>) {
        *self.lock() = ViewState {
            connection_id: Some(id),
            state: Some(PeerState::Connecting),
            channel: None,
            connection: Some(Arc::clone(pc)),
            held: false,
            replacing: false,
        };
    }

    /// Marks peer connection `id` as closed to make way for the next one.
    pub(super) fn set_replacing(&self, id: ConnectionId) {
        let mut view = self.lock();
        if view.connection_id == Some(id) {
            view.replacing = true;
        }
    }

    pub(super) fn set_state(&self, id: ConnectionId, state: PeerState) {
        let mut view = self.lock();
        if view.connection_id == Some(id) {
            view.state = Some(state);
            if state == PeerState::Closed {
                view.channel = None;
                view.connection = None;
                view.held = false;
            }
        }
    }

    /// Holds (or releases) data on peer connection `id`; whether that changed anything (a
    /// replaced peer connection is left alone).
    pub(crate) fn set_held(&self, id: ConnectionId, held: bool) -> bool {
        let mut view = self.lock();
        if view.connection_id != Some(id) || view.held == held {
            return false;
        }
        view.held = held;
        true
    }

    /// Publishes an opened channel, unless its peer connection has been replaced meanwhile.
    pub(super) fn open_channel(&self, id: ConnectionId, channel: &Arc<dyn DataChannel>) -> bool {
        let mut view = self.lock();
        if view.connection_id != Some(id) {
            return false;
        }
        view.channel = Some(Arc::clone(channel));
        true
    }

    pub(super) fn close_channel(&self, id: ConnectionId) {
        let mut view = self.lock();
        if view.connection_id == Some(id) {
            view.channel = None;
        }
    }
}
