//! Listeners: how an app follows the connection state ("Reconnecting…")
//! and the peers' states ("bob connected") for UI.
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

use crate::peer::statuses;
use crate::{ConnectionState, ListenerError, PeerStatus};

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

/// Implemented by the app to follow a live node's peers.
///
/// `on_peer_states_changed` is called with every peer's state as soon as
/// the subscription starts, then after every change. States that lasted no
/// time may be skipped (the listener always sees the latest ones), and the
/// same list is never reported twice in a row.
///
/// Threading: as [`StateListener`]: called on one of tether's runtime
/// threads, one call at a time per subscription, in order. Return quickly.
#[uniffi::export(foreign)]
pub trait PeerStateListener: Send + Sync {
    /// The peers are now as `peers` says: every peer the node has had a
    /// peer connection with, sorted by peer id.
    ///
    /// # Errors
    ///
    /// Whatever the listener throws is logged (`ffi.listener.failed`); the
    /// subscription goes on.
    fn on_peer_states_changed(&self, peers: Vec<PeerStatus>) -> Result<(), ListenerError>;
}

/// A running subscription of a [`StateListener`] or a
/// [`PeerStateListener`]. It lasts until `cancel` or until the node shuts
/// down; dropping this object does not end it (foreign garbage collectors
/// drop objects at unpredictable times).
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
        state: watch::Receiver<tether::ConnectionState>,
        listener: Arc<dyn StateListener>,
        runtime: &tokio::runtime::Runtime,
    ) -> Arc<Self> {
        Self::follow(state, runtime, move |state: &tether::ConnectionState| {
            debug!(name: "ffi.listener.state", state = %state);
            let state = ConnectionState::from(*state);
            deliver(|| listener.on_state_changed(state));
        })
    }

    /// Starts delivering `peers` to `listener` on `runtime`, until
    /// cancelled or until the node drops its end of `peers`.
    pub(crate) fn start_peers(
        peers: watch::Receiver<tether::PeerStates>,
        listener: Arc<dyn PeerStateListener>,
        runtime: &tokio::runtime::Runtime,
    ) -> Arc<Self> {
        Self::follow(peers, runtime, move |peers: &tether::PeerStates| {
            debug!(name: "ffi.listener.peers", peers = ?peers);
            let peers = statuses(peers);
            deliver(|| listener.on_peer_states_changed(peers));
        })
    }

    /// Calls `notify` with the current value of `values` at once, then
    /// after every change, skipping repeats.
    fn follow<T>(
        mut values: watch::Receiver<T>,
        runtime: &tokio::runtime::Runtime,
        mut notify: impl FnMut(&T) + Send + 'static,
    ) -> Arc<Self>
    where
        T: Clone + PartialEq + Send + Sync + 'static,
    {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        runtime.spawn(async move {
            let mut last: Option<T> = None;
            loop {
                let current = values.borrow_and_update().clone();
                if last.as_ref() != Some(&current) {
                    notify(&current);
                    last = Some(current);
                }
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    changed = values.changed() => {
                        // The node stopped and its last value was seen.
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

/// Calls a foreign listener. Foreign code may block; tell the runtime so
/// that other tasks move to another worker meanwhile.
fn deliver(call: impl FnOnce() -> Result<(), ListenerError>) {
    if let Err(err) = tokio::task::block_in_place(call) {
        warn!(name: "ffi.listener.failed", error = %err);
    }
}
