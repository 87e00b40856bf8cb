//! The errors foreign callers see.

use std::time::Duration;

use tether::NodeError;

/// Why a call into tether failed. One enum for every method; in Swift it is
/// `TetherError`, in Kotlin `TetherException`, in Python `TetherError`
/// with one subclass per variant (`TetherError.ShutDown`, ...). The
/// message says what went wrong; the variant says what to do about it.
///
/// Flat on the foreign side: each variant carries its message only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
#[non_exhaustive]
pub enum TetherError {
    /// An argument is out of range (a negative duration or sequence).
    /// Nothing was sent to the node.
    #[error("invalid argument {field}: {reason}")]
    InvalidArgument {
        /// The argument, as `record.field`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The node's configuration is incomplete or out of range; no node was
    /// started.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The event was accepted but no result came within the result timeout;
    /// the work goes on.
    #[error("no result within {} ms; the work goes on", .0.as_millis())]
    ResultTimeout(Duration),
    /// The node's mailbox stayed full for the whole result timeout; nothing
    /// was accepted.
    #[error("the node's mailbox is full")]
    MailboxFull,
    /// The node is shut down (or shutting down); nothing was accepted.
    #[error("the node is shut down")]
    ShutDown,
    /// A peer connection could not be made in time (the peer stays
    /// wanted: recovery retries it).
    #[error("peer unreachable: {0}")]
    PeerUnreachable(String),
    /// The connections are closed or recovery is parked (after a cleanup
    /// or a logout): the message was not accepted. Reconnect first.
    #[error("{0}")]
    ConnectionsClosed(String),
    /// The peer's replay buffer stayed full until the send deadline; the
    /// message was not accepted.
    #[error("the send buffer stayed full until the send deadline; not accepted")]
    SendBufferFull,
    /// Accepted, but no channel carried it before the send deadline: it
    /// was withdrawn and will not be delivered.
    #[error("not delivered before the send deadline; withdrawn")]
    NotDelivered,
    /// Sent, but not acknowledged before the send deadline. It may have
    /// arrived; it stays queued and is replayed (never delivered twice).
    #[error("not acknowledged before the send deadline; still queued for replay")]
    Unconfirmed,
    /// The node cannot do this (messaging on a simulated node).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A bug or a resource failure inside tether (the runtime could not
    /// start, a task panicked). Never caused by the caller's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl TetherError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field, reason: reason.into() }
    }
}

/// A peer id from foreign code, checked here once: a bad one is an
/// [`TetherError::InvalidArgument`] naming `peer`.
pub(crate) fn peer_id(peer: String) -> Result<tether::PeerId, TetherError> {
    tether::PeerId::new(peer).map_err(|err| TetherError::invalid("peer", err.to_string()))
}

impl From<NodeError> for TetherError {
    fn from(err: NodeError) -> Self {
        match err {
            NodeError::ResultTimeout(timeout) => Self::ResultTimeout(timeout),
            NodeError::Shutdown => Self::ShutDown,
            NodeError::MailboxFull => Self::MailboxFull,
            NodeError::Config(err) => Self::InvalidConfig(err.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<tether::live::RtcNodeError> for TetherError {
    fn from(err: tether::live::RtcNodeError) -> Self {
        use tether::live::RtcNodeError;
        match err {
            RtcNodeError::Config(message) => Self::InvalidConfig(message),
            RtcNodeError::Node(err) => err.into(),
            err @ RtcNodeError::Peer { .. } => Self::PeerUnreachable(err.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<tether::SendError> for TetherError {
    fn from(err: tether::SendError) -> Self {
        use tether::SendError;
        match err {
            err @ SendError::TooLarge { .. } => Self::invalid("payload", err.to_string()),
            err @ SendError::InvalidPeer { .. } => Self::invalid("peer", err.to_string()),
            err @ SendError::Closed { .. } => Self::ConnectionsClosed(err.to_string()),
            SendError::BufferFull => Self::SendBufferFull,
            SendError::NotDelivered => Self::NotDelivered,
            SendError::Unconfirmed => Self::Unconfirmed,
            SendError::Shutdown => Self::ShutDown,
            other => Self::Internal(other.to_string()),
        }
    }
}

/// What a foreign `StateListener` may throw. tether
/// logs it (`ffi.listener.failed`) and keeps the subscription: a failing
/// listener never stops later updates. Any other exception the listener
/// throws is turned into [`ListenerError::Failed`] too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    /// The listener could not handle the update.
    #[error("the state listener failed: {reason}")]
    Failed {
        /// What the listener said.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(err: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: err.reason }
    }
}
