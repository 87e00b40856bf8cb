//! One webrtc-rs peer connection as the peer task owns it: the callback adapter that turns
//! webrtc-rs callbacks into the machine's [`PcEvent`]s, and the guard that closes it.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tracing::warn;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceConnectionState, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState,
};

use crate::event::{ConnectionId, PeerState};
use crate::negotiation::input::{Candidate, PcEvent};

/// An event of one peer connection of the peer, on its way to the peer task.
pub(super) struct Internal {
    pub(super) connection_id: ConnectionId,
    pub(super) event: PcEvent,
    /// With [`PcEvent::ChannelAnnounced`]: the channel itself, kept by the executor until the
    /// machine accepts or ignores it.
    pub(super) channel: Option<Arc<dyn DataChannel>>,
}

/// Forwards webrtc-rs callbacks to the peer task. Callbacks run on the webrtc-rs driver, so they
/// only enqueue.
pub(super) struct ConnectionHandler {
    pub(super) connection_id: ConnectionId,
    pub(super) events: mpsc::UnboundedSender<Internal>,
}

impl ConnectionHandler {
    fn forward(&self, event: PcEvent) {
        // The peer task outlives its peer connections; if it is gone, nobody needs the event.
        let _ =
            self.events.send(Internal { connection_id: self.connection_id, event, channel: None });
    }
}

/// The machine's view of a webrtc-rs connection state (`new` is reported as connecting).
fn peer_state(state: RTCPeerConnectionState) -> Option<PeerState> {
    Some(match state {
        RTCPeerConnectionState::New | RTCPeerConnectionState::Connecting => PeerState::Connecting,
        RTCPeerConnectionState::Connected => PeerState::Connected,
        RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
        RTCPeerConnectionState::Failed => PeerState::Failed,
        RTCPeerConnectionState::Closed => PeerState::Closed,
        _ => return None,
    })
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ConnectionHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.forward(PcEvent::LocalCandidate(Candidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
            })),
            Err(error) => {
                warn!(name: "rtc.ice.candidate_unusable", %error, "local candidate cannot be serialized")
            }
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.forward(PcEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if let Some(state) = peer_state(state) {
            self.forward(PcEvent::State(state));
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        tracing::trace!(name: "rtc.ice.state", connection = self.connection_id.get(), ?state);
        if matches!(state, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed) {
            self.forward(PcEvent::IceConnected);
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let label = channel.label().await.unwrap_or_default();
        let event = PcEvent::ChannelAnnounced { label };
        let internal =
            Internal { connection_id: self.connection_id, event, channel: Some(channel) };
        let _ = self.events.send(internal);
    }
}

/// A webrtc-rs peer connection that is closed when dropped, if nobody closed it before.
///
/// webrtc-rs detaches the driver of a connection dropped without `close()`, which would leave it
/// running; this guard makes an aborted peer task clean up too.
pub(super) struct OwnedConnection {
    pub(super) id: ConnectionId,
    pub(super) pc: Arc<dyn PeerConnection>,
    closed: bool,
}

impl OwnedConnection {
    pub(super) fn new(id: ConnectionId, pc: Arc<dyn PeerConnection>) -> Self {
        Self { id, pc, closed: false }
    }

    pub(super) async fn close(&mut self, bound: Duration) {
        match tokio::time::timeout(bound, self.pc.close()).await {
            Ok(Ok(())) => self.closed = true,
            // webrtc-rs stops the driver even when its close reports an error.
            Ok(Err(error)) => {
                self.closed = true;
                warn!(name: "rtc.peer.close_failed", %error);
            }
            // Cut short: `drop` finishes the close in the background.
            Err(_) => warn!(name: "rtc.peer.close_failed", error = "timed out"),
        }
    }
}

impl Drop for OwnedConnection {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Ok(runtime) = Handle::try_current() {
            let pc = Arc::clone(&self.pc);
            runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}
