//! One remote peer: the task that owns its webrtc-rs peer connections and executes what the
//! negotiation machine ([`crate::negotiation::machine`]) decides.
//!
//! Every peer has exactly one task. Public calls, inbound signaling and webrtc-rs callbacks all
//! reach it as messages and are handled one at a time, so negotiation steps for a peer never
//! interleave and nothing is half-built when a caller goes away: a caller only ever waits on a
//! reply. What other tasks must read without a round trip (the open data channel, the state) is
//! mirrored in a [`PeerView`].
//!
//! - `executor`: the task: feeds the machine, runs its actions on webrtc-rs.
//! - `connection`: one owned peer connection, its callback adapter and drop guard.
//! - `channel`: the data channel reader.
//! - `view`: [`PeerStatus`] and the shared view.
//!
//! Architecture invariant: the task closes every peer connection it builds, whether it is
//! replaced, closed, or the task itself is aborted (`OwnedConnection` closes on drop).

mod channel;
mod connection;
mod executor;
mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tether_signal::protocol::PeerId;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::{Instrument, info_span};
use webrtc::peer_connection::RTCConfiguration;

pub use self::view::PeerStatus;
pub(crate) use self::view::PeerView;
use crate::config::{IceServer, RtcConfig};
use crate::error::RtcError;
use crate::escalation::RelayEscalations;
use crate::event::RtcEvent;
use crate::negotiation::Role;
use crate::negotiation::input::Presence;
use crate::negotiation::machine::{Machine, MachineConfig};
use crate::signal::{OutboundSignal, SignalPayload};

/// Where a waiting public call gets its answer.
pub(crate) type Reply = oneshot::Sender<Result<(), RtcError>>;

/// What a [`crate::PeerSet`] asks of a peer task.
pub(crate) enum Command {
    Connect(Reply),
    Replace(Reply),
    RestartIce {
        reply: Reply,
        /// See [`Input::RestartIce`](crate::negotiation::input::Input::RestartIce).
        asked_at: Option<std::time::Instant>,
    },
    ClearPendingRestart,
    Signal(SignalPayload),
    Presence(Presence),
    Signaling {
        up: bool,
    },
    /// Close everything, tell the remote, reply, and end the task.
    Close(oneshot::Sender<()>),
}

/// What every peer task of one [`crate::PeerSet`] shares.
pub(crate) struct SetContext {
    pub(crate) local_id: PeerId,
    pub(crate) config: RtcConfig,
    /// ICE servers the signaling server handed out, used after the configured ones by peer
    /// connections built from now on.
    pub(crate) granted_ice_servers: std::sync::Mutex<Vec<IceServer>>,
    /// Peers whose direct paths failed: their new peer connections are relay-only.
    pub(crate) escalations: RelayEscalations,
    pub(crate) signals: mpsc::Sender<OutboundSignal>,
    pub(crate) states: mpsc::UnboundedSender<RtcEvent>,
    pub(crate) traffic: mpsc::Sender<RtcEvent>,
}

impl SetContext {
    /// The ICE servers a new peer connection uses: the configured ones, then the granted ones.
    pub(crate) fn ice_servers(&self) -> Vec<IceServer> {
        let granted =
            self.granted_ice_servers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.config.ice_servers.iter().chain(granted.iter()).cloned().collect()
    }

    /// webrtc-rs's configuration for a new peer connection to `peer`: the ICE servers, and
    /// relay-only ICE when the peer was escalated.
    pub(crate) fn rtc_configuration_for(&self, peer: &PeerId) -> RTCConfiguration {
        let granted = self
            .granted_ice_servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let policy = self.escalations.policy_for(peer, self.config.ice_transport_policy);
        self.config.rtc_configuration(&granted, policy)
    }
}

/// A running peer task, as the [`crate::PeerSet`] holds it.
pub(crate) struct PeerSlot {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) view: Arc<PeerView>,
    pub(crate) task: AbortHandle,
}

/// Starts the task for `peer`.
///
/// `built` counts the peer connections ever built for this peer by the set; it outlives the task
/// (a closed and reconnected peer continues the numbering), so connection ids never repeat.
pub(crate) fn spawn_peer(
    ctx: Arc<SetContext>,
    peer: PeerId,
    role: Role,
    built: Arc<AtomicU64>,
) -> Result<PeerSlot, RtcError> {
    let runtime = Handle::try_current().map_err(|_| RtcError::NoRuntime { peer: peer.clone() })?;
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let view = Arc::new(PeerView::default());
    let span = info_span!("rtc.peer", peer = %peer, local = %ctx.local_id, role = ?role);
    let config = MachineConfig {
        connect_timeout: ctx.config.connect_timeout,
        restart_timeout: ctx.config.restart_timeout,
    };
    let machine = Machine::new(peer.clone(), role, config, built.load(Ordering::Relaxed));
    let task = executor::PeerTask::new(peer, ctx, Arc::clone(&view), internal_tx, built, machine);
    let handle = runtime.spawn(task.run(commands_rx, internal_rx).instrument(span));
    Ok(PeerSlot { commands: commands_tx, view, task: handle.abort_handle() })
}
