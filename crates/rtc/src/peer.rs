//! One remote peer: the task that owns its webrtc-rs peer connections and negotiates them.
//!
//! Every peer has exactly one task. Public calls, inbound signaling and webrtc-rs callbacks all
//! reach it as messages and are handled one at a time, so negotiation steps for a peer never
//! interleave and nothing is half-built when a caller goes away: a caller only ever waits on a
//! reply. What other tasks must read without a round trip (the open data channel, the state) is
//! mirrored in a [`PeerView`].
//!
//! Architecture invariant: the task closes every peer connection it builds, whether it is
//! replaced, closed, or the task itself is aborted ([`OwnedConnection`] closes on drop).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rtc::peer_connection::configuration::RTCOfferOptions;
use tether_signal::protocol::PeerId;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, info, info_span, trace, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription,
};

use crate::config::RtcConfig;
use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState, RtcEvent};
use crate::negotiation::{
    OfferId, OfferKind, Rejection, Role, SessionOrigin, rejection, tag_answer, tag_offer, untag,
};
use crate::signal::{OutboundSignal, SignalPayload};

/// At most this many remote candidates wait for a remote description; older ones are dropped.
const MAX_BUFFERED_CANDIDATES: usize = 64;

/// Where a waiting public call gets its answer.
pub(crate) type Reply = oneshot::Sender<Result<(), RtcError>>;

/// What a [`crate::PeerSet`] asks of a peer task.
pub(crate) enum Command {
    Connect(Reply),
    Replace(Reply),
    RestartIce(Reply),
    ClearPendingRestart,
    Signal(SignalPayload),
    /// Close everything, tell the remote, reply, and end the task.
    Close(oneshot::Sender<()>),
}

/// What every peer task of one [`crate::PeerSet`] shares.
pub(crate) struct SetContext {
    pub(crate) local_id: PeerId,
    pub(crate) config: RtcConfig,
    pub(crate) signals: mpsc::Sender<OutboundSignal>,
    pub(crate) states: mpsc::UnboundedSender<RtcEvent>,
    pub(crate) traffic: mpsc::Sender<RtcEvent>,
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
    let task = PeerTask {
        peer,
        role,
        ctx,
        view: Arc::clone(&view),
        internal: internal_tx,
        built,
        offers_sent: 0,
        current: None,
        remote_candidates: VecDeque::new(),
        connect: Waiters::default(),
        restart: RestartWaiters::default(),
        last_emitted: None,
    };
    let handle = runtime.spawn(task.run(commands_rx, internal_rx).instrument(span));
    Ok(PeerSlot { commands: commands_tx, view, task: handle.abort_handle() })
}

/// A snapshot of one peer, readable without waiting for its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// The current (or last) peer connection: peer connections built for this peer by this set
    /// are numbered 1, 2, ..., across closes too (see [`ConnectionId`]); `None` before the first.
    pub connection_id: Option<ConnectionId>,
    /// The current peer connection's state; `None` before the first was built.
    pub state: Option<PeerState>,
    /// Whether the data channel is open, so that [`crate::PeerSet::send`] can succeed.
    pub channel_open: bool,
}

/// The part of a peer's state other tasks read directly.
#[derive(Default)]
pub(crate) struct PeerView(Mutex<ViewState>);

#[derive(Default)]
struct ViewState {
    connection_id: Option<ConnectionId>,
    state: Option<PeerState>,
    channel: Option<Arc<dyn DataChannel>>,
}

impl PeerView {
    fn lock(&self) -> MutexGuard<'_, ViewState> {
        // A panic while holding this lock cannot leave the plain fields inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let view = self.lock();
        PeerStatus {
            connection_id: view.connection_id,
            state: view.state,
            channel_open: view.channel.is_some(),
        }
    }

    pub(crate) fn channel(&self) -> Option<Arc<dyn DataChannel>> {
        self.lock().channel.clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        let view = self.lock();
        view.state == Some(PeerState::Connected) && view.channel.is_some()
    }

    fn begin_connection(&self, id: ConnectionId) {
        *self.lock() = ViewState {
            connection_id: Some(id),
            state: Some(PeerState::Connecting),
            channel: None,
        };
    }

    fn set_state(&self, id: ConnectionId, state: PeerState) {
        let mut view = self.lock();
        if view.connection_id == Some(id) {
            view.state = Some(state);
            if state == PeerState::Closed {
                view.channel = None;
            }
        }
    }

    /// Publishes an opened channel, unless its peer connection has been replaced meanwhile.
    fn open_channel(&self, id: ConnectionId, channel: &Arc<dyn DataChannel>) -> bool {
        let mut view = self.lock();
        if view.connection_id != Some(id) {
            return false;
        }
        view.channel = Some(Arc::clone(channel));
        true
    }

    fn close_channel(&self, id: ConnectionId) {
        let mut view = self.lock();
        if view.connection_id == Some(id) {
            view.channel = None;
        }
    }
}

/// An event from webrtc-rs (callbacks, data channel) for one peer connection of the peer.
struct Internal {
    connection_id: ConnectionId,
    event: InternalEvent,
}

enum InternalEvent {
    LocalCandidate(RTCIceCandidateInit),
    GatheringComplete,
    ConnectionState(RTCPeerConnectionState),
    IceConnectionState(RTCIceConnectionState),
    RemoteChannel(Arc<dyn DataChannel>),
    ChannelOpened,
    ChannelClosed,
}

/// Forwards webrtc-rs callbacks to the peer task. Callbacks run on the webrtc-rs driver, so they
/// only enqueue.
struct ConnectionHandler {
    connection_id: ConnectionId,
    events: mpsc::UnboundedSender<Internal>,
}

impl ConnectionHandler {
    fn forward(&self, event: InternalEvent) {
        // The peer task outlives its peer connections; if it is gone, nobody needs the event.
        let _ = self.events.send(Internal { connection_id: self.connection_id, event });
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ConnectionHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(candidate) => self.forward(InternalEvent::LocalCandidate(candidate)),
            Err(error) => {
                warn!(name: "rtc.ice.candidate_unusable", %error, "local candidate cannot be serialized")
            }
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.forward(InternalEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.forward(InternalEvent::ConnectionState(state));
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        self.forward(InternalEvent::IceConnectionState(state));
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        self.forward(InternalEvent::RemoteChannel(channel));
    }
}

/// A webrtc-rs peer connection that is closed when dropped, if nobody closed it before.
///
/// webrtc-rs detaches the driver of a connection dropped without `close()`, which would leave it
/// running; this guard makes an aborted peer task clean up too.
struct OwnedConnection {
    pc: Arc<dyn PeerConnection>,
    closed: bool,
}

impl OwnedConnection {
    async fn close(&mut self, ctx: &SetContext) {
        match tokio::time::timeout(ctx.config.close_timeout, self.pc.close()).await {
            Ok(Ok(())) => self.closed = true,
            // webrtc-rs stops the driver even when its close reports an error.
            Ok(Err(error)) => {
                self.closed = true;
                warn!(name: "rtc.peer.close_failed", %error);
            }
            // Cut short: `drop` finishes the close in the background.
            Err(_) => warn!(name: "rtc.peer.close_failed", error = "timed out"),
        }
    }
}

impl Drop for OwnedConnection {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Ok(runtime) = Handle::try_current() {
            let pc = Arc::clone(&self.pc);
            runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// Offer/answer progress of one peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Negotiation {
    Stable,
    /// The offerer sent `offer` and waits for its answer until `deadline`.
    AwaitingAnswer {
        offer: SessionOrigin,
        deadline: Instant,
        restart: bool,
    },
}

/// One peer connection to the peer, with its negotiation state.
struct Connection {
    id: ConnectionId,
    peer_connection: OwnedConnection,
    state: PeerState,
    negotiation: Negotiation,
    /// Whether a remote description has been applied (candidates can be added).
    remote_description_set: bool,
    /// Answerer: the last offer applied, to classify the next one.
    remote_offer: Option<OfferId>,
    /// Answerer: the last answer sent, to answer a duplicate offer again.
    last_answer: Option<String>,
    /// Offerer: the sequence number and restart flag of the last offer
    /// sent, to send it again when it may have been lost.
    last_offer: Option<(u64, bool)>,
    channel_open: bool,
    /// An ICE restart was applied; the next ICE `connected` completes it.
    restart_applied: bool,
}

impl Connection {
    fn pc(&self) -> &Arc<dyn PeerConnection> {
        &self.peer_connection.pc
    }

    fn has_remote_description(&self) -> bool {
        self.remote_description_set
    }

    fn awaiting_answer(&self) -> bool {
        matches!(self.negotiation, Negotiation::AwaitingAnswer { .. })
    }
}

/// Callers waiting for one outcome, and the bound on waiting.
#[derive(Default)]
struct Waiters {
    replies: Vec<Reply>,
    deadline: Option<Instant>,
}

impl Waiters {
    fn is_waiting(&self) -> bool {
        !self.replies.is_empty()
    }

    fn finish(&mut self, result: &Result<(), RtcError>) {
        self.deadline = None;
        for reply in self.replies.drain(..) {
            // A caller that stopped waiting dropped its receiver; that is its right.
            let _ = reply.send(result.clone());
        }
    }
}

#[derive(Default)]
struct RestartWaiters {
    waiters: Waiters,
    /// A restart is wanted but not started (offerer: an offer is outstanding; answerer: the
    /// request is sent and no restart offer has arrived yet).
    queued: bool,
}

struct PeerTask {
    peer: PeerId,
    role: Role,
    ctx: Arc<SetContext>,
    view: Arc<PeerView>,
    internal: mpsc::UnboundedSender<Internal>,
    /// Peer connections built so far for this peer (shared with the set); the next one's id is
    /// `built + 1`.
    built: Arc<AtomicU64>,
    /// Offers sent so far (offerer), numbering them for the answerer.
    offers_sent: u64,
    current: Option<Connection>,
    /// Remote candidates that arrived before a remote description to add them to.
    remote_candidates: VecDeque<RTCIceCandidateInit>,
    connect: Waiters,
    restart: RestartWaiters,
    last_emitted: Option<(ConnectionId, PeerState)>,
}

/// What `connect` has to do for the current connection.
enum ConnectStep {
    Wait,
    NewConnection,
    ReplaceUnusable,
    RestartIce,
    Request { from_scratch: bool },
}

impl PeerTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        debug!(name: "rtc.peer.task", "peer task started");
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                // webrtc-rs events first, so a command is always handled against the newest
                // state (an old `connected` cannot be mistaken for the end of a later restart).
                biased;
                Some(event) = internal.recv() => self.handle_internal(event).await,
                command = commands.recv() => match command {
                    Some(Command::Close(done)) => {
                        self.close(true).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.handle_command(command).await,
                    None => {
                        // The PeerSet is gone: nobody can use this peer any more.
                        self.close(true).await;
                        break;
                    }
                },
                // No deadline: the branch is off (the placeholder instant is never awaited).
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => self.handle_timeout(Instant::now()).await,
            }
        }
        debug!(name: "rtc.peer.task", "peer task ended");
    }

    fn next_deadline(&self) -> Option<Instant> {
        let answer = self.current.as_ref().and_then(|connection| match connection.negotiation {
            Negotiation::AwaitingAnswer { deadline, .. } => Some(deadline),
            Negotiation::Stable => None,
        });
        [self.connect.deadline, self.restart.waiters.deadline, answer].into_iter().flatten().min()
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Connect(reply) => self.connect(reply).await,
            Command::Replace(reply) => self.replace(reply).await,
            Command::RestartIce(reply) => self.restart_ice(reply).await,
            Command::ClearPendingRestart => self.clear_pending_restart(),
            Command::Signal(payload) => self.handle_signal(payload).await,
            Command::Close(done) => {
                // `run` handles Close before dispatching here; stay correct if that changes.
                self.close(true).await;
                let _ = done.send(());
            }
        }
    }

    // ----- public operations -------------------------------------------------------------

    async fn connect(&mut self, reply: Reply) {
        if self.channel_open() {
            let _ = reply.send(Ok(()));
            return;
        }
        self.connect.replies.push(reply);
        if self.connect.deadline.is_some() {
            trace!(name: "rtc.connect.join", "joining the connect attempt in flight");
            return;
        }
        self.connect.deadline = Some(Instant::now() + self.ctx.config.connect_timeout);
        debug!(name: "rtc.connect.start", "connect attempt started");
        let step = self.connect_step(true);
        if let Err(error) = self.take_step(step).await {
            self.fail_connect(error);
        }
    }

    fn connect_step(&self, caller_initiated: bool) -> ConnectStep {
        match (self.role, self.current.as_ref()) {
            (Role::Offerer, None) => ConnectStep::NewConnection,
            (Role::Offerer, Some(connection)) => match connection.state {
                PeerState::Failed | PeerState::Closed => ConnectStep::ReplaceUnusable,
                _ if connection.awaiting_answer() => ConnectStep::Wait,
                PeerState::Disconnected => ConnectStep::RestartIce,
                _ => ConnectStep::Wait,
            },
            (Role::Answerer, None) => ConnectStep::Request {
                // With nothing here, make sure the offerer starts from scratch too rather than
                // restarting a peer connection this side no longer has.
                from_scratch: caller_initiated,
            },
            (Role::Answerer, Some(connection)) => match connection.state {
                PeerState::Connecting | PeerState::Connected
                    if connection.has_remote_description() =>
                {
                    ConnectStep::Wait
                }
                _ => ConnectStep::Request { from_scratch: false },
            },
        }
    }

    async fn take_step(&mut self, step: ConnectStep) -> Result<(), RtcError> {
        match step {
            ConnectStep::Wait => Ok(()),
            ConnectStep::NewConnection => self.offer_new_connection().await,
            ConnectStep::ReplaceUnusable => {
                self.retire(PeerState::Closed, "unusable peer connection replaced").await;
                self.offer_new_connection().await
            }
            ConnectStep::RestartIce => self.offer(true).await,
            ConnectStep::Request { from_scratch } => {
                if from_scratch {
                    self.signal(SignalPayload::Bye)?;
                }
                self.signal(SignalPayload::IceRestartRequest)
            }
        }
    }

    async fn replace(&mut self, reply: Reply) {
        let connection = self.current.as_ref().map(|current| current.id.get());
        info!(name: "rtc.peer.replace", ?connection, "replacing the peer connection");
        self.connect.replies.push(reply);
        self.connect.deadline = Some(Instant::now() + self.ctx.config.connect_timeout);
        self.retire(PeerState::Closed, "replaced").await;
        let result = match self.role {
            Role::Offerer => self.offer_new_connection().await,
            // `bye` even without a peer connection here: the offerer may still hold one, and an
            // ICE restart of it could never complete with a new peer connection on this side.
            Role::Answerer => self
                .signal(SignalPayload::Bye)
                .and_then(|()| self.signal(SignalPayload::IceRestartRequest)),
        };
        if let Err(error) = result {
            self.fail_connect(error);
        }
    }

    async fn restart_ice(&mut self, reply: Reply) {
        let Some(connection) = self.current.as_ref() else {
            let _ = reply.send(Err(RtcError::NoPeerConnection { peer: self.peer.clone() }));
            return;
        };
        // Only the first offer of a peer connection is waited for; an unanswered restart offer
        // (its answer lost with a signaling link, say) is superseded by a new one right away.
        let first_offer_pending =
            connection.awaiting_answer() && !connection.has_remote_description();
        let connection = connection.id.get();
        self.restart.waiters.replies.push(reply);
        if self.restart.waiters.deadline.is_some() {
            trace!(name: "rtc.ice.restart", phase = "joined", connection);
            return;
        }
        self.restart.waiters.deadline = Some(Instant::now() + self.ctx.config.restart_timeout);
        info!(name: "rtc.ice.restart", phase = "requested", connection);
        let result = match self.role {
            Role::Offerer if first_offer_pending => {
                self.restart.queued = true;
                Ok(())
            }
            Role::Offerer => self.offer(true).await,
            Role::Answerer => {
                self.restart.queued = true;
                self.signal(SignalPayload::IceRestartRequest)
            }
        };
        if let Err(error) = result {
            self.fail_restart(error);
        }
    }

    fn clear_pending_restart(&mut self) {
        if self.restart.queued || self.restart.waiters.is_waiting() {
            info!(name: "rtc.ice.restart", phase = "cleared");
        }
        self.fail_restart(RtcError::RestartCancelled { peer: self.peer.clone() });
    }

    async fn close(&mut self, notify_remote: bool) {
        let closed = RtcError::PeerClosed { peer: self.peer.clone() };
        self.fail_connect(closed.clone());
        self.fail_restart(closed);
        let had_connection = self.current.is_some();
        self.retire(PeerState::Closed, "closed locally").await;
        if had_connection && notify_remote {
            let _ = self.signal(SignalPayload::Bye);
        }
        info!(name: "rtc.peer.closed", "peer closed");
    }

    // ----- inbound signaling -------------------------------------------------------------

    async fn handle_signal(&mut self, payload: SignalPayload) {
        trace!(name: "rtc.signal.in", kind = payload.kind());
        match (self.role, payload) {
            (Role::Answerer, SignalPayload::Offer { sdp }) => self.on_offer(sdp).await,
            (Role::Offerer, SignalPayload::Answer { sdp }) => self.on_answer(sdp).await,
            (Role::Offerer, SignalPayload::IceRestartRequest) => self.on_restart_request().await,
            (_, SignalPayload::Candidate { candidate, sdp_mid, sdp_mline_index }) => {
                self.on_remote_candidate(candidate, sdp_mid, sdp_mline_index).await;
            }
            (_, SignalPayload::Bye) => self.on_bye().await,
            (role, payload) => ignored(payload.kind(), wrong_side(role)),
        }
    }

    async fn on_offer(&mut self, tagged_sdp: String) {
        let (tags, sdp) = untag(&tagged_sdp);
        let origin = match SessionOrigin::parse(&sdp) {
            Ok(origin) => origin,
            Err(reason) => {
                warn!(name: "rtc.signal.rejected", kind = "offer", reason);
                return;
            }
        };
        let offer = OfferId { origin, seq: tags.seq };
        let current = self.current.as_ref().and_then(|connection| connection.remote_offer.as_ref());
        match OfferKind::classify(current, &offer) {
            OfferKind::Stale => ignored("offer", "older than the offer already applied"),
            OfferKind::Duplicate => {
                let answer =
                    self.current.as_ref().and_then(|connection| connection.last_answer.clone());
                debug!(name: "rtc.signal.duplicate", kind = "offer", "answering again");
                if let Some(sdp) = answer {
                    let _ = self.signal(SignalPayload::Answer { sdp });
                }
            }
            OfferKind::Renegotiation => {
                let origin = offer.origin.clone();
                if let Err(error) = self.answer(sdp, offer, true).await {
                    self.refuse_offer(&origin, Rejection::Failed, error).await;
                }
            }
            OfferKind::NewSession if tags.ice_restart => {
                warn!(
                    name: "rtc.signal.rejected",
                    kind = "offer",
                    reason = "ice restart of a session this side does not have"
                );
                self.retire(PeerState::Closed, "offerer restarts an unknown session").await;
                let _ = self.signal(SignalPayload::Answer {
                    sdp: rejection(&offer.origin, Rejection::UnknownSession),
                });
                if self.connect.is_waiting() {
                    // This side still wants a connection: ask for a fresh one.
                    if let Err(error) = self.signal(SignalPayload::IceRestartRequest) {
                        self.fail_connect(error);
                    }
                }
            }
            OfferKind::NewSession => {
                if self.current.is_some() {
                    self.retire(PeerState::Closed, "offerer started a new session").await;
                }
                let origin = offer.origin.clone();
                let result = match self.build_connection().await {
                    Ok(connection) => {
                        self.current = Some(connection);
                        self.answer(sdp, offer, false).await
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    self.refuse_offer(&origin, Rejection::Failed, error).await;
                }
            }
        }
    }

    /// Applies an offer to the current connection and sends the answer.
    async fn answer(
        &mut self,
        sdp: String,
        offer_id: OfferId,
        restart: bool,
    ) -> Result<(), RtcError> {
        let peer = self.peer.clone();
        let Some(connection) = self.current.as_mut() else {
            return Err(RtcError::NoPeerConnection { peer });
        };
        let offer = RTCSessionDescription::offer(sdp).map_err(|error| RtcError::Negotiation {
            peer: peer.clone(),
            reason: format!("malformed offer: {error}"),
        })?;
        connection
            .pc()
            .set_remote_description(offer)
            .await
            .map_err(|error| RtcError::webrtc(&peer, "set remote offer", error))?;
        connection.remote_description_set = true;
        let answer = connection
            .pc()
            .create_answer(None)
            .await
            .map_err(|error| RtcError::webrtc(&peer, "create answer", error))?;
        let tagged = tag_answer(&answer.sdp, &offer_id.origin);
        connection
            .pc()
            .set_local_description(answer)
            .await
            .map_err(|error| RtcError::webrtc(&peer, "set local answer", error))?;
        connection.last_answer = Some(tagged.clone());
        let offer_seq = offer_id.seq;
        connection.remote_offer = Some(offer_id);
        let id = connection.id;
        if restart {
            connection.restart_applied = true;
            self.restart.queued = false;
            info!(name: "rtc.ice.restart", phase = "applied", connection = id.get());
        }
        debug!(name: "rtc.negotiation.answer", connection = id.get(), ?offer_seq, restart);
        self.signal(SignalPayload::Answer { sdp: tagged })?;
        self.flush_remote_candidates().await;
        Ok(())
    }

    async fn on_answer(&mut self, tagged_sdp: String) {
        let (tags, sdp) = untag(&tagged_sdp);
        let named_offer = tags.answers;
        let peer = self.peer.clone();
        let Some(connection) = self.current.as_mut() else {
            return ignored("answer", "no peer connection");
        };
        let Negotiation::AwaitingAnswer { offer, restart, .. } = &connection.negotiation else {
            return ignored("answer", "no offer outstanding");
        };
        if named_offer.as_ref().is_some_and(|named| named != offer) {
            return ignored("answer", "answers a superseded offer");
        }
        if let Some(why) = tags.rejected {
            return self.offer_refused(why).await;
        }
        let restart = *restart;
        let applied = match RTCSessionDescription::answer(sdp) {
            Ok(answer) => connection
                .pc()
                .set_remote_description(answer)
                .await
                .map_err(|error| RtcError::webrtc(&peer, "set remote answer", error)),
            Err(error) => Err(RtcError::Negotiation {
                peer: peer.clone(),
                reason: format!("malformed answer: {error}"),
            }),
        };
        if let Err(error) = applied {
            return self.negotiation_failed(error).await;
        }
        connection.negotiation = Negotiation::Stable;
        connection.remote_description_set = true;
        let id = connection.id;
        if restart {
            connection.restart_applied = true;
            info!(name: "rtc.ice.restart", phase = "applied", connection = id.get());
        }
        debug!(name: "rtc.negotiation.answered", connection = id.get(), restart);
        self.flush_remote_candidates().await;
        if self.restart.queued {
            self.restart.queued = false;
            if let Err(error) = self.offer(true).await {
                self.fail_restart(error);
            }
        }
    }

    async fn on_restart_request(&mut self) {
        info!(name: "rtc.ice.restart", phase = "requested_by_remote");
        let result = match self.current.as_ref() {
            None => self.offer_new_connection().await,
            Some(connection) if connection.state == PeerState::Closed => {
                self.retire(PeerState::Closed, "unusable peer connection replaced").await;
                self.offer_new_connection().await
            }
            // The first offer of this peer connection is unanswered. The request
            // usually crossed it on the wire, but the signaling server drops
            // relays to peers not registered yet: send it again (same session and
            // sequence, so a duplicate is answered again, not renegotiated), with
            // the candidates gathered since.
            Some(connection)
                if connection.awaiting_answer() && !connection.has_remote_description() =>
            {
                self.resend_offer().await
            }
            // Otherwise offer a restart, superseding a restart offer still unanswered: the
            // answerer asking again suggests that offer was lost.
            Some(_) => self.offer(true).await,
        };
        if let Err(error) = result {
            warn!(name: "rtc.negotiation.failed", %error, "cannot answer the restart request");
            self.fail_connect(error.clone());
            self.fail_restart(error);
        }
    }

    async fn on_remote_candidate(
        &mut self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) {
        if candidate.trim().is_empty() {
            trace!(name: "rtc.ice.remote_candidate", "end of candidates");
            return;
        }
        let candidate =
            RTCIceCandidateInit { candidate, sdp_mid, sdp_mline_index, ..Default::default() };
        match self.current.as_ref() {
            Some(connection) if connection.has_remote_description() => {
                self.add_remote_candidate(candidate).await;
            }
            _ => {
                if self.remote_candidates.contains(&candidate) {
                    return;
                }
                if self.remote_candidates.len() == MAX_BUFFERED_CANDIDATES {
                    self.remote_candidates.pop_front();
                }
                trace!(name: "rtc.ice.remote_candidate", "buffered until a remote description");
                self.remote_candidates.push_back(candidate);
            }
        }
    }

    async fn on_bye(&mut self) {
        let Some(current) = self.current.as_ref() else {
            return ignored("bye", "no peer connection");
        };
        if current.awaiting_answer() && !current.has_remote_description() {
            // The answerer answers an offer before it says anything else, so this `bye` left
            // before it saw the first offer of this peer connection: it is about an older one.
            return ignored("bye", "sent before the answerer saw this peer connection's offer");
        }
        self.retire(PeerState::Closed, "closed by remote").await;
        self.fail_restart(RtcError::ClosedByRemote { peer: self.peer.clone() });
        if self.connect.is_waiting() {
            // A connect is still wanted and still within its bound: start over.
            let step = self.connect_step(false);
            if let Err(error) = self.take_step(step).await {
                self.fail_connect(error);
            }
        }
    }

    // ----- webrtc-rs events --------------------------------------------------------------

    async fn handle_internal(&mut self, Internal { connection_id, event }: Internal) {
        if self.current.as_ref().map(|current| current.id) != Some(connection_id) {
            let connection = connection_id.get();
            trace!(name: "rtc.peer.stale_event", connection, "event of a retired peer connection");
            return;
        }
        match event {
            InternalEvent::LocalCandidate(candidate) => {
                let _ = self.signal(SignalPayload::Candidate {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                });
            }
            InternalEvent::GatheringComplete => {
                let _ = self.signal(SignalPayload::end_of_candidates());
            }
            InternalEvent::ConnectionState(state) => self.on_connection_state(state),
            InternalEvent::IceConnectionState(state) => self.on_ice_state(state),
            InternalEvent::RemoteChannel(channel) => self.watch_channel(connection_id, channel),
            InternalEvent::ChannelOpened => self.on_channel_opened(),
            InternalEvent::ChannelClosed => {
                if let Some(current) = self.current.as_mut() {
                    current.channel_open = false;
                }
            }
        }
    }

    fn on_connection_state(&mut self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::New | RTCPeerConnectionState::Connecting => {
                PeerState::Connecting
            }
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => return,
        };
        let Some(current) = self.current.as_mut() else {
            return;
        };
        current.state = state;
        let id = current.id;
        self.view.set_state(id, state);
        self.emit_state(id, state);
        if matches!(state, PeerState::Failed | PeerState::Closed) {
            self.fail_connect(RtcError::ConnectionFailed { peer: self.peer.clone() });
        }
    }

    fn on_ice_state(&mut self, state: RTCIceConnectionState) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        trace!(name: "rtc.ice.state", connection = current.id.get(), ?state);
        let connected =
            matches!(state, RTCIceConnectionState::Connected | RTCIceConnectionState::Completed);
        if connected && current.restart_applied {
            current.restart_applied = false;
            info!(name: "rtc.ice.restart", phase = "completed", connection = current.id.get());
            self.restart.queued = false;
            self.restart.waiters.finish(&Ok(()));
        }
    }

    fn on_channel_opened(&mut self) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        current.channel_open = true;
        info!(name: "rtc.channel.open", connection = current.id.get());
        self.connect.finish(&Ok(()));
        // A new channel revives the peer just as well as a completed restart would.
        if self.restart.waiters.is_waiting() {
            self.restart.queued = false;
            self.restart.waiters.finish(&Ok(()));
        }
    }

    // ----- time --------------------------------------------------------------------------

    async fn handle_timeout(&mut self, now: Instant) {
        if self.connect.deadline.is_some_and(|deadline| deadline <= now) {
            let after = self.ctx.config.connect_timeout;
            warn!(name: "rtc.connect.timeout", ?after);
            self.fail_connect(RtcError::ConnectTimeout { peer: self.peer.clone(), after });
            if self.current.is_some() && !self.channel_open() {
                self.retire(PeerState::Failed, "connect timed out").await;
                let _ = self.signal(SignalPayload::Bye);
            }
        }
        if self.restart.waiters.deadline.is_some_and(|deadline| deadline <= now) {
            let after = self.ctx.config.restart_timeout;
            warn!(name: "rtc.ice.restart", phase = "timeout", ?after);
            if let Some(current) = self.current.as_mut() {
                current.restart_applied = false;
            }
            self.fail_restart(RtcError::RestartTimeout { peer: self.peer.clone(), after });
        }
        let unanswered = self.current.as_ref().and_then(|current| match current.negotiation {
            Negotiation::AwaitingAnswer { deadline, .. } if deadline <= now => {
                Some(current.has_remote_description())
            }
            _ => None,
        });
        match unanswered {
            Some(true) => {
                // A restart offer went unanswered. Forget it (a late answer is then ignored);
                // the connection stays as it was and the next restart offers again.
                warn!(name: "rtc.negotiation.unanswered", "restart offer got no answer");
                if let Some(current) = self.current.as_mut() {
                    current.negotiation = Negotiation::Stable;
                }
            }
            Some(false) => {
                warn!(name: "rtc.negotiation.unanswered", "offer got no answer");
                self.retire(PeerState::Failed, "offer unanswered").await;
                let _ = self.signal(SignalPayload::Bye);
            }
            None => {}
        }
    }

    // ----- building blocks ---------------------------------------------------------------

    fn channel_open(&self) -> bool {
        self.current.as_ref().is_some_and(|current| current.channel_open)
    }

    async fn build_connection(&mut self) -> Result<Connection, RtcError> {
        let id = ConnectionId::new(self.built.fetch_add(1, Ordering::Relaxed) + 1);
        let handler =
            Arc::new(ConnectionHandler { connection_id: id, events: self.internal.clone() });
        let config = &self.ctx.config;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.rtc_configuration())
            .with_setting_engine(config.setting_engine())
            .with_handler(handler)
            .with_udp_addrs(config.local_addresses.bind_targets())
            .build()
            .await
            .map_err(|error| RtcError::webrtc(&self.peer, "build peer connection", error))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        self.view.begin_connection(id);
        info!(name: "rtc.peer.created", connection = id.get(), "peer connection built");
        self.emit_state(id, PeerState::Connecting);
        Ok(Connection {
            id,
            peer_connection: OwnedConnection { pc, closed: false },
            state: PeerState::Connecting,
            negotiation: Negotiation::Stable,
            remote_description_set: false,
            remote_offer: None,
            last_answer: None,
            last_offer: None,
            channel_open: false,
            restart_applied: false,
        })
    }

    /// Offerer: a new peer connection with its data channel, offered to the peer.
    async fn offer_new_connection(&mut self) -> Result<(), RtcError> {
        let mut connection = self.build_connection().await?;
        let channel = connection
            .pc()
            .create_data_channel(
                &self.ctx.config.data_channel_label,
                Some(RTCDataChannelInit::default()),
            )
            .await;
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => {
                connection.peer_connection.close(&self.ctx).await;
                self.view.set_state(connection.id, PeerState::Failed);
                self.emit_state(connection.id, PeerState::Failed);
                return Err(RtcError::webrtc(&self.peer, "create data channel", error));
            }
        };
        self.watch_channel(connection.id, channel);
        self.current = Some(connection);
        if let Err(error) = self.offer(false).await {
            self.retire(PeerState::Failed, "offer failed").await;
            return Err(error);
        }
        Ok(())
    }

    /// Offerer: sends an offer for the current connection (an ICE restart when `restart`).
    async fn offer(&mut self, restart: bool) -> Result<(), RtcError> {
        let peer = self.peer.clone();
        let answer_timeout = self.ctx.config.connect_timeout;
        self.offers_sent += 1;
        let seq = self.offers_sent;
        let Some(connection) = self.current.as_mut() else {
            return Err(RtcError::NoPeerConnection { peer });
        };
        // The restart goes in through the offer options, not `PeerConnection::restart_ice`: in
        // webrtc 0.21.1 the latter also wakes the driver's gathering at once, and with fresh
        // sockets on restart that gathering can finish before `set_local_description` applies
        // the restart, which then discards the candidates just gathered (the restarted ICE
        // generation is left without local candidates and never connects). Through the options,
        // gathering starts from `set_local_description`, after the discard.
        let options = restart.then_some(RTCOfferOptions { ice_restart: true });
        let offer = connection
            .pc()
            .create_offer(options)
            .await
            .map_err(|error| RtcError::webrtc(&peer, "create offer", error))?;
        let origin = SessionOrigin::parse(&offer.sdp).map_err(|reason| RtcError::Negotiation {
            peer: peer.clone(),
            reason: format!("local offer: {reason}"),
        })?;
        let sdp = offer.sdp.clone();
        connection
            .pc()
            .set_local_description(offer)
            .await
            .map_err(|error| RtcError::webrtc(&peer, "set local offer", error))?;
        let id = connection.id;
        debug!(name: "rtc.negotiation.offer", connection = id.get(), seq, restart);
        connection.negotiation = Negotiation::AwaitingAnswer {
            offer: origin,
            deadline: Instant::now() + answer_timeout,
            restart,
        };
        if restart {
            info!(name: "rtc.ice.restart", phase = "offer_sent", connection = id.get());
        }
        connection.last_offer = Some((seq, restart));
        self.signal(SignalPayload::Offer { sdp: tag_offer(&sdp, seq, restart) })
    }

    /// Sends the current peer connection's unanswered offer again, as it
    /// stands now (with every candidate gathered so far).
    async fn resend_offer(&mut self) -> Result<(), RtcError> {
        let Some(connection) = self.current.as_ref() else {
            return Err(RtcError::NoPeerConnection { peer: self.peer.clone() });
        };
        let Some((seq, restart)) = connection.last_offer else {
            return Ok(());
        };
        let Some(local) = connection.pc().local_description().await else {
            return Ok(());
        };
        debug!(name: "rtc.negotiation.offer", connection = connection.id.get(), seq, restart, resent = true);
        self.signal(SignalPayload::Offer { sdp: tag_offer(&local.sdp, seq, restart) })
    }

    async fn add_remote_candidate(&mut self, candidate: RTCIceCandidateInit) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        if let Err(error) = current.pc().add_ice_candidate(candidate).await {
            warn!(name: "rtc.signal.rejected", kind = "candidate", %error);
        }
    }

    async fn flush_remote_candidates(&mut self) {
        while let Some(candidate) = self.remote_candidates.pop_front() {
            self.add_remote_candidate(candidate).await;
        }
    }

    /// Closes the current connection and reports it in `state` (closed or failed).
    async fn retire(&mut self, state: PeerState, reason: &'static str) {
        let Some(mut connection) = self.current.take() else {
            return;
        };
        info!(name: "rtc.peer.retired", connection = connection.id.get(), ?state, reason);
        self.view.set_state(connection.id, state);
        self.view.close_channel(connection.id);
        connection.peer_connection.close(&self.ctx).await;
        self.emit_state(connection.id, state);
    }

    /// Answerer: refuses the offer `origin` (the offerer learns it exactly), dropping whatever
    /// peer connection was being negotiated.
    async fn refuse_offer(&mut self, origin: &SessionOrigin, why: Rejection, error: RtcError) {
        warn!(name: "rtc.negotiation.failed", %error, "offer refused");
        self.retire(PeerState::Failed, "offer could not be taken").await;
        let _ = self.signal(SignalPayload::Answer { sdp: rejection(origin, why) });
        self.fail_connect(error.clone());
        self.fail_restart(error);
    }

    /// Offerer: the answerer refused the outstanding offer.
    async fn offer_refused(&mut self, why: Rejection) {
        let peer = self.peer.clone();
        warn!(name: "rtc.negotiation.refused", ?why);
        match why {
            Rejection::UnknownSession => {
                // The answerer no longer has this peer connection: nothing can revive it.
                self.retire(PeerState::Closed, "remote no longer has this session").await;
                self.fail_restart(RtcError::ClosedByRemote { peer });
                if self.connect.is_waiting() {
                    let step = self.connect_step(false);
                    if let Err(error) = self.take_step(step).await {
                        self.fail_connect(error);
                    }
                }
            }
            Rejection::Failed => {
                let error = RtcError::Negotiation {
                    peer,
                    reason: "the remote could not take the offer".to_owned(),
                };
                self.retire(PeerState::Failed, "offer refused").await;
                self.fail_connect(error.clone());
                self.fail_restart(error);
            }
        }
    }

    async fn negotiation_failed(&mut self, error: RtcError) {
        warn!(name: "rtc.negotiation.failed", %error);
        let had_connection = self.current.is_some();
        self.retire(PeerState::Failed, "negotiation failed").await;
        if had_connection {
            let _ = self.signal(SignalPayload::Bye);
        }
        self.fail_connect(error.clone());
        self.fail_restart(error);
    }

    fn fail_connect(&mut self, error: RtcError) {
        if self.connect.is_waiting() {
            debug!(name: "rtc.connect.failed", %error);
        }
        self.connect.finish(&Err(error));
    }

    fn fail_restart(&mut self, error: RtcError) {
        self.restart.queued = false;
        self.restart.waiters.finish(&Err(error));
    }

    fn emit_state(&mut self, connection_id: ConnectionId, state: PeerState) {
        if self.last_emitted == Some((connection_id, state)) {
            return;
        }
        self.last_emitted = Some((connection_id, state));
        debug!(name: "rtc.peer.state", connection = connection_id.get(), ?state);
        // Nobody listening is not an error for the peer.
        let _ = self.ctx.states.send(RtcEvent::PeerStateChanged {
            peer: self.peer.clone(),
            connection_id,
            state,
        });
    }

    /// Pushes a signaling message towards the peer without waiting: a full or closed channel is
    /// reported (and logged) rather than stalling negotiation.
    fn signal(&self, payload: SignalPayload) -> Result<(), RtcError> {
        let kind = payload.kind();
        let message = OutboundSignal { to: self.peer.clone(), payload };
        match self.ctx.signals.try_send(message) {
            Ok(()) => {
                trace!(name: "rtc.signal.out", kind);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(name: "rtc.signal.dropped", kind, reason = "outbound channel full");
                Err(RtcError::SignalChannelFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!(name: "rtc.signal.dropped", kind, reason = "outbound channel closed");
                Err(RtcError::SignalChannelClosed)
            }
        }
    }

    /// Reads a data channel of peer connection `connection_id` until it closes, publishing it
    /// while open.
    fn watch_channel(&self, connection_id: ConnectionId, channel: Arc<dyn DataChannel>) {
        let view = Arc::clone(&self.view);
        let internal = self.internal.clone();
        let traffic = self.ctx.traffic.clone();
        let peer = self.peer.clone();
        let task = async move {
            let mut opened = false;
            while let Some(event) = channel.poll().await {
                // webrtc-rs may deliver a message before the open event:
                // the channel is open then, and consumers must hear so
                // before they see the message.
                let opens =
                    matches!(event, DataChannelEvent::OnOpen | DataChannelEvent::OnMessage(_));
                if opens && !opened && view.open_channel(connection_id, &channel) {
                    opened = true;
                    let event = InternalEvent::ChannelOpened;
                    let _ = internal.send(Internal { connection_id, event });
                    let opened_event =
                        RtcEvent::ChannelOpened { peer: peer.clone(), connection_id };
                    let _ = traffic.send(opened_event).await;
                }
                match event {
                    DataChannelEvent::OnMessage(message) => {
                        trace!(name: "rtc.channel.message", bytes = message.data.len());
                        let received = RtcEvent::MessageReceived {
                            peer: peer.clone(),
                            connection_id,
                            data: message.data.freeze(),
                        };
                        // Waiting here is the back-pressure: webrtc-rs stops reading, SCTP
                        // throttles the sender. If the receiver is gone the message has nowhere
                        // to go.
                        let _ = traffic.send(received).await;
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
            view.close_channel(connection_id);
            let _ = internal.send(Internal { connection_id, event: InternalEvent::ChannelClosed });
            if opened {
                info!(name: "rtc.channel.closed", connection = connection_id.get());
                let _ = traffic.send(RtcEvent::ChannelClosed { peer, connection_id }).await;
            }
        };
        tokio::spawn(task.instrument(Span::current()));
    }
}

fn wrong_side(role: Role) -> &'static str {
    match role {
        Role::Offerer => "only the answerer may send this, and this side offers",
        Role::Answerer => "only the offerer may send this, and this side answers",
    }
}

fn ignored(kind: &'static str, reason: &'static str) {
    debug!(name: "rtc.signal.ignored", kind, reason);
}
