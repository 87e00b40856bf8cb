//! [`TestSignalingServer`]: an embedded signaling server on loopback, for
//! tests and demos of live nodes without any infrastructure.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tether::live::testbed::LoopbackTestbed;
use tracing::info;

use crate::error::peer_id;
use crate::runtime::run;
use crate::{TetherError, TetherNodeBuilder};

/// A tether signaling server on 127.0.0.1 (an ephemeral port) that mints
/// tokens for its nodes. For tests and demos: nodes built from
/// `node_builder` talk to it over loopback and reach each other with
/// WebRTC on loopback only.
#[derive(Debug, uniffi::Object)]
pub struct TestSignalingServer {
    url: String,
    /// `None` once shut down.
    testbed: Mutex<Option<LoopbackTestbed>>,
}

/// Starts a [`TestSignalingServer`].
///
/// # Errors
///
/// [`TetherError::InvalidConfig`] when it cannot bind a loopback port;
/// [`TetherError::Internal`] when the runtime cannot start.
#[uniffi::export]
pub async fn start_test_signaling_server() -> Result<Arc<TestSignalingServer>, TetherError> {
    let testbed = run(async { Ok(LoopbackTestbed::start().await?) }).await?;
    let url = testbed.url();
    info!(name: "ffi.test_server.started", %url);
    Ok(Arc::new(TestSignalingServer { url, testbed: Mutex::new(Some(testbed)) }))
}

impl TestSignalingServer {
    fn testbed(&self) -> MutexGuard<'_, Option<LoopbackTestbed>> {
        // Nothing panics while holding this lock.
        self.testbed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[uniffi::export]
impl TestSignalingServer {
    /// `ws://127.0.0.1:PORT/ws`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A token for `peer`, valid for an hour.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidArgument`] for an unusable peer id;
    /// [`TetherError::ShutDown`] after shutdown.
    pub fn token(&self, peer: String) -> Result<String, TetherError> {
        let peer = peer_id(peer)?;
        let testbed = self.testbed();
        let testbed = testbed.as_ref().ok_or(TetherError::ShutDown)?;
        Ok(testbed.token(&peer))
    }

    /// A builder for a live node `peer` on this server: URL, token, the
    /// server's room (so peers find each other), loopback-only WebRTC and
    /// short signaling timeouts. Setters on it override these.
    ///
    /// # Errors
    ///
    /// As `token`.
    pub fn node_builder(&self, peer: String) -> Result<Arc<TetherNodeBuilder>, TetherError> {
        let peer = peer_id(peer)?;
        let testbed = self.testbed();
        let testbed = testbed.as_ref().ok_or(TetherError::ShutDown)?;
        Ok(TetherNodeBuilder::with_base(testbed.config(&peer)))
    }

    /// Stops the server: connected nodes lose signaling.
    ///
    /// # Errors
    ///
    /// [`TetherError::ShutDown`] when it was already stopped.
    pub async fn shutdown(&self) -> Result<(), TetherError> {
        let testbed = self.testbed().take().ok_or(TetherError::ShutDown)?;
        run(async move {
            testbed.shutdown().await;
            Ok(())
        })
        .await
    }
}
