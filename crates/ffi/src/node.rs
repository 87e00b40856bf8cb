//! [`TetherNode`]: a running node as the foreign side sees it, whichever
//! backend runs its actions.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Mutex as AsyncMutex, RwLock, RwLockReadGuard, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::error::peer_id;
use crate::peer::statuses;
use crate::runtime::{run, runtime};
use crate::{
    ConnectionState, NetworkEventHandle, PeerRoute, PeerStateListener, PeerStatus, StateListener,
    StateSubscription, TetherError,
};

/// What runs a node's actions. One interface for the app, whichever backend
/// the builder chose.
#[derive(Debug)]
pub(crate) enum Backend {
    /// Real signaling + WebRTC peers + reliable messaging.
    Live(Box<tether::RtcNode>),
    /// Actions play a script (durations, failures); no server, no network.
    /// Simulated link losses are reported through `link`.
    Simulated { node: tether::Node, link: tether::LinkReporter },
}

impl Backend {
    async fn shutdown(self) -> ShutdownReport {
        let (node, unacknowledged) = match self {
            Self::Live(node) => {
                let report = node.shutdown().await;
                (report.node, report.messaging.unacknowledged)
            }
            Self::Simulated { node, .. } => (node.shutdown().await, 0),
        };
        ShutdownReport {
            cleanup_error: node.cleanup.err().map(|err| err.to_string()),
            callers_answered: u64::try_from(node.callers_answered).unwrap_or(u64::MAX),
            unacknowledged_messages: u64::try_from(unacknowledged).unwrap_or(u64::MAX),
        }
    }
}

/// How a node's shutdown went.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ShutdownReport {
    /// What the final cleanup could not release (or that it hit the
    /// shutdown bound); none when it released everything.
    pub cleanup_error: Option<String>,
    /// Callers that were still waiting and got [`TetherError::ShutDown`].
    pub callers_answered: u64,
    /// Messages accepted for sending whose acknowledgement had not arrived
    /// (they may still have been delivered). Always 0 for a simulated node.
    pub unacknowledged_messages: u64,
}

/// One message a peer sent to this node.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceivedMessage {
    /// The peer id of the sender.
    pub sender: String,
    /// What it sent.
    pub payload: Vec<u8>,
}

/// What every call shares, and what shutdown takes.
#[derive(Debug)]
struct Shared {
    /// `None` once shut down. Calls hold a read guard while they use the
    /// backend; shutdown takes the write lock.
    backend: RwLock<Option<Backend>>,
    /// Cancelled when shutdown begins: new calls fail at once and calls in
    /// flight give up their read guard.
    closing: CancellationToken,
}

impl Shared {
    /// The backend for a call, or [`TetherError::ShutDown`].
    async fn backend(&self) -> Result<RwLockReadGuard<'_, Option<Backend>>, TetherError> {
        if self.closing.is_cancelled() {
            return Err(TetherError::ShutDown);
        }
        let guard = self.backend.read().await;
        if guard.is_none() {
            return Err(TetherError::ShutDown);
        }
        Ok(guard)
    }
}

/// A call on the live node, borrowing it.
type LiveCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, TetherError>> + Send + 'a>>;

/// The live node behind `backend`, or why there is none.
fn live<'a>(backend: &'a Option<Backend>, what: &str) -> Result<&'a tether::RtcNode, TetherError> {
    match backend {
        Some(Backend::Live(node)) => Ok(node),
        Some(Backend::Simulated { .. }) => Err(TetherError::Unsupported(format!(
            "{what} needs a live node; this one is simulated"
        ))),
        None => Err(TetherError::ShutDown),
    }
}

/// A running tether node. Build one with `TetherNodeBuilder`; feed it
/// through its `handle`; follow it with `subscribe_state` (and its peers
/// with `subscribe_peer_states`); exchange
/// messages with `connect_peer`, `send`, `post` and `receive` (live nodes);
/// end it with `shutdown`. Usable from any thread.
///
/// A node that is dropped (garbage collected) without `shutdown` shuts
/// down in the background.
#[derive(Debug, uniffi::Object)]
pub struct TetherNode {
    name: String,
    handle: tether::NetworkEventHandle,
    state: watch::Receiver<tether::ConnectionState>,
    /// The live node's peer states; `None` for a simulated node.
    peer_states: Option<watch::Receiver<tether::PeerStates>>,
    shared: Arc<Shared>,
    /// The live node's incoming messages; `None` for a simulated node.
    inbox: AsyncMutex<Option<tether::Messages>>,
}

impl TetherNode {
    pub(crate) fn new(name: String, backend: Backend) -> Self {
        let (handle, state, peer_states, inbox) = match &backend {
            Backend::Live(node) => {
                (node.handle(), node.state(), Some(node.peer_states()), node.messages())
            }
            Backend::Simulated { node, .. } => (node.handle(), node.state(), None, None),
        };
        let shared = Arc::new(Shared {
            backend: RwLock::new(Some(backend)),
            closing: CancellationToken::new(),
        });
        Self { name, handle, state, peer_states, shared, inbox: AsyncMutex::new(inbox) }
    }

    /// Runs `op` on the live node, on the runtime; gives up with
    /// [`TetherError::ShutDown`] when shutdown begins.
    async fn on_live<T, F>(&self, what: &'static str, op: F) -> Result<T, TetherError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a tether::RtcNode) -> LiveCall<'a, T> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        run(async move {
            let guard = shared.backend().await?;
            let node = live(&guard, what)?;
            tokio::select! {
                biased;
                () = shared.closing.cancelled() => Err(TetherError::ShutDown),
                result = op(node) => result,
            }
        })
        .await
    }
}

#[uniffi::export]
impl TetherNode {
    /// The node's name (its peer id, or the name given to the builder).
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// A handle for the platform adapters. Handles stay valid after
    /// shutdown; their calls then fail at once with
    /// [`TetherError::ShutDown`].
    pub fn handle(&self) -> Arc<NetworkEventHandle> {
        Arc::new(NetworkEventHandle::new(self.handle.clone()))
    }

    /// The connection state now.
    pub fn state(&self) -> ConnectionState {
        (*self.state.borrow()).into()
    }

    /// Calls `listener` with the current state at once, then after every
    /// change, on a tether runtime thread (see `StateListener`), until the
    /// subscription is cancelled or the node shuts down.
    ///
    /// # Errors
    ///
    /// [`TetherError::ShutDown`] when the node is shut down.
    pub fn subscribe_state(
        &self,
        listener: Arc<dyn StateListener>,
    ) -> Result<Arc<StateSubscription>, TetherError> {
        if self.shared.closing.is_cancelled() {
            return Err(TetherError::ShutDown);
        }
        Ok(StateSubscription::start(self.state.clone(), listener, runtime()?))
    }

    /// Live nodes: connects to `peer` (or finds it connected) and keeps it
    /// connected through recoveries from now on. With a room and
    /// auto-connect (the default), peers of the room connect on their own.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidArgument`] for an invalid peer id;
    /// [`TetherError::PeerUnreachable`] when no connection came within the
    /// WebRTC connect timeout (the peer stays wanted: recovery retries);
    /// [`TetherError::Unsupported`] on a simulated node;
    /// [`TetherError::ShutDown`].
    pub async fn connect_peer(&self, peer: String) -> Result<(), TetherError> {
        let peer = peer_id(peer)?;
        self.on_live("connect_peer", move |node| {
            Box::pin(async move { node.connect_peer(&peer).await.map_err(TetherError::from) })
        })
        .await
    }

    /// Live nodes: stops keeping `peer` connected and closes its connection.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidArgument`] for an invalid peer id;
    /// [`TetherError::Unsupported`] on a simulated node;
    /// [`TetherError::ShutDown`].
    pub async fn disconnect_peer(&self, peer: String) -> Result<(), TetherError> {
        let peer = peer_id(peer)?;
        self.on_live("disconnect_peer", move |node| {
            Box::pin(async move {
                node.disconnect_peer(&peer).await;
                Ok(())
            })
        })
        .await
    }

    /// Live nodes: the peers with an open data channel now. Empty for a
    /// simulated node, and while shutting down.
    pub fn connected_peers(&self) -> Vec<String> {
        match self.shared.backend.try_read() {
            Ok(guard) => match guard.as_ref() {
                Some(Backend::Live(node)) => {
                    node.connected_peers().iter().map(ToString::to_string).collect()
                }
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        }
    }

    /// Live nodes: every peer the node has had a peer connection with and
    /// how it is connected now, sorted by peer id. Empty for a simulated
    /// node. After shutdown: the peers as they were last.
    pub fn peer_states(&self) -> Vec<PeerStatus> {
        self.peer_states.as_ref().map(|peers| statuses(&peers.borrow())).unwrap_or_default()
    }

    /// Live nodes: the ICE candidate pair the current peer connection to
    /// `peer` selected: direct (`host`, `srflx`, `prflx`) or through a TURN
    /// relay (`relay`). `None` while there is no peer connection or ICE has
    /// not selected a pair; a restart or a replacement may change it.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidArgument`] for an invalid peer id;
    /// [`TetherError::Unsupported`] on a simulated node;
    /// [`TetherError::ShutDown`].
    pub async fn peer_route(&self, peer: String) -> Result<Option<PeerRoute>, TetherError> {
        let peer = peer_id(peer)?;
        self.on_live("peer_route", move |node| {
            Box::pin(async move { Ok(node.peer_route(&peer).await.as_ref().map(PeerRoute::from)) })
        })
        .await
    }

    /// Live nodes: calls `listener` with every peer's state at once, then
    /// after every change ("bob connected", "bob disconnected"), on a
    /// tether runtime thread (see `PeerStateListener`), until the
    /// subscription is cancelled or the node shuts down.
    ///
    /// # Errors
    ///
    /// [`TetherError::Unsupported`] on a simulated node (it has no peers);
    /// [`TetherError::ShutDown`] when the node is shut down.
    pub fn subscribe_peer_states(
        &self,
        listener: Arc<dyn PeerStateListener>,
    ) -> Result<Arc<StateSubscription>, TetherError> {
        if self.shared.closing.is_cancelled() {
            return Err(TetherError::ShutDown);
        }
        let peers = self.peer_states.clone().ok_or_else(|| {
            TetherError::Unsupported(
                "subscribe_peer_states needs a live node; this one is simulated".into(),
            )
        })?;
        Ok(StateSubscription::start_peers(peers, listener, runtime()?))
    }

    /// Live nodes: sends `payload` to `peer`, reliably and in order, and
    /// returns once the peer acknowledged it (bounded by the send deadline,
    /// 10 s by default). During recovery the message waits in a bounded
    /// buffer; across ICE restarts and reconnects it is delivered exactly
    /// once.
    ///
    /// # Errors
    ///
    /// Not accepted: [`TetherError::InvalidArgument`] (peer id, size),
    /// [`TetherError::ConnectionsClosed`], [`TetherError::SendBufferFull`],
    /// [`TetherError::ShutDown`]. Accepted: [`TetherError::NotDelivered`]
    /// (withdrawn unsent), [`TetherError::Unconfirmed`] (sent, still queued
    /// for replay).
    pub async fn send(&self, peer: String, payload: Vec<u8>) -> Result<(), TetherError> {
        let peer = peer_id(peer)?;
        self.on_live("send", move |node| {
            Box::pin(async move { node.send(&peer, payload).await.map_err(TetherError::from) })
        })
        .await
    }

    /// Live nodes: queues `payload` for `peer`, reliably and in order, and
    /// returns its message id once it is accepted (without waiting for the
    /// peer).
    ///
    /// # Errors
    ///
    /// The "not accepted" errors of `send`.
    pub async fn post(&self, peer: String, payload: Vec<u8>) -> Result<u64, TetherError> {
        let peer = peer_id(peer)?;
        self.on_live("post", move |node| {
            Box::pin(async move {
                node.post(&peer, payload).await.map(|id| id.0).map_err(TetherError::from)
            })
        })
        .await
    }

    /// Live nodes: the next message a peer sent, in order per peer; waits
    /// for one. One caller at a time receives; concurrent calls queue.
    ///
    /// Cancelling the wait (a cancelled task or coroutine) takes no message.
    ///
    /// # Errors
    ///
    /// [`TetherError::ShutDown`] once the node is shut down and every
    /// message received before was taken; [`TetherError::Unsupported`] on
    /// a simulated node.
    pub async fn receive(&self) -> Result<ReceivedMessage, TetherError> {
        // Polled by the caller's executor, not spawned: `recv` is cancel
        // safe, so a cancelled receive leaves the message for the next one.
        let mut inbox = self.inbox.lock().await;
        let messages = inbox.as_mut().ok_or_else(|| self.no_inbox("receive"))?;
        match messages.recv().await {
            Some(message) => Ok(message.into()),
            None => Err(TetherError::ShutDown),
        }
    }

    /// Live nodes: the next message if one is waiting, else none (also
    /// while a `receive` is waiting).
    ///
    /// # Errors
    ///
    /// As `receive`, without waiting.
    pub fn try_receive(&self) -> Result<Option<ReceivedMessage>, TetherError> {
        let Ok(mut inbox) = self.inbox.try_lock() else {
            return Ok(None);
        };
        let messages = inbox.as_mut().ok_or_else(|| self.no_inbox("try_receive"))?;
        match messages.try_recv() {
            Some(message) => Ok(Some(message.into())),
            None if self.shared.closing.is_cancelled() => Err(TetherError::ShutDown),
            None => Ok(None),
        }
    }

    /// Live nodes: replaces the signaling token for every later
    /// registration. Renew before the token expires and the node carries on
    /// across the server's close unnoticed; renewed after the server refused
    /// the old one (state `Parked(AuthRejected)`), the node restores at once.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidArgument`] for an empty token;
    /// [`TetherError::Unsupported`] on a simulated node;
    /// [`TetherError::ShutDown`] after shutdown.
    pub fn renew_token(&self, token: String) -> Result<(), TetherError> {
        if token.is_empty() {
            return Err(TetherError::invalid("token", "must not be empty"));
        }
        let guard = self.shared.backend.try_read().map_err(|_| TetherError::ShutDown)?;
        live(&guard, "renew_token")?.renew_token(token).map_err(TetherError::from)
    }

    /// Breaks the signaling link the way a dead network does, without
    /// telling the node (it has to notice): a simulated node reports a
    /// spontaneous loss, a live node drops its socket without a close
    /// frame. For demos and tests. Returns whether there was a link to
    /// break.
    ///
    /// # Errors
    ///
    /// [`TetherError::ShutDown`] after shutdown.
    pub fn simulate_signaling_loss(&self) -> Result<bool, TetherError> {
        let guard = self.shared.backend.try_read().map_err(|_| TetherError::ShutDown)?;
        match guard.as_ref() {
            Some(Backend::Live(node)) => Ok(node.faults().sever_signaling()),
            Some(Backend::Simulated { link, .. }) => {
                if link.signaling_lost() {
                    Ok(true)
                } else {
                    Err(TetherError::ShutDown)
                }
            }
            None => Err(TetherError::ShutDown),
        }
    }

    /// Tears the peer connection to `peer` down the way the far end or a
    /// middlebox would, so the node restores it. A simulated node has no
    /// real peers and reports a lost peer connection for any valid `peer`.
    /// For demos and tests.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidArgument`] for an invalid peer id;
    /// [`TetherError::PeerUnreachable`] when the live close failed;
    /// [`TetherError::ShutDown`] after shutdown.
    pub async fn simulate_peer_loss(&self, peer: String) -> Result<(), TetherError> {
        let peer = peer_id(peer)?;
        let shared = Arc::clone(&self.shared);
        run(async move {
            let guard = shared.backend().await?;
            match guard.as_ref() {
                Some(Backend::Live(node)) => {
                    let faults = node.faults();
                    tokio::select! {
                        biased;
                        () = shared.closing.cancelled() => Err(TetherError::ShutDown),
                        closed = faults.drop_peer_connection(&peer) => closed.map_err(TetherError::from),
                    }
                }
                Some(Backend::Simulated { link, .. }) => {
                    if link.peer_lost() {
                        Ok(())
                    } else {
                        Err(TetherError::ShutDown)
                    }
                }
                None => Err(TetherError::ShutDown),
            }
        })
        .await
    }

    /// Whether `shutdown` was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.closing.is_cancelled()
    }

    /// Shuts the node down: calls in flight fail with
    /// [`TetherError::ShutDown`], the running action is cancelled, the
    /// final cleanup runs (bounded by the shutdown timeout: signaling
    /// first, then the peer connections), every waiting caller is answered,
    /// state subscriptions end after the last state, and `receive` ends
    /// once the messages already received are taken. Later calls through
    /// any handle fail at once with [`TetherError::ShutDown`].
    ///
    /// Cancelling the wait does not stop the shutdown.
    ///
    /// # Errors
    ///
    /// [`TetherError::ShutDown`] when shutdown was already called.
    pub async fn shutdown(&self) -> Result<ShutdownReport, TetherError> {
        if self.shared.closing.is_cancelled() {
            return Err(TetherError::ShutDown);
        }
        self.shared.closing.cancel();
        let shared = Arc::clone(&self.shared);
        let name = self.name.clone();
        run(async move {
            // Calls in flight saw `closing` and release their read guards.
            let backend = shared.backend.write().await.take().ok_or(TetherError::ShutDown)?;
            let report = backend.shutdown().await;
            info!(name: "ffi.node.shutdown", node = %name, callers = report.callers_answered);
            Ok(report)
        })
        .await
    }
}

impl TetherNode {
    fn no_inbox(&self, what: &str) -> TetherError {
        match self.shared.backend.try_read() {
            Ok(guard) if matches!(guard.as_ref(), Some(Backend::Simulated { .. })) => {
                TetherError::Unsupported(format!("{what} needs a live node; this one is simulated"))
            }
            _ => TetherError::ShutDown,
        }
    }
}

impl Drop for TetherNode {
    /// A node released without `shutdown` (garbage collected) shuts down
    /// in the background. Its parts are dropped inside the runtime so that
    /// they can start their own cleanup tasks; foreign threads have no
    /// tokio context.
    fn drop(&mut self) {
        self.shared.closing.cancel();
        let Some(shared) = Arc::get_mut(&mut self.shared) else {
            return; // a call in flight holds it, on the runtime, and drops it there
        };
        let backend = shared.backend.get_mut().take();
        if let (Some(backend), Ok(runtime)) = (backend, runtime()) {
            let _runtime = runtime.enter();
            drop(backend);
        }
    }
}

impl From<tether::Message> for ReceivedMessage {
    fn from(message: tether::Message) -> Self {
        Self { sender: message.from.to_string(), payload: message.payload.to_vec() }
    }
}
