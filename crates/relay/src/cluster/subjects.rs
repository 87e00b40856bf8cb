//! NATS subject names and KV keys, derived from validated ids only.
//!
//! Ids may contain `.` (NATS's token separator), and the broker gives `*`
//! and `>` meaning; client text never reaches a subject as is. Every id is
//! written as lower-case hex of its bytes, so a subject token is always
//! `[0-9a-f]+`: it cannot be empty, split a token, or be a wildcard. The
//! `v1` token versions the whole scheme (docs/SCALE-OUT.md).

use std::fmt::Write as _;

use tether_signal::protocol::{PeerId, RoomId};

use super::InstanceId;

/// The prefix of every subject this version of the scheme uses.
pub(crate) const PREFIX: &str = "tether.v1";

/// The KV bucket holding one registration per peer.
pub(crate) const REGISTRATION_BUCKET: &str = "tether_v1_registrations";

/// The KV bucket holding one presence entry per (room, peer).
pub(crate) const PRESENCE_BUCKET: &str = "tether_v1_presence";

/// Lower-case hex of `text`'s bytes.
pub(crate) fn hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Decodes [`hex`]; `None` for anything it could not have produced.
pub(crate) fn unhex(token: &str) -> Option<String> {
    if token.is_empty() || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = token
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            Some(digit(pair[0])? << 4 | digit(pair[1])?)
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Where frames for `peer` are published; the instance holding the peer
/// subscribes to it.
pub(crate) fn peer_subject(peer: &PeerId) -> String {
    format!("{PREFIX}.peer.{}", hex(peer.as_str()))
}

/// Where control messages for one instance (supersede notices) go.
pub(crate) fn instance_subject(instance: &InstanceId) -> String {
    format!("{PREFIX}.instance.{}", hex(instance.as_str()))
}

/// The registration bucket's key for `peer`.
pub(crate) fn registration_key(peer: &PeerId) -> String {
    hex(peer.as_str())
}

/// The presence bucket's key for `peer` in `room`: `<room hex>.<peer hex>`.
pub(crate) fn presence_key(room: &RoomId, peer: &PeerId) -> String {
    format!("{}.{}", hex(room.as_str()), hex(peer.as_str()))
}

/// The presence keys of every member of `room`.
pub(crate) fn presence_room_filter(room: &RoomId) -> String {
    format!("{}.*", hex(room.as_str()))
}

/// The peer a presence key names, when it is one of `room`'s keys.
pub(crate) fn presence_key_peer(room: &RoomId, key: &str) -> Option<PeerId> {
    let (room_token, peer_token) = key.split_once('.')?;
    if room_token != hex(room.as_str()) {
        return None;
    }
    PeerId::new(unhex(peer_token)?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn assert_safe_token(token: &str) {
        assert!(!token.is_empty());
        assert!(token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{token}");
    }

    fn assert_safe_subject(subject: &str, tokens: usize) {
        let parts: Vec<&str> = subject.split('.').collect();
        assert_eq!(parts.len(), tokens, "{subject}");
        assert!(!subject.contains('*') && !subject.contains('>') && !subject.contains(' '));
        assert_safe_token(parts[tokens - 1]);
    }

    #[test]
    fn risky_ids_become_plain_hex_tokens() {
        for raw in ["a.b", "*", ">", "a:b@c", ".", "..", "a-b_c", "x".repeat(64).as_str()] {
            let Ok(peer) = PeerId::new(raw) else { continue };
            assert_safe_subject(&peer_subject(&peer), 4);
            assert_eq!(unhex(&registration_key(&peer)).as_deref(), Some(raw));
        }
        let peer = PeerId::new("a.b").unwrap();
        assert_eq!(peer_subject(&peer), "tether.v1.peer.612e62");
        let room = RoomId::new("r.1").unwrap();
        assert_eq!(presence_key(&room, &peer), "722e31.612e62");
        assert_eq!(presence_room_filter(&room), "722e31.*");
        assert_eq!(presence_key_peer(&room, "722e31.612e62"), Some(peer.clone()));
        assert_eq!(presence_key_peer(&room, "722e32.612e62"), None);
        assert_eq!(presence_key_peer(&room, "722e31.zz"), None);
        let instance = InstanceId::new("node.1").unwrap();
        assert_safe_subject(&instance_subject(&instance), 4);
    }

    #[test]
    fn unhex_refuses_what_hex_never_writes() {
        for bad in ["", "a", "0g", "AB", "ff", "6"] {
            assert!(unhex(bad).is_none(), "{bad}");
        }
        assert_eq!(unhex("6162").as_deref(), Some("ab"));
    }

    proptest! {
        #[test]
        fn no_valid_id_produces_a_wildcard_or_separator(raw in "[A-Za-z0-9._:@*> -]{1,64}") {
            if let Ok(peer) = PeerId::new(raw.clone()) {
                assert_safe_subject(&peer_subject(&peer), 4);
                assert_safe_token(&registration_key(&peer));
                prop_assert_eq!(unhex(&registration_key(&peer)), Some(raw.clone()));
                if let Ok(room) = RoomId::new(raw.clone()) {
                    let key = presence_key(&room, &peer);
                    prop_assert_eq!(key.split('.').count(), 2);
                    for token in key.split('.') {
                        assert_safe_token(token);
                    }
                    prop_assert_eq!(presence_key_peer(&room, &key), Some(peer));
                }
            }
        }
    }
}
