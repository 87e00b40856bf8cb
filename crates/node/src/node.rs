//! [`Node`]: spawns the driver and hands out the ways in.

use std::sync::Arc;

use tether_recovery::{ConnectionState, Supervisor};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ActionError;
use crate::driver::{Driver, DriverParts, ShutdownReport};
use crate::executor::{LinkEvents, RecoveryExecutor};
use crate::{ActionReport, NetworkEventHandle, NodeConfig, NodeError, NodeRef};

/// How many action reports a slow subscriber may lag behind before it
/// misses some.
const REPORT_BUFFER: usize = 256;

/// A running tether node: one driver task feeding a Supervisor, running its
/// actions through an executor, and answering callers.
///
/// Dropping the `Node` shuts it down in the background (as
/// [`shutdown`](Self::shutdown) does, without waiting).
#[derive(Debug)]
pub struct Node {
    node_ref: NodeRef,
    state: watch::Receiver<ConnectionState>,
    reports: broadcast::Sender<ActionReport>,
    shutdown: CancellationToken,
    driver: Option<JoinHandle<ShutdownReport>>,
}

impl Node {
    /// Starts a node on the current tokio runtime, running its actions
    /// through `executor` and hearing what the link does on its own through
    /// `link`.
    ///
    /// Wiring is two-phase: first [`LinkReporter::channel`], whose reporter
    /// goes to the executor and whatever else watches the link as they are
    /// built, then this, with the channel's events. Reports made in between
    /// (or while the node starts) are not lost: they wait in the channel and
    /// the Supervisor hears them, in order, as soon as the node runs.
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] when the policy is invalid,
    /// [`NodeError::NoRuntime`] outside a tokio runtime. The link's reports
    /// then return `false`.
    ///
    /// [`LinkReporter::channel`]: crate::LinkReporter::channel
    pub fn spawn<E: RecoveryExecutor>(
        config: NodeConfig,
        executor: Arc<E>,
        link: LinkEvents,
    ) -> Result<Node, NodeError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NodeError::NoRuntime)?;
        let supervisor = Supervisor::new(config.policy.clone(), config.initial)?;
        let (tx, mailbox) = mpsc::channel(config.mailbox_capacity.max(1));
        let (state_tx, state) = watch::channel(supervisor.state());
        let (reports, _) = broadcast::channel(REPORT_BUFFER);
        let shutdown = CancellationToken::new();
        let node_ref = NodeRef::new(tx, config.result_timeout);
        let span = tracing::info_span!("node", id = %config.name);
        let driver = Driver::new(DriverParts {
            supervisor,
            executor,
            config,
            mailbox,
            link_events: link.into_receiver(),
            shutdown: shutdown.clone(),
            state: state_tx,
            reports: reports.clone(),
        });
        let driver = runtime.spawn(driver.run().instrument(span));
        Ok(Node { node_ref, state, reports, shutdown, driver: Some(driver) })
    }

    /// The platform's way in.
    pub fn handle(&self) -> NetworkEventHandle {
        NetworkEventHandle::new(self.node_ref.clone())
    }

    /// The actor-style address of this node.
    pub fn node_ref(&self) -> NodeRef {
        self.node_ref.clone()
    }

    /// The connection state, for UI ("Reconnecting…").
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Every action's start and end from now on.
    pub fn actions(&self) -> broadcast::Receiver<ActionReport> {
        self.reports.subscribe()
    }

    /// Shuts the node down: cancels the running action, runs the final
    /// cleanup (bounded by `NodeConfig::shutdown_timeout`), answers every
    /// waiting caller with [`NodeError::Shutdown`], and stops. Later calls
    /// through any handle fail at once with [`NodeError::Shutdown`].
    ///
    /// # Cancel safety
    ///
    /// Cancelling the wait does not stop the shutdown, which goes on in the
    /// background.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.shutdown.cancel();
        let Some(driver) = self.driver.take() else {
            return ShutdownReport { cleanup: Ok(()), callers_answered: 0 };
        };
        driver.await.unwrap_or_else(|err| ShutdownReport {
            cleanup: Err(ActionError::new(
                tether_recovery::FailureKind::Internal,
                format!("the node's driver failed: {err}"),
            )),
            callers_answered: 0,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
