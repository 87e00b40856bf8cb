//! What a [`crate::PeerSet`] reports: the event stream and the peer states in it.

use bytes::Bytes;
use tokio::sync::mpsc;

/// The state of the peer connection to one peer (the W3C `RTCPeerConnectionState`, minus `new`,
/// which tether reports as `Connecting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Built and negotiating, or ICE/DTLS in progress.
    Connecting,
    /// ICE and DTLS are up.
    Connected,
    /// ICE lost connectivity; it may come back by itself or after an ICE restart.
    Disconnected,
    /// ICE gave up, or a connect attempt ran out of time; an ICE restart or a replacement is
    /// needed.
    Failed,
    /// Closed, locally or by the remote.
    Closed,
}

/// One thing that happened to a peer.
///
/// `generation` numbers the peer connections built for one peer by this [`crate::PeerSet`]
/// (1, 2, ..., never reused, also across [`crate::PeerSet::close`]): a replacement is a new
/// generation, an ICE restart is not. Use it to tell a new data channel from the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcEvent {
    /// A message arrived on the peer's data channel.
    MessageReceived {
        /// The remote peer.
        peer: String,
        /// Which peer connection's data channel it came on: channels of
        /// different generations run side by side while one replaces the
        /// other, so a consumer that must not mix them checks this.
        generation: u64,
        /// The message, as sent.
        data: Bytes,
    },
    /// The peer connection changed state.
    PeerStateChanged {
        /// The remote peer.
        peer: String,
        /// Which peer connection.
        generation: u64,
        /// Its new state.
        state: PeerState,
    },
    /// The data channel opened: [`crate::PeerSet::send`] works from now on.
    ChannelOpened {
        /// The remote peer.
        peer: String,
        /// Which peer connection.
        generation: u64,
    },
    /// The data channel closed; sent after the last message received on it.
    ChannelClosed {
        /// The remote peer.
        peer: String,
        /// Which peer connection.
        generation: u64,
    },
}

/// The receiving end of a [`crate::PeerSet`]'s events.
///
/// Two queues behind one `recv`: peer state changes (unbounded: a handful per connection) are
/// delivered before data-channel traffic (bounded by
/// [`crate::RtcConfig::message_queue_capacity`]). Channel opened/closed travel with the messages,
/// so they keep their order relative to them.
#[derive(Debug)]
pub struct RtcEvents {
    states: mpsc::UnboundedReceiver<RtcEvent>,
    traffic: mpsc::Receiver<RtcEvent>,
}

impl RtcEvents {
    pub(crate) fn new(
        states: mpsc::UnboundedReceiver<RtcEvent>,
        traffic: mpsc::Receiver<RtcEvent>,
    ) -> Self {
        Self { states, traffic }
    }

    /// The next event, or `None` once the [`crate::PeerSet`] and all its peer tasks are gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no event is lost.
    pub async fn recv(&mut self) -> Option<RtcEvent> {
        tokio::select! {
            biased;
            Some(event) = self.states.recv() => Some(event),
            Some(event) = self.traffic.recv() => Some(event),
            else => None,
        }
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<RtcEvent> {
        self.states.try_recv().ok().or_else(|| self.traffic.try_recv().ok())
    }
}
