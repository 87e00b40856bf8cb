//! Negotiation with one remote peer (docs/NEGOTIATION.md): who offers, what tether adds to the
//! SDP, and the per-peer machine that decides every step.
//!
//! Roles are fixed per pair so there is never offer/offer glare: the peer with the smaller id
//! (byte order) offers, the other answers and asks for offers with `ice_restart`.
//!
//! - [`sdp`](self::sdp): the `a=x-tether-*` attributes (offer sequence, restart marker, the
//!   answer's offer name, rejection), answer matching, DTLS fingerprints.
//! - `machine`: the sans-IO per-peer machine. Local intents, relayed signaling, presence and
//!   the peer connection's events go in with `handle_input(now, input)` (`input.rs`); what to do
//!   comes out of `poll_action()` (`action.rs`: build a peer connection, create an offer, apply
//!   an answer, send a signal, close, report, answer a caller) and when to wake it of
//!   `poll_timeout()` (`timer.rs`). Its rules: `connect.rs`, `offerer.rs`, `answerer.rs`,
//!   `pacing.rs` (with `budget.rs`). The webrtc-rs task in `crate::peer` only executes its
//!   actions.
//! - Tests without WebRTC: `simulation.rs` (two machines on a virtual clock), `scenarios.rs`
//!   (scenarios and the property test), `vectors.rs` (the vectors shared with the browser).
//!
//! Offers are classified by their `o=` session id and by `a=x-tether-seq:<n>`, a number the
//! offerer increases with every offer: a different session id is a new peer connection on the
//! offerer's side, so the answerer replaces its own; the same session with a higher number is a
//! renegotiation (tether only renegotiates to restart ICE); the same number is a duplicate (it is
//! answered again), a lower one is stale (dropped). The `o=` version cannot serve: webrtc-rs
//! 0.21.1 does not keep it monotonic, so it only tells offers apart, it does not order them.

use std::cmp::Ordering;

use tether_signal::protocol::PeerId;

pub(crate) mod action;
mod answerer;
mod budget;
mod connect;
pub(crate) mod input;
pub(crate) mod machine;
mod offerer;
mod pacing;
pub(crate) mod sdp;
mod timer;

#[cfg(test)]
mod fake_pc;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod vectors;

/// Which side of a pair this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// This node creates the peer connection's offers and its data channel.
    Offerer,
    /// This node answers offers and never creates one; it asks with `ice_restart` instead.
    Answerer,
}

impl Role {
    /// The role of `local` towards `remote`, or `None` when the ids are equal (no pair).
    #[must_use]
    pub fn between(local: &PeerId, remote: &PeerId) -> Option<Self> {
        match local.as_str().as_bytes().cmp(remote.as_str().as_bytes()) {
            Ordering::Less => Some(Self::Offerer),
            Ordering::Greater => Some(Self::Answerer),
            Ordering::Equal => None,
        }
    }
}

/// The `o=` line's session id and version: which peer connection made an SDP, and which of its
/// descriptions it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionOrigin {
    pub(crate) id: String,
    pub(crate) version: u64,
}

impl SessionOrigin {
    /// Reads the origin of an SDP text. Never panics; a malformed line is an error.
    pub(crate) fn parse(sdp: &str) -> Result<Self, &'static str> {
        let line = sdp
            .lines()
            .find_map(|line| line.trim_end().strip_prefix("o="))
            .ok_or("sdp has no o= line")?;
        let mut fields = line.split_whitespace();
        let _username = fields.next().ok_or("o= line is empty")?;
        let id = fields.next().ok_or("o= line has no session id")?;
        let version =
            fields.next().ok_or("o= line has no session version").and_then(|version| {
                sdp::parse_number(version).ok_or("o= session version is not a number")
            })?;
        Ok(Self { id: id.to_owned(), version })
    }
}

/// Which offer an SDP offer is: its session and, for tether peers, its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferId {
    pub(crate) origin: SessionOrigin,
    pub(crate) seq: Option<u64>,
}

/// How an incoming offer relates to the session the answerer already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferKind {
    /// No session yet, or the offerer built a new peer connection: build a new one too.
    NewSession,
    /// A later offer in the current session: renegotiate (an ICE restart).
    Renegotiation,
    /// The very offer already answered (a retransmission): answer it again.
    Duplicate,
    /// An earlier offer in the current session: ignore it.
    Stale,
}

impl OfferKind {
    pub(crate) fn classify(current: Option<&OfferId>, offer: &OfferId) -> Self {
        let Some(current) = current.filter(|current| current.origin.id == offer.origin.id) else {
            return Self::NewSession;
        };
        match (current.seq, offer.seq) {
            (Some(current), Some(offer)) => match offer.cmp(&current) {
                Ordering::Greater => Self::Renegotiation,
                Ordering::Equal => Self::Duplicate,
                Ordering::Less => Self::Stale,
            },
            // Not numbered (not a tether offerer): only identity is known.
            _ if current.origin.version == offer.origin.version => Self::Duplicate,
            _ => Self::Renegotiation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn between(local: &str, remote: &str) -> Option<Role> {
        match (PeerId::new(local), PeerId::new(remote)) {
            (Ok(local), Ok(remote)) => Role::between(&local, &remote),
            _ => panic!("invalid test ids {local:?}, {remote:?}"),
        }
    }

    #[test]
    fn smaller_id_offers() {
        assert_eq!(between("alice", "bob"), Some(Role::Offerer));
        assert_eq!(between("bob", "alice"), Some(Role::Answerer));
        assert_eq!(between("a", "a"), None);
        // Byte order, not locale order: upper case sorts first.
        assert_eq!(between("Zed", "abe"), Some(Role::Offerer));
    }

    #[test]
    fn origin_parses_and_rejects_garbage() {
        let sdp = "v=0\r\no=- 42 3 IN IP4 0.0.0.0\r\ns=-\r\n";
        assert_eq!(SessionOrigin::parse(sdp), Ok(SessionOrigin { id: "42".into(), version: 3 }));
        assert!(SessionOrigin::parse("").is_err());
        assert!(SessionOrigin::parse("v=0\r\no=\r\n").is_err());
        assert!(SessionOrigin::parse("o=- 1\r\n").is_err());
        assert!(SessionOrigin::parse("o=- 1 x IN IP4 0.0.0.0\r\n").is_err());
    }

    #[test]
    fn offers_are_classified_by_session_and_number() {
        let offer = |id: &str, version, seq| OfferId {
            origin: SessionOrigin { id: id.into(), version },
            seq,
        };
        let current = offer("7", 900, Some(2));
        let classify = |next: OfferId| OfferKind::classify(Some(&current), &next);
        assert_eq!(OfferKind::classify(None, &offer("7", 1, Some(1))), OfferKind::NewSession);
        assert_eq!(classify(offer("8", 1, Some(3))), OfferKind::NewSession);
        // Versions may go down (webrtc-rs); the number decides.
        assert_eq!(classify(offer("7", 5, Some(3))), OfferKind::Renegotiation);
        assert_eq!(classify(offer("7", 900, Some(2))), OfferKind::Duplicate);
        assert_eq!(classify(offer("7", 950, Some(1))), OfferKind::Stale);
        // Unnumbered offers: identity only.
        let plain = offer("7", 900, None);
        assert_eq!(OfferKind::classify(Some(&plain), &offer("7", 900, None)), OfferKind::Duplicate);
        assert_eq!(
            OfferKind::classify(Some(&plain), &offer("7", 3, None)),
            OfferKind::Renegotiation
        );
    }
}
