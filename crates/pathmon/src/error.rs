//! The error type of the path monitor.

use std::io;
use std::path::PathBuf;

/// Why the [`PathMonitor`](crate::PathMonitor) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathMonitorError {
    /// The monitor was started outside a tokio runtime.
    #[error("the path monitor needs a tokio runtime")]
    NoRuntime,
    /// The rtnetlink socket could not be opened or subscribed.
    #[error("cannot open the rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The network namespace to monitor could not be opened or entered.
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Namespace {
        /// The namespace path given in the config.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The thread that opens the socket inside a namespace could not run.
    #[error("cannot run the namespace thread: {0}")]
    Thread(#[source] io::Error),
    /// Reading the kernel state failed.
    #[error("cannot read the {what} from the kernel: {message}")]
    Dump {
        /// What was being read (`links`, `addresses`, `ipv4 routes`, ...).
        what: &'static str,
        /// The rtnetlink error.
        message: String,
    },
}
