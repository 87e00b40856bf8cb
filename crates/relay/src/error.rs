//! The relay server's error type.

use std::net::SocketAddr;

/// Every failure of setting up or running the relay server (and of its
/// token configuration). Client failures are tether-signal's `SignalError`;
/// nothing here is ever seen by a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A configuration value is unusable (no authentication configured,
    /// inconsistent limits, a secret that is too short).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The token file could not be read, or a line of it is malformed.
    #[error("token file {path:?}: {reason}")]
    TokenFile {
        /// The file's path (or the origin given for its text).
        path: String,
        /// What went wrong, with the line number when there is one.
        reason: String,
    },
    /// The TLS certificate or key is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// The server could not listen on the requested address.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Cluster mode: the broker could not be reached or set up.
    #[error("cannot join the cluster")]
    Cluster(#[from] crate::cluster::ClusterError),
}
