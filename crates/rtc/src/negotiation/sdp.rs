//! tether's SDP attributes (docs/NEGOTIATION.md §4): adding them to the SDP text relayed to the
//! peer, taking them off before webrtc-rs sees it, and the pure decisions that read them (which
//! offer an answer answers, whether a remote DTLS identity changed).

use super::{OfferId, SessionOrigin};

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
    pub(crate) fn token(self) -> &'static str {
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

/// A decimal u64 as tether attributes write it: ASCII digits only (no sign, no space inside),
/// at most `u64::MAX` (§4.1, rule P9). Anything else is absent.
pub(crate) fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
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
/// that does not have that session (it lost or closed its peer connection) rejects the restart
/// instead of building a peer connection that could never finish its DTLS handshake.
pub(crate) fn tag_offer(offer_sdp: &str, seq: u64, ice_restart: bool) -> String {
    let numbered = add_session_attribute(offer_sdp, &format!("{SEQ_TAG}{seq}"));
    if ice_restart { add_session_attribute(&numbered, RESTART_TAG) } else { numbered }
}

/// The value of the answer attribute naming `offer`: `<session-id> <version>[ <seq>]` (the seq
/// when the offer had one, rule P1).
fn offer_name(offer: &OfferId) -> String {
    match offer.seq {
        Some(seq) => format!("{} {} {seq}", offer.origin.id, offer.origin.version),
        None => format!("{} {}", offer.origin.id, offer.origin.version),
    }
}

/// Adds the attribute naming `offer` to an answer's SDP text.
pub(crate) fn tag_answer(answer_sdp: &str, offer: &OfferId) -> String {
    add_session_attribute(answer_sdp, &format!("{OFFER_TAG}{}", offer_name(offer)))
}

/// The text of a rejection: an `answer` whose SDP is only the tether attributes naming the
/// offer and saying why it was not taken. Tying the refusal to one offer (where a `bye` would
/// name none) keeps a late refusal from closing a newer peer connection.
pub(crate) fn rejection(offer: &OfferId, why: Rejection) -> String {
    format!("{OFFER_TAG}{}\r\n{REJECT_TAG}{}\r\n", offer_name(offer), why.token())
}

/// What tether attributes an SDP carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tags {
    /// An answer: the offer it answers (session, version and, when named, its seq), when
    /// named and well-formed.
    pub(crate) answers: Option<OfferId>,
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
            let id = fields.next();
            let version = fields.next().and_then(parse_number);
            // A malformed seq makes the whole attribute absent (§4.1); fields after the seq
            // are ignored (forward compatible).
            let seq = fields.next().map(parse_number);
            if let (Some(id), Some(version), None | Some(Some(_))) = (id, version, seq) {
                let origin = SessionOrigin { id: id.to_owned(), version };
                tags.answers = Some(OfferId { origin, seq: seq.flatten() });
            }
        } else if let Some(value) = line.strip_prefix(REJECT_TAG) {
            tags.rejected = Some(Rejection::from_token(value.trim()));
        } else if let Some(value) = line.strip_prefix(SEQ_TAG) {
            tags.seq = parse_number(value.trim());
        } else if line.trim_end() == RESTART_TAG {
            tags.ice_restart = true;
        }
    }
    (tags, plain)
}

/// How an answer relates to the offer outstanding (§6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerMatch {
    /// It answers the outstanding offer (or names none): apply it.
    Apply,
    /// It names another offer: it answers a superseded one; drop it.
    Superseded,
    /// No offer is outstanding: drop it.
    NoOffer,
    /// The outstanding offer was rejected, and why.
    Refused(Rejection),
}

/// Matches an answer's tags against the outstanding offer: on (session id, seq) when both sides
/// have a seq (rule P1), else on (session id, version).
pub(crate) fn match_answer(outstanding: Option<&OfferId>, answer: &Tags) -> AnswerMatch {
    let Some(outstanding) = outstanding else {
        return AnswerMatch::NoOffer;
    };
    if let Some(named) = &answer.answers {
        let same = named.origin.id == outstanding.origin.id
            && match (named.seq, outstanding.seq) {
                (Some(named), Some(outstanding)) => named == outstanding,
                _ => named.origin.version == outstanding.origin.version,
            };
        if !same {
            return AnswerMatch::Superseded;
        }
    }
    match answer.rejected {
        Some(why) => AnswerMatch::Refused(why),
        None => AnswerMatch::Apply,
    }
}

/// The DTLS identity an SDP declares: its `a=fingerprint` lines (session and media level), as
/// (algorithm in lower case, value in upper-case hex), sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fingerprints(Vec<(String, String)>);

impl Fingerprints {
    pub(crate) fn of(sdp: &str) -> Self {
        let mut found: Vec<(String, String)> = sdp
            .lines()
            .filter_map(|line| line.trim_end().strip_prefix("a=fingerprint:"))
            .filter_map(|value| {
                let mut fields = value.split_whitespace();
                let algorithm = fields.next()?.to_ascii_lowercase();
                let hash = fields.next()?.to_ascii_uppercase();
                Some((algorithm, hash))
            })
            .collect();
        found.sort();
        found.dedup();
        Self(found)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `next` declares another DTLS identity than `self` (rule P7): for an algorithm
    /// both list, the values differ; without a common algorithm, the sets differ. An SDP without
    /// fingerprints changes nothing (it says nothing about the identity).
    pub(crate) fn changed_to(&self, next: &Self) -> bool {
        if self.is_empty() || next.is_empty() {
            return false;
        }
        let values = |of: &'_ Self, algorithm: &str| -> Vec<String> {
            of.0.iter()
                .filter(|(other, _)| other == algorithm)
                .map(|(_, hash)| hash.clone())
                .collect()
        };
        let mut common = false;
        for (algorithm, _) in &self.0 {
            let theirs = values(next, algorithm);
            if theirs.is_empty() {
                continue;
            }
            common = true;
            if values(self, algorithm) != theirs {
                return true;
            }
        }
        !common
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 42 3 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";

    fn offer(id: &str, version: u64, seq: Option<u64>) -> OfferId {
        OfferId { origin: SessionOrigin { id: id.into(), version }, seq }
    }

    #[test]
    fn answer_tag_round_trips_and_stays_session_level() {
        let named = offer("99", 5, Some(7));
        let tagged = tag_answer(ANSWER, &named);
        let tag_at = tagged.find(OFFER_TAG).unwrap_or(usize::MAX);
        let media_at = tagged.find("m=").unwrap_or(0);
        assert!(tag_at < media_at, "tag must precede the first m= line");
        assert!(tagged.contains("a=x-tether-offer:99 5 7\r\n"));
        let (tags, sdp) = untag(&tagged);
        assert_eq!(tags.answers, Some(named));
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
        let named = offer("12", 3, None);
        let (tags, sdp) = untag(&rejection(&named, Rejection::UnknownSession));
        assert_eq!(tags.answers, Some(named.clone()));
        assert_eq!(tags.rejected, Some(Rejection::UnknownSession));
        assert!(sdp.is_empty());
        let (tags, _) = untag(&rejection(&named, Rejection::Failed));
        assert_eq!(tags.rejected, Some(Rejection::Failed));
    }

    #[test]
    fn untagged_or_garbled_answers_name_nothing() {
        assert_eq!(untag(ANSWER), (Tags::default(), ANSWER.to_owned()));
        let garbled = format!("{OFFER_TAG}only-id\r\n{ANSWER}");
        assert_eq!(untag(&garbled), (Tags::default(), ANSWER.to_owned()));
        let no_media = tag_answer("v=0", &offer("1", 1, None));
        assert_eq!(no_media, format!("v=0\r\n{OFFER_TAG}1 1\r\n"));
        for bad in ["+5", "-1", "18446744073709551616", "", "5x"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn answers_match_by_seq_when_both_have_one() {
        let outstanding = offer("7", 901, Some(3));
        let answer = |named: Option<OfferId>| Tags { answers: named, ..Tags::default() };
        let check = |tags: &Tags| match_answer(Some(&outstanding), tags);
        assert_eq!(check(&answer(None)), AnswerMatch::Apply);
        assert_eq!(check(&answer(Some(offer("7", 1, Some(3))))), AnswerMatch::Apply);
        assert_eq!(check(&answer(Some(offer("7", 901, Some(2))))), AnswerMatch::Superseded);
        assert_eq!(check(&answer(Some(offer("7", 901, None)))), AnswerMatch::Apply);
        assert_eq!(check(&answer(Some(offer("7", 900, None)))), AnswerMatch::Superseded);
        assert_eq!(check(&answer(Some(offer("8", 901, Some(3))))), AnswerMatch::Superseded);
        assert_eq!(match_answer(None, &answer(None)), AnswerMatch::NoOffer);
        let refused = Tags { rejected: Some(Rejection::Failed), ..answer(None) };
        assert_eq!(check(&refused), AnswerMatch::Refused(Rejection::Failed));
    }

    #[test]
    fn fingerprints_compare_by_common_algorithm_ignoring_case() {
        let sdp = |lines: &str| format!("v=0\r\n{lines}m=application 9 x\r\n");
        let a = Fingerprints::of(&sdp("a=fingerprint:sha-256 AB:CD\r\n"));
        let a_lower = Fingerprints::of(&sdp("a=fingerprint:SHA-256 ab:cd\r\n"));
        let b = Fingerprints::of(&sdp("a=fingerprint:sha-256 AB:CE\r\n"));
        let several = Fingerprints::of(&sdp(
            "a=fingerprint:sha-256 AB:CD\r\na=fingerprint:sha-512 11:22\r\n",
        ));
        assert!(!a.changed_to(&a_lower));
        assert!(a.changed_to(&b));
        assert!(!a.changed_to(&several));
        assert!(!a.changed_to(&Fingerprints::default()));
        let other_algorithm = Fingerprints::of(&sdp("a=fingerprint:sha-1 00\r\n"));
        assert!(a.changed_to(&other_algorithm));
    }
}
