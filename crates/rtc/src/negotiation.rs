//! Who offers, and how offers and answers are matched: the pure rules of negotiation.
//!
//! Roles are fixed per pair so there is never glare: the peer with the lexicographically smaller
//! id (byte order) offers, the other answers and asks for offers with `ice_restart`.
//!
//! Answers name the offer they answer. The signaling protocol relays only `{sdp}`, so the answerer
//! adds one session-level attribute to the SDP text it sends, `a=x-tether-offer:<id> <version>`,
//! copied from the offer's `o=` line; the offerer strips it before handing the SDP to webrtc-rs
//! and drops answers that name an offer other than the one outstanding (an answer for a
//! superseded offer). An answer without the attribute (a peer that is not tether) is matched to
//! the outstanding offer, which is all plain offer/answer can do.
//!
//! ICE-restart offers carry `a=x-tether-ice-restart`, so an answerer that no longer has the
//! session being restarted refuses it at once (the offerer learns the restart cannot work)
//! instead of building a peer connection that could never complete DTLS with the old one. A
//! refusal is an `answer` whose SDP holds only `a=x-tether-offer:<id> <version>` and
//! `a=x-tether-reject:<why>`: it names its offer, so a late one cannot hit a newer peer
//! connection. A `bye`, which names nothing, is ignored by an offerer whose new peer
//! connection's first offer is still unanswered: the answerer answers offers before anything
//! else it says, so such a `bye` was sent before it saw that offer and is about an older one.
//!
//! Offers are classified by their `o=` session id and by `a=x-tether-seq:<n>`, a number the
//! offerer increases with every offer: a different session id is a new peer connection on the
//! offerer's side, so the answerer replaces its own; the same session with a higher number is a
//! renegotiation (tether only renegotiates to restart ICE); the same number is a duplicate (it is
//! answered again), a lower one is stale (dropped). The `o=` version cannot serve: webrtc-rs
//! 0.21.1 does not keep it monotonic (its `update_sdp_origin` adds one to a fresh random version
//! instead of to the saved one), so it only tells offers apart, it does not order them.

use std::cmp::Ordering;

use tether_signal::protocol::PeerId;

/// Every tether SDP attribute starts so; all are removed before webrtc-rs sees the SDP.
const TAG_PREFIX: &str = "a=x-tether-";
/// The session attribute an answer carries to name the offer it answers.
const OFFER_TAG: &str = "a=x-tether-offer:";
/// The session attribute marking an offer as an ICE restart.
const RESTART_TAG: &str = "a=x-tether-ice-restart";
/// The session attribute numbering an offer among the offerer's offers.
const SEQ_TAG: &str = "a=x-tether-seq:";
/// The session attribute of a rejection: an "answer" saying the offer it names was not taken.
const REJECT_TAG: &str = "a=x-tether-reject:";

/// Why an answerer did not take an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// An ICE restart of a session the answerer does not have (it closed or lost it).
    UnknownSession,
    /// The offer could not be applied or answered.
    Failed,
}

impl Rejection {
    fn token(self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown-session",
            Self::Failed => "failed",
        }
    }

    fn from_token(token: &str) -> Self {
        match token {
            "unknown-session" => Self::UnknownSession,
            _ => Self::Failed,
        }
    }
}

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
        let version = fields
            .next()
            .ok_or("o= line has no session version")?
            .parse::<u64>()
            .map_err(|_| "o= session version is not a number")?;
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

/// Adds one tether attribute line to an SDP text, as its last session-level line.
fn add_session_attribute(sdp: &str, attribute: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + attribute.len() + 2);
    let mut added = false;
    for line in sdp.split_inclusive('\n') {
        if !added && line.starts_with("m=") {
            out.push_str(attribute);
            out.push_str("\r\n");
            added = true;
        }
        out.push_str(line);
    }
    if !added {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str("\r\n");
        }
        out.push_str(attribute);
        out.push_str("\r\n");
    }
    out
}

/// Numbers an offer, and marks it as an ICE restart of its session when it is one. An answerer
/// that does not have that session (it lost or closed its peer connection) cannot take the
/// restart, and says `bye` at once instead of building a peer connection that could never finish
/// its DTLS handshake.
pub(crate) fn tag_offer(offer_sdp: &str, seq: u64, ice_restart: bool) -> String {
    let numbered = add_session_attribute(offer_sdp, &format!("{SEQ_TAG}{seq}"));
    if ice_restart { add_session_attribute(&numbered, RESTART_TAG) } else { numbered }
}

/// Adds the attribute naming `offer` to an answer's SDP text.
pub(crate) fn tag_answer(answer_sdp: &str, offer: &SessionOrigin) -> String {
    add_session_attribute(answer_sdp, &format!("{OFFER_TAG}{} {}", offer.id, offer.version))
}

/// The text of a rejection: an `answer` whose SDP is only the tether attributes naming the
/// offer and saying why it was not taken. Tying the refusal to one offer (where a `bye` would
/// name none) keeps a late refusal from closing a newer peer connection.
pub(crate) fn rejection(offer: &SessionOrigin, why: Rejection) -> String {
    format!("{OFFER_TAG}{} {}\r\n{REJECT_TAG}{}\r\n", offer.id, offer.version, why.token())
}

/// What tether attributes an SDP carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tags {
    /// An answer: the offer it answers, when named and well-formed.
    pub(crate) answers: Option<SessionOrigin>,
    /// An offer: it restarts ICE of an existing session.
    pub(crate) ice_restart: bool,
    /// An offer: its number among the offerer's offers.
    pub(crate) seq: Option<u64>,
    /// An answer: the offer was rejected, and why.
    pub(crate) rejected: Option<Rejection>,
}

/// Splits the tether attributes off an SDP: what they said, and the SDP exactly as the remote
/// webrtc stack produced it.
pub(crate) fn untag(sdp: &str) -> (Tags, String) {
    let mut tags = Tags::default();
    let mut plain = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if !line.starts_with(TAG_PREFIX) {
            plain.push_str(line);
            continue;
        }
        if let Some(value) = line.strip_prefix(OFFER_TAG) {
            let mut fields = value.split_whitespace();
            if let (Some(id), Some(Ok(version))) = (fields.next(), fields.next().map(str::parse)) {
                tags.answers = Some(SessionOrigin { id: id.to_owned(), version });
            }
        } else if let Some(value) = line.strip_prefix(REJECT_TAG) {
            tags.rejected = Some(Rejection::from_token(value.trim()));
        } else if let Some(value) = line.strip_prefix(SEQ_TAG) {
            tags.seq = value.trim().parse().ok();
        } else if line.trim_end() == RESTART_TAG {
            tags.ice_restart = true;
        }
    }
    (tags, plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 42 3 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";

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
        let origin = SessionOrigin::parse(ANSWER);
        assert_eq!(origin, Ok(SessionOrigin { id: "42".into(), version: 3 }));
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

    #[test]
    fn answer_tag_round_trips_and_stays_session_level() {
        let offer = SessionOrigin { id: "99".into(), version: 5 };
        let tagged = tag_answer(ANSWER, &offer);
        let tag_at = tagged.find(OFFER_TAG).unwrap_or(usize::MAX);
        let media_at = tagged.find("m=").unwrap_or(0);
        assert!(tag_at < media_at, "tag must precede the first m= line");
        let (tags, sdp) = untag(&tagged);
        assert_eq!(tags.answers, Some(offer));
        assert!(!tags.ice_restart);
        assert_eq!(sdp, ANSWER);
    }

    #[test]
    fn offers_are_numbered_and_restarts_marked() {
        let (tags, sdp) = untag(&tag_offer(ANSWER, 4, true));
        assert!(tags.ice_restart);
        assert_eq!(tags.seq, Some(4));
        assert_eq!(tags.answers, None);
        assert_eq!(sdp, ANSWER);
        let (tags, _) = untag(&tag_offer(ANSWER, 5, false));
        assert!(!tags.ice_restart);
        assert_eq!(tags.seq, Some(5));
    }

    #[test]
    fn rejections_name_their_offer() {
        let offer = SessionOrigin { id: "12".into(), version: 3 };
        let (tags, sdp) = untag(&rejection(&offer, Rejection::UnknownSession));
        assert_eq!(tags.answers, Some(offer.clone()));
        assert_eq!(tags.rejected, Some(Rejection::UnknownSession));
        assert!(sdp.is_empty());
        let (tags, _) = untag(&rejection(&offer, Rejection::Failed));
        assert_eq!(tags.rejected, Some(Rejection::Failed));
    }

    #[test]
    fn untagged_or_garbled_answers_name_nothing() {
        assert_eq!(untag(ANSWER), (Tags::default(), ANSWER.to_owned()));
        let garbled = format!("{OFFER_TAG}only-id\r\n{ANSWER}");
        assert_eq!(untag(&garbled), (Tags::default(), ANSWER.to_owned()));
        let no_media = tag_answer("v=0", &SessionOrigin { id: "1".into(), version: 1 });
        assert_eq!(no_media, format!("v=0\r\n{OFFER_TAG}1 1\r\n"));
    }
}
