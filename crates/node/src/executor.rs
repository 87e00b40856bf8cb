//! The executor contract: how a node runs the actions its Supervisor
//! decides. Executors never decide; they do one action when told and report
//! how it went. What the link does on its own reaches the Supervisor through
//! a [`LinkReporter`], made before the node with [`LinkReporter::channel`]
//! and handed to whatever watches the link.

use std::future::Future;

use tether_recovery::{ActionError, ActionId, ActionKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What an action is, handed to the executor with it.
#[derive(Debug, Clone)]
pub struct ActionContext {
    /// The action's id (for logs and correlation).
    pub id: ActionId,
    /// What to do.
    pub kind: ActionKind,
    /// 1 for a first try, k for the k-th consecutive try.
    pub attempt: u32,
    /// Cancelled when the Supervisor cancels the action. The node also drops
    /// the action's future at that moment; the token is for work the
    /// executor spawned elsewhere and must stop too.
    pub cancel: CancellationToken,
}

/// The result of one action.
pub type ActionResult = Result<(), ActionError>;

/// Runs recovery actions against real (or scripted) connections.
///
/// The node calls exactly one method at a time and awaits it; a cancelled
/// action's future is dropped and its [`ActionContext::cancel`] token
/// cancelled. Every method must be bounded in time by the executor itself
/// (a hung step is a `Timeout` failure, not a hang).
///
/// Executors only run actions. Whatever watches the link (the executor
/// itself or tasks beside it) reports what it does on its own through a
/// [`LinkReporter`] it was given when it was built.
pub trait RecoveryExecutor: Send + Sync + 'static {
    /// Ping the live signaling link.
    fn probe(&self, ctx: ActionContext) -> impl Future<Output = ActionResult> + Send;

    /// Make signaling healthy, then ICE-restart every peer that was
    /// connected.
    fn restore(&self, ctx: ActionContext) -> impl Future<Output = ActionResult> + Send;

    /// Cleanup then Restore, with new peer connections where needed.
    fn reconnect(&self, ctx: ActionContext) -> impl Future<Output = ActionResult> + Send;

    /// The path is confirmed offline: stop ICE restarts, close signaling,
    /// keep peer state for a later Restore.
    fn disconnect(&self, ctx: ActionContext) -> impl Future<Output = ActionResult> + Send;

    /// Tear everything down; every step runs even if one fails; residuals
    /// are reported as the error.
    fn cleanup(&self, ctx: ActionContext) -> impl Future<Output = ActionResult> + Send;
}

/// Something the link did on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// Signaling died (server closed it, ping timeout).
    SignalingLost,
    /// Signaling came up without an action asking.
    SignalingConnected,
    /// The app has new credentials.
    CredentialsRenewed,
    /// A peer connection that was up died on its own.
    PeerLost,
}

/// Reports [`LinkEvent`]s to a node's Supervisor. Cheap to clone.
///
/// Made with [`channel`](Self::channel) before the node, so that it can be
/// handed to everything that watches the link when that is built. Reports
/// never block and are never dropped: those made before the node runs wait
/// in the channel and reach the Supervisor first thing (the channel is
/// unbounded: link events are rare and each carries no data).
#[derive(Debug, Clone)]
pub struct LinkReporter {
    tx: mpsc::UnboundedSender<LinkEvent>,
}

/// The receiving end of a [`LinkReporter::channel`], for
/// [`Node::spawn`](crate::Node::spawn).
#[derive(Debug)]
pub struct LinkEvents {
    rx: mpsc::UnboundedReceiver<LinkEvent>,
}

impl LinkEvents {
    pub(crate) fn into_receiver(self) -> mpsc::UnboundedReceiver<LinkEvent> {
        self.rx
    }
}

impl LinkReporter {
    /// A new link channel: the reporter, for whatever watches the link, and
    /// the events, for the node that is to hear them. Reports made before
    /// the node is spawned are kept for it; once the node has stopped (or
    /// if it never started), reports return `false`.
    pub fn channel() -> (LinkReporter, LinkEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LinkReporter { tx }, LinkEvents { rx })
    }

    /// Reports `event`. Returns `false` when the node has shut down (or its
    /// [`LinkEvents`] were dropped without a node).
    pub fn report(&self, event: LinkEvent) -> bool {
        self.tx.send(event).is_ok()
    }

    /// Signaling died on its own.
    pub fn signaling_lost(&self) -> bool {
        self.report(LinkEvent::SignalingLost)
    }

    /// Signaling came up on its own.
    pub fn signaling_connected(&self) -> bool {
        self.report(LinkEvent::SignalingConnected)
    }

    /// A peer connection that was up died on its own.
    pub fn peer_lost(&self) -> bool {
        self.report(LinkEvent::PeerLost)
    }

    /// The app handed over new credentials.
    pub fn credentials_renewed(&self) -> bool {
        self.report(LinkEvent::CredentialsRenewed)
    }
}
