//! Errors of the live node.

use tether_signal::protocol::PeerId;

use crate::{EventError, NodeError};

/// Why an [`RtcNode`](super::RtcNode) could not start or do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcNodeError {
    /// The configuration is unusable (URL, room, policy).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The recovery runtime refused.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A recovery the call waited for did not succeed.
    #[error("recovery did not succeed: {0}")]
    Recovery(#[from] EventError),
    /// A peer connection could not be made.
    #[error("peer {peer}: {message}")]
    Peer {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        message: String,
    },
}

/// Why a message was not sent, or not confirmed. Every variant says what
/// became of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Too big for one message; not accepted.
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer is this node itself; not accepted.
    #[error("invalid peer id {peer}: it is this node's own id")]
    InvalidPeer {
        /// The id given.
        peer: PeerId,
    },
    /// The connections are closed or recovery is parked (after a cleanup or
    /// a logout); not accepted. Reconnect first.
    #[error("connections are {state}; not accepted")]
    Closed {
        /// The connection state.
        state: String,
    },
    /// The replay buffer had no room before the send deadline; not accepted.
    #[error("the replay buffer stayed full until the send deadline; not accepted")]
    BufferFull,
    /// Accepted, but no channel carried it before the send deadline: it was
    /// withdrawn and will not be delivered.
    #[error("not delivered before the send deadline; withdrawn")]
    NotDelivered,
    /// Sent, but not acknowledged before the send deadline. It may have
    /// arrived; it stays queued and will be replayed (never twice).
    #[error("not acknowledged before the send deadline; still queued for replay")]
    Unconfirmed,
    /// The node shut down.
    #[error("the node is shut down")]
    Shutdown,
}
