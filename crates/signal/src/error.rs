//! The client's error type and its classification for the recovery layer.

use std::time::Duration;

use crate::protocol::ErrorCode;

/// Every failure of the signaling client ([`SignalClient`](crate::SignalClient)
/// and its configuration). Server-side failures (binding a port, reading a
/// token file) belong to the relay server's own error type (tether-relay's
/// `RelayError`), and invalid names to [`NameError`](crate::protocol::NameError).
///
/// The node layer does not match on variants: it calls [`SignalError::kind`]
/// and maps the [`SignalErrorKind`] onto the Supervisor's error kinds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The signaling URL cannot be used.
    #[error("invalid signaling url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A client setting is unusable (e.g. `dead_after` not above
    /// `ping_interval`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The TCP connection to the signaling server could not be opened.
    #[error("signaling server {addr} unreachable")]
    Unreachable {
        /// `host:port` that was dialled.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake with a `wss://` server failed (e.g. its certificate
    /// is not trusted, expired, or names another host: on a captive portal or
    /// an intercepting proxy, a network change may cure it).
    #[error("tls handshake with {addr} failed")]
    Tls {
        /// `host:port` that was dialled.
        addr: String,
        /// The handshake's error (rustls' reason inside).
        #[source]
        source: std::io::Error,
    },
    /// The server answered the WebSocket upgrade with a non-101 HTTP status.
    #[error("websocket upgrade refused with http status {status}")]
    UpgradeRefused {
        /// The HTTP status code.
        status: u16,
    },
    /// The WebSocket layer failed (handshake or framing).
    #[error("websocket failure")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// A bounded operation ran out of time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for (`connect`, `probe`, `close`, ...).
        what: &'static str,
        /// The bound that was exceeded.
        after: Duration,
    },
    /// The server refused the token.
    #[error("server rejected credentials: {message}")]
    AuthRejected {
        /// The server's explanation.
        message: String,
    },
    /// The server speaks a protocol version this client does not.
    #[error("server does not support protocol version {client}: {message}")]
    VersionUnsupported {
        /// The version this client sent.
        client: u32,
        /// The server's explanation.
        message: String,
    },
    /// The server refused a request with an error frame.
    #[error("server error {code}: {message}")]
    Server {
        /// The error frame's code.
        code: ErrorCode,
        /// The error frame's message.
        message: String,
    },
    /// The peer broke the protocol (unexpected or undecodable frame).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server closed the connection.
    #[error("connection closed by server (code {code}: {reason})")]
    ClosedByServer {
        /// The WebSocket close code (1006 when the socket ended without one).
        code: u16,
        /// The close reason text.
        reason: String,
    },
    /// There is no live signaling connection.
    #[error("signaling is not connected")]
    NotConnected,
    /// This connection attempt was overtaken by a newer one or by
    /// `disconnect()`, and was fenced off.
    #[error("connection attempt of generation {generation} was superseded")]
    Superseded {
        /// The fenced attempt's generation.
        generation: u64,
    },
    /// The outbound queue is full; the message was not sent.
    #[error("outbound queue full ({capacity} messages)")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A message is larger than the server's advertised frame limit.
    #[error("message of {size} bytes exceeds the server's limit of {max} bytes")]
    MessageTooLarge {
        /// The encoded message's size.
        size: usize,
        /// The server's `max_frame_bytes`.
        max: usize,
    },
}

/// A coarse classification of [`SignalError`], stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignalErrorKind {
    /// A bounded wait expired (connect, probe, close).
    Timeout,
    /// The server could not be reached or the link failed underneath.
    Unreachable,
    /// The credentials were refused; retrying with the same ones is useless.
    AuthRejected,
    /// The configuration is unusable (URL, names, protocol version).
    ConfigRejected,
    /// The other side broke the protocol.
    Protocol,
    /// The connection is closed or was never opened.
    Closed,
    /// The attempt was fenced by a newer attempt or a disconnect.
    Cancelled,
    /// Local back-pressure: a bounded queue was full.
    Overloaded,
}

impl SignalErrorKind {
    /// The lower-case name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SignalErrorKind::Timeout => "timeout",
            SignalErrorKind::Unreachable => "unreachable",
            SignalErrorKind::AuthRejected => "auth_rejected",
            SignalErrorKind::ConfigRejected => "config_rejected",
            SignalErrorKind::Protocol => "protocol",
            SignalErrorKind::Closed => "closed",
            SignalErrorKind::Cancelled => "cancelled",
            SignalErrorKind::Overloaded => "overloaded",
        }
    }
}

impl SignalError {
    /// Classifies the error for the recovery layer.
    pub fn kind(&self) -> SignalErrorKind {
        use tokio_tungstenite::tungstenite::Error as WsError;
        match self {
            SignalError::InvalidUrl { .. }
            | SignalError::InvalidConfig(_)
            | SignalError::VersionUnsupported { .. } => SignalErrorKind::ConfigRejected,
            SignalError::Unreachable { .. } | SignalError::Tls { .. } => {
                SignalErrorKind::Unreachable
            }
            SignalError::UpgradeRefused { status } => match status {
                401 | 403 => SignalErrorKind::AuthRejected,
                400 | 404 | 405 | 426 => SignalErrorKind::ConfigRejected,
                _ => SignalErrorKind::Unreachable,
            },
            SignalError::WebSocket(error) => match error.as_ref() {
                WsError::Io(_) | WsError::Tls(_) => SignalErrorKind::Unreachable,
                WsError::ConnectionClosed | WsError::AlreadyClosed => SignalErrorKind::Closed,
                WsError::Url(_) => SignalErrorKind::ConfigRejected,
                WsError::Http(response) => {
                    SignalError::UpgradeRefused { status: response.status().as_u16() }.kind()
                }
                _ => SignalErrorKind::Protocol,
            },
            SignalError::Timeout { .. } => SignalErrorKind::Timeout,
            SignalError::AuthRejected { .. } => SignalErrorKind::AuthRejected,
            SignalError::Server { code, .. } => code.kind(),
            SignalError::Protocol(_) | SignalError::MessageTooLarge { .. } => {
                SignalErrorKind::Protocol
            }
            SignalError::ClosedByServer { .. } | SignalError::NotConnected => {
                SignalErrorKind::Closed
            }
            SignalError::Superseded { .. } => SignalErrorKind::Cancelled,
            SignalError::QueueFull { .. } => SignalErrorKind::Overloaded,
        }
    }

    pub(crate) fn websocket(error: tokio_tungstenite::tungstenite::Error) -> SignalError {
        use tokio_tungstenite::tungstenite::Error as WsError;
        match error {
            WsError::Http(response) => {
                SignalError::UpgradeRefused { status: response.status().as_u16() }
            }
            other => SignalError::WebSocket(Box::new(other)),
        }
    }
}
