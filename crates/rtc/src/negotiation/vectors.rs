//! The negotiation vectors shared with the browser tests (`web/tests/vectors/negotiation.json`,
//! docs/negotiation-vectors-plan.md): every vector runs against this crate's pure rules. A vector
//! `pending` for `"rust"` must fail (the rule is not implemented here yet); once it passes, this
//! test fails until the flag is removed, so the file always says what is true.

use std::time::{Duration, Instant};

use serde_json::Value;
use tether_signal::protocol::PeerId;

use super::budget::{Pace, Paced, Pacer};
use super::sdp::{self, AnswerMatch, Fingerprints, Rejection, Tags};
use super::{OfferId, OfferKind, Role, SessionOrigin};

const VECTORS: &str = include_str!("../../../../web/tests/vectors/negotiation.json");

/// Sections and the fewest vectors each must have, so an emptied or renamed one fails loudly.
const SECTIONS: [(&str, usize); 10] = [
    ("roles", 5),
    ("origins", 5),
    ("tag_offer", 5),
    ("tag_answer", 3),
    ("rejection", 2),
    ("untag", 10),
    ("classify_offer", 8),
    ("match_answer", 8),
    ("fingerprints", 5),
    ("budget", 5),
];

type Check = Result<(), String>;

fn text<'a>(vector: &'a Value, key: &str) -> Result<&'a str, String> {
    vector[key].as_str().ok_or_else(|| format!("`{key}` is not a string"))
}

/// A u64 written as a decimal string, or `null`.
fn number(value: &Value) -> Result<Option<u64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(digits) => {
            digits.parse().map(Some).map_err(|_| format!("{digits:?} is not a u64"))
        }
        other => Err(format!("{other} is not a decimal string")),
    }
}

fn origin(value: &Value) -> Result<SessionOrigin, String> {
    let id = value["id"].as_str().ok_or("origin without id")?.to_owned();
    let version = number(&value["version"])?.ok_or("origin without version")?;
    Ok(SessionOrigin { id, version })
}

/// `{origin: {id, version}, seq}`.
fn offer_id(value: &Value) -> Result<Option<OfferId>, String> {
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(OfferId { origin: origin(&value["origin"])?, seq: number(&value["seq"])? }))
}

/// `{id, version, seq}` (an answer's name of its offer).
fn named_offer(value: &Value) -> Result<Option<OfferId>, String> {
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(OfferId { origin: origin(value)?, seq: number(&value["seq"])? }))
}

fn rejection_of(value: &Value) -> Result<Option<Rejection>, String> {
    match value.as_str() {
        None => Ok(None),
        Some("unknown-session") => Ok(Some(Rejection::UnknownSession)),
        Some("failed") => Ok(Some(Rejection::Failed)),
        Some(other) => Err(format!("unknown rejection {other:?}")),
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Check {
    if got == want { Ok(()) } else { Err(format!("got {got:?}, want {want:?}")) }
}

fn check_role(vector: &Value) -> Check {
    let id = |key| {
        PeerId::new(text(vector, key)?)
            .map_err(|error| format!("`{key}` is not a peer id: {error}"))
    };
    let role = Role::between(&id("local")?, &id("remote")?).map(|role| match role {
        Role::Offerer => "offerer",
        Role::Answerer => "answerer",
    });
    expect(role, vector["role"].as_str())
}

fn check_origin(vector: &Value) -> Check {
    let got = SessionOrigin::parse(text(vector, "sdp")?);
    if vector["error"].as_bool() == Some(true) {
        return match got {
            Err(_) => Ok(()),
            Ok(origin) => Err(format!("parsed {origin:?}, want an error")),
        };
    }
    expect(got.map_err(str::to_owned), Ok(origin(&vector["origin"])?))
}

fn check_tag_offer(vector: &Value) -> Check {
    let seq = number(&vector["seq"])?.ok_or("no seq")?;
    let restart = vector["ice_restart"].as_bool().ok_or("no ice_restart")?;
    expect(sdp::tag_offer(text(vector, "sdp")?, seq, restart), text(vector, "tagged")?.to_owned())
}

fn check_tag_answer(vector: &Value) -> Check {
    let offer = named_offer(&vector["offer"])?.ok_or("no offer")?;
    expect(sdp::tag_answer(text(vector, "sdp")?, &offer), text(vector, "tagged")?.to_owned())
}

fn check_rejection(vector: &Value) -> Check {
    let offer = named_offer(&vector["offer"])?.ok_or("no offer")?;
    let why = rejection_of(&vector["why"])?.ok_or("no why")?;
    expect(sdp::rejection(&offer, why), text(vector, "text")?.to_owned())
}

fn tags(value: &Value) -> Result<Tags, String> {
    Ok(Tags {
        answers: named_offer(&value["answers"])?,
        ice_restart: value["ice_restart"].as_bool().unwrap_or(false),
        seq: number(&value["seq"])?,
        rejected: rejection_of(&value["rejected"])?,
    })
}

fn check_untag(vector: &Value) -> Check {
    let want = (tags(&vector["tags"])?, text(vector, "sdp")?.to_owned());
    expect(sdp::untag(text(vector, "tagged")?), want)
}

fn check_classify(vector: &Value) -> Check {
    let current = offer_id(&vector["current"])?;
    let offer = offer_id(&vector["offer"])?.ok_or("no offer")?;
    let kind = match OfferKind::classify(current.as_ref(), &offer) {
        OfferKind::NewSession => "new-session",
        OfferKind::Renegotiation => "renegotiation",
        OfferKind::Duplicate => "duplicate",
        OfferKind::Stale => "stale",
    };
    expect(Some(kind), vector["kind"].as_str())
}

fn check_match(vector: &Value) -> Check {
    let outstanding = offer_id(&vector["outstanding"])?;
    let answer = tags(&vector["answer"])?;
    let result = match sdp::match_answer(outstanding.as_ref(), &answer) {
        AnswerMatch::Apply => "apply",
        AnswerMatch::Superseded => "superseded",
        AnswerMatch::NoOffer => "no-offer",
        AnswerMatch::Refused(Rejection::UnknownSession) => "refused:unknown-session",
        AnswerMatch::Refused(Rejection::Failed) => "refused:failed",
    };
    expect(Some(result), vector["result"].as_str())
}

fn check_fingerprints(vector: &Value) -> Check {
    let previous = Fingerprints::of(text(vector, "previous")?);
    let answer = Fingerprints::of(text(vector, "answer")?);
    let result = if previous.changed_to(&answer) { "changed" } else { "same" };
    expect(Some(result), vector["result"].as_str())
}

fn check_budget(vector: &Value) -> Check {
    let t0 = Instant::now();
    let mut pacer = Pacer::default();
    let items = vector["items"].as_array().ok_or("no items")?;
    let mut got = Vec::new();
    for item in items {
        let at = t0 + Duration::from_millis(item["t_ms"].as_u64().ok_or("no t_ms")?);
        let paced = match item["kind"].as_str() {
            Some("offer") => Paced::Offer,
            Some("ice_restart") => Paced::IceRestart,
            Some("bye") => Paced::Bye,
            other => return Err(format!("unknown kind {other:?}")),
        };
        let resend = item["resend"].as_bool().unwrap_or(false);
        got.push(match pacer.decide(at, paced, resend) {
            Pace::Send => "send",
            Pace::Defer => "defer",
            Pace::Drop => "drop",
        });
    }
    let want: Vec<&str> = vector["results"]
        .as_array()
        .ok_or("no results")?
        .iter()
        .map(|result| result.as_str().unwrap_or("?"))
        .collect();
    expect(got, want)
}

fn check(section: &str, vector: &Value) -> Check {
    match section {
        "roles" => check_role(vector),
        "origins" => check_origin(vector),
        "tag_offer" => check_tag_offer(vector),
        "tag_answer" => check_tag_answer(vector),
        "rejection" => check_rejection(vector),
        "untag" => check_untag(vector),
        "classify_offer" => check_classify(vector),
        "match_answer" => check_match(vector),
        "fingerprints" => check_fingerprints(vector),
        "budget" => check_budget(vector),
        other => Err(format!("no checker for section {other}")),
    }
}

#[test]
fn the_shared_negotiation_vectors_hold() {
    let vectors: Value = serde_json::from_str(VECTORS)
        .unwrap_or_else(|error| panic!("negotiation.json is not JSON: {error}"));
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (section, at_least) in SECTIONS {
        let list = vectors[section].as_array().map(Vec::as_slice).unwrap_or_default();
        if list.len() < at_least {
            problems.push(format!("{section}: {} vectors, want at least {at_least}", list.len()));
        }
        for vector in list {
            let name = vector["name"].as_str().unwrap_or("<unnamed>");
            if !names.insert((section, name)) {
                problems.push(format!("{section}: duplicate name {name:?}"));
            }
            let pending = vector["pending"]
                .as_array()
                .is_some_and(|list| list.iter().any(|who| who.as_str() == Some("rust")));
            let rule = vector["rule"].as_str().unwrap_or("?");
            match (check(section, vector), pending) {
                (Ok(()), false) | (Err(_), true) => {}
                (Err(why), false) => problems.push(format!("{section}: {name:?}: {why}")),
                (Ok(()), true) => problems.push(format!(
                    "{section}: {name:?} passes but is pending for rust ({rule}): remove the flag"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}
