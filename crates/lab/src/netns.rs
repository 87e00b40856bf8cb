//! Running async code inside a network namespace.
//!
//! A socket belongs to the network namespace of the thread that creates it.
//! [`spawn_in_netns`] starts a dedicated OS thread, moves it into the
//! namespace with `setns(2)`, and builds a tokio current-thread runtime on
//! it, so every socket the future creates lives there. Threads spawned from
//! that thread (tokio's blocking pool, libraries' own threads) inherit the
//! namespace; tasks handed to *another* runtime do not.

use std::fs::File;
use std::future::Future;
use std::io;
use std::thread;

use nix::sched::{CloneFlags, setns};
use tokio::sync::oneshot;

use crate::error::LabError;
use crate::topology::Netns;

/// A future running on its own thread inside a network namespace.
///
/// Dropping the task aborts it (the future is dropped on its thread and the
/// runtime shuts down), so nothing keeps running in a namespace that is
/// about to be torn down.
#[derive(Debug)]
pub struct NetnsTask<T> {
    netns: String,
    result: oneshot::Receiver<Result<T, LabError>>,
    abort: Option<oneshot::Sender<()>>,
}

impl<T> NetnsTask<T> {
    /// The namespace the task runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Asks the task to stop: its future is dropped at its next poll and
    /// [`join`](Self::join) returns [`LabError::Aborted`] (unless it had
    /// already finished).
    pub fn abort(&mut self) {
        if let Some(abort) = self.abort.take() {
            let _ = abort.send(());
        }
    }

    /// Waits for the future's output. When this returns, the task's runtime
    /// has shut down and every socket it owned is closed.
    ///
    /// # Errors
    ///
    /// [`LabError::Namespace`] or [`LabError::Thread`] when the thread could
    /// not enter the namespace or build its runtime,
    /// [`LabError::TaskPanicked`] when the future panicked,
    /// [`LabError::Aborted`] after [`abort`](Self::abort).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: `join` consumes the task, so cancelling it drops
    /// the task, which aborts it.
    pub async fn join(mut self) -> Result<T, LabError> {
        let netns = std::mem::take(&mut self.netns);
        match (&mut self.result).await {
            Ok(result) => result,
            Err(_) => Err(LabError::TaskPanicked { netns }),
        }
    }
}

impl<T> NetnsTask<T> {
    /// [`abort`](Self::abort)s the task and waits until its thread has
    /// dropped the future and shut its runtime down; `Ok` if it had
    /// finished first.
    ///
    /// # Errors
    ///
    /// As [`join`](Self::join); [`LabError::Aborted`] is the usual outcome.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: the task is aborted before the first await.
    pub async fn join_aborted(mut self) -> Result<T, LabError> {
        self.abort();
        self.join().await
    }
}

impl<T> Drop for NetnsTask<T> {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Runs `make()`'s future on a new OS thread inside `netns`, on a tokio
/// current-thread runtime (I/O and time enabled) built on that thread. The
/// future need not be `Send`.
///
/// # Errors
///
/// [`LabError::Namespace`] when `/run/netns/NAME` cannot be opened, and
/// [`LabError::Thread`] when the thread cannot be spawned. Errors entering
/// the namespace on the thread come from [`NetnsTask::join`].
pub fn spawn_in_netns<F, Fut>(netns: &Netns, make: F) -> Result<NetnsTask<Fut::Output>, LabError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let path = netns.path();
    let file =
        File::open(&path).map_err(|source| LabError::Namespace { path: path.clone(), source })?;
    let (result_tx, result_rx) = oneshot::channel();
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let name = netns.name().to_owned();
    let thread_name = format!("netns-{name}");
    let task_netns = name.clone();
    thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let result = run_on_this_thread(&file, path, task_netns, make, abort_rx);
            // The receiver is gone only when the task was dropped.
            let _ = result_tx.send(result);
        })
        .map_err(LabError::Thread)?;
    Ok(NetnsTask { netns: name, result: result_rx, abort: Some(abort_tx) })
}

fn run_on_this_thread<F, Fut>(
    file: &File,
    path: std::path::PathBuf,
    netns: String,
    make: F,
    abort: oneshot::Receiver<()>,
) -> Result<Fut::Output, LabError>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    setns(file, CloneFlags::CLONE_NEWNET)
        .map_err(|errno| LabError::Namespace { path, source: io::Error::from(errno) })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LabError::Thread)?;
    let output = runtime.block_on(async move {
        tokio::select! {
            output = make() => Some(output),
            // A dropped sender (the task was dropped) aborts too.
            _ = abort => None,
        }
    });
    // Shut the runtime down (and close its sockets) before reporting.
    drop(runtime);
    output.ok_or(LabError::Aborted { netns })
}

/// [`spawn_in_netns`] and [`NetnsTask::join`] in one call.
///
/// # Errors
///
/// As [`spawn_in_netns`] and [`NetnsTask::join`].
///
/// # Cancel safety
///
/// Not cancel safe: cancelling aborts the task.
pub async fn run_in_netns<F, Fut>(netns: &Netns, make: F) -> Result<Fut::Output, LabError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    spawn_in_netns(netns, make)?.join().await
}
