//! Short-lived TURN credentials, minted with the shared-secret scheme TURN
//! servers implement for exactly this ("TURN REST API",
//! draft-uberti-behave-turn-rest; coturn's `use-auth-secret` with
//! `static-auth-secret`).
//!
//! The signaling server and the TURN server share one secret. A credential
//! for a peer is:
//!
//! - `username` = `<expiry>:<peer id>`, where `<expiry>` is the UNIX time in
//!   seconds after which the TURN server refuses it;
//! - `credential` = base64 (standard alphabet, padded) of
//!   HMAC-SHA1(secret, username).
//!
//! The TURN server recomputes the HMAC from the username, so it needs no
//! database and no call to us; an expired username is refused by the TURN
//! server itself.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use tether_signal::protocol::{IceServerGrant, PeerId};

use crate::RelayError;

/// Shortest secret accepted: TURN servers take any length, but a short one
/// is guessable offline from one credential.
pub const MIN_TURN_SECRET_BYTES: usize = 16;

/// The secret shared with the TURN servers.
#[derive(Clone)]
pub struct TurnSecret(Vec<u8>);

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

/// One credential for a TURN server (what a WebRTC `iceServers` entry takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCredential {
    /// `<expiry>:<peer id>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// When the TURN server stops accepting it (whole seconds).
    pub expires_at: SystemTime,
}

impl TurnSecret {
    /// Wraps a secret of at least [`MIN_TURN_SECRET_BYTES`] bytes.
    ///
    /// # Errors
    /// [`RelayError::InvalidConfig`] for a shorter secret.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<TurnSecret, RelayError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_TURN_SECRET_BYTES {
            return Err(RelayError::InvalidConfig(format!(
                "turn secret must be at least {MIN_TURN_SECRET_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(TurnSecret(bytes))
    }

    /// A credential for `user` (a peer id), valid for `ttl` from `now`.
    pub fn mint(&self, user: &str, now: SystemTime, ttl: Duration) -> TurnCredential {
        let expiry = now.checked_add(ttl).unwrap_or(now);
        let seconds = expiry.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let username = format!("{seconds}:{user}");
        TurnCredential {
            credential: self.sign(&username),
            expires_at: UNIX_EPOCH + Duration::from_secs(seconds),
            username,
        }
    }

    fn sign(&self, username: &str) -> String {
        // HMAC takes keys of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&self.0) else {
            unreachable!("hmac accepts keys of every length")
        };
        mac.update(username.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// What `tether serve` hands each registered client: TURN servers with
/// credentials minted for its peer id (and STUN servers, which need none).
#[derive(Clone, Debug)]
pub struct TurnGrants {
    /// The secret shared with the TURN servers.
    pub secret: TurnSecret,
    /// `turn:` URLs (webrtc-rs relays over UDP only: `?transport=udp`).
    pub turn_urls: Vec<String>,
    /// `stun:` URLs, handed out as they are.
    pub stun_urls: Vec<String>,
    /// How long each credential is valid; a client that reconnects gets a
    /// fresh one.
    pub ttl: Duration,
}

impl TurnGrants {
    /// The ICE servers for `peer`, as of `now`.
    pub fn grant(&self, peer: &PeerId, now: SystemTime) -> Vec<IceServerGrant> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServerGrant {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn_urls.is_empty() {
            let minted = self.secret.mint(peer.as_str(), now, self.ttl);
            servers.push(IceServerGrant {
                urls: self.turn_urls.clone(),
                username: Some(minted.username),
                credential: Some(minted.credential),
            });
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_rest_api_scheme() {
        // The draft's scheme computed independently: HMAC-SHA1 with key
        // "0123456789abcdef" over "1700000600:alice", base64. The expected
        // value comes from `printf %s 1700000600:alice | openssl dgst -sha1
        // -hmac 0123456789abcdef -binary | base64`.
        let secret = TurnSecret::new(b"0123456789abcdef".to_vec()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let minted = secret.mint("alice", now, Duration::from_secs(600));
        assert_eq!(minted.username, "1700000600:alice");
        assert_eq!(minted.credential, "X7ZMlwjsIJFB6UlEdWYcxNzOWk0=");
        assert_eq!(minted.expires_at, UNIX_EPOCH + Duration::from_secs(1_700_000_600));
    }

    #[test]
    fn short_secrets_are_refused() {
        let error = TurnSecret::new(b"short".to_vec()).unwrap_err();
        assert!(error.to_string().contains("at least 16 bytes"), "{error}");
    }
}
