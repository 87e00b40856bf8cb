//! What a [`crate::PeerSet`] reports: the event stream, the peer states and the peer
//! connection ids in it.

use std::fmt;

use bytes::Bytes;
use tether_signal::protocol::PeerId;
use tokio::sync::mpsc;

/// Which peer connection to a remote peer: a [`crate::PeerSet`] numbers the peer connections it
/// builds for each remote peer 1, 2, ..., and never reuses a number, also across
/// [`crate::PeerSet::close`]. A replacement is a new connection (a higher id); an ICE restart
/// keeps the connection and its id. The id is local: it is never on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The id numbered `number`. A [`crate::PeerSet`] makes its own; this is for tests and for
    /// bindings that carry the id as a plain number.
    #[must_use]
    pub const fn new(number: u64) -> Self {
        Self(number)
    }

    /// The number: 1 for the first peer connection to a peer, and up.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

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
/// `connection_id` says which of the peer's connections it happened to (see [`ConnectionId`]):
/// use it to tell a new data channel from the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcEvent {
    /// A message arrived on the peer's data channel.
    MessageReceived {
        /// The remote peer.
        peer: PeerId,
        /// Which peer connection's data channel it came on: the channels of
        /// two connections run side by side while one replaces the other,
        /// so a consumer that must not mix them checks this.
        connection_id: ConnectionId,
        /// The message, as sent.
        data: Bytes,
    },
    /// The peer connection changed state.
    PeerStateChanged {
        /// The remote peer.
        peer: PeerId,
        /// Which peer connection.
        connection_id: ConnectionId,
        /// Its new state.
        state: PeerState,
    },
    /// The data channel opened: [`crate::PeerSet::send`] works from now on.
    ChannelOpened {
        /// The remote peer.
        peer: PeerId,
        /// Which peer connection.
        connection_id: ConnectionId,
    },
    /// A connect to the peer ended without an open data channel (it timed out, or its first
    /// offer went unanswered, or the peer connection failed while connecting): the peer is not
    /// connected. The peer set retries by itself with backoff while the peer is wanted, present
    /// and signaling is up (docs/NEGOTIATION.md §13.2); the node reports it as a peer loss.
    PeerLost {
        /// The remote peer.
        peer: PeerId,
        /// The peer connection that was being connected, if one was still current.
        connection_id: Option<ConnectionId>,
    },
    /// The data channel closed; sent after the last message received on it.
    ChannelClosed {
        /// The remote peer.
        peer: PeerId,
        /// Which peer connection.
        connection_id: ConnectionId,
    },
    /// Data to the peer may flow again: the hold of [`crate::PeerStatus::data_held`] ended (the
    /// ICE restart completed, or the peer connection is connected again).
    HoldReleased {
        /// The remote peer.
        peer: PeerId,
        /// Which peer connection.
        connection_id: ConnectionId,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_order_by_number_and_show_it() {
        let (first, second) = (ConnectionId::new(1), ConnectionId::new(2));
        assert!(first < second && Some(first) > None);
        assert_eq!((second.get(), second.to_string()), (2, "2".to_owned()));
    }
}
