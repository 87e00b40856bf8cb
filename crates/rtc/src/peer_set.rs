//! The handle the node uses: every peer of this node, by id.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tether_signal::protocol::PeerId;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{IceServer, RtcConfig};
use crate::error::RtcError;
use crate::escalation::{Escalation, RelayEscalations};
use crate::event::RtcEvents;
use crate::negotiation::Role;
use crate::negotiation::input::Presence;
use crate::peer::{Command, PeerSlot, PeerStatus, SetContext, spawn_peer};
use crate::route::IceRoute;
use crate::signal::{OutboundSignal, SignalPayload};

/// How much longer than its own bound a caller waits for a peer task's answer. The task answers
/// at its bound with the precise error; this only guards against a task that cannot answer.
const REPLY_GRACE: Duration = Duration::from_millis(250);

/// The WebRTC peers of one node, keyed by remote peer id.
///
/// A cheap clone around shared state: every clone drives the same peers. Each remote peer gets
/// one task that owns its webrtc-rs peer connection(s) and data channel, and runs offer/answer
/// for it over the abstract signaling channel given to [`PeerSet::new`] (see
/// [`crate::negotiation`] for roles and glare).
#[derive(Clone)]
pub struct PeerSet {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<SetContext>,
    peers: Mutex<HashMap<PeerId, PeerSlot>>,
    /// Per peer, how many peer connections were ever built (outlives each peer's task, so that
    /// connection ids are never reused).
    connections_built: Mutex<HashMap<PeerId, Arc<AtomicU64>>>,
    /// The close-all run in flight, shared by concurrent callers.
    close_all_run: Mutex<Option<watch::Receiver<Option<CloseReport>>>>,
}

impl std::fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSet").field("local_id", &self.local_id()).finish_non_exhaustive()
    }
}

/// What [`PeerSet::close_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Peers whose close finished (sorted).
    pub closed: Vec<PeerId>,
    /// Peers whose close did not finish before the deadline.
    pub residual: Vec<Residual>,
}

impl CloseReport {
    /// Whether every peer closed within the deadline.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.residual.is_empty()
    }
}

/// A peer that [`PeerSet::close_all`] could not close in time. Its task was aborted, which still
/// closes its peer connection, but not within the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Residual {
    /// The remote peer; `None` when the whole run ended before it could report on any peer.
    pub peer: Option<PeerId>,
    /// Why it is left over.
    pub reason: String,
}

impl PeerSet {
    /// A peer set for the node `local_id`. Outbound signaling goes to `signals` (the node relays
    /// each [`OutboundSignal`] to `to`); inbound signaling comes back through
    /// [`PeerSet::handle_signal`]. Events arrive on the returned [`RtcEvents`].
    ///
    /// Signals are pushed with `try_send`: if `signals` is full the message is dropped and
    /// logged (`rtc.signal.dropped`), and the operation that needed it fails or times out.
    /// Size it for a burst of candidates (a few dozen per peer).
    pub fn new(
        local_id: PeerId,
        config: RtcConfig,
        signals: mpsc::Sender<OutboundSignal>,
    ) -> (Self, RtcEvents) {
        let (states_tx, states_rx) = mpsc::unbounded_channel();
        let (traffic_tx, traffic_rx) = mpsc::channel(config.message_queue_capacity.max(1));
        let ctx = SetContext {
            local_id,
            config,
            granted_ice_servers: Mutex::new(Vec::new()),
            escalations: RelayEscalations::default(),
            signals,
            states: states_tx,
            traffic: traffic_tx,
        };
        let set = Self {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                peers: Mutex::new(HashMap::new()),
                connections_built: Mutex::new(HashMap::new()),
                close_all_run: Mutex::new(None),
            }),
        };
        (set, RtcEvents::new(states_rx, traffic_rx))
    }

    /// This node's id.
    #[must_use]
    pub fn local_id(&self) -> &PeerId {
        &self.inner.ctx.local_id
    }

    /// The configuration this set was built with.
    #[must_use]
    pub fn config(&self) -> &RtcConfig {
        &self.inner.ctx.config
    }

    /// ICE servers handed out by the signaling server (e.g. TURN with short-lived
    /// credentials), replacing any handed out before. Peer connections built from now on use
    /// them after [`RtcConfig::ice_servers`]; existing ones keep theirs (webrtc-rs 0.21 cannot
    /// change a connection's ICE servers).
    pub fn set_granted_ice_servers(&self, servers: Vec<IceServer>) {
        let mut granted =
            self.inner.ctx.granted_ice_servers.lock().unwrap_or_else(PoisonError::into_inner);
        if *granted != servers {
            info!(name: "rtc.ice_servers.granted", count = servers.len());
            *granted = servers;
        }
    }

    /// This node's role towards `peer` (the smaller id offers).
    ///
    /// # Errors
    ///
    /// [`RtcError::InvalidPeerId`] when `peer` is this node's own id.
    pub fn role_towards(&self, peer: &PeerId) -> Result<Role, RtcError> {
        Role::between(self.local_id(), peer).ok_or_else(|| RtcError::InvalidPeerId {
            peer: peer.clone(),
            reason: "peer id is this node's own id",
        })
    }

    /// Makes sure there is an open data channel to `peer`, creating the peer connection if there
    /// is none: returns at once when the channel is open, otherwise when it opens.
    ///
    /// Single flight: concurrent calls for one peer share one attempt (one peer connection), and
    /// the attempt is bounded by [`RtcConfig::connect_timeout`] from its first call. The offerer
    /// builds the peer connection and offers; the answerer asks the offerer to
    /// (`ice_restart`). An attempt that times out tears down what it built and tells the peer.
    ///
    /// # Errors
    ///
    /// [`RtcError::ConnectTimeout`] (see [`RtcError::is_timeout`]),
    /// [`RtcError::ConnectionFailed`], [`RtcError::PeerClosed`] when the peer is closed
    /// meanwhile, [`RtcError::Negotiation`] / [`RtcError::WebRtc`] when offer/answer fails,
    /// [`RtcError::SignalChannelClosed`] / [`RtcError::SignalChannelFull`],
    /// [`RtcError::InvalidPeerId`], [`RtcError::NoRuntime`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The attempt is run by the peer's task, not by this future: dropping the
    /// future only stops this caller from waiting. Other callers keep waiting for the same
    /// attempt, and a later call joins it or finds the channel open.
    pub async fn connect(&self, peer: &PeerId) -> Result<(), RtcError> {
        let (reply, result) = oneshot::channel();
        self.dispatch(peer, Command::Connect(reply), true)?;
        let bound = self.config().connect_timeout;
        self.await_reply(peer, result, bound, |peer, after| RtcError::ConnectTimeout {
            peer,
            after,
        })
        .await
    }

    /// Throws away the peer connection to `peer` (if any) and connects from scratch: a new peer
    /// connection with a new data channel. For when an ICE restart did not revive the peer.
    ///
    /// The offerer builds and offers a new peer connection (the answerer sees a new session and
    /// replaces its own); the answerer closes its own, says `bye` and asks for a new offer.
    /// Bounded by [`RtcConfig::connect_timeout`] from this call; concurrent [`PeerSet::connect`]
    /// calls join it.
    ///
    /// # Errors
    ///
    /// As [`PeerSet::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the replacement runs in the peer's task and completes whether or not this
    /// future is still polled.
    pub async fn replace(&self, peer: &PeerId) -> Result<(), RtcError> {
        let (reply, result) = oneshot::channel();
        self.dispatch(peer, Command::Replace(reply), true)?;
        let bound = self.config().connect_timeout;
        self.await_reply(peer, result, bound, |peer, after| RtcError::ConnectTimeout {
            peer,
            after,
        })
        .await
    }

    /// Restarts ICE with `peer` and returns once ICE is connected again, keeping the peer
    /// connection and its data channel.
    ///
    /// The offerer sends an ICE-restart offer (after the answer to an offer already outstanding);
    /// the answerer sends `ice_restart` and waits for the offerer's restart offer. Concurrent
    /// calls share one restart. Bounded by [`RtcConfig::restart_timeout`]: past it the caller
    /// gets [`RtcError::RestartTimeout`] and should [`PeerSet::replace`] the peer connection.
    ///
    /// # Errors
    ///
    /// [`RtcError::RestartTimeout`], [`RtcError::NoPeerConnection`] when there is no peer
    /// connection to restart, [`RtcError::RestartCancelled`] after
    /// [`PeerSet::clear_pending_restarts`], [`RtcError::ClosedByRemote`],
    /// [`RtcError::PeerClosed`], and the negotiation and signaling errors of
    /// [`PeerSet::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the restart runs in the peer's task; dropping the future only stops waiting.
    /// Use [`PeerSet::clear_pending_restarts`] to withdraw a restart that has not started.
    pub async fn restart_ice(&self, peer: &PeerId) -> Result<(), RtcError> {
        self.restart_ice_with(peer, None).await
    }

    /// [`PeerSet::restart_ice`] when this side is `peer`'s answerer and its `ice_restart`
    /// already went to `peer` at `asked_at`: in this node's `register`
    /// (`tether_signal::SignalClient::rebuild_asking_ice_restart`). No second request is sent;
    /// the restart offer it asked for completes the call, as does one taken (or a new
    /// connection opened) since `asked_at`. On the offerer's side this is `restart_ice`.
    ///
    /// # Errors
    ///
    /// As [`PeerSet::restart_ice`].
    ///
    /// # Cancel safety
    ///
    /// As [`PeerSet::restart_ice`].
    pub async fn restart_ice_asked(
        &self,
        peer: &PeerId,
        asked_at: tokio::time::Instant,
    ) -> Result<(), RtcError> {
        self.restart_ice_with(peer, Some(asked_at.into_std())).await
    }

    async fn restart_ice_with(
        &self,
        peer: &PeerId,
        asked_at: Option<std::time::Instant>,
    ) -> Result<(), RtcError> {
        let (reply, result) = oneshot::channel();
        if !self.dispatch(peer, Command::RestartIce { reply, asked_at }, false)? {
            return Err(RtcError::NoPeerConnection { peer: peer.clone() });
        }
        let bound = self.config().restart_timeout;
        self.await_reply(peer, result, bound, |peer, after| RtcError::RestartTimeout {
            peer,
            after,
        })
        .await
    }

    /// [`PeerSet::restart_ice`] on every peer at once; one result per peer, all within
    /// [`RtcConfig::restart_timeout`] (plus a small grace).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`PeerSet::restart_ice`]: the restarts go on in the peer tasks.
    pub async fn restart_ice_all(&self) -> Vec<(PeerId, Result<(), RtcError>)> {
        let peers: Vec<PeerId> = self.lock_peers().keys().cloned().collect();
        let mut waiting = Vec::with_capacity(peers.len());
        for peer in peers {
            let (reply, result) = oneshot::channel();
            match self.dispatch(&peer, Command::RestartIce { reply, asked_at: None }, false) {
                Ok(true) => waiting.push((peer, Some(result))),
                Ok(false) => waiting.push((peer, None)),
                Err(error) => warn!(name: "rtc.ice.restart", %peer, %error),
            }
        }
        let bound = self.config().restart_timeout;
        let deadline = Instant::now() + bound + REPLY_GRACE;
        let mut outcomes = Vec::with_capacity(waiting.len());
        for (peer, result) in waiting {
            let outcome = match result {
                None => Err(RtcError::NoPeerConnection { peer: peer.clone() }),
                Some(result) => match tokio::time::timeout_at(deadline, result).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err(RtcError::PeerClosed { peer: peer.clone() }),
                    Err(_) => Err(RtcError::RestartTimeout { peer: peer.clone(), after: bound }),
                },
            };
            outcomes.push((peer, outcome));
        }
        outcomes
    }

    /// Withdraws every ICE restart that is waiting: restarts not yet started are dropped, and
    /// their callers get [`RtcError::RestartCancelled`]. A restart offer already sent still
    /// completes (it cannot be unsent), but nobody waits for it.
    pub fn clear_pending_restarts(&self) {
        let peers = self.lock_peers();
        for slot in peers.values() {
            // A peer task that has ended has nothing pending.
            let _ = slot.commands.send(Command::ClearPendingRestart);
        }
        debug!(name: "rtc.ice.restart", phase = "clear_all", peers = peers.len());
    }

    /// Hands an inbound signaling message from `from` to its peer.
    ///
    /// An offer (to the answerer) or an `ice_restart` (to the offerer) from an unknown peer
    /// starts that peer; anything else for an unknown peer is dropped. Messages from the wrong
    /// side, stale or duplicate descriptions and malformed SDP are logged and dropped; they never
    /// panic.
    ///
    /// # Errors
    ///
    /// [`RtcError::InvalidPeerId`] for this node's own id;
    /// [`RtcError::NoRuntime`] when called outside a Tokio runtime.
    pub fn handle_signal(&self, from: &PeerId, payload: SignalPayload) -> Result<(), RtcError> {
        let role = self.role_towards(from)?;
        let starts_peer = matches!(
            (role, &payload),
            (Role::Answerer, SignalPayload::Offer { .. })
                | (Role::Offerer, SignalPayload::IceRestartRequest)
        );
        let kind = payload.kind();
        if !self.dispatch(from, Command::Signal(payload), starts_peer)? {
            debug!(name: "rtc.signal.ignored", peer = %from, kind, reason = "unknown peer");
        }
        Ok(())
    }

    /// Tells the peer set that `peer` joined this node's room (`peer_joined`, or listed in
    /// `registered`): an exchange in flight is sent again, a wanted peer without a usable peer
    /// connection is connected, and a failed connect is retried at once (docs/NEGOTIATION.md
    /// §11.2, §13.2). Never starts a new offer or peer connection by itself otherwise, and does
    /// nothing for a peer this set has no task for.
    pub fn peer_joined(&self, peer: &PeerId) {
        let _ = self.dispatch(peer, Command::Presence(Presence::Joined), false);
    }

    /// Tells the peer set that `peer` left this node's room (`peer_left`): it stops retrying
    /// connects to it (a healthy peer connection is kept, §11.3).
    pub fn peer_left(&self, peer: &PeerId) {
        let _ = self.dispatch(peer, Command::Presence(Presence::Left), false);
    }

    /// Tells the peer set whether this node's signaling connection is up: connect retries pause
    /// while it is down and start at once, with the backoff reset, when it comes back (§13.2).
    pub fn signaling_changed(&self, up: bool) {
        for slot in self.lock_peers().values() {
            // A peer task that has ended needs no news.
            let _ = slot.commands.send(Command::Signaling { up });
        }
    }

    /// Sends one message on the data channel to `peer` (reliable; unordered on the wire, so
    /// two messages may arrive in either order: tether's reliable stream orders them).
    ///
    /// Succeeds as soon as the message is queued; while ICE is disconnected SCTP keeps it and
    /// delivers it if the connection comes back (an ICE restart keeps the channel).
    ///
    /// # Errors
    ///
    /// [`RtcError::ChannelNotOpen`] when there is no open data channel to `peer` (never
    /// connected, still connecting, or closed); [`RtcError::Send`] when webrtc-rs refuses the
    /// message (for example the channel closed meanwhile), or for an empty message (empty
    /// messages are the channel's own, NEGOTIATION.md §3).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that a dropped future may or may not have queued the
    /// message. Sending never waits for the peer (no send-buffer limit is configured).
    pub async fn send(&self, peer: &PeerId, data: Bytes) -> Result<(), RtcError> {
        let channel = self
            .lock_peers()
            .get(peer)
            .and_then(|slot| slot.view.channel())
            .ok_or_else(|| RtcError::ChannelNotOpen { peer: peer.clone() })?;
        if data.is_empty() {
            let message = "empty messages are not application data".to_owned();
            return Err(RtcError::Send { peer: peer.clone(), message });
        }
        channel
            .send(BytesMut::from(&data[..]))
            .await
            .map_err(|error| RtcError::Send { peer: peer.clone(), message: error.to_string() })
    }

    /// Whether the peer connection to `peer` is connected and its data channel open.
    #[must_use]
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.lock_peers().get(peer).is_some_and(|slot| slot.view.is_connected())
    }

    /// The peers that are connected with an open data channel (sorted).
    #[must_use]
    pub fn connected_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .lock_peers()
            .iter()
            .filter(|(_, slot)| slot.view.is_connected())
            .map(|(peer, _)| peer.clone())
            .collect();
        peers.sort();
        peers
    }

    /// A snapshot of `peer`, or `None` if this set has no task for it.
    #[must_use]
    pub fn status(&self, peer: &PeerId) -> Option<PeerStatus> {
        let status = self.lock_peers().get(peer).map(|slot| slot.view.status())?;
        Some(PeerStatus { relay_escalated: self.inner.ctx.escalations.contains(peer), ..status })
    }

    /// Escalates `peer` to relay-only ICE: the peer connections built for it from now on (the
    /// next [`PeerSet::replace`] or [`PeerSet::connect`]) gather relayed candidates only. For
    /// when an ICE restart with policy `all` left ICE failed: direct paths do not work, and
    /// the replacement spends no checks on them. Only with a TURN server among the configured
    /// or granted ICE servers; holds until the peer is closed. Logs `rtc.ice.relay_escalation`
    /// when it escalates; [`PeerStatus::relay_escalated`] says so from then on.
    pub fn escalate_to_relay(&self, peer: &PeerId) -> Escalation {
        let ctx = &self.inner.ctx;
        let outcome =
            ctx.escalations.escalate(peer, ctx.config.ice_transport_policy, &ctx.ice_servers());
        if outcome == Escalation::Escalated {
            info!(name: "rtc.ice.relay_escalation", %peer, "next peer connections are relay-only");
        }
        outcome
    }

    /// The candidate pair ICE selected for the current peer connection to `peer`: whether its
    /// packets go directly (host, reflexive candidates) or through a TURN relay. `None` when
    /// there is no peer connection or ICE has not selected a pair yet. An ICE restart may
    /// select another pair; ask again after it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn selected_route(&self, peer: &PeerId) -> Option<IceRoute> {
        let pc = self.lock_peers().get(peer).and_then(|slot| slot.view.connection())?;
        crate::route::selected_route(&pc).await
    }

    /// After the device's path changed: holds data to every peer whose selected candidate pair
    /// leaves from a local address the device has no more (see [`PeerStatus::data_held`]), so
    /// that the reliable stream above keeps it rather than losing it into a dead pair, where
    /// SCTP would only retransmit it on its own timer (1 s at least, doubling while the path
    /// is down). The hold ends when an ICE restart completes, the peer connection is connected
    /// again, or a new one replaces it. A relayed pair (webrtc-rs does not report its base) or
    /// a peer connection with no selected pair counts as stranded: the path changed under it.
    /// Returns the peers now held.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: each peer is held or not as a whole; dropping the future leaves the rest
    /// untouched.
    pub async fn hold_stranded(&self) -> Vec<PeerId> {
        self.hold_where_address_gone(true).await
    }

    /// [`PeerSet::hold_stranded`] without a path change to go on: holds only the peers whose
    /// selected pair is known to leave from an address that is gone (a host or reflexive local
    /// candidate); a relayed pair, whose base webrtc-rs does not report, is left alone. For a
    /// periodic check. Returns the peers now held.
    ///
    /// # Cancel safety
    ///
    /// As [`PeerSet::hold_stranded`].
    pub async fn hold_if_address_lost(&self) -> Vec<PeerId> {
        self.hold_where_address_gone(false).await
    }

    async fn hold_where_address_gone(&self, unknown_is_gone: bool) -> Vec<PeerId> {
        let present: Vec<std::net::IpAddr> = match rtc::shared::ifaces::ifaces() {
            Ok(interfaces) => interfaces.iter().filter_map(|i| i.addr.map(|a| a.ip())).collect(),
            Err(error) => {
                debug!(name: "rtc.data.hold", %error, "interfaces unreadable: holding nothing");
                return Vec::new();
            }
        };
        let current: Vec<(PeerId, Arc<crate::peer::PeerView>)> = self
            .lock_peers()
            .iter()
            .map(|(peer, slot)| (peer.clone(), Arc::clone(&slot.view)))
            .collect();
        let mut held = Vec::new();
        for (peer, view) in current {
            let status = view.status();
            let (Some(id), Some(pc)) = (status.connection_id, view.connection()) else { continue };
            if status.data_held || !status.channel_open {
                continue;
            }
            if crate::route::leaves_from_gone_address(&pc, &present, unknown_is_gone).await
                && view.set_held(id, true)
            {
                info!(name: "rtc.data.hold", %peer, connection = id.get(), held = true,
                    "the selected pair leaves from an address that is gone");
                held.push(peer);
            }
        }
        held
    }

    /// Closes the peer connection to `peer`, tells the peer (`bye`) and forgets the peer. Waiting
    /// calls for it fail with [`RtcError::PeerClosed`]. Closing an unknown peer succeeds.
    ///
    /// # Errors
    ///
    /// [`RtcError::CloseTimeout`] when the close did not finish within
    /// [`RtcConfig::close_timeout`]; the peer's task is then aborted, which still closes its
    /// peer connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the peer is forgotten at once and its task closes it whether or not this
    /// future is polled to the end.
    pub async fn close(&self, peer: &PeerId) -> Result<(), RtcError> {
        self.inner.ctx.escalations.forget(peer);
        let Some(slot) = self.lock_peers().remove(peer) else {
            return Ok(());
        };
        let deadline = Instant::now() + self.config().close_timeout;
        let (done, finished) = oneshot::channel();
        // A peer task that already ended has closed everything it had.
        let _ = slot.commands.send(Command::Close(done));
        match tokio::time::timeout_at(deadline, finished).await {
            Ok(_) => Ok(()),
            Err(_) => {
                slot.task.abort();
                warn!(name: "rtc.peer.close_timeout", %peer);
                Err(RtcError::CloseTimeout {
                    peer: peer.clone(),
                    after: self.config().close_timeout,
                })
            }
        }
    }

    /// Closes every peer (each told with `bye`), bounded by [`RtcConfig::close_timeout`], and
    /// reports which closed and which are left over. Every peer's close runs even if another's
    /// fails. Single flight: concurrent calls share one run and get the same report; a call after
    /// a run has finished starts a new one. The set stays usable: a later
    /// [`PeerSet::connect`] builds afresh.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the run is a task of its own and finishes whether or not any caller still
    /// waits for it.
    pub async fn close_all(&self) -> CloseReport {
        let mut report = {
            let mut run = lock(&self.inner.close_all_run);
            match run.as_ref() {
                Some(report) => report.clone(),
                None => {
                    let (publish, report) = watch::channel(None);
                    *run = Some(report.clone());
                    let inner = Arc::clone(&self.inner);
                    tokio::spawn(async move {
                        let outcome = inner.close_all_now().await;
                        *lock(&inner.close_all_run) = None;
                        publish.send_replace(Some(outcome));
                    });
                    report
                }
            }
        };
        match report.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or_default(),
            Err(_) => CloseReport {
                closed: Vec::new(),
                residual: vec![Residual {
                    peer: None,
                    reason: "the close-all run stopped before reporting".to_owned(),
                }],
            },
        }
    }

    /// Sends `command` to the task for `peer`, starting it when `start` allows. Returns whether
    /// the command was delivered.
    fn dispatch(&self, peer: &PeerId, command: Command, start: bool) -> Result<bool, RtcError> {
        let role = self.role_towards(peer)?;
        let mut peers = self.lock_peers();
        let mut command = command;
        // Twice at most: a task that ended by itself is replaced once.
        for _ in 0..2 {
            if !peers.contains_key(peer) {
                if !start {
                    return Ok(false);
                }
                let built = Arc::clone(
                    lock(&self.inner.connections_built).entry(peer.clone()).or_default(),
                );
                let slot = spawn_peer(Arc::clone(&self.inner.ctx), peer.clone(), role, built)?;
                peers.insert(peer.clone(), slot);
            }
            let Some(slot) = peers.get(peer) else {
                return Ok(false);
            };
            match slot.commands.send(command) {
                Ok(()) => return Ok(true),
                Err(mpsc::error::SendError(returned)) => {
                    command = returned;
                    peers.remove(peer);
                }
            }
        }
        Ok(false)
    }

    async fn await_reply(
        &self,
        peer: &PeerId,
        result: oneshot::Receiver<Result<(), RtcError>>,
        bound: Duration,
        timed_out: impl FnOnce(PeerId, Duration) -> RtcError,
    ) -> Result<(), RtcError> {
        match tokio::time::timeout(bound + REPLY_GRACE, result).await {
            Ok(Ok(outcome)) => outcome,
            // The task ended without replying: the peer was closed.
            Ok(Err(_)) => Err(RtcError::PeerClosed { peer: peer.clone() }),
            Err(_) => Err(timed_out(peer.clone(), bound)),
        }
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<PeerId, PeerSlot>> {
        lock(&self.inner.peers)
    }
}

impl Inner {
    async fn close_all_now(&self) -> CloseReport {
        self.ctx.escalations.clear();
        let slots: Vec<(PeerId, PeerSlot)> = lock(&self.peers).drain().collect();
        let bound = self.ctx.config.close_timeout;
        let deadline = Instant::now() + bound;
        info!(name: "rtc.close_all.start", peers = slots.len());
        // Ask every peer first, so all close in parallel, then collect within one deadline.
        let closing: Vec<_> = slots
            .into_iter()
            .map(|(peer, slot)| {
                let (done, finished) = oneshot::channel();
                let _ = slot.commands.send(Command::Close(done));
                (peer, slot.task, finished)
            })
            .collect();
        let mut report = CloseReport::default();
        for (peer, task, finished) in closing {
            match tokio::time::timeout_at(deadline, finished).await {
                // Closed, or the task had already ended (and closed what it had).
                Ok(_) => report.closed.push(peer),
                Err(_) => {
                    task.abort();
                    report.residual.push(Residual {
                        peer: Some(peer),
                        reason: format!("close did not finish within {bound:?}; task aborted"),
                    });
                }
            }
        }
        report.closed.sort();
        info!(
            name: "rtc.close_all.done",
            closed = report.closed.len(),
            residual = report.residual.len()
        );
        report
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent across a panic elsewhere: every update is a single insert/remove.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
