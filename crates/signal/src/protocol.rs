//! The wire protocol: message types, names, error codes, close codes and the
//! JSON frame codec. `docs/PROTOCOL.md` is the normative description; this
//! module is its implementation and must agree with it.
//!
//! Every frame is one WebSocket TEXT frame holding one JSON object with a
//! string field `type`. Unknown fields are ignored (so minor additions stay
//! compatible); unknown types are answered with `unknown_type`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::error::SignalErrorKind;

/// The protocol version this crate speaks (field `version` of `register`).
pub const PROTOCOL_VERSION: u32 = 1;

/// The HTTP path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/ws";

/// The upgrade request's header that carries the `register` message (PROTOCOL.md §2), saving
/// the round trip a `register` frame after the upgrade would take. The server that takes it
/// answers with the same header, value [`REGISTER_HEADER_TAKEN`]; without that answer the client
/// sends `register` as its first frame, as before.
pub const REGISTER_HEADER: &str = "tether-register";

/// The value of [`REGISTER_HEADER`] in the server's `101` response.
pub const REGISTER_HEADER_TAKEN: &str = "taken";

/// Default largest TEXT frame the server accepts, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Longest peer id or room name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest token the server looks at, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// WebSocket close codes used by the server (1000-1011 are RFC 6455 codes,
/// 4000-4999 are tether's own).
pub mod close_code {
    /// Normal closure (client `disconnect`).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke RFC 6455 framing (reserved bits, unmasked frame,
    /// oversized control frame, orphan continuation).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A TEXT frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame exceeded the hard size cap; the stream cannot be resynchronised.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Another connection registered the same peer id.
    pub const REPLACED: u16 = 4000;
    /// The token was refused.
    pub const AUTH_FAILED: u16 = 4001;
    /// The requested protocol version is not supported.
    pub const VERSION_UNSUPPORTED: u16 = 4002;
    /// Too many bad frames on this connection.
    pub const TOO_MANY_ERRORS: u16 = 4003;
    /// The connection's outbound queue overflowed (the client reads too slowly).
    pub const SLOW_CONSUMER: u16 = 4004;
    /// No valid `register` arrived in time.
    pub const REGISTER_TIMEOUT: u16 = 4005;
    /// Nothing arrived for the idle timeout (pings included).
    pub const IDLE_TIMEOUT: u16 = 4006;
    /// The `register` message was invalid (bad peer id, missing field).
    pub const REGISTER_INVALID: u16 = 4007;
    /// The server is full of connections that have not registered; this
    /// (oldest) one was closed to make room. Reconnect.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The `register` belongs to an older attempt of the current session.
    pub const STALE_GENERATION: u16 = 4008;
    /// The client kept sending over its rate limit.
    pub const RATE_LIMITED: u16 = 4009;
    /// The session's token expired, or a fresher token holds the peer id:
    /// get a new token and reconnect.
    pub const TOKEN_REFRESH: u16 = 4010;
}

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    MalformedJson,
    /// The JSON object lacks a field, or a field has the wrong type or value.
    InvalidMessage,
    /// `type` names no message this server knows.
    UnknownType,
    /// The frame is larger than the advertised `max_frame_bytes`.
    FrameTooLarge,
    /// A BINARY frame was sent; version 1 uses TEXT frames only.
    BinaryNotSupported,
    /// A relay message arrived before a successful `register`.
    NotRegistered,
    /// A second `register` arrived on an already registered connection.
    AlreadyRegistered,
    /// The token is malformed, expired, for another peer, or unknown.
    AuthFailed,
    /// The `version` is not supported by this server.
    VersionUnsupported,
    /// A peer id or room breaks the naming rules.
    InvalidPeerId,
    /// The `register` is older than the connection already registered by the
    /// same client session.
    StaleGeneration,
    /// `to` names no registered peer.
    PeerUnknown,
    /// `to` is registered but cannot take more messages (it is being dropped).
    PeerUnavailable,
    /// The message carried a `from` other than the sender's own peer id.
    Impersonation,
    /// This connection was replaced by a newer registration of the same peer id.
    Replaced,
    /// Too many bad frames; the server closes the connection.
    TooManyErrors,
    /// No `register` arrived in time.
    RegisterTimeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The message was over the sender's rate limit and was not processed.
    RateLimited,
    /// The session's token expired; the server closes with 4010.
    TokenExpired,
    /// The peer id is registered with a token that expires later than
    /// this one; the server closes with 4010.
    TokenOutdated,
    /// The client broke RFC 6455 framing or sent invalid UTF-8; the server
    /// closes with 1002 or 1007.
    ProtocolError,
    /// A code this client does not know (sent by a newer server).
    Unrecognized,
}

impl ErrorCode {
    /// Every code a server may send, in documentation order.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::FrameTooLarge,
        ErrorCode::BinaryNotSupported,
        ErrorCode::NotRegistered,
        ErrorCode::AlreadyRegistered,
        ErrorCode::AuthFailed,
        ErrorCode::VersionUnsupported,
        ErrorCode::InvalidPeerId,
        ErrorCode::StaleGeneration,
        ErrorCode::PeerUnknown,
        ErrorCode::PeerUnavailable,
        ErrorCode::Impersonation,
        ErrorCode::Replaced,
        ErrorCode::TooManyErrors,
        ErrorCode::RegisterTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::RateLimited,
        ErrorCode::TokenExpired,
        ErrorCode::TokenOutdated,
        ErrorCode::ProtocolError,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::VersionUnsupported => "version_unsupported",
            ErrorCode::InvalidPeerId => "invalid_peer_id",
            ErrorCode::StaleGeneration => "stale_generation",
            ErrorCode::PeerUnknown => "peer_unknown",
            ErrorCode::PeerUnavailable => "peer_unavailable",
            ErrorCode::Impersonation => "impersonation",
            ErrorCode::Replaced => "replaced",
            ErrorCode::TooManyErrors => "too_many_errors",
            ErrorCode::RegisterTimeout => "register_timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenOutdated => "token_outdated",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::Unrecognized => "unrecognized",
        }
    }

    /// Parses the wire spelling; unknown spellings become [`ErrorCode::Unrecognized`].
    pub fn parse(text: &str) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .unwrap_or(ErrorCode::Unrecognized)
    }

    /// Whether the server counts this error towards the abuse limit
    /// (protocol violations by the sender, not conditions of other peers).
    pub fn counts_as_abuse(self) -> bool {
        matches!(
            self,
            ErrorCode::MalformedJson
                | ErrorCode::InvalidMessage
                | ErrorCode::UnknownType
                | ErrorCode::FrameTooLarge
                | ErrorCode::BinaryNotSupported
                | ErrorCode::NotRegistered
                | ErrorCode::AlreadyRegistered
                | ErrorCode::InvalidPeerId
                | ErrorCode::Impersonation
        )
    }

    /// Whether the server always closes the connection right after sending
    /// this code (the close code then tells the rest).
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::AuthFailed
                | ErrorCode::VersionUnsupported
                | ErrorCode::StaleGeneration
                | ErrorCode::Replaced
                | ErrorCode::TooManyErrors
                | ErrorCode::RegisterTimeout
                | ErrorCode::ShuttingDown
                | ErrorCode::TokenExpired
                | ErrorCode::TokenOutdated
                | ErrorCode::ProtocolError
        )
    }

    /// How a client should classify this code when it ends a request.
    pub fn kind(self) -> SignalErrorKind {
        match self {
            ErrorCode::AuthFailed | ErrorCode::TokenExpired | ErrorCode::TokenOutdated => {
                SignalErrorKind::AuthRejected
            }
            ErrorCode::RateLimited => SignalErrorKind::Overloaded,
            ErrorCode::VersionUnsupported | ErrorCode::InvalidPeerId => {
                SignalErrorKind::ConfigRejected
            }
            ErrorCode::StaleGeneration | ErrorCode::Replaced => SignalErrorKind::Cancelled,
            ErrorCode::PeerUnknown | ErrorCode::PeerUnavailable | ErrorCode::ShuttingDown => {
                SignalErrorKind::Unreachable
            }
            ErrorCode::RegisterTimeout => SignalErrorKind::Timeout,
            _ => SignalErrorKind::Protocol,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer id or room name that breaks the protocol's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
#[non_exhaustive]
pub struct NameError {
    /// `peer id` or `room`.
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_NAME_BYTES {
        Some("longer than 64 bytes")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
    {
        Some("only ASCII letters, digits and - _ . : @ are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NameError { what, value: value.to_owned(), reason }),
        None => Ok(()),
    }
}

/// A peer's identity on the signaling server: 1 to 64 bytes of ASCII
/// letters, digits and `- _ . : @`.
///
/// Validated once, when it is made ([`PeerId::new`], [`str::parse`]); every
/// holder can rely on it. It is shared text (`Arc<str>`), so clones are a
/// reference count: one travels with every received message and relayed
/// frame. On the wire it is the plain JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(Arc<str>);

impl PeerId {
    /// Validates and wraps a peer id.
    ///
    /// # Errors
    ///
    /// [`NameError`] when `value` breaks the naming rules.
    pub fn new(value: impl Into<String>) -> Result<PeerId, NameError> {
        let value = value.into();
        check_name("peer id", &value)?;
        Ok(PeerId(value.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PeerId {
    type Err = NameError;
    fn from_str(text: &str) -> Result<PeerId, NameError> {
        PeerId::new(text)
    }
}

impl AsRef<str> for PeerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps and sets keyed by [`PeerId`] can be searched with a `&str`: the id
/// hashes and compares exactly as its text does.
impl Borrow<str> for PeerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for PeerId {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for PeerId {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A presence scope: peers registered in the same room see each other's
/// `peer_joined` / `peer_left`. Same naming rules as [`PeerId`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    /// Validates and wraps a room name.
    pub fn new(value: impl Into<String>) -> Result<RoomId, NameError> {
        let value = value.into();
        check_name("room", &value)?;
        Ok(RoomId(value))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One trickled ICE candidate, as the WebRTC layer produces and consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceCandidate {
    /// The `candidate:` line; empty means end-of-candidates.
    pub candidate: String,
    /// The media stream identification tag, when known.
    pub sdp_mid: Option<String>,
    /// The m-line index, when known.
    pub sdp_mline_index: Option<u16>,
}

impl IceCandidate {
    /// Whether this is the end-of-candidates marker (empty candidate).
    pub fn is_end_of_candidates(&self) -> bool {
        self.candidate.is_empty()
    }
}

/// What one peer relays to another through the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayPayload {
    /// An SDP offer.
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate (or end-of-candidates).
    Candidate(IceCandidate),
    /// "Please (re)negotiate with me": the offerer answers with a fresh offer.
    IceRestart,
    /// The sender closes its peer connection with the receiver.
    Bye,
    /// Reliable-messaging frames sealed end to end (docs/MESSAGING.md rule 10), carried while
    /// the peers' data path is being replaced. Opaque to the server: standard base64 of at least
    /// one byte. Only sent to a server whose `registered` lists the `detour` feature.
    Detour {
        /// The sealed frame, standard base64 with padding.
        sealed: String,
    },
}

impl RelayPayload {
    /// The message `type` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            RelayPayload::Offer { .. } => "offer",
            RelayPayload::Answer { .. } => "answer",
            RelayPayload::Candidate(_) => "candidate",
            RelayPayload::IceRestart => "ice_restart",
            RelayPayload::Bye => "bye",
            RelayPayload::Detour { .. } => "detour",
        }
    }
}

/// The first message a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The protocol version the client speaks.
    pub version: u32,
    /// The identity the client claims (proved by `token`).
    pub peer_id: PeerId,
    /// The credential.
    pub token: String,
    /// Optional presence scope.
    pub room: Option<RoomId>,
    /// Optional client instance id; with `generation` it orders attempts.
    pub session: Option<String>,
    /// Optional attempt number within `session`, increasing.
    pub generation: Option<u64>,
    /// Peers the server sends an `ice_restart` from this client right after `registered`, as if
    /// the client had relayed one to each (at most [`MAX_REGISTER_ICE_RESTARTS`]). An
    /// answerer whose uplink changed asks its offerers for restart offers this way, a round
    /// trip sooner than a relay frame after `registered` could.
    pub ice_restart: Vec<PeerId>,
}

/// A relay message as the sender writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOut {
    /// The receiver.
    pub to: PeerId,
    /// Optional sender-chosen id, echoed in an `error` about this message.
    pub id: Option<u64>,
    /// A `from` the sender put in the message; the server refuses one that
    /// differs from the sender's own id.
    pub claimed_from: Option<String>,
    /// The relayed content.
    pub payload: RelayPayload,
}

/// Everything a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientMessage {
    /// `register`.
    Register(Register),
    /// `offer`, `answer`, `candidate`, `ice_restart`, `bye` or `detour`, with `to`.
    Relay(RelayOut),
    /// `ping`: an application-level liveness check (for browsers, which
    /// cannot send WebSocket pings).
    Ping {
        /// Echoed in the `pong`.
        nonce: Option<String>,
    },
}

/// The server's acknowledgement of `register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The protocol version in use.
    pub version: u32,
    /// The registered identity.
    pub peer_id: PeerId,
    /// The room, when one was given.
    pub room: Option<RoomId>,
    /// The other peers currently in the room (empty without a room).
    pub peers: Vec<PeerId>,
    /// Whether this registration replaced an older connection of the same peer.
    pub replaced: bool,
    /// The largest TEXT frame the server accepts.
    pub max_frame_bytes: usize,
    /// STUN/TURN servers the server hands this client, typically with
    /// short-lived TURN credentials minted for its peer id; empty when the
    /// server offers none.
    pub ice_servers: Vec<IceServerGrant>,
    /// The peers of `register`'s `ice_restart` that the server relays an `ice_restart` to
    /// right after this message; empty from a server that does not serve the field.
    pub ice_restart: Vec<PeerId>,
    /// Whether the server relays `detour` messages (it lists the `detour` feature); a client
    /// sends none to a server that does not.
    pub detour: bool,
}

/// The `registered` feature that says the server relays `detour`.
pub const FEATURE_DETOUR: &str = "detour";

/// A STUN or TURN server in `registered` (the shape of WebRTC's
/// `RTCIceServer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerGrant {
    /// `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Most ICE servers a `registered` may carry; more is a protocol error.
pub const MAX_ICE_SERVERS: usize = 8;

/// Most peers a `register` (and so a `registered`) may name in `ice_restart`; more is a
/// protocol error.
pub const MAX_REGISTER_ICE_RESTARTS: usize = 64;

/// Everything a server may send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `registered`.
    Registered(Registered),
    /// A relayed message, stamped with its sender.
    Relay {
        /// The authenticated sender.
        from: PeerId,
        /// The relayed content.
        payload: RelayPayload,
    },
    /// `peer_joined`: a peer registered (or re-registered) in the room.
    PeerJoined {
        /// Who joined.
        peer_id: PeerId,
    },
    /// `peer_left`: a peer's connection in the room ended.
    PeerLeft {
        /// Who left.
        peer_id: PeerId,
    },
    /// `error`.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The `id` of the offending message, when it had one.
        id: Option<u64>,
    },
    /// `pong`, the answer to `ping`.
    Pong {
        /// The nonce of the `ping`.
        nonce: Option<String>,
    },
}

/// Why a frame could not be decoded: the error code to answer with and a
/// human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The code the server answers with.
    pub code: ErrorCode,
    /// What exactly was wrong.
    pub detail: String,
}

impl DecodeError {
    fn new(code: ErrorCode, detail: impl Into<String>) -> DecodeError {
        DecodeError { code, detail: detail.into() }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// Only the `type` field, everything else skipped.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<TypeField>,
}

/// `type` may be anything; only a string is meaningful.
#[derive(Deserialize)]
#[serde(untagged)]
enum TypeField {
    Text(String),
    Other(IgnoredAny),
}

/// Every field any message may have; which ones are required depends on `type`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireFields {
    version: Option<u32>,
    peer_id: Option<String>,
    token: Option<String>,
    room: Option<String>,
    session: Option<String>,
    generation: Option<u64>,
    to: Option<String>,
    from: Option<String>,
    id: Option<u64>,
    sdp: Option<String>,
    candidate: Option<String>,
    sdp_mid: Option<String>,
    sdp_mline_index: Option<u16>,
    peers: Option<Vec<String>>,
    ice_restart: Option<Vec<String>>,
    features: Option<Vec<String>>,
    sealed: Option<String>,
    replaced: Option<bool>,
    max_frame_bytes: Option<usize>,
    ice_servers: Option<Vec<IceServerGrant>>,
    code: Option<String>,
    message: Option<String>,
    nonce: Option<String>,
}

/// Syntax errors are `malformed_json`; well-formed JSON of the wrong shape
/// is `invalid_message`.
fn json_error(error: serde_json::Error) -> DecodeError {
    let code = if error.is_syntax() || error.is_eof() {
        ErrorCode::MalformedJson
    } else {
        ErrorCode::InvalidMessage
    };
    DecodeError::new(code, error.to_string())
}

/// Parses the envelope: returns the `type` and all fields.
fn decode_envelope(text: &str) -> Result<(String, WireFields), DecodeError> {
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::new(ErrorCode::MalformedJson, "frame is not a json object"));
    }
    let envelope: TypeOnly = serde_json::from_str(text).map_err(json_error)?;
    let kind = match envelope.kind {
        Some(TypeField::Text(kind)) => kind,
        Some(TypeField::Other(_)) => {
            return Err(DecodeError::new(
                ErrorCode::InvalidMessage,
                "field `type` is not a string",
            ));
        }
        None => return Err(DecodeError::new(ErrorCode::InvalidMessage, "missing field `type`")),
    };
    let fields: WireFields = serde_json::from_str(text).map_err(json_error)?;
    Ok((kind, fields))
}

fn required<T>(value: Option<T>, kind: &str, field: &str) -> Result<T, DecodeError> {
    value.ok_or_else(|| {
        DecodeError::new(ErrorCode::InvalidMessage, format!("`{kind}` requires field `{field}`"))
    })
}

fn peer_field(value: Option<String>, kind: &str, field: &str) -> Result<PeerId, DecodeError> {
    let value = required(value, kind, field)?;
    PeerId::new(value)
        .map_err(|error| DecodeError::new(ErrorCode::InvalidPeerId, error.to_string()))
}

/// An `ice_restart` list of peer ids: absent means empty; at most
/// [`MAX_REGISTER_ICE_RESTARTS`] entries.
fn peer_list(value: Option<Vec<String>>, kind: &str) -> Result<Vec<PeerId>, DecodeError> {
    let peers = value.unwrap_or_default();
    if peers.len() > MAX_REGISTER_ICE_RESTARTS {
        return Err(DecodeError::new(
            ErrorCode::InvalidMessage,
            format!("{kind}: ice_restart must name at most {MAX_REGISTER_ICE_RESTARTS} peers"),
        ));
    }
    peers.into_iter().map(|peer| peer_field(Some(peer), kind, "ice_restart")).collect()
}

/// Standard base64 with padding, at least one byte: the shape a server checks of an opaque
/// `sealed` payload without decoding it.
fn is_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    padding <= 2
        && bytes[..bytes.len() - padding]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn relay_payload(kind: &str, fields: &mut WireFields) -> Result<Option<RelayPayload>, DecodeError> {
    let payload = match kind {
        "offer" | "answer" => {
            let sdp = required(fields.sdp.take(), kind, "sdp")?;
            if sdp.is_empty() {
                return Err(DecodeError::new(ErrorCode::InvalidMessage, "`sdp` must not be empty"));
            }
            if kind == "offer" { RelayPayload::Offer { sdp } } else { RelayPayload::Answer { sdp } }
        }
        "candidate" => RelayPayload::Candidate(IceCandidate {
            candidate: fields.candidate.take().unwrap_or_default(),
            sdp_mid: fields.sdp_mid.take(),
            sdp_mline_index: fields.sdp_mline_index.take(),
        }),
        "ice_restart" => RelayPayload::IceRestart,
        "bye" => RelayPayload::Bye,
        "detour" => {
            let sealed = required(fields.sealed.take(), kind, "sealed")?;
            if !is_base64(&sealed) {
                return Err(DecodeError::new(
                    ErrorCode::InvalidMessage,
                    "`sealed` must be non-empty standard base64",
                ));
            }
            RelayPayload::Detour { sealed }
        }
        _ => return Ok(None),
    };
    Ok(Some(payload))
}

/// Decodes one TEXT frame sent by a client. Never panics, whatever the input.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, DecodeError> {
    let (kind, mut fields) = decode_envelope(text)?;
    if kind == "register" {
        let version = required(fields.version, "register", "version")?;
        let peer_id = peer_field(fields.peer_id, "register", "peer_id")?;
        let token = required(fields.token, "register", "token")?;
        let room =
            match fields.room {
                Some(room) => Some(RoomId::new(room).map_err(|error| {
                    DecodeError::new(ErrorCode::InvalidPeerId, error.to_string())
                })?),
                None => None,
            };
        if let Some(session) = &fields.session
            && (session.is_empty() || session.len() > MAX_NAME_BYTES)
        {
            return Err(DecodeError::new(
                ErrorCode::InvalidMessage,
                "`session` must be 1 to 64 bytes",
            ));
        }
        let ice_restart = peer_list(fields.ice_restart, "register")?;
        return Ok(ClientMessage::Register(Register {
            version,
            peer_id,
            token,
            room,
            session: fields.session,
            generation: fields.generation,
            ice_restart,
        }));
    }
    if kind == "ping" {
        return Ok(ClientMessage::Ping { nonce: fields.nonce });
    }
    match relay_payload(&kind, &mut fields)? {
        Some(payload) => Ok(ClientMessage::Relay(RelayOut {
            to: peer_field(fields.to, &kind, "to")?,
            id: fields.id,
            claimed_from: fields.from,
            payload,
        })),
        None => Err(DecodeError::new(ErrorCode::UnknownType, format!("unknown type {kind:?}"))),
    }
}

fn frame_text(frame: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(frame)
        .map_err(|_| DecodeError::new(ErrorCode::MalformedJson, "frame is not valid utf-8"))
}

/// Decodes the raw payload of a client frame (what the fuzz target drives).
pub fn decode_client_frame(frame: &[u8]) -> Result<ClientMessage, DecodeError> {
    decode_client_message(frame_text(frame)?)
}

/// Decodes the raw payload of a server frame.
pub fn decode_server_frame(frame: &[u8]) -> Result<ServerMessage, DecodeError> {
    decode_server_message(frame_text(frame)?)
}

/// Decodes one TEXT frame sent by a server. Never panics, whatever the input.
pub fn decode_server_message(text: &str) -> Result<ServerMessage, DecodeError> {
    let (kind, mut fields) = decode_envelope(text)?;
    match kind.as_str() {
        "registered" => {
            let peers = fields
                .peers
                .unwrap_or_default()
                .into_iter()
                .map(|peer| peer_field(Some(peer), "registered", "peers"))
                .collect::<Result<Vec<_>, _>>()?;
            let room = match fields.room {
                Some(room) => Some(RoomId::new(room).map_err(|error| {
                    DecodeError::new(ErrorCode::InvalidPeerId, error.to_string())
                })?),
                None => None,
            };
            let ice_servers = fields.ice_servers.unwrap_or_default();
            if ice_servers.len() > MAX_ICE_SERVERS
                || ice_servers.iter().any(|server| server.urls.is_empty())
            {
                return Err(DecodeError::new(
                    ErrorCode::InvalidMessage,
                    format!(
                        "registered: ice_servers must hold at most {MAX_ICE_SERVERS} servers, each with urls"
                    ),
                ));
            }
            let ice_restart = peer_list(fields.ice_restart, "registered")?;
            Ok(ServerMessage::Registered(Registered {
                ice_servers,
                ice_restart,
                version: required(fields.version, "registered", "version")?,
                peer_id: peer_field(fields.peer_id, "registered", "peer_id")?,
                room,
                peers,
                replaced: fields.replaced.unwrap_or(false),
                max_frame_bytes: fields.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME_BYTES),
                detour: fields
                    .features
                    .is_some_and(|features| features.iter().any(|f| f == FEATURE_DETOUR)),
            }))
        }
        "peer_joined" => Ok(ServerMessage::PeerJoined {
            peer_id: peer_field(fields.peer_id, "peer_joined", "peer_id")?,
        }),
        "peer_left" => Ok(ServerMessage::PeerLeft {
            peer_id: peer_field(fields.peer_id, "peer_left", "peer_id")?,
        }),
        "error" => Ok(ServerMessage::Error {
            code: ErrorCode::parse(&required(fields.code, "error", "code")?),
            message: fields.message.unwrap_or_default(),
            id: fields.id,
        }),
        "pong" => Ok(ServerMessage::Pong { nonce: fields.nonce }),
        relay => match relay_payload(relay, &mut fields)? {
            Some(payload) => {
                Ok(ServerMessage::Relay { from: peer_field(fields.from, relay, "from")?, payload })
            }
            None => Err(DecodeError::new(ErrorCode::UnknownType, format!("unknown type {kind:?}"))),
        },
    }
}

/// Every field any outgoing message may have; `None` fields are omitted.
#[derive(Serialize, Default)]
struct WireOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate: Option<&'a str>,
    /// Outer `None`: omitted; `Some(None)`: `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp_mline_index: Option<Option<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<&'a [PeerId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ice_restart: Option<&'a [PeerId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<&'a [&'a str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_frame_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ice_servers: Option<&'a [IceServerGrant]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

impl<'a> WireOut<'a> {
    fn relay(payload: &'a RelayPayload) -> WireOut<'a> {
        let mut out = WireOut { kind: payload.type_name(), ..WireOut::default() };
        match payload {
            RelayPayload::Offer { sdp } | RelayPayload::Answer { sdp } => out.sdp = Some(sdp),
            RelayPayload::Candidate(candidate) => {
                out.candidate = Some(&candidate.candidate);
                out.sdp_mid = Some(candidate.sdp_mid.as_deref());
                out.sdp_mline_index = Some(candidate.sdp_mline_index);
            }
            RelayPayload::IceRestart | RelayPayload::Bye => {}
            RelayPayload::Detour { sealed } => out.sealed = Some(sealed),
        }
        out
    }

    fn to_json(&self) -> String {
        // Invariant: WireOut holds only strings, integers, booleans, options
        // and a slice of strings; serde_json cannot fail to write those to a
        // String (it fails only on non-string map keys or failing Serialize
        // impls, neither of which exists here).
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("serializing WireOut cannot fail")
    }
}

/// Encodes a client message as the TEXT frame's content.
pub fn encode_client_message(message: &ClientMessage) -> String {
    match message {
        ClientMessage::Register(register) => WireOut {
            kind: "register",
            version: Some(register.version),
            peer_id: Some(register.peer_id.as_str()),
            token: Some(&register.token),
            room: register.room.as_ref().map(RoomId::as_str),
            session: register.session.as_deref(),
            generation: register.generation,
            ice_restart: (!register.ice_restart.is_empty())
                .then_some(register.ice_restart.as_slice()),
            ..WireOut::default()
        }
        .to_json(),
        ClientMessage::Relay(relay) => {
            let mut out = WireOut::relay(&relay.payload);
            out.to = Some(relay.to.as_str());
            out.id = relay.id;
            out.from = relay.claimed_from.as_deref();
            out.to_json()
        }
        ClientMessage::Ping { nonce } => {
            WireOut { kind: "ping", nonce: nonce.as_deref(), ..WireOut::default() }.to_json()
        }
    }
}

/// Encodes a server message as the TEXT frame's content.
pub fn encode_server_message(message: &ServerMessage) -> String {
    match message {
        ServerMessage::Registered(registered) => WireOut {
            kind: "registered",
            version: Some(registered.version),
            peer_id: Some(registered.peer_id.as_str()),
            room: registered.room.as_ref().map(RoomId::as_str),
            peers: Some(&registered.peers),
            replaced: Some(registered.replaced),
            max_frame_bytes: Some(registered.max_frame_bytes),
            ice_servers: (!registered.ice_servers.is_empty())
                .then_some(registered.ice_servers.as_slice()),
            ice_restart: (!registered.ice_restart.is_empty())
                .then_some(registered.ice_restart.as_slice()),
            features: registered.detour.then_some(&[FEATURE_DETOUR][..]),
            ..WireOut::default()
        }
        .to_json(),
        ServerMessage::Relay { from, payload } => {
            let mut out = WireOut::relay(payload);
            out.from = Some(from.as_str());
            out.to_json()
        }
        ServerMessage::PeerJoined { peer_id } => {
            WireOut { kind: "peer_joined", peer_id: Some(peer_id.as_str()), ..WireOut::default() }
                .to_json()
        }
        ServerMessage::PeerLeft { peer_id } => {
            WireOut { kind: "peer_left", peer_id: Some(peer_id.as_str()), ..WireOut::default() }
                .to_json()
        }
        ServerMessage::Error { code, message, id } => WireOut {
            kind: "error",
            code: Some(code.as_str()),
            message: Some(message),
            id: *id,
            ..WireOut::default()
        }
        .to_json(),
        ServerMessage::Pong { nonce } => {
            WireOut { kind: "pong", nonce: nonce.as_deref(), ..WireOut::default() }.to_json()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn client_roundtrip(message: ClientMessage) {
        let text = encode_client_message(&message);
        assert_eq!(decode_client_message(&text), Ok(message), "{text}");
    }

    fn server_roundtrip(message: ServerMessage) {
        let text = encode_server_message(&message);
        assert_eq!(decode_server_message(&text), Ok(message), "{text}");
    }

    fn peer(name: &str) -> PeerId {
        PeerId::new(name).unwrap()
    }

    #[test]
    fn every_message_survives_a_roundtrip() {
        client_roundtrip(ClientMessage::Register(Register {
            version: 1,
            peer_id: peer("alice"),
            token: "v1.x.y".into(),
            room: Some(RoomId::new("lobby").unwrap()),
            session: Some("abc".into()),
            generation: Some(7),
            ice_restart: vec![peer("bob"), peer("carol")],
        }));
        let payloads = [
            RelayPayload::Offer { sdp: "v=0\r\n".into() },
            RelayPayload::Answer { sdp: "v=0\r\n".into() },
            RelayPayload::Candidate(IceCandidate {
                candidate: "candidate:1 1 udp 1 1.2.3.4 5 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            }),
            RelayPayload::Candidate(IceCandidate::default()),
            RelayPayload::IceRestart,
            RelayPayload::Bye,
            RelayPayload::Detour { sealed: "AAEC/+8=".into() },
        ];
        for payload in payloads {
            client_roundtrip(ClientMessage::Relay(RelayOut {
                to: peer("bob"),
                id: Some(3),
                claimed_from: None,
                payload: payload.clone(),
            }));
            server_roundtrip(ServerMessage::Relay { from: peer("alice"), payload });
        }
        client_roundtrip(ClientMessage::Ping { nonce: Some("n".into()) });
        server_roundtrip(ServerMessage::Registered(Registered {
            version: 1,
            peer_id: peer("alice"),
            room: None,
            peers: vec![peer("bob")],
            replaced: true,
            max_frame_bytes: 100,
            ice_servers: vec![
                IceServerGrant {
                    urls: vec!["stun:s:3478".into()],
                    username: None,
                    credential: None,
                },
                IceServerGrant {
                    urls: vec!["turn:t:3478?transport=udp".into()],
                    username: Some("1700000000:alice".into()),
                    credential: Some("c2VjcmV0".into()),
                },
            ],
            ice_restart: vec![peer("bob")],
            detour: true,
        }));
        server_roundtrip(ServerMessage::PeerJoined { peer_id: peer("bob") });
        server_roundtrip(ServerMessage::PeerLeft { peer_id: peer("bob") });
        server_roundtrip(ServerMessage::Pong { nonce: None });
        for code in ErrorCode::ALL {
            server_roundtrip(ServerMessage::Error { code, message: "m".into(), id: Some(1) });
        }
    }

    #[test]
    fn a_detour_carries_non_empty_standard_base64_and_registered_lists_the_feature() {
        let detour = |sealed: &str| {
            decode_client_message(&format!(r#"{{"type":"detour","to":"b","sealed":"{sealed}"}}"#))
        };
        for good in ["AA==", "AAE=", "AAEC", "q+/9QUJD"] {
            assert!(detour(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "AA=", "A===", "AA-_", "AA==AA==", "AAE?"] {
            let Err(error) = detour(bad) else { panic!("{bad} was accepted") };
            assert_eq!(error.code, ErrorCode::InvalidMessage, "{bad}");
        }
        let missing = decode_client_message(r#"{"type":"detour","to":"b"}"#);
        assert!(missing.is_err(), "{missing:?}");

        let registered = |features: &str| {
            let text = format!(
                r#"{{"type":"registered","version":1,"peer_id":"a","peers":[],"features":{features}}}"#
            );
            match decode_server_message(&text) {
                Ok(ServerMessage::Registered(registered)) => registered.detour,
                other => panic!("{other:?}"),
            }
        };
        assert!(registered(r#"["later","detour"]"#));
        assert!(!registered(r#"["later"]"#));
        assert!(!registered("[]"));
        let mut plain = Registered {
            version: 1,
            peer_id: peer("a"),
            room: None,
            peers: vec![],
            replaced: false,
            max_frame_bytes: 100,
            ice_servers: vec![],
            ice_restart: vec![],
            detour: false,
        };
        let encoded = encode_server_message(&ServerMessage::Registered(plain.clone()));
        assert!(!encoded.contains("features"), "{encoded}");
        plain.detour = true;
        let encoded = encode_server_message(&ServerMessage::Registered(plain));
        assert!(encoded.contains(r#""features":["detour"]"#), "{encoded}");
    }

    #[test]
    fn register_names_at_most_its_limit_of_valid_peers_to_restart_with() {
        let register = |peers: &str| {
            format!(
                r#"{{"type":"register","version":1,"peer_id":"a","token":"t","ice_restart":{peers}}}"#
            )
        };
        let decoded = decode_client_message(&register(r#"["b","c"]"#));
        let Ok(ClientMessage::Register(register_message)) = decoded else {
            panic!("{decoded:?}");
        };
        assert_eq!(register_message.ice_restart, vec![peer("b"), peer("c")]);
        let too_many = serde_json::to_string(
            &(0..=MAX_REGISTER_ICE_RESTARTS).map(|n| format!("p{n}")).collect::<Vec<_>>(),
        )
        .unwrap();
        let error = decode_client_message(&register(&too_many)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidMessage);
        let error = decode_client_message(&register(r#"["", "b"]"#)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidPeerId);
        let error = decode_client_message(&register(r#""b""#)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidMessage);
        // Absent is empty, and an empty list is not written.
        let plain = r#"{"type":"register","version":1,"peer_id":"a","token":"t"}"#;
        let Ok(ClientMessage::Register(register_message)) = decode_client_message(plain) else {
            panic!("plain register");
        };
        assert!(register_message.ice_restart.is_empty());
        let encoded = encode_client_message(&ClientMessage::Register(register_message));
        assert!(!encoded.contains("ice_restart"), "{encoded}");
    }

    #[test]
    fn candidate_always_carries_nullable_fields() {
        let text = encode_server_message(&ServerMessage::Relay {
            from: peer("a"),
            payload: RelayPayload::Candidate(IceCandidate::default()),
        });
        assert_eq!(
            text,
            r#"{"type":"candidate","from":"a","candidate":"","sdp_mid":null,"sdp_mline_index":null}"#
        );
    }

    #[test]
    fn decode_errors_carry_the_documented_codes() {
        let cases = [
            ("not json", ErrorCode::MalformedJson),
            ("{\"type\":", ErrorCode::MalformedJson),
            ("[\"offer\"]", ErrorCode::MalformedJson),
            ("{}", ErrorCode::InvalidMessage),
            ("{\"type\":5}", ErrorCode::InvalidMessage),
            ("{\"type\":\"teleport\",\"to\":\"b\"}", ErrorCode::UnknownType),
            ("{\"type\":\"offer\",\"to\":\"b\"}", ErrorCode::InvalidMessage),
            ("{\"type\":\"offer\",\"to\":\"b\",\"sdp\":5}", ErrorCode::InvalidMessage),
            ("{\"type\":\"offer\",\"to\":\"b c\",\"sdp\":\"x\"}", ErrorCode::InvalidPeerId),
            ("{\"type\":\"register\",\"version\":1,\"peer_id\":\"a\"}", ErrorCode::InvalidMessage),
        ];
        for (text, code) in cases {
            let error = decode_client_message(text).err();
            assert_eq!(error.map(|error| error.code), Some(code), "{text}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(PeerId::new("alice-1.phone@home:2").is_ok());
        assert!(PeerId::new("").is_err());
        assert!(PeerId::new("a b").is_err());
        assert!(PeerId::new("é").is_err());
        assert!(PeerId::new("x".repeat(65)).is_err());
        assert!(PeerId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn peer_ids_are_json_strings_and_search_as_text() {
        let bob = peer("bob");
        assert_eq!(serde_json::to_string(&bob).ok().as_deref(), Some("\"bob\""));
        assert_eq!("bob".parse::<PeerId>(), Ok(bob.clone()));
        assert!(bob == "bob" && bob.as_str() == "bob");
        let known: std::collections::BTreeSet<PeerId> = [peer("alice"), bob].into();
        assert!(known.contains("bob") && !known.contains("carol"));
        // Text order is byte order, as negotiation roles need.
        assert!(peer("Zed") < peer("abe"));
    }

    #[test]
    fn unknown_error_codes_are_tolerated() {
        assert_eq!(ErrorCode::parse("from_the_future"), ErrorCode::Unrecognized);
        assert_eq!(ErrorCode::parse("peer_unknown"), ErrorCode::PeerUnknown);
    }
}
