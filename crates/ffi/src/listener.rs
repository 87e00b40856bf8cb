//! State listeners: how an app follows the connection state for UI
//! ("Reconnecting…").
//!
//! # Threading
//!
//! A listener is called on one of tether's runtime threads (named
//! `tether-rt`), never on the app's main thread and never on the thread
//! that subscribed. Calls for one subscription come one at a time, in
//! order; different subscriptions may be called concurrently. A call
//! blocks that subscription's later updates (not the node), so return
//! quickly: hand the state to the UI thread (`DispatchQueue.main.async`,
//! `MainScope().launch`, `MutableStateFlow.value = ...`,
//! `loop.call_soon_threadsafe`) and do the work there.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{ConnectionState, ListenerError};

/// Implemented by the app to follow the connection state.
///
/// `on_state_changed` is called with the current state as soon as the
/// subscription starts, then after every change. States that lasted no
/// time may be skipped (the listener always sees the latest one), and the
/// same state is never reported twice in a row.
///
/// Threading: called on one of tether's runtime threads (`tether-rt`),
/// never the app's main thread; calls for one subscription come one at a
/// time, in order. Return quickly: hand the state to the UI thread.
#[uniffi::export(foreign)]
pub trait StateListener: Send + Sync {
    /// The connection state is now `state`.
    ///
    /// # Errors
    ///
    /// Whatever the listener throws is logged (`ffi.listener.failed`); the
    /// subscription goes on.
    fn on_state_changed(&self, state: ConnectionState) -> Result<(), ListenerError>;
}

/// A running subscription of a [`StateListener`]. It lasts until
/// `cancel` or until the node shuts down; dropping this
/// object does not end it (foreign garbage collectors drop objects at
/// unpredictable times).
#[derive(Debug, uniffi::Object)]
pub struct StateSubscription {
    cancel: CancellationToken,
}

#[uniffi::export]
impl StateSubscription {
    /// Stops the updates. A call under way finishes, and one update that
    /// was already due may still arrive after this returns; none after
    /// that.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Whether updates still come: not cancelled, and the node runs.
    pub fn is_active(&self) -> bool {
        !self.cancel.is_cancelled()
    }
}

impl StateSubscription {
    /// Starts delivering `state` to `listener` on `runtime`, until
    /// cancelled or until the node drops its end of `state`.
    pub(crate) fn start(
        mut state: watch::Receiver<tether::ConnectionState>,
        listener: Arc<dyn StateListener>,
        runtime: &tokio::runtime::Runtime,
    ) -> Arc<Self> {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        runtime.spawn(async move {
            let mut last = None;
            loop {
                let current = *state.borrow_and_update();
                if last != Some(current) {
                    last = Some(current);
                    debug!(name: "ffi.listener.state", state = %current);
                    deliver(&*listener, current.into());
                }
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    changed = state.changed() => {
                        // The node stopped and its last state was seen.
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
            // Whatever ended the loop, the subscription is over.
            stop.cancel();
        });
        Arc::new(Self { cancel })
    }
}

/// Calls the foreign listener. Foreign code may block; tell the runtime so
/// that other tasks move to another worker meanwhile.
fn deliver(listener: &dyn StateListener, state: ConnectionState) {
    if let Err(err) = tokio::task::block_in_place(|| listener.on_state_changed(state)) {
        warn!(name: "ffi.listener.failed", error = %err);
    }
}
