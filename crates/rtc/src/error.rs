//! The one error type of this crate.

use std::time::Duration;

use tether_signal::protocol::PeerId;

/// Everything that can go wrong in tether-rtc.
///
/// No webrtc-rs type appears here: failures inside webrtc-rs are carried as their message in
/// [`RtcError::WebRtc`]. Use [`RtcError::is_timeout`] to tell "it did not happen in time" (worth
/// retrying, or escalating to a replacement) from every other failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcError {
    /// The peer id cannot name a remote peer: it is this node's own id.
    #[error("invalid peer id {peer}: {reason}")]
    InvalidPeerId {
        /// The rejected id.
        peer: PeerId,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No data channel to the peer opened within the connect timeout.
    #[error("connecting to peer {peer} timed out after {after:?}")]
    ConnectTimeout {
        /// The remote peer.
        peer: PeerId,
        /// The bound that expired.
        after: Duration,
    },
    /// An ICE restart did not bring the peer connection back within the restart timeout; the
    /// caller should replace the peer connection ([`crate::PeerSet::replace`]).
    #[error("ice restart of peer {peer} did not reconnect within {after:?}")]
    RestartTimeout {
        /// The remote peer.
        peer: PeerId,
        /// The bound that expired.
        after: Duration,
    },
    /// Closing the peer did not finish within the close timeout; its task was aborted.
    #[error("closing peer {peer} did not finish within {after:?}")]
    CloseTimeout {
        /// The remote peer.
        peer: PeerId,
        /// The bound that expired.
        after: Duration,
    },
    /// There is no peer connection to this peer (never connected, or closed since).
    #[error("no peer connection to peer {peer}")]
    NoPeerConnection {
        /// The remote peer.
        peer: PeerId,
    },
    /// The data channel to the peer is not open, so nothing can be sent now.
    #[error("data channel to peer {peer} is not open")]
    ChannelNotOpen {
        /// The remote peer.
        peer: PeerId,
    },
    /// The peer was closed locally while the operation was waiting.
    #[error("peer {peer} was closed")]
    PeerClosed {
        /// The remote peer.
        peer: PeerId,
    },
    /// The remote side closed the peer connection (it sent `bye`).
    #[error("peer {peer} closed the connection")]
    ClosedByRemote {
        /// The remote peer.
        peer: PeerId,
    },
    /// The peer connection reached the `failed` state.
    #[error("peer connection to {peer} failed")]
    ConnectionFailed {
        /// The remote peer.
        peer: PeerId,
    },
    /// The pending ICE restart was cleared ([`crate::PeerSet::clear_pending_restarts`]).
    #[error("ice restart of peer {peer} was cancelled")]
    RestartCancelled {
        /// The remote peer.
        peer: PeerId,
    },
    /// Offer/answer with the peer could not be completed (for example bad SDP from the remote).
    #[error("negotiation with peer {peer} failed: {reason}")]
    Negotiation {
        /// The remote peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The outbound signaling channel is closed: nothing can be negotiated.
    #[error("outbound signaling channel is closed")]
    SignalChannelClosed,
    /// The outbound signaling channel is full; the message was dropped.
    #[error("outbound signaling channel is full")]
    SignalChannelFull,
    /// A webrtc-rs operation failed.
    #[error("webrtc {operation} failed for peer {peer}: {message}")]
    WebRtc {
        /// The remote peer.
        peer: PeerId,
        /// What was being done, e.g. `create offer`.
        operation: &'static str,
        /// The webrtc-rs error, rendered.
        message: String,
    },
    /// Sending on the data channel failed.
    #[error("send to peer {peer} failed: {message}")]
    Send {
        /// The remote peer.
        peer: PeerId,
        /// The webrtc-rs error, rendered.
        message: String,
    },
    /// A peer task could not be started: the call was made outside a Tokio runtime.
    #[error("no tokio runtime to run peer {peer} on")]
    NoRuntime {
        /// The remote peer.
        peer: PeerId,
    },
}

impl RtcError {
    /// Whether this error means "not within its time bound" rather than a definite failure.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. } | Self::RestartTimeout { .. } | Self::CloseTimeout { .. }
        )
    }

    /// The remote peer this error is about, when it is about one.
    #[must_use]
    pub fn peer(&self) -> Option<&PeerId> {
        match self {
            Self::InvalidPeerId { peer, .. }
            | Self::ConnectTimeout { peer, .. }
            | Self::RestartTimeout { peer, .. }
            | Self::CloseTimeout { peer, .. }
            | Self::NoPeerConnection { peer }
            | Self::ChannelNotOpen { peer }
            | Self::PeerClosed { peer }
            | Self::ClosedByRemote { peer }
            | Self::ConnectionFailed { peer }
            | Self::RestartCancelled { peer }
            | Self::Negotiation { peer, .. }
            | Self::WebRtc { peer, .. }
            | Self::Send { peer, .. }
            | Self::NoRuntime { peer } => Some(peer),
            Self::SignalChannelClosed | Self::SignalChannelFull => None,
        }
    }

    pub(crate) fn webrtc(
        peer: &PeerId,
        operation: &'static str,
        error: impl std::fmt::Display,
    ) -> Self {
        Self::WebRtc { peer: peer.clone(), operation, message: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_classified() {
        let after = Duration::from_secs(1);
        let peer = PeerId::new("b").unwrap();
        assert!(RtcError::ConnectTimeout { peer: peer.clone(), after }.is_timeout());
        assert!(RtcError::RestartTimeout { peer: peer.clone(), after }.is_timeout());
        assert!(RtcError::CloseTimeout { peer: peer.clone(), after }.is_timeout());
        assert!(!RtcError::ChannelNotOpen { peer: peer.clone() }.is_timeout());
        assert!(!RtcError::SignalChannelClosed.is_timeout());
        assert_eq!(RtcError::ChannelNotOpen { peer }.peer().map(PeerId::as_str), Some("b"));
    }

    #[test]
    fn messages_are_lower_case_without_trailing_period() {
        let peer = PeerId::new("b").unwrap();
        let errors = [
            RtcError::ChannelNotOpen { peer: peer.clone() },
            RtcError::SignalChannelClosed,
            RtcError::webrtc(&peer, "create offer", "boom"),
        ];
        for error in errors {
            let text = error.to_string();
            assert!(text.chars().next().is_some_and(|c| c.is_lowercase()), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
    }
}
