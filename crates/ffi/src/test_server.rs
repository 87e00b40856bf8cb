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
    /// The throw-away CA of a `wss://` server, PEM; `None` for `ws://`.
    ca_pem: Option<String>,
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
    Ok(Arc::new(TestSignalingServer { url, ca_pem: None, testbed: Mutex::new(Some(testbed)) }))
}

/// Starts a [`TestSignalingServer`] that speaks `wss://` only, with a
/// certificate for `127.0.0.1` and `localhost` signed by a certificate
/// authority made for this server alone (`ca_pem`). Its node builders trust
/// only the system's roots: a node connects once it is given
/// `tls_ca_pem(server.ca_pem())`, and fails its TLS handshake without.
///
/// # Errors
///
/// As [`start_test_signaling_server`], and [`TetherError::Internal`] when
/// the certificates cannot be made.
#[uniffi::export]
pub async fn start_test_signaling_server_tls() -> Result<Arc<TestSignalingServer>, TetherError> {
    let (ca_pem, tls) = throwaway_tls()?;
    let testbed = run(async move {
        Ok(LoopbackTestbed::start_with(move |config| config.tls = Some(tls)).await?)
    })
    .await?;
    let url = testbed.url();
    info!(name: "ffi.test_server.started", %url);
    Ok(Arc::new(TestSignalingServer {
        url,
        ca_pem: Some(ca_pem),
        testbed: Mutex::new(Some(testbed)),
    }))
}

/// A new certificate authority (its PEM) and a server TLS configuration
/// with a certificate it signed for `127.0.0.1` and `localhost`.
fn throwaway_tls() -> Result<(String, tether_relay::ServerTls), TetherError> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let failed = |err: &dyn std::fmt::Display| {
        TetherError::Internal(format!("test server certificate: {err}"))
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tether test signaling server ca");
    let ca_key = KeyPair::generate().map_err(|e| failed(&e))?;
    let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(|e| failed(&e))?;
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let server_key = KeyPair::generate().map_err(|e| failed(&e))?;
    let server = CertificateParams::new(names)
        .and_then(|params| params.signed_by(&server_key, &issuer))
        .map_err(|e| failed(&e))?;
    let tls = tether_relay::ServerTls::from_pem(
        server.pem().as_bytes(),
        server_key.serialize_pem().as_bytes(),
        "test server certificate",
        "test server key",
    )
    .map_err(|e| failed(&e))?;
    Ok((issuer.pem(), tls))
}

impl TestSignalingServer {
    fn testbed(&self) -> MutexGuard<'_, Option<LoopbackTestbed>> {
        // Nothing panics while holding this lock.
        self.testbed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[uniffi::export]
impl TestSignalingServer {
    /// `ws://127.0.0.1:PORT/ws`, or `wss://…` for a TLS server.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The PEM certificate of the authority that signed a TLS server's
    /// certificate (what a node must trust: `tls_ca_pem`); `None` for a
    /// `ws://` server.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
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
    /// short signaling timeouts. Setters on it override these. For a TLS
    /// server it does not trust the server's CA: add `tls_ca_pem`.
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
