//! TLS termination for `tether serve --tls-cert PEM --tls-key PEM`.
//!
//! The server speaks TLS itself when configured with a [`ServerTls`]: the
//! WebSocket endpoint, `/healthz`, `/metrics` and the static page are then
//! all served over HTTPS. Without one it stays plain, for use behind a
//! proxy that terminates TLS.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::RelayError;

/// A certificate chain and its private key, ready to accept TLS. Cheap to
/// clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`RelayError::Tls`] when a file cannot be read, holds no certificate
    /// or key, or the key does not match the certificate.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<ServerTls, RelayError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| {
                RelayError::Tls(format!("cannot read {}: {error}", path.display()))
            })
        };
        ServerTls::from_pem(
            &read(cert_path)?,
            &read(key_path)?,
            &cert_path.display().to_string(),
            &key_path.display().to_string(),
        )
    }

    /// As [`from_pem_files`](Self::from_pem_files), from PEM text; `cert_origin`
    /// and `key_origin` name the texts in errors.
    ///
    /// # Errors
    /// As [`from_pem_files`](Self::from_pem_files).
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_origin: &str,
        key_origin: &str,
    ) -> Result<ServerTls, RelayError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| RelayError::Tls(format!("bad pem in {cert_origin}: {error}")))?;
        if chain.is_empty() {
            return Err(RelayError::Tls(format!("no certificate in {cert_origin}")));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| {
            RelayError::Tls(format!("no usable private key in {key_origin}: {error}"))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| RelayError::Tls(error.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| {
                RelayError::Tls(format!(
                    "{cert_origin} and {key_origin} do not fit together: {error}"
                ))
            })?;
        // HTTP/1.1 only: the WebSocket upgrade needs it, and browsers offer it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
