//! Errors of the node layer.

use std::time::Duration;

use tether_recovery::PolicyError;

/// Why a call to a node failed. The work an event started may still go
/// on (see each variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No result came within the result timeout. The event was accepted and
    /// its work goes on; only the wait ended.
    #[error("no result within {} ms; the work goes on", .0.as_millis())]
    ResultTimeout(Duration),
    /// The node is shut down (or shutting down): nothing was accepted.
    #[error("the node is shut down")]
    Shutdown,
    /// The mailbox is full (only from non-waiting sends such as
    /// [`NodeRef::tell`](crate::NodeRef::tell)): nothing was accepted.
    #[error("the node's mailbox is full")]
    MailboxFull,
    /// A node needs a tokio runtime and none was current.
    #[error("no tokio runtime is running here")]
    NoRuntime,
    /// The node's configuration is invalid.
    #[error("invalid node configuration: {0}")]
    Config(#[from] PolicyError),
}
