//! Which servers a `wss://` connection trusts, and the TLS handshake itself.
//!
//! A [`TlsTrust`] is decided once, when the client is configured: the
//! system's root certificates (read from the platform's store the first time a
//! `wss://` connection is made), extra certificate authorities for private
//! deployments and tests, or both. Bad PEM input is refused when it is added,
//! so a typo in a CA path surfaces at start-up, not at the first handshake.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::{debug, warn};

use crate::error::SignalError;

/// The certificate authorities a `wss://` connection trusts. Cheap to clone.
///
/// The default is [`TlsTrust::system`].
#[derive(Clone)]
pub struct TlsTrust {
    system_roots: bool,
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
    /// The rustls configuration, built on first use (reading the system store
    /// costs a few milliseconds) and shared by every clone made after that.
    built: Arc<OnceLock<Arc<rustls::ClientConfig>>>,
}

impl Default for TlsTrust {
    fn default() -> Self {
        TlsTrust::system()
    }
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTrust")
            .field("system_roots", &self.system_roots)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl TlsTrust {
    /// The operating system's root certificates (on Linux the OpenSSL store,
    /// honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    pub fn system() -> TlsTrust {
        TlsTrust { system_roots: true, extra_roots: Arc::default(), built: Arc::default() }
    }

    /// No certificate authority at all: only useful with
    /// [`with_ca_pem`](Self::with_ca_pem) and friends, for a deployment whose
    /// servers are signed by a private CA and nothing else.
    pub fn private_only() -> TlsTrust {
        TlsTrust { system_roots: false, extra_roots: Arc::default(), built: Arc::default() }
    }

    /// Also trusts every certificate in `pem` (one or more `CERTIFICATE`
    /// blocks; other blocks are ignored).
    ///
    /// # Errors
    /// [`SignalError::InvalidConfig`] when the text holds no certificate or a
    /// block cannot be decoded.
    pub fn with_ca_pem(self, pem: &[u8]) -> Result<TlsTrust, SignalError> {
        let certs = parse_certificates(pem, "certificate text")?;
        Ok(self.with_roots(certs))
    }

    /// Also trusts the certificates of a PEM file, or of every `*.pem` and
    /// `*.crt` file in a directory.
    ///
    /// # Errors
    /// [`SignalError::InvalidConfig`] when the path cannot be read, a file
    /// holds no certificate, or a directory holds no certificate file.
    pub fn with_ca_path(self, path: impl AsRef<Path>) -> Result<TlsTrust, SignalError> {
        let path = path.as_ref();
        let unreadable = |error: std::io::Error| {
            SignalError::InvalidConfig(format!("cannot read ca {}: {error}", path.display()))
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        let mut certs = Vec::new();
        if metadata.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(unreadable)?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.extension().is_some_and(|ext| ext == "pem" || ext == "crt"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(SignalError::InvalidConfig(format!(
                    "ca directory {} holds no .pem or .crt file",
                    path.display()
                )));
            }
            for file in files {
                let text = std::fs::read(&file).map_err(unreadable)?;
                certs.extend(parse_certificates(&text, &file.display().to_string())?);
            }
        } else {
            let text = std::fs::read(path).map_err(unreadable)?;
            certs = parse_certificates(&text, &path.display().to_string())?;
        }
        Ok(self.with_roots(certs))
    }

    fn with_roots(self, certs: Vec<CertificateDer<'static>>) -> TlsTrust {
        let mut extra_roots = self.extra_roots.as_ref().clone();
        extra_roots.extend(certs);
        TlsTrust {
            system_roots: self.system_roots,
            extra_roots: Arc::new(extra_roots),
            built: Arc::default(),
        }
    }

    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, SignalError> {
        if let Some(config) = self.built.get() {
            return Ok(config.clone());
        }
        let mut roots = RootCertStore::empty();
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                warn!(name: "signal.client.tls_system_roots_error", %error);
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            debug!(name: "signal.client.tls_system_roots", added, ignored);
        }
        for cert in self.extra_roots.iter() {
            roots.add(cert.clone()).map_err(|error| {
                SignalError::InvalidConfig(format!("unusable ca certificate: {error}"))
            })?;
        }
        if roots.is_empty() {
            return Err(SignalError::InvalidConfig(
                "no trusted certificate authority for wss:// (the system store is empty and no ca was given)"
                    .into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| SignalError::InvalidConfig(format!("tls: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let config = Arc::new(config);
        // Two connections racing here build equal configurations; either may win.
        Ok(self.built.get_or_init(|| config).clone())
    }

    /// Runs a client TLS handshake on `stream`, checking the server's
    /// certificate against this trust and the name `host` (a DNS name or an
    /// IP address). The signaling client does this for `wss://`; it is
    /// public for other HTTPS requests to the same server (e.g. fetching a
    /// token).
    ///
    /// # Errors
    /// [`SignalError::InvalidConfig`] when no CA is trusted at all,
    /// [`SignalError::InvalidUrl`] for a host that cannot be a TLS name, and
    /// [`SignalError::Tls`] when the handshake fails.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-open connection.
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, SignalError> {
        let addr = match stream.peer_addr() {
            Ok(addr) => addr.to_string(),
            Err(_) => host.to_owned(),
        };
        let config = self.client_config()?;
        let name = ServerName::try_from(host.to_owned()).map_err(|_| SignalError::InvalidUrl {
            url: host.to_owned(),
            reason: "host is not a valid tls server name",
        })?;
        TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|source| SignalError::Tls { addr, source })
    }
}

fn parse_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, SignalError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| SignalError::InvalidConfig(format!("bad pem in {what}: {error}")))?;
    if certs.is_empty() {
        return Err(SignalError::InvalidConfig(format!("no certificate in {what}")));
    }
    Ok(certs)
}
