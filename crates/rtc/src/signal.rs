//! What this crate says to, and hears from, the signaling channel.
//!
//! tether-rtc does not know the signaling transport. Outbound messages are pushed as
//! [`OutboundSignal`] into the `mpsc` sender given to [`crate::PeerSet::new`]; the node forwards
//! them to the signaling server. Inbound messages are handed back with
//! [`crate::PeerSet::handle_signal`]. The payloads map one to one onto the signaling protocol's
//! relayed messages: `offer {sdp}`, `answer {sdp}`, `candidate {candidate, sdp_mid,
//! sdp_mline_index}`, `ice_restart {}` and `bye {}`.

use tether_signal::protocol::PeerId;

/// One relayed signaling message between two peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalPayload {
    /// An SDP offer. Only the offerer of a pair sends these (see [`crate::Role`]).
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer to the latest offer. Only the answerer sends these.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate; an empty `candidate` marks the end of candidates.
    Candidate {
        /// The candidate attribute (`candidate:...`), or empty for end-of-candidates.
        candidate: String,
        /// The media section id the candidate belongs to.
        sdp_mid: Option<String>,
        /// The media section index the candidate belongs to.
        sdp_mline_index: Option<u16>,
    },
    /// "Please (re)negotiate with me": sent by the answerer, which never offers, when it wants a
    /// connection or an ICE restart. The offerer replies with a fresh offer.
    IceRestartRequest,
    /// The sender closed its peer connection to the receiver.
    Bye,
}

impl SignalPayload {
    /// The end-of-candidates marker: a [`SignalPayload::Candidate`] with an empty candidate.
    #[must_use]
    pub fn end_of_candidates() -> Self {
        Self::Candidate { candidate: String::new(), sdp_mid: None, sdp_mline_index: None }
    }

    /// Whether this is the end-of-candidates marker.
    #[must_use]
    pub fn is_end_of_candidates(&self) -> bool {
        matches!(self, Self::Candidate { candidate, .. } if candidate.trim().is_empty())
    }

    /// The protocol name of this message, as used in logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Offer { .. } => "offer",
            Self::Answer { .. } => "answer",
            Self::Candidate { .. } => "candidate",
            Self::IceRestartRequest => "ice_restart",
            Self::Bye => "bye",
        }
    }
}

/// A signaling message this node wants delivered to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSignal {
    /// The remote peer.
    pub to: PeerId,
    /// What to relay.
    pub payload: SignalPayload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_candidates_round_trips() {
        assert!(SignalPayload::end_of_candidates().is_end_of_candidates());
        let real = SignalPayload::Candidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
            sdp_mid: Some(String::new()),
            sdp_mline_index: Some(0),
        };
        assert!(!real.is_end_of_candidates());
        assert_eq!(real.kind(), "candidate");
        assert_eq!(SignalPayload::IceRestartRequest.kind(), "ice_restart");
    }
}
