//! Token authentication: HMAC-SHA256-signed tokens with an expiry, and a
//! static token file. The formats are documented in `docs/PROTOCOL.md`
//! ("Tokens").
//!
//! A signed token is `v1.<claims>.<signature>` where `<claims>` is the
//! unpadded base64url encoding of the JSON object
//! `{"sub":PEER,"exp":UNIX,"room":ROOM,"demo":true}` (`room` and `demo`
//! optional) and `<signature>` the unpadded base64url HMAC-SHA256, under the
//! server's secret, of the ASCII text `v1.<claims>`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::RelayError;
use tether_signal::protocol::{MAX_TOKEN_BYTES, PeerId, RoomId};

/// The version prefix of signed tokens.
pub const TOKEN_PREFIX: &str = "v1";

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The environment variable the CLI reads the secret from.
pub const SECRET_ENV_VAR: &str = "TETHER_SECRET";

type HmacSha256 = Hmac<Sha256>;

/// The server's signing secret. Its `Debug` output never shows the bytes.
#[derive(Clone)]
pub struct HmacSecret(Vec<u8>);

impl HmacSecret {
    /// Wraps a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<HmacSecret, RelayError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(RelayError::InvalidConfig(format!(
                "secret must be at least {MIN_SECRET_BYTES} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(HmacSecret(bytes))
    }

    /// A fresh random secret for a process that mints its own tokens
    /// (tests, `tether demo`, the lab). The bytes are SipHash outputs under
    /// std's randomly seeded keys (from the OS RNG): unpredictable without
    /// those keys, but give production servers a secret of their own.
    pub fn ephemeral() -> HmacSecret {
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        let bytes: Vec<u8> = (0u64..(MIN_SECRET_BYTES as u64).div_ceil(8).max(4))
            .flat_map(|i| {
                let mut hasher = state.build_hasher();
                hasher.write_u64(i);
                hasher.finish().to_be_bytes()
            })
            .collect();
        HmacSecret(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        // Invariant: HMAC accepts keys of any length, so `new_from_slice`
        // cannot fail.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(&self.0).expect("hmac accepts any key length")
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacSecret({} bytes)", self.0.len())
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    demo: bool,
}

/// What a signed token says, for minting: the peer id it proves, when it
/// expires, and optionally the one room it admits and the demo mark.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    peer_id: PeerId,
    expires_at: SystemTime,
    room: Option<RoomId>,
    demo: bool,
}

impl TokenClaims {
    /// Claims for `peer_id` until `expires_at`, any room, not a demo token.
    pub fn new(peer_id: PeerId, expires_at: SystemTime) -> TokenClaims {
        TokenClaims { peer_id, expires_at, room: None, demo: false }
    }

    /// Restricts the token to `room`: it only registers with that `room`.
    pub fn room(mut self, room: RoomId) -> TokenClaims {
        self.room = Some(room);
        self
    }

    /// Marks the token as a demo token: refused by servers not in demo mode.
    pub fn demo(mut self) -> TokenClaims {
        self.demo = true;
        self
    }

    /// Signs the claims with `secret`.
    pub fn mint(&self, secret: &HmacSecret) -> String {
        let claims = Claims {
            sub: self.peer_id.as_str().to_owned(),
            exp: unix_seconds(self.expires_at),
            room: self.room.as_ref().map(|room| room.as_str().to_owned()),
            demo: self.demo,
        };
        // Invariant: Claims is strings, an integer and a bool; serializing
        // cannot fail.
        #[allow(clippy::expect_used)]
        let claims = serde_json::to_vec(&claims).expect("serializing claims cannot fail");
        let signed = format!("{TOKEN_PREFIX}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut mac = secret.mac();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }
}

/// What an accepted token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// When the token expires (Unix seconds); `None` for static tokens,
    /// which do not expire. The server closes the session at this time.
    pub expires_at: Option<u64>,
    /// The only room the token admits; `None` admits any room.
    pub room: Option<String>,
}

impl Grant {
    /// A grant without expiry or room restriction (static tokens).
    fn unrestricted() -> Grant {
        Grant { expires_at: None, room: None }
    }

    /// How fresh the token is, for re-registration: a later expiry is
    /// fresher, and a static token is as fresh as any.
    pub fn freshness(&self) -> u64 {
        self.expires_at.unwrap_or(u64::MAX)
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

/// Mints a token that lets `peer_id` register, in any room, until
/// `expires_at` (see [`TokenClaims`] for room-bound and demo tokens).
pub fn mint_token(secret: &HmacSecret, peer_id: &PeerId, expires_at: SystemTime) -> String {
    TokenClaims::new(peer_id.clone(), expires_at).mint(secret)
}

/// Mints a token valid for `ttl` from now (reads the system clock).
pub fn mint_token_for(secret: &HmacSecret, peer_id: &PeerId, ttl: Duration) -> String {
    mint_token(secret, peer_id, SystemTime::now() + ttl)
}

/// Why a token was refused. The server sends [`AuthRejection::reason`] as
/// the message of its `auth_failed` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// Not a `v1.<claims>.<signature>` token, or longer than allowed.
    Malformed,
    /// The signature does not match the secret.
    BadSignature,
    /// The token's `exp` has passed.
    Expired,
    /// The token was issued for another peer id.
    WrongPeer,
    /// Not in the static token list and not a signed token.
    Unknown,
    /// A demo token (minted by `tether serve --demo`) on a server that is
    /// not in demo mode.
    DemoToken,
    /// The token admits another room than the `register` names.
    WrongRoom,
    /// The server requires room claims and the token has none for the
    /// room the `register` names.
    NoRoomGranted,
}

impl AuthRejection {
    /// A lower-case explanation.
    pub fn reason(self) -> &'static str {
        match self {
            AuthRejection::Malformed => "token malformed",
            AuthRejection::BadSignature => "token signature invalid",
            AuthRejection::Expired => "token expired",
            AuthRejection::WrongPeer => "token issued for another peer id",
            AuthRejection::Unknown => "token unknown",
            AuthRejection::DemoToken => "demo token refused by a server not in demo mode",
            AuthRejection::WrongRoom => "token issued for another room",
            AuthRejection::NoRoomGranted => "token grants no room",
        }
    }
}

/// Decides whether a token proves a peer id.
///
/// Accepts signed tokens when a secret is set, and tokens listed for the
/// peer in the static table; at least one of the two must be configured.
#[derive(Clone, Default)]
pub struct Authenticator {
    secret: Option<HmacSecret>,
    static_tokens: HashMap<PeerId, Vec<String>>,
    accept_demo: bool,
    rooms_need_claims: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("secret", &self.secret)
            .field("static_peers", &self.static_tokens.len())
            .field("accept_demo", &self.accept_demo)
            .field("rooms_need_claims", &self.rooms_need_claims)
            .finish()
    }
}

impl Authenticator {
    /// Accepts tokens signed with `secret`.
    pub fn with_secret(secret: HmacSecret) -> Authenticator {
        Authenticator {
            secret: Some(secret),
            static_tokens: HashMap::new(),
            accept_demo: false,
            rooms_need_claims: false,
        }
    }

    /// Makes rooms a strict boundary: a `register` may name a room only
    /// with a token whose `room` claim names it. Tokens without the claim
    /// (and static tokens) then register only without a room.
    pub fn require_room_claims(mut self) -> Authenticator {
        self.rooms_need_claims = true;
        self
    }

    /// Whether a token that granted `grant` may register in `room`.
    pub fn admits_room(&self, grant: &Grant, room: Option<&str>) -> Result<(), AuthRejection> {
        match (&grant.room, room) {
            (Some(granted), Some(room)) if granted == room => Ok(()),
            (Some(_), _) => Err(AuthRejection::WrongRoom),
            (None, Some(_)) if self.rooms_need_claims => Err(AuthRejection::NoRoomGranted),
            (None, _) => Ok(()),
        }
    }

    /// Also accepts signed tokens marked as demo tokens (`tether serve
    /// --demo`); without this they are refused even under the right secret.
    pub fn accept_demo_tokens(mut self) -> Authenticator {
        self.accept_demo = true;
        self
    }

    /// Also accepts `token` for `peer_id` (a peer may have several tokens).
    pub fn allow_static_token(
        mut self,
        peer_id: PeerId,
        token: impl Into<String>,
    ) -> Authenticator {
        self.static_tokens.entry(peer_id).or_default().push(token.into());
        self
    }

    /// Adds the tokens of a token file's text (format in `docs/PROTOCOL.md`:
    /// one `PEER_ID TOKEN` pair per line, `#` starts a comment line).
    pub fn add_token_file_text(
        mut self,
        origin: &str,
        text: &str,
    ) -> Result<Authenticator, RelayError> {
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad_line = |reason: String| RelayError::TokenFile {
                path: origin.to_owned(),
                reason: format!("line {}: {reason}", index + 1),
            };
            let mut words = line.split_whitespace();
            let (Some(peer), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad_line("expected `PEER_ID TOKEN`".to_owned()));
            };
            let peer = PeerId::new(peer).map_err(|error| bad_line(error.to_string()))?;
            if token.len() > MAX_TOKEN_BYTES {
                return Err(bad_line(format!("token longer than {MAX_TOKEN_BYTES} bytes")));
            }
            self = self.allow_static_token(peer, token);
        }
        Ok(self)
    }

    /// Adds the tokens of the file at `path`.
    pub fn add_token_file(self, path: &Path) -> Result<Authenticator, RelayError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| RelayError::TokenFile {
            path: origin.clone(),
            reason: error.to_string(),
        })?;
        self.add_token_file_text(&origin, &text)
    }

    /// Whether any way of accepting a token is configured.
    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || !self.static_tokens.is_empty()
    }

    /// Checks that `token` proves `peer_id` at time `now`, and returns what
    /// it grants (expiry, room).
    pub fn verify(
        &self,
        peer_id: &PeerId,
        token: &str,
        now: SystemTime,
    ) -> Result<Grant, AuthRejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthRejection::Malformed);
        }
        if let Some(tokens) = self.static_tokens.get(peer_id) {
            // Compare against every listed token so the time taken does not
            // reveal which one matched.
            let matched = tokens.iter().fold(subtle::Choice::from(0), |found, listed| {
                found | listed.as_bytes().ct_eq(token.as_bytes())
            });
            if bool::from(matched) {
                return Ok(Grant::unrestricted());
            }
        }
        match &self.secret {
            // A static-token server with a secret too: something that is not
            // even shaped like a signed token is simply unknown.
            Some(_) if !self.static_tokens.is_empty() && !looks_signed(token) => {
                Err(AuthRejection::Unknown)
            }
            Some(secret) => verify_signed(secret, peer_id, token, now, self.accept_demo),
            None => Err(AuthRejection::Unknown),
        }
    }
}

/// Whether `token` has the shape `v1.<claims>.<signature>`.
fn looks_signed(token: &str) -> bool {
    let mut parts = token.split('.');
    parts.next() == Some(TOKEN_PREFIX)
        && parts.next().is_some()
        && parts.next().is_some()
        && parts.next().is_none()
}

fn verify_signed(
    secret: &HmacSecret,
    peer_id: &PeerId,
    token: &str,
    now: SystemTime,
    accept_demo: bool,
) -> Result<Grant, AuthRejection> {
    let mut parts = token.split('.');
    let (Some(prefix), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthRejection::Malformed);
    };
    if prefix != TOKEN_PREFIX {
        return Err(AuthRejection::Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| AuthRejection::Malformed)?;
    let mut mac = secret.mac();
    mac.update(prefix.as_bytes());
    mac.update(b".");
    mac.update(claims.as_bytes());
    mac.verify_slice(&signature).map_err(|_| AuthRejection::BadSignature)?;
    let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| AuthRejection::Malformed)?;
    let claims: Claims = serde_json::from_slice(&claims).map_err(|_| AuthRejection::Malformed)?;
    if claims.sub != peer_id.as_str() {
        return Err(AuthRejection::WrongPeer);
    }
    if claims.exp <= unix_seconds(now) {
        return Err(AuthRejection::Expired);
    }
    if claims.demo && !accept_demo {
        return Err(AuthRejection::DemoToken);
    }
    Ok(Grant { expires_at: Some(claims.exp), room: claims.room })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn secret() -> HmacSecret {
        HmacSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn peer(name: &str) -> PeerId {
        PeerId::new(name).unwrap()
    }

    #[test]
    fn ephemeral_secrets_are_long_enough_and_differ() {
        let a = HmacSecret::ephemeral();
        let b = HmacSecret::ephemeral();
        assert!(a.0.len() >= MIN_SECRET_BYTES);
        assert_ne!(a.0, b.0);
    }

    #[test]
    fn minted_tokens_verify_until_they_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = mint_token(&secret(), &peer("alice"), now + Duration::from_secs(60));
        let auth = Authenticator::with_secret(secret());
        assert!(auth.verify(&peer("alice"), &token, now).is_ok());
        assert_eq!(
            auth.verify(&peer("alice"), &token, now + Duration::from_secs(60)),
            Err(AuthRejection::Expired)
        );
        assert_eq!(auth.verify(&peer("bob"), &token, now), Err(AuthRejection::WrongPeer));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = mint_token(&secret(), &peer("alice"), now + Duration::from_secs(60));
        let other = HmacSecret::new(b"another secret of enough length".to_vec()).unwrap();
        let auth = Authenticator::with_secret(other);
        assert_eq!(auth.verify(&peer("alice"), &token, now), Err(AuthRejection::BadSignature));

        let auth = Authenticator::with_secret(secret());
        let forged = mint_token(&secret(), &peer("bob"), now + Duration::from_secs(60));
        let (_, bob_claims) = forged.split_once('.').unwrap();
        let bob_claims = bob_claims.split('.').next().unwrap();
        let signature = token.rsplit('.').next().unwrap();
        let spliced = format!("v1.{bob_claims}.{signature}");
        assert_eq!(auth.verify(&peer("bob"), &spliced, now), Err(AuthRejection::BadSignature));
        for garbage in ["", "v1", "v1.a", "v2.a.b", "v1.a.b.c", "v1.!!.??"] {
            assert!(auth.verify(&peer("alice"), garbage, now).is_err(), "{garbage}");
        }
    }

    #[test]
    fn static_token_file_is_parsed_and_checked() {
        let text = "# peers\nalice  s3cret-a\n\nbob s3cret-b\nalice second\n";
        let auth = Authenticator::default().add_token_file_text("tokens", text).unwrap();
        let now = SystemTime::now();
        assert!(auth.verify(&peer("alice"), "s3cret-a", now).is_ok());
        assert!(auth.verify(&peer("alice"), "second", now).is_ok());
        assert_eq!(auth.verify(&peer("alice"), "s3cret-b", now), Err(AuthRejection::Unknown));
        assert_eq!(auth.verify(&peer("carol"), "s3cret-a", now), Err(AuthRejection::Unknown));
        let error = Authenticator::default().add_token_file_text("tokens", "alice\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn room_and_demo_claims_are_signed_and_reported() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expires = now + Duration::from_secs(60);
        let room = RoomId::new("lobby").unwrap();
        let token = TokenClaims::new(peer("alice"), expires).room(room).mint(&secret());
        let auth = Authenticator::with_secret(secret());
        let grant = auth.verify(&peer("alice"), &token, now).unwrap();
        assert_eq!(grant.room.as_deref(), Some("lobby"));
        assert_eq!(grant.expires_at, Some(1_000_060));

        let demo = TokenClaims::new(peer("alice"), expires).demo().mint(&secret());
        assert_eq!(auth.verify(&peer("alice"), &demo, now), Err(AuthRejection::DemoToken));
        let demo_auth = Authenticator::with_secret(secret()).accept_demo_tokens();
        assert!(demo_auth.verify(&peer("alice"), &demo, now).is_ok());
    }

    #[test]
    fn strict_rooms_need_a_room_claim() {
        let unscoped = Grant { expires_at: None, room: None };
        let scoped = Grant { expires_at: None, room: Some("lobby".into()) };
        let lax = Authenticator::with_secret(secret());
        assert_eq!(lax.admits_room(&unscoped, Some("lobby")), Ok(()));
        assert_eq!(lax.admits_room(&scoped, Some("other")), Err(AuthRejection::WrongRoom));
        assert_eq!(lax.admits_room(&scoped, None), Err(AuthRejection::WrongRoom));
        let strict = Authenticator::with_secret(secret()).require_room_claims();
        assert_eq!(strict.admits_room(&unscoped, Some("lobby")), Err(AuthRejection::NoRoomGranted));
        assert_eq!(strict.admits_room(&unscoped, None), Ok(()));
        assert_eq!(strict.admits_room(&scoped, Some("lobby")), Ok(()));
    }

    #[test]
    fn with_a_secret_and_a_token_file_an_unlisted_token_is_unknown() {
        let auth = Authenticator::with_secret(secret())
            .add_token_file_text("tokens", "alice s3cret-a\n")
            .unwrap();
        let now = SystemTime::now();
        assert_eq!(auth.verify(&peer("alice"), "guess", now), Err(AuthRejection::Unknown));
        assert_eq!(auth.verify(&peer("bob"), "s3cret-a", now), Err(AuthRejection::Unknown));
        assert_eq!(auth.verify(&peer("alice"), "v1.a", now), Err(AuthRejection::Unknown));
        assert_eq!(auth.verify(&peer("alice"), "v1.a.b", now), Err(AuthRejection::Malformed));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(HmacSecret::new(b"short".to_vec()).is_err());
        assert!(!format!("{:?}", secret()).contains("0123"));
    }
}
