//! The node's typed mailbox and [`NodeRef`], the actor-style address of a
//! node. [`NetworkEventHandle`](crate::NetworkEventHandle) is the same
//! mailbox with the platform's method names.

use std::time::Duration;

use tether_recovery::NetworkEvent;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tracing::trace;

use crate::{EventError, Handled, NodeError};

/// Where a request's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Handled, EventError>>;

/// One message to the node's driver.
#[derive(Debug)]
pub(crate) enum Request {
    /// A platform or application event; `reply` is `None` for fire-and-forget.
    Event { event: NetworkEvent, reply: Option<Reply>, accepted_at: Instant },
}

/// The address of a node: cheap to clone, `Send + Sync`, usable from any
/// task (an application's own actors hold one). Every request reaches the
/// same Supervisor as the node's [`NetworkEventHandle`](crate::NetworkEventHandle).
#[derive(Debug, Clone)]
pub struct NodeRef {
    tx: mpsc::Sender<Request>,
    result_timeout: Duration,
}

impl NodeRef {
    pub(crate) fn new(tx: mpsc::Sender<Request>, result_timeout: Duration) -> Self {
        Self { tx, result_timeout }
    }

    /// Sends `event` and waits for what it led to: the result of the action
    /// it started or shared, or at once when it needed none.
    ///
    /// The whole call is bounded by the node's result timeout.
    ///
    /// # Errors
    ///
    /// What the event's work came to ([`EventError::ActionFailed`],
    /// [`EventError::Cancelled`], [`EventError::Superseded`],
    /// [`EventError::Parked`]), or [`EventError::Node`] when the node did
    /// not answer:
    /// - [`NodeError::ResultTimeout`]: accepted, but no result in time; the
    ///   work goes on.
    /// - [`NodeError::MailboxFull`]: not accepted within the timeout.
    /// - [`NodeError::Shutdown`]: the node is shut down; nothing accepted.
    ///
    /// # Cancel safety
    ///
    /// Cancelling while waiting for mailbox room sends nothing. Cancelling
    /// after the event was accepted does not withdraw it: the node still
    /// acts on it and only the answer is discarded; other callers are not
    /// affected.
    pub async fn call(&self, event: NetworkEvent) -> Result<Handled, EventError> {
        let accepted_at = Instant::now();
        let deadline = accepted_at + self.result_timeout;
        let (reply, answer) = oneshot::channel();
        let request = Request::Event { event, reply: Some(reply), accepted_at };
        match timeout_at(deadline, self.tx.send(request)).await {
            Err(_) => return Err(NodeError::MailboxFull.into()),
            Ok(Err(_)) => return Err(NodeError::Shutdown.into()),
            Ok(Ok(())) => trace!(name: "node.enqueue", event = event.name(), waits = true),
        }
        match timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            // The driver answers every waiter before it stops; a dropped
            // reply means it is gone.
            Ok(Err(_)) => Err(NodeError::Shutdown.into()),
            Err(_) => Err(NodeError::ResultTimeout(self.result_timeout).into()),
        }
    }

    /// Sends `event` without waiting for room or for a result.
    ///
    /// # Errors
    ///
    /// [`NodeError::MailboxFull`] or [`NodeError::Shutdown`]; either way
    /// nothing was accepted.
    pub fn tell(&self, event: NetworkEvent) -> Result<(), NodeError> {
        let request = Request::Event { event, reply: None, accepted_at: Instant::now() };
        self.tx.try_send(request).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => NodeError::MailboxFull,
            mpsc::error::TrySendError::Closed(_) => NodeError::Shutdown,
        })?;
        trace!(name: "node.enqueue", event = event.name(), waits = false);
        Ok(())
    }

    /// Sends `event`, waiting for mailbox room, and returns once it is
    /// accepted (without waiting for its result).
    ///
    /// # Errors
    ///
    /// [`NodeError::MailboxFull`] when no room came within the result
    /// timeout, [`NodeError::Shutdown`] when the node is shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelled before it returns, nothing was accepted.
    pub async fn submit(&self, event: NetworkEvent) -> Result<(), NodeError> {
        let accepted_at = Instant::now();
        let request = Request::Event { event, reply: None, accepted_at };
        match timeout_at(accepted_at + self.result_timeout, self.tx.send(request)).await {
            Err(_) => Err(NodeError::MailboxFull),
            Ok(Err(_)) => Err(NodeError::Shutdown),
            Ok(Ok(())) => {
                trace!(name: "node.enqueue", event = event.name(), waits = false);
                Ok(())
            }
        }
    }

    /// Whether the node has shut down.
    pub fn is_shut_down(&self) -> bool {
        self.tx.is_closed()
    }
}
