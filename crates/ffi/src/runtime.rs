//! The tokio runtime every node and every async call of this crate runs on.
//!
//! Foreign callers have no tokio runtime (Swift has its own executor,
//! Kotlin coroutines, Python asyncio). This crate owns one multi-thread
//! runtime, created on first use and kept for the life of the process.
//! Every async method spawns its work onto it and the foreign future only
//! awaits the task's `JoinHandle`, which needs no runtime context: the
//! foreign executor never runs tether code, and cancelling a foreign
//! future never cancels work the node already accepted.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::TetherError;

/// Worker threads: enough to keep a node, its peers and the listeners
/// moving on a phone, not one per core of a server.
const MAX_WORKERS: usize = 4;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The shared runtime, started on first use.
///
/// # Errors
///
/// [`TetherError::Internal`] when the runtime could not start (the OS
/// refused threads); every later call reports the same failure.
pub(crate) fn runtime() -> Result<&'static Runtime, TetherError> {
    RUNTIME
        .get_or_init(|| {
            let workers =
                std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, MAX_WORKERS));
            Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("tether-rt")
                .enable_all()
                .build()
                .map_err(|err| format!("cannot start the tokio runtime: {err}"))
        })
        .as_ref()
        .map_err(|err| TetherError::Internal(err.clone()))
}

/// Runs `work` on the shared runtime and waits for it from any executor.
///
/// # Errors
///
/// `work`'s own error, or [`TetherError::Internal`] when the runtime
/// cannot start or the task panicked (a panic never crosses the FFI).
///
/// # Cancel safety
///
/// Dropping the returned future detaches the task: the work goes on and
/// only its answer is discarded.
pub(crate) async fn run<T, F>(work: F) -> Result<T, TetherError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, TetherError>> + Send + 'static,
{
    let task = runtime()?.spawn(work);
    task.await.map_err(|err| TetherError::Internal(format!("a tether task failed: {err}")))?
}
