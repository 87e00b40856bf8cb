//! [`NetworkEventHandle`]: the platform adapter's way into a node.

use crate::event::{
    AppLifecycleState, CleanupReason, NetworkEvent, NetworkSnapshot, ReconnectReason,
};
use crate::result::flatten;
use crate::runtime::run;
use crate::{NetworkEventResult, TetherError};

/// What platform adapters call (Swift `NWPathMonitor`, Kotlin
/// `NetworkCallback`, lifecycle observers). Any number of handles to one
/// node may be used from any thread.
///
/// The four event methods return when the action the event led to (or
/// that subsumed it) has finished, bounded by the node's result timeout;
/// stale and duplicate events return at once with no action. Arguments are
/// checked first: an invalid one fails with
/// [`TetherError::InvalidArgument`] and nothing is sent.
///
/// Once accepted, an event is acted on even if the caller stops waiting
/// (a cancelled Swift `Task`, Kotlin coroutine or Python task); only the
/// answer is lost. Two calls started concurrently reach the node in no
/// particular order: an adapter that needs its events in order sends them
/// from one task, one after another, with `submit`.
///
/// # Errors
///
/// [`TetherError::ResultTimeout`] (accepted, the work goes on),
/// [`TetherError::MailboxFull`], [`TetherError::ShutDown`] (at once
/// once the node has shut down), [`TetherError::InvalidArgument`].
#[derive(Debug, uniffi::Object)]
pub struct NetworkEventHandle {
    inner: tether::NetworkEventHandle,
}

impl NetworkEventHandle {
    pub(crate) fn new(inner: tether::NetworkEventHandle) -> Self {
        Self { inner }
    }

    /// Sends `event` (as the handle's methods do, through the node's
    /// mailbox) on the bindings' runtime, and flattens the node's typed
    /// answer into the record foreign code gets.
    async fn call(&self, event: tether::NetworkEvent) -> Result<NetworkEventResult, TetherError> {
        let node = self.inner.node_ref().clone();
        run(async move {
            let started = tokio::time::Instant::now();
            flatten(event, node.call(event).await, started)
        })
        .await
    }
}

#[uniffi::export]
impl NetworkEventHandle {
    /// The path monitor emitted `snapshot`.
    pub async fn network_path_changed(
        &self,
        snapshot: NetworkSnapshot,
    ) -> Result<NetworkEventResult, TetherError> {
        let snapshot = snapshot.try_into()?;
        let event = tether::NetworkEvent::NetworkPathChanged { snapshot };
        self.call(event).await
    }

    /// The app moved to the background or the foreground.
    pub async fn app_lifecycle_changed(
        &self,
        state: AppLifecycleState,
    ) -> Result<NetworkEventResult, TetherError> {
        let state = state.try_into()?;
        let event = tether::NetworkEvent::AppLifecycleChanged { state };
        self.call(event).await
    }

    /// Tear every connection down.
    pub async fn cleanup_connections(
        &self,
        reason: CleanupReason,
    ) -> Result<NetworkEventResult, TetherError> {
        let reason = reason.into();
        let event = tether::NetworkEvent::CleanupConnections { reason };
        self.call(event).await
    }

    /// Rebuild every connection.
    pub async fn force_reconnect(
        &self,
        reason: ReconnectReason,
    ) -> Result<NetworkEventResult, TetherError> {
        let reason = reason.into();
        let event = tether::NetworkEvent::ForceReconnect { reason };
        self.call(event).await
    }

    /// Hands `event` over and returns as soon as the node accepted it,
    /// without waiting for its result. Events submitted one after another
    /// (each awaited before the next) reach the node in that order.
    pub async fn submit(&self, event: NetworkEvent) -> Result<(), TetherError> {
        let event = event.try_into()?;
        let inner = self.inner.clone();
        run(async move { Ok(inner.submit(event).await?) }).await
    }

    /// Whether the node behind this handle has shut down; every call then
    /// fails at once with [`TetherError::ShutDown`].
    pub fn is_shut_down(&self) -> bool {
        self.inner.node_ref().is_shut_down()
    }
}
