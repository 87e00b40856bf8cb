//! The monitor: one tokio task that owns the rtnetlink subscription, keeps
//! the [`NetView`], and emits a snapshot whenever the derived [`Path`]
//! changes materially.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rtnetlink::Handle;
use tether_recovery::NetworkSnapshot;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::classify::Classifier;
use crate::error::PathMonitorError;
use crate::netlink::{self, Notification, Notifications};
use crate::path::{self, Path};
use crate::view::{Change, NetView};

/// The `main` routing table.
pub const MAIN_TABLE: u32 = 254;

/// How many [`ObservedChange`]s a slow [`PathMonitor::changes`] subscriber
/// may fall behind before it sees `Lagged`.
const CHANGE_CAPACITY: usize = 256;

/// Notifications handled in one go before the task yields.
const DRAIN_BATCH: usize = 256;

/// After a failed resync, the next try.
const RESYNC_RETRY: Duration = Duration::from_millis(100);

/// How a [`PathMonitor`] runs.
#[derive(Debug, Clone)]
pub struct PathMonitorConfig {
    /// Maps interfaces to transports.
    pub classifier: Classifier,
    /// The routing table whose default routes decide the path
    /// ([`MAIN_TABLE`] by default). Policy routing (Android-style tables
    /// per network) is not interpreted.
    pub route_table: u32,
    /// The sequence number of the initial snapshot; later ones count up
    /// from it. A restarted monitor feeding the same Supervisor must start
    /// above the last sequence it emitted, or its snapshots are stale.
    pub first_sequence: u64,
    /// Monitor this network namespace (`/run/netns/NAME`,
    /// `/proc/PID/ns/net`) instead of the caller's. Needs `CAP_SYS_ADMIN`.
    pub netns: Option<PathBuf>,
}

impl Default for PathMonitorConfig {
    fn default() -> Self {
        Self {
            classifier: Classifier::default(),
            route_table: MAIN_TABLE,
            first_sequence: 1,
            netns: None,
        }
    }
}

impl PathMonitorConfig {
    /// Sets [`classifier`](Self::classifier).
    #[must_use]
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Sets [`route_table`](Self::route_table).
    #[must_use]
    pub fn route_table(mut self, table: u32) -> Self {
        self.route_table = table;
        self
    }

    /// Sets [`first_sequence`](Self::first_sequence).
    #[must_use]
    pub fn first_sequence(mut self, sequence: u64) -> Self {
        self.first_sequence = sequence;
        self
    }

    /// Sets [`netns`](Self::netns).
    #[must_use]
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }
}

/// A kernel change as the monitor received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedChange {
    /// When the monitor read the notification from its socket.
    pub at: Instant,
    /// What changed.
    pub change: Change,
}

/// The snapshots a [`PathMonitor`] emits, in order: the initial one, then
/// one per material change. Ends when the monitor stops.
///
/// Unbounded: snapshots are emitted only on material changes, so the queue
/// grows only as fast as the network changes; read it.
#[derive(Debug)]
pub struct SnapshotReceiver {
    rx: mpsc::UnboundedReceiver<NetworkSnapshot>,
}

impl SnapshotReceiver {
    /// The next snapshot, or `None` once the monitor has stopped and every
    /// snapshot was read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no
    /// snapshot is lost; the next call returns it.
    pub async fn recv(&mut self) -> Option<NetworkSnapshot> {
        self.rx.recv().await
    }

    /// The next snapshot if one is queued.
    pub fn try_recv(&mut self) -> Result<NetworkSnapshot, TryRecvError> {
        self.rx.try_recv()
    }
}

impl futures_util::Stream for SnapshotReceiver {
    type Item = NetworkSnapshot;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A Linux path monitor: the desktop and server counterpart of Apple's
/// `NWPathMonitor`.
///
/// It subscribes to rtnetlink link, address and route notifications, keeps
/// a view of the interfaces that are up, their addresses and the default
/// routes, and emits a [`NetworkSnapshot`] with a strictly increasing
/// `sequence` at start and whenever the derived path changes in
/// availability, transports or the expensive flag (see [`crate::path`] for
/// the mapping). Nothing is debounced: the Supervisor coalesces.
///
/// The monitor runs as a task on the runtime that started it and stops when
/// this value is dropped (or [`stop`](Self::stop) is awaited).
#[derive(Debug)]
pub struct PathMonitor {
    current: watch::Receiver<NetworkSnapshot>,
    changes: broadcast::Sender<ObservedChange>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl PathMonitor {
    /// Subscribes, reads the current kernel state, emits the initial
    /// snapshot and starts monitoring. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`PathMonitorError`] when there is no runtime, the socket cannot be
    /// opened, the namespace cannot be entered or the first dump fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling releases the socket and leaves no task
    /// running.
    pub async fn start(
        config: PathMonitorConfig,
    ) -> Result<(PathMonitor, SnapshotReceiver), PathMonitorError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PathMonitorError::NoRuntime);
        }
        let netlink::Subscription { connection, handle, notifications } =
            netlink::subscribe(config.netns.as_deref()).await?;
        // Aborted when this future is dropped half-way, or by the loop.
        let connection = AbortOnDrop(tokio::spawn(connection));
        let view = netlink::dump(&handle).await?;
        let path = path::derive(&view, &config.classifier, config.route_table);
        let initial = path.snapshot(config.first_sequence);
        log_snapshot(&initial, &path, true);
        let (snapshot_tx, snapshot_rx) = mpsc::unbounded_channel();
        let _ = snapshot_tx.send(initial);
        let (current_tx, current_rx) = watch::channel(initial);
        let (changes_tx, _) = broadcast::channel(CHANGE_CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let driver = Driver {
            config,
            handle,
            notifications,
            view,
            path,
            sequence: initial.sequence,
            snapshots: snapshot_tx,
            current: current_tx,
            changes: changes_tx.clone(),
        };
        let task = tokio::spawn(driver.run(stop_rx, connection));
        let monitor = PathMonitor {
            current: current_rx,
            changes: changes_tx,
            stop: Some(stop_tx),
            task: Some(task),
        };
        Ok((monitor, SnapshotReceiver { rx: snapshot_rx }))
    }

    /// The last snapshot emitted.
    pub fn current(&self) -> NetworkSnapshot {
        *self.current.borrow()
    }

    /// Every kernel change the monitor applies from now on, stamped with
    /// the instant it was read (changes found by a resync are not
    /// reported). For diagnostics and the handoff lab's timings.
    pub fn changes(&self) -> broadcast::Receiver<ObservedChange> {
        self.changes.subscribe()
    }

    /// Whether the monitor task still runs (it ends when the netlink socket
    /// fails).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the monitor and waits until its task, and so its socket, is
    /// gone. The [`SnapshotReceiver`] then ends.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the monitor is told to stop before the first await, so
    /// it stops even if this future is dropped.
    pub async fn stop(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for PathMonitor {
    fn drop(&mut self) {
        // Dropping the stop sender ends the task at its next poll.
        self.stop.take();
    }
}

/// The `pathmon.snapshot` event, for the first snapshot and every later one.
fn log_snapshot(snapshot: &NetworkSnapshot, path: &Path, initial: bool) {
    tracing::debug!(
        event = "pathmon.snapshot",
        sequence = snapshot.sequence,
        availability = snapshot.availability.name(),
        transports = ?snapshot.transports,
        expensive = snapshot.is_expensive,
        interfaces = ?path.interfaces,
        initial,
    );
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The monitor task's state.
struct Driver {
    config: PathMonitorConfig,
    handle: Handle,
    notifications: Notifications,
    view: NetView,
    path: Path,
    sequence: u64,
    snapshots: mpsc::UnboundedSender<NetworkSnapshot>,
    current: watch::Sender<NetworkSnapshot>,
    changes: broadcast::Sender<ObservedChange>,
}

impl Driver {
    async fn run(mut self, mut stop: oneshot::Receiver<()>, _connection: AbortOnDrop<()>) {
        let mut resync_due: Option<tokio::time::Instant> = None;
        loop {
            let due = resync_due;
            let retry = async move {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stop => break,
                message = self.notifications.next() => {
                    let Some((message, _)) = message else {
                        tracing::warn!(event = "pathmon.stopped", reason = "netlink socket closed");
                        break;
                    };
                    // Publish after every notification, even when more are
                    // queued: each material change is a snapshot (the
                    // Supervisor coalesces), and the sequence does not
                    // depend on how fast this task reads.
                    let mut resync = self.handle_message(&message);
                    self.publish();
                    let mut drained = 0;
                    while drained < DRAIN_BATCH {
                        let Ok((message, _)) = self.notifications.try_recv() else { break };
                        resync |= self.handle_message(&message);
                        self.publish();
                        drained += 1;
                    }
                    // Re-read the kernel once the queue is drained.
                    if resync {
                        resync_due = self.resync().await;
                    }
                    if drained == DRAIN_BATCH {
                        // A storm: let the runtime's other tasks run.
                        tokio::task::yield_now().await;
                    }
                }
                () = retry => resync_due = self.resync().await,
            }
        }
        tracing::debug!(event = "pathmon.stop", last_sequence = self.sequence);
    }

    /// Applies one notification; returns whether a resync is needed.
    fn handle_message(
        &mut self,
        message: &rtnetlink::packet_core::NetlinkMessage<
            rtnetlink::packet_route::RouteNetlinkMessage,
        >,
    ) -> bool {
        match netlink::notification(message) {
            Notification::Change(change) => {
                let at = Instant::now();
                tracing::trace!(event = "pathmon.change", change = change.name(), ?change);
                let _ = self.changes.send(ObservedChange { at, change: change.clone() });
                self.view.apply(change).resync
            }
            Notification::Overrun => {
                tracing::warn!(event = "pathmon.overrun", "netlink notifications lost; resyncing");
                true
            }
            Notification::Ignored => false,
        }
    }

    /// Re-reads the kernel state; returns when to try again if it failed.
    async fn resync(&mut self) -> Option<tokio::time::Instant> {
        match netlink::dump(&self.handle).await {
            Ok(view) => {
                tracing::trace!(event = "pathmon.resync");
                self.view = view;
                self.publish();
                None
            }
            Err(error) => {
                tracing::warn!(event = "pathmon.resync.failed", %error);
                Some(tokio::time::Instant::now() + RESYNC_RETRY)
            }
        }
    }

    /// Derives the path and emits a snapshot if it changed materially.
    fn publish(&mut self) {
        let path = path::derive(&self.view, &self.config.classifier, self.config.route_table);
        if !path.differs_materially(&self.path) {
            self.path = path;
            return;
        }
        let Some(sequence) = self.sequence.checked_add(1) else {
            tracing::error!(
                event = "pathmon.sequence.exhausted",
                "no sequence number left; not emitting"
            );
            self.path = path;
            return;
        };
        self.sequence = sequence;
        let snapshot = path.snapshot(sequence);
        log_snapshot(&snapshot, &path, false);
        self.path = path;
        // The receiver may be gone; `current()` still tracks the path.
        let _ = self.snapshots.send(snapshot);
        self.current.send_replace(snapshot);
    }
}
