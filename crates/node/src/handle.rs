//! [`NetworkEventHandle`]: the platform's (and FFI's) way into a node.

use tether_recovery::{
    AppLifecycleState, CleanupReason, NetworkEvent, NetworkSnapshot, ReconnectReason,
};

use crate::{EventError, Handled, NodeError, NodeRef};

/// What platform adapters (Swift `NWPathMonitor`, Kotlin
/// `NetworkCallback`, the Linux path monitor, FFI) call. Cheap to clone,
/// `Send + Sync`.
///
/// Each method returns when the action the event led to (or that subsumed
/// it) has finished, bounded by the node's result timeout: [`Handled`]
/// when it succeeded or none was needed (stale and duplicate events return
/// at once), an [`EventError`] saying why not otherwise. Errors are those
/// of [`NodeRef::call`].
#[derive(Debug, Clone)]
pub struct NetworkEventHandle {
    node: NodeRef,
}

impl NetworkEventHandle {
    pub(crate) fn new(node: NodeRef) -> Self {
        Self { node }
    }

    /// The path monitor emitted `snapshot`.
    ///
    /// # Cancel safety
    ///
    /// As [`NodeRef::call`]: once accepted, the event is acted on even if
    /// the caller stops waiting.
    pub async fn network_path_changed(
        &self,
        snapshot: NetworkSnapshot,
    ) -> Result<Handled, EventError> {
        self.node.call(NetworkEvent::NetworkPathChanged { snapshot }).await
    }

    /// The app moved to the background or the foreground.
    ///
    /// # Cancel safety
    ///
    /// As [`NodeRef::call`].
    pub async fn app_lifecycle_changed(
        &self,
        state: AppLifecycleState,
    ) -> Result<Handled, EventError> {
        self.node.call(NetworkEvent::AppLifecycleChanged { state }).await
    }

    /// Tear every connection down.
    ///
    /// # Cancel safety
    ///
    /// As [`NodeRef::call`].
    pub async fn cleanup_connections(&self, reason: CleanupReason) -> Result<Handled, EventError> {
        self.node.call(NetworkEvent::CleanupConnections { reason }).await
    }

    /// Rebuild every connection.
    ///
    /// # Cancel safety
    ///
    /// As [`NodeRef::call`].
    pub async fn force_reconnect(&self, reason: ReconnectReason) -> Result<Handled, EventError> {
        self.node.call(NetworkEvent::ForceReconnect { reason }).await
    }

    /// Hands `event` over and returns once it is accepted.
    ///
    /// # Cancel safety
    ///
    /// As [`NodeRef::submit`]: cancel safe.
    pub async fn submit(&self, event: NetworkEvent) -> Result<(), NodeError> {
        self.node.submit(event).await
    }

    /// The actor-style address of the same node.
    pub fn node_ref(&self) -> &NodeRef {
        &self.node
    }
}
