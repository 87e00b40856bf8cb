//! What the commands set up in the process before they run: logging and
//! the tokio runtime.

use anyhow::Context;
use tokio::runtime::Runtime;

/// Logs to stderr with the `RUST_LOG` filter when it is set, else with
/// `default`; with no default, nothing is logged unless `RUST_LOG` asks.
pub(crate) fn init_logging(default: Option<&str>) {
    let filter = match (tracing_subscriber::EnvFilter::try_from_default_env(), default) {
        (Ok(filter), _) => filter,
        (Err(_), Some(default)) => tracing_subscriber::EnvFilter::new(default),
        (Err(_), None) => return,
    };
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The runtime of the commands that run nodes: two workers, one per core of
/// the machines tether is measured on.
pub(crate) fn node_runtime() -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}
