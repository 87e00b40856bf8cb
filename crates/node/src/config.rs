//! How a node is set up.

use std::time::Duration;

use tether_recovery::{InitialState, PolicyConfig};

/// Everything a [`Node`](crate::Node) needs besides its executor.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// A name for logs (the `node` span's `id` field).
    pub name: String,
    /// The decision policy.
    pub policy: PolicyConfig,
    /// What the platform already knew at start.
    pub initial: InitialState,
    /// How long a caller waits for its event's result before it gets
    /// [`NodeError::ResultTimeout`](crate::NodeError::ResultTimeout).
    /// Default 5 s.
    pub result_timeout: Duration,
    /// The bound on the cleanup that runs at shutdown. Default 3 s.
    pub shutdown_timeout: Duration,
    /// Requests the mailbox holds before senders wait. Default 1024.
    pub mailbox_capacity: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "node".into(),
            policy: PolicyConfig::default(),
            initial: InitialState::default(),
            result_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(3),
            mailbox_capacity: 1024,
        }
    }
}
