//! The simulated peer connection of `simulation.rs`: what decides connectivity (session,
//! DTLS fingerprint, ICE credentials, signaling state), and its SDP text.

use std::time::Instant;

use crate::event::PeerState;
use crate::signal::SignalPayload;

/// A local identity: (session id, fingerprint, ICE ufrag).
pub(super) type Identity = (String, String, u64);

#[derive(Debug, Clone)]
pub(super) struct FakePc {
    pub(super) session: String,
    pub(super) fingerprint: String,
    pub(super) version: u64,
    pub(super) ufrag: u64,
    pub(super) remote: Option<Identity>,
    /// An offer is set locally and waits for its answer.
    pub(super) have_local_offer: bool,
    pub(super) closed: bool,
    pub(super) linked: bool,
    pub(super) unlinked_since: Option<Instant>,
    pub(super) ice: PeerState,
    pub(super) channel_announced: bool,
    pub(super) channel_accepted: bool,
    pub(super) channel_open: bool,
    pub(super) data_channel: bool,
    /// Set by the test: the pc answers with another identity (a peer that lost its pc, P7).
    pub(super) lie_identity: Option<String>,
}

impl FakePc {
    pub(super) fn identity(&self) -> Identity {
        (self.session.clone(), self.fingerprint.clone(), self.ufrag)
    }

    pub(super) fn sdp(&self) -> String {
        format!(
            "v=0\r\no=- {} {} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 {}\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:u{}\r\n",
            self.session, self.version, self.fingerprint, self.ufrag
        )
    }
}

/// Reads the identity of a simulated SDP.
pub(super) fn identity_of(sdp: &str) -> Option<Identity> {
    let mut session = None;
    let mut fingerprint = None;
    let mut ufrag = None;
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("o=") {
            session = rest.split_whitespace().nth(1).map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("a=fingerprint:sha-256 ") {
            fingerprint = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("a=ice-ufrag:u") {
            ufrag = rest.trim().parse().ok();
        }
    }
    Some((session?, fingerprint?, ufrag?))
}

/// A relayed message in one line: its kind and tether attributes.
pub(super) fn describe(payload: &SignalPayload) -> String {
    match payload {
        SignalPayload::Offer { sdp } | SignalPayload::Answer { sdp } => {
            let (tags, plain) = super::sdp::untag(sdp);
            let origin = super::SessionOrigin::parse(&plain).map(|o| o.id).unwrap_or_default();
            format!("{} session {origin} {tags:?}", payload.kind())
        }
        other => other.kind().to_owned(),
    }
}
