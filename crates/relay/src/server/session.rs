//! One WebSocket session on the server: a reader (this task) that validates
//! and routes frames, and a writer task that drains the bounded outbound
//! queue, pings, and writes the close frame.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, field, info_span, trace, warn};

use crate::cluster::{Announcement, ClusterError, Frame, Inbox};
use crate::metrics::SessionEnd;
use tether_signal::protocol::{
    ClientMessage, ErrorCode, PROTOCOL_VERSION, PeerId, Register, RelayOut, RelayPayload, RoomId,
    ServerMessage, close_code, decode_client_message, encode_server_message,
};

use super::ServerState;
use super::admission::Pending;
use super::cluster_link::{self, ClusterLink};
use super::rate::TokenBucket;
use super::registry::{Located, RegisterOutcome, Registration};

/// The upgraded connection a session runs on.
type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Why and how a session is to be closed; the first request wins.
#[derive(Debug, Clone, Copy)]
struct CloseRequest {
    code: u16,
    reason: &'static str,
    end: SessionEnd,
}

/// Closes a session from anywhere (its own reader, another session that
/// found its queue full, a replacing registration).
#[derive(Debug, Default)]
pub(super) struct Closer {
    token: CancellationToken,
    request: OnceLock<CloseRequest>,
}

impl Closer {
    fn close(&self, code: u16, reason: &'static str, end: SessionEnd) {
        let _ = self.request.set(CloseRequest { code, reason, end });
        self.token.cancel();
    }

    fn end(&self) -> SessionEnd {
        self.request.get().map_or(SessionEnd::Closed, |request| request.end)
    }
}

/// When the client was last heard from, shared by reader and writer so the
/// writer pings only connections that have gone quiet.
#[derive(Debug)]
struct Activity {
    started: Instant,
    last_inbound_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { started: Instant::now(), last_inbound_ms: AtomicU64::new(0) }
    }

    fn heard_now(&self, now: Instant) {
        let millis = now.saturating_duration_since(self.started).as_millis() as u64;
        self.last_inbound_ms.store(millis, Ordering::Relaxed);
    }

    fn silent_for(&self, now: Instant) -> Duration {
        let last =
            self.started + Duration::from_millis(self.last_inbound_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// What happened to a frame offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    Queued,
    /// The queue was full: the receiving session is being dropped.
    Overflowed,
    /// The session has ended.
    Gone,
}

/// A cheap, clonable reference to a live session.
#[derive(Debug, Clone)]
pub(super) struct SessionHandle {
    pub(super) connection_id: u64,
    pub(super) outbound: mpsc::Sender<Utf8Bytes>,
    closer: Arc<Closer>,
}

impl SessionHandle {
    pub(super) fn close(&self, code: u16, reason: &'static str, end: SessionEnd) {
        self.closer.close(code, reason, end);
    }

    /// Queues a frame without waiting; a full queue drops the session as a
    /// slow consumer (close 4004) instead of letting memory grow.
    pub(super) fn deliver(&self, frame: Utf8Bytes) -> Delivery {
        match self.outbound.try_send(frame) {
            Ok(()) => Delivery::Queued,
            Err(TrySendError::Full(_)) => {
                debug!(name: "signal.server.slow_consumer", connection_id = self.connection_id);
                self.close(close_code::SLOW_CONSUMER, "slow consumer", SessionEnd::SlowConsumer);
                Delivery::Overflowed
            }
            Err(TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    pub(super) fn deliver_message(&self, message: &ServerMessage) -> Delivery {
        self.deliver(Utf8Bytes::from(encode_server_message(message)))
    }
}

/// Whether the reader keeps going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Runs one upgraded WebSocket connection to its end. `pending` is its
/// place among the unregistered connections, released when it registers.
/// Runs one WebSocket session; `early_register` is the `register` message the upgrade request
/// carried, taken as the session's first frame.
pub(super) async fn run(
    socket: Socket,
    remote: SocketAddr,
    pending: Pending,
    early_register: Option<String>,
    state: Arc<ServerState>,
) {
    let connection_id = state.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("signal.session", connection_id, %remote, peer = field::Empty);
    async move {
        state.metrics.session_opened();
        debug!(name: "signal.server.session.open", "session open");
        let (sink, mut stream) = socket.split();
        let (outbound, queue) = mpsc::channel(state.limits.outbound_queue);
        let closer = Arc::new(Closer::default());
        let handle = SessionHandle { connection_id, outbound, closer: Arc::clone(&closer) };
        let activity = Arc::new(Activity::new());
        let writer = tokio::spawn(
            write_loop(sink, queue, Arc::clone(&closer), Arc::clone(&activity), Arc::clone(&state))
                .instrument(tracing::Span::current()),
        );
        let now = Instant::now();
        let mut session = Session {
            state: &state,
            handle,
            activity,
            peer: None,
            room: None,
            pending: Some(pending),
            token_expires: None,
            bad_frames: 0,
            relay_bucket: TokenBucket::new(state.limits.relay_rate, now),
            ping_bucket: TokenBucket::new(state.limits.ping_rate, now),
            rate_violations: 0,
            cluster_seat: None,
        };
        session.read_loop(&mut stream, early_register).await;
        let seat = session.cluster_seat.take();
        let mut vacated = None;
        if let Some(peer) = session.peer.take() {
            let owned = state.registry.unregister(&peer, connection_id, &state.metrics);
            // Superseded by another instance: the peer is still in its room
            // there, so local members hear nothing (they heard of no move).
            let moved = state.cluster.is_some() && closer.end() == SessionEnd::Replaced;
            if let Some(members) = &owned
                && !moved
            {
                let frame = Utf8Bytes::from(encode_server_message(&ServerMessage::PeerLeft {
                    peer_id: peer.clone(),
                }));
                for member in members {
                    member.deliver(frame.clone());
                }
            }
            let tenure = match owned {
                Some(_) if moved => Tenure::Moved,
                Some(_) => Tenure::Owned,
                None => Tenure::Replaced,
            };
            vacated = seat.map(|seat| (peer, seat, tenure));
        }
        closer.close(close_code::NORMAL, "closed", SessionEnd::Closed);
        if let (Some(link), Some((peer, seat, tenure))) = (&state.cluster, vacated) {
            let bound = state.limits.close_timeout.max(Duration::from_secs(1));
            let _ = tokio::time::timeout(bound, vacate(link, &peer, seat, tenure)).await;
        }
        // An evicted connection never registered: its descriptor is needed
        // at once, not after lingering for its input.
        if let Ok(sink) = writer.await
            && let Ok(socket) = sink.reunite(stream)
            && closer.end() != SessionEnd::Evicted
        {
            linger(socket, &state).await;
        }
        let end = closer.end();
        state.metrics.session_ended(end);
        debug!(name: "signal.server.session.closed", reason = end.name());
    }
    .instrument(span)
    .await;
}

/// After the close frame went out: half-close, then read and discard what
/// the client still sends (bounded in time and bytes) before dropping the
/// socket. Closing with unread input would send a TCP reset, and a reset
/// makes the client's kernel discard the close frame it has not read yet.
async fn linger(mut socket: Socket, state: &ServerState) {
    let budget = state.limits.hard_frame_bytes.saturating_mul(4).max(8 * 1024 * 1024);
    let io = socket.get_mut();
    let _ = tokio::time::timeout(state.limits.close_timeout, async {
        let _ = io.shutdown().await;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut drained = 0usize;
        while drained < budget {
            match io.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    })
    .await;
}

/// `token` cancelled, or never when there is none.
async fn cancelled_or_never(token: Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled_owned().await,
        None => std::future::pending().await,
    }
}

struct Session<'a> {
    state: &'a ServerState,
    handle: SessionHandle,
    activity: Arc<Activity>,
    peer: Option<PeerId>,
    /// The room registered in; relays stay inside it.
    room: Option<RoomId>,
    /// Held until registered (the unregistered-connection caps).
    pending: Option<Pending>,
    /// When the registering token expires (the session is closed then).
    token_expires: Option<Instant>,
    bad_frames: u32,
    relay_bucket: TokenBucket,
    ping_bucket: TokenBucket,
    rate_violations: u32,
    /// Cluster mode: what this session holds in the cluster.
    cluster_seat: Option<ClusterSeat>,
}

/// What a session holds in the cluster, undone by [`vacate`] when it ends.
#[derive(Debug, Default)]
struct ClusterSeat {
    /// The revision of its announced registration.
    revision: Option<u64>,
    /// The room whose watch counts this session.
    watched: Option<RoomId>,
    /// The room whose presence it joined.
    joined: Option<RoomId>,
}

/// How a session's hold on its peer ended, which decides what [`vacate`]
/// undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tenure {
    /// It still held the peer here: its registration and presence go
    /// (each only if no other registration replaced it since).
    Owned,
    /// Another instance took the peer over: its presence entry is left for
    /// the new holder to rewrite (the peer stays in its room).
    Moved,
    /// A newer session here took the peer over and owns both.
    Replaced,
}

/// Undoes a [`ClusterSeat`] as `tenure` says, and releases the room watch.
async fn vacate(link: &ClusterLink, peer: &PeerId, seat: ClusterSeat, tenure: Tenure) {
    match tenure {
        Tenure::Owned => {
            if let Some(revision) = seat.revision
                && let Err(error) = link.cluster.release_registration(peer, revision).await
            {
                debug!(name: "signal.server.cluster_release_failed", %peer, %error);
            }
            if let Some(room) = &seat.joined
                && let Err(error) = link.cluster.leave(room, peer).await
            {
                debug!(name: "signal.server.cluster_leave_failed", %peer, %room, %error);
            }
        }
        Tenure::Moved => {
            if let Some(room) = &seat.joined {
                link.cluster.forget(room, peer);
            }
        }
        Tenure::Replaced => {}
    }
    if let Some(room) = &seat.watched {
        link.release_room(room);
    }
}

/// Registers `peer` with the cluster before the local registry: holds its
/// subject, announces the registration (`None`: stale, a newer attempt of
/// the same client session is registered somewhere) and follows its room.
/// What was done is recorded in `seat`, for [`vacate`] to undo.
async fn enter_cluster(
    link: &ClusterLink,
    register: &Register,
    seat: &mut ClusterSeat,
) -> Result<Option<(Inbox, Vec<PeerId>)>, ClusterError> {
    let peer = &register.peer_id;
    let inbox = link.cluster.hold(peer).await?;
    match link
        .cluster
        .announce_registration(peer, register.session.as_deref(), register.generation)
        .await?
    {
        Announcement::Registered { revision, .. } => seat.revision = Some(revision),
        Announcement::Stale { .. } => return Ok(None),
    }
    let remote_peers = match &register.room {
        Some(room) => {
            seat.watched = Some(room.clone());
            link.acquire_room(room).await?.peers()
        }
        None => Vec::new(),
    };
    Ok(Some((inbox, remote_peers)))
}

impl Session<'_> {
    async fn read_loop(
        &mut self,
        stream: &mut SplitStream<Socket>,
        early_register: Option<String>,
    ) {
        let limits = &self.state.limits;
        let register_deadline = Instant::now() + limits.register_timeout;
        let mut last_inbound = Instant::now();
        // One timer, re-armed only when it fires early (frames moved the
        // idle deadline on), instead of a new timer per frame.
        let watchdog =
            tokio::time::sleep_until(register_deadline.min(last_inbound + limits.idle_timeout));
        tokio::pin!(watchdog);
        // Registered once, not once per frame.
        let closer = self.handle.closer.token.clone();
        let closed = closer.cancelled();
        tokio::pin!(closed);
        let shutdown_token = self.state.shutdown.clone();
        let shutdown = shutdown_token.cancelled();
        tokio::pin!(shutdown);
        // Fires only while unregistered: registering drops `pending`, which
        // takes the connection out of the table that evicts.
        let evicted = cancelled_or_never(self.pending.as_ref().map(|p| p.evicted().clone()));
        tokio::pin!(evicted);
        if let Some(text) = early_register {
            if self.on_text(&text).await == Flow::Stop {
                return;
            }
            self.watch_token_expiry(watchdog.as_mut());
        }
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut closed => return,
                () = &mut shutdown => {
                    self.send_error(ErrorCode::ShuttingDown, "server shutting down", None);
                    self.close(close_code::GOING_AWAY, "server shutting down", SessionEnd::Shutdown);
                    return;
                }
                () = &mut evicted => {
                    // Silently: it has sent nothing worth an error yet.
                    self.close(
                        close_code::TRY_AGAIN_LATER,
                        "server busy, reconnect",
                        SessionEnd::Evicted,
                    );
                    return;
                }
                () = &mut watchdog => {
                    let now = Instant::now();
                    let idle_at = last_inbound + limits.idle_timeout;
                    if let Some(expires) = self.token_expires
                        && now >= expires
                    {
                        self.send_error(ErrorCode::TokenExpired, "token expired: refresh it and reconnect", None);
                        self.state.metrics.rejected(ErrorCode::TokenExpired);
                        self.close(close_code::TOKEN_REFRESH, "token expired", SessionEnd::TokenExpired);
                        return;
                    }
                    if self.peer.is_none() && now >= register_deadline {
                        self.send_error(ErrorCode::RegisterTimeout, "no register in time", None);
                        self.close(
                            close_code::REGISTER_TIMEOUT,
                            "register timeout",
                            SessionEnd::RegisterTimeout,
                        );
                        return;
                    }
                    if now >= idle_at {
                        self.close(close_code::IDLE_TIMEOUT, "idle timeout", SessionEnd::IdleTimeout);
                        return;
                    }
                    let mut next = match self.peer {
                        None => register_deadline.min(idle_at),
                        Some(_) => idle_at,
                    };
                    if let Some(expires) = self.token_expires {
                        next = next.min(expires);
                    }
                    watchdog.as_mut().reset(next);
                    continue;
                }
                frame = stream.next() => frame,
            };
            last_inbound = Instant::now();
            self.activity.heard_now(last_inbound);
            let flow = match frame {
                None => {
                    self.close(close_code::NORMAL, "closed", SessionEnd::Closed);
                    Flow::Stop
                }
                Some(Err(error)) => self.read_failed(error),
                Some(Ok(Message::Text(text))) => self.on_text(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    let detail = "binary frames are not supported";
                    self.reject(ErrorCode::BinaryNotSupported, detail, None).await
                }
                Some(Ok(Message::Close(_))) => {
                    self.close(close_code::NORMAL, "closed", SessionEnd::Closed);
                    Flow::Stop
                }
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite has queued the pong; a flood of pings is
                    // still limited like `ping` messages.
                    if self.ping_bucket.take(last_inbound) {
                        Flow::Continue
                    } else {
                        self.over_limit("websocket pings", None).await
                    }
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => Flow::Continue,
            };
            if flow == Flow::Stop {
                return;
            }
            self.watch_token_expiry(watchdog.as_mut());
        }
    }

    /// A registration may have armed a token expiry: makes sure the watchdog wakes for it.
    fn watch_token_expiry(&self, watchdog: std::pin::Pin<&mut tokio::time::Sleep>) {
        if let Some(expires) = self.token_expires
            && watchdog.deadline() > expires
        {
            watchdog.reset(expires);
        }
    }

    fn read_failed(&mut self, error: WsError) -> Flow {
        match error {
            WsError::Capacity(detail) => {
                self.state.metrics.rejected(ErrorCode::FrameTooLarge);
                debug!(name: "signal.server.reject", code = "frame_too_large", %detail);
                self.send_error(ErrorCode::FrameTooLarge, &detail.to_string(), None);
                self.close(close_code::MESSAGE_TOO_BIG, "frame too large", SessionEnd::Abuse);
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                self.close(close_code::NORMAL, "closed", SessionEnd::Closed);
            }
            WsError::Protocol(violation) => {
                self.state.metrics.rejected(ErrorCode::ProtocolError);
                let detail = format!("websocket protocol violation: {violation}");
                debug!(name: "signal.server.reject", code = "protocol_error", %detail);
                self.send_error(ErrorCode::ProtocolError, &detail, None);
                self.close(close_code::PROTOCOL_ERROR, "protocol error", SessionEnd::ProtocolError);
            }
            WsError::Utf8(detail) => {
                self.state.metrics.rejected(ErrorCode::ProtocolError);
                let detail = format!("text frame is not valid utf-8: {detail}");
                debug!(name: "signal.server.reject", code = "protocol_error", %detail);
                self.send_error(ErrorCode::ProtocolError, &detail, None);
                self.close(close_code::INVALID_PAYLOAD, "invalid utf-8", SessionEnd::ProtocolError);
            }
            error => {
                debug!(name: "signal.server.read_error", %error);
                self.close(close_code::NORMAL, "read error", SessionEnd::Error);
            }
        }
        Flow::Stop
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let max = self.state.limits.max_frame_bytes;
        if text.len() > max {
            let detail = format!("frame of {} bytes exceeds {max}", text.len());
            return self.reject(ErrorCode::FrameTooLarge, &detail, None).await;
        }
        match decode_client_message(text) {
            Err(error) => self.reject(error.code, &error.detail, message_id(text)).await,
            Ok(ClientMessage::Register(register)) => self.on_register(register).await,
            Ok(ClientMessage::Relay(relay)) => {
                if !self.relay_bucket.take(Instant::now()) {
                    return self.over_limit("relay messages", relay.id).await;
                }
                self.on_relay(relay).await
            }
            Ok(ClientMessage::Ping { nonce }) => {
                if !self.ping_bucket.take(Instant::now()) {
                    return self.over_limit("pings", None).await;
                }
                self.reply(&ServerMessage::Pong { nonce }).await;
                Flow::Continue
            }
            // `ClientMessage` is non-exhaustive: a message a newer
            // tether-signal decodes but this server does not serve yet.
            Ok(_) => {
                let detail = "message type not served by this server";
                self.reject(ErrorCode::UnknownType, detail, None).await
            }
        }
    }

    async fn on_register(&mut self, mut register: Register) -> Flow {
        if self.peer.is_some() {
            return self
                .reject(ErrorCode::AlreadyRegistered, "this connection is registered", None)
                .await;
        }
        if register.version != PROTOCOL_VERSION {
            let detail = format!(
                "version {} is not supported, this server speaks {PROTOCOL_VERSION}",
                register.version
            );
            self.reject(ErrorCode::VersionUnsupported, &detail, None).await;
            self.close(
                close_code::VERSION_UNSUPPORTED,
                "version unsupported",
                SessionEnd::RegisterRefused,
            );
            return Flow::Stop;
        }
        let verified =
            self.state.auth.verify(&register.peer_id, &register.token, SystemTime::now()).and_then(
                |grant| {
                    let room = register.room.as_ref().map(RoomId::as_str);
                    self.state.auth.admits_room(&grant, room).map(|()| grant)
                },
            );
        let grant = match verified {
            Ok(grant) => grant,
            Err(rejection) => {
                debug!(name: "signal.server.auth_failed", peer = %register.peer_id, reason = rejection.reason());
                self.reject(ErrorCode::AuthFailed, rejection.reason(), None).await;
                self.close(close_code::AUTH_FAILED, "auth failed", SessionEnd::RegisterRefused);
                return Flow::Stop;
            }
        };
        let mut seat = ClusterSeat::default();
        let mut cluster_entry = None;
        if let Some(link) = &self.state.cluster {
            match enter_cluster(link, &register, &mut seat).await {
                Ok(Some(entered)) => cluster_entry = Some(entered),
                Ok(None) => {
                    vacate(link, &register.peer_id, seat, Tenure::Owned).await;
                    return self.refuse_stale().await;
                }
                Err(error) => {
                    warn!(name: "signal.server.cluster_unavailable", peer = %register.peer_id, %error);
                    vacate(link, &register.peer_id, seat, Tenure::Owned).await;
                    self.close(
                        close_code::TRY_AGAIN_LATER,
                        "cluster unavailable, reconnect",
                        SessionEnd::RegisterRefused,
                    );
                    return Flow::Stop;
                }
            }
        }
        let (inbox, remote_peers) = match cluster_entry {
            Some((inbox, remote_peers)) => (Some(inbox), remote_peers),
            None => (None, Vec::new()),
        };
        // Each named once, never the registering peer itself.
        let mut ice_restart = std::mem::take(&mut register.ice_restart);
        ice_restart.retain(|peer| *peer != register.peer_id);
        let mut named = HashSet::new();
        ice_restart.retain(|peer| named.insert(peer.clone()));
        let registration = Registration {
            ice_restart: ice_restart.clone(),
            peer: register.peer_id.clone(),
            room: register.room.clone(),
            session: register.session,
            generation: register.generation,
            freshness: grant.freshness(),
            generation_fence: self.state.limits.generation_fence,
            handle: self.handle.clone(),
            max_frame_bytes: self.state.limits.max_frame_bytes,
            ice_servers: self.state.ice_servers_for(&register.peer_id),
            cluster_revision: seat.revision,
            remote_peers,
        };
        let outcome = self.state.registry.register(registration, &self.state.metrics);
        if !matches!(outcome, RegisterOutcome::Registered(_))
            && let Some(link) = &self.state.cluster
        {
            vacate(link, &register.peer_id, seat, Tenure::Owned).await;
            seat = ClusterSeat::default();
        }
        let effects = match outcome {
            RegisterOutcome::Outdated => {
                self.reject(
                    ErrorCode::TokenOutdated,
                    "this peer id is registered with a token that expires later: \
                     refresh your token and reconnect",
                    None,
                )
                .await;
                self.close(close_code::TOKEN_REFRESH, "token outdated", SessionEnd::TokenExpired);
                return Flow::Stop;
            }
            RegisterOutcome::Stale => return self.refuse_stale().await,
            RegisterOutcome::Registered(effects) => effects,
        };
        let peer = register.peer_id;
        self.pending = None;
        self.room = register.room;
        // Checked arithmetic: `exp` may be far beyond what the clocks can
        // represent; such a token simply does not expire in this session.
        self.token_expires = grant.expires_at.and_then(|expires_at| {
            let left = UNIX_EPOCH
                .checked_add(Duration::from_secs(expires_at))?
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Instant::now().checked_add(left)
        });
        tracing::Span::current().record("peer", peer.as_str());
        debug!(
            name: "signal.server.registered",
            generation = register.generation,
            replaced = effects.replaced.is_some()
        );
        if let Some(previous) = effects.replaced {
            debug!(name: "signal.server.replaced", old_connection_id = previous.connection_id);
            cluster_link::replace(&previous, &self.state.metrics);
        }
        let joined = Utf8Bytes::from(encode_server_message(&ServerMessage::PeerJoined {
            peer_id: peer.clone(),
        }));
        for member in effects.joined_to {
            member.deliver(joined.clone());
        }
        let left = Utf8Bytes::from(encode_server_message(&ServerMessage::PeerLeft {
            peer_id: peer.clone(),
        }));
        for member in effects.left_to {
            member.deliver(left.clone());
        }
        self.peer = Some(peer.clone());
        let flow = match &self.state.cluster {
            Some(link) => {
                self.settle_in_cluster(link, &peer, seat, inbox, effects.previous_room).await
            }
            None => Flow::Continue,
        };
        if flow == Flow::Stop {
            return flow;
        }
        // `registered` promised these: each is relayed exactly as an `ice_restart` frame sent
        // now would be (same rate limit, same errors, without an `id`).
        self.state.metrics.register_ice_restarts(ice_restart.len());
        for to in ice_restart {
            let relay =
                RelayOut { to, id: None, claimed_from: None, payload: RelayPayload::IceRestart };
            let flow = if self.relay_bucket.take(Instant::now()) {
                self.on_relay(relay).await
            } else {
                self.over_limit("relay messages", None).await
            };
            if flow == Flow::Stop {
                return flow;
            }
        }
        Flow::Continue
    }

    async fn refuse_stale(&mut self) -> Flow {
        self.reject(
            ErrorCode::StaleGeneration,
            "a newer attempt of this session is registered",
            None,
        )
        .await;
        self.close(close_code::STALE_GENERATION, "stale generation", SessionEnd::RegisterRefused);
        Flow::Stop
    }

    /// Cluster mode, once registered here: forwards frames from the bus,
    /// joins the room's presence (leaving the replaced registration's room)
    /// and makes sure no other instance took the peer over meanwhile (its
    /// notice would have found no session to close).
    async fn settle_in_cluster(
        &mut self,
        link: &ClusterLink,
        peer: &PeerId,
        mut seat: ClusterSeat,
        inbox: Option<Inbox>,
        previous_room: Option<RoomId>,
    ) -> Flow {
        if let Some(inbox) = inbox {
            let stop = self.handle.closer.token.clone();
            tokio::spawn(
                cluster_link::forward_inbox(inbox, self.handle.clone(), self.room.clone(), stop)
                    .instrument(tracing::Span::current()),
            );
        }
        if let Some(old_room) = previous_room
            && let Err(error) = link.cluster.leave(&old_room, peer).await
        {
            debug!(name: "signal.server.cluster_leave_failed", %peer, room = %old_room, %error);
        }
        let joined = match &self.room {
            Some(room) => link.cluster.join(room, peer).await.map(|()| Some(room.clone())),
            None => Ok(None),
        };
        let holder = link.cluster.registration_holder(peer).await;
        seat.joined = joined.as_ref().ok().cloned().flatten();
        self.cluster_seat = Some(seat);
        match (joined, holder) {
            (Ok(_), Ok(Some(holder))) if holder != *link.instance() => {
                debug!(name: "signal.server.replaced", by = %holder);
                cluster_link::replace(&self.handle, &self.state.metrics);
                Flow::Stop
            }
            (Ok(_), Ok(_)) => Flow::Continue,
            (Err(error), _) | (_, Err(error)) => {
                warn!(name: "signal.server.cluster_unavailable", %peer, %error);
                self.close(
                    close_code::TRY_AGAIN_LATER,
                    "cluster unavailable, reconnect",
                    SessionEnd::Error,
                );
                Flow::Stop
            }
        }
    }

    async fn on_relay(&mut self, relay: RelayOut) -> Flow {
        let Some(sender) = self.peer.clone() else {
            return self.reject(ErrorCode::NotRegistered, "register first", relay.id).await;
        };
        if relay.claimed_from.as_deref().is_some_and(|claimed| claimed != sender.as_str()) {
            return self
                .reject(
                    ErrorCode::Impersonation,
                    "`from` must be omitted or equal your own peer id",
                    relay.id,
                )
                .await;
        }
        let type_name = relay.payload.type_name();
        // Outside the sender's room a peer is as unknown as an offline one.
        let target = match self.state.registry.locate(&relay.to, self.room.as_ref()) {
            Located::Here(target) => target,
            Located::NotHere if let Some(link) = &self.state.cluster => {
                return self.relay_across(link, sender, relay).await;
            }
            Located::OtherRoom | Located::NotHere => {
                return self
                    .reject(
                        ErrorCode::PeerUnknown,
                        &format!("{} is not registered", relay.to),
                        relay.id,
                    )
                    .await;
            }
        };
        let frame =
            encode_server_message(&ServerMessage::Relay { from: sender, payload: relay.payload });
        match target.deliver(Utf8Bytes::from(frame)) {
            Delivery::Queued => {
                self.state.metrics.relayed(type_name);
                trace!(name: "signal.server.relay", to = %relay.to, kind = type_name);
                Flow::Continue
            }
            Delivery::Overflowed => {
                self.reject(
                    ErrorCode::PeerUnavailable,
                    &format!("{} is not reading its messages and is being disconnected", relay.to),
                    relay.id,
                )
                .await
            }
            Delivery::Gone => {
                self.reject(
                    ErrorCode::PeerUnknown,
                    &format!("{} is not registered", relay.to),
                    relay.id,
                )
                .await
            }
        }
    }

    /// Cluster mode: a relay to a peer not held here is published on the
    /// peer's subject when another instance holds it in the sender's room
    /// (as the room's presence says; for room-less peers, the registration
    /// bucket), and answered `peer_unknown` otherwise.
    async fn relay_across(&mut self, link: &ClusterLink, sender: PeerId, relay: RelayOut) -> Flow {
        let holder = match &self.room {
            Some(room) => link.member_instance(room, &relay.to),
            None => match link.cluster.registration_holder(&relay.to).await {
                Ok(holder) => holder,
                Err(error) => {
                    debug!(name: "signal.server.cluster_lookup_failed", to = %relay.to, %error);
                    None
                }
            },
        };
        if holder.is_none_or(|holder| holder == *link.instance()) {
            return self
                .reject(
                    ErrorCode::PeerUnknown,
                    &format!("{} is not registered", relay.to),
                    relay.id,
                )
                .await;
        }
        let type_name = relay.payload.type_name();
        let text = encode_server_message(&ServerMessage::Relay {
            from: sender.clone(),
            payload: relay.payload,
        });
        let frame = Frame { from: sender, room: self.room.clone(), id: relay.id, text };
        match link.cluster.deliver(&relay.to, &frame).await {
            Ok(()) => {
                self.state.metrics.relayed(type_name);
                trace!(name: "signal.server.relay", to = %relay.to, kind = type_name, across = true);
                Flow::Continue
            }
            Err(error) => {
                debug!(name: "signal.server.cluster_publish_failed", to = %relay.to, %error);
                self.reject(
                    ErrorCode::PeerUnavailable,
                    &format!("{} cannot be reached right now", relay.to),
                    relay.id,
                )
                .await
            }
        }
    }

    /// A message over a rate limit: not processed, answered with
    /// `rate_limited`; the `max_rate_violations`th closes with 4009.
    async fn over_limit(&mut self, what: &str, id: Option<u64>) -> Flow {
        self.rate_violations += 1;
        self.state.metrics.rejected(ErrorCode::RateLimited);
        let detail = format!("too many {what}: slow down");
        debug!(name: "signal.server.reject", code = "rate_limited", violations = self.rate_violations);
        if self.rate_violations < self.state.limits.max_rate_violations {
            self.reply(&ServerMessage::Error { code: ErrorCode::RateLimited, message: detail, id })
                .await;
            return Flow::Continue;
        }
        self.send_error(ErrorCode::RateLimited, "rate limit exceeded too often", id);
        self.close(close_code::RATE_LIMITED, "rate limited", SessionEnd::RateLimited);
        Flow::Stop
    }

    /// Sends an error frame, counts it, and enforces the abuse limit.
    async fn reject(&mut self, code: ErrorCode, detail: &str, id: Option<u64>) -> Flow {
        self.state.metrics.rejected(code);
        debug!(name: "signal.server.reject", code = code.as_str(), detail);
        self.reply(&ServerMessage::Error { code, message: detail.to_owned(), id }).await;
        if !code.counts_as_abuse() {
            return Flow::Continue;
        }
        self.bad_frames += 1;
        if self.bad_frames < self.state.limits.max_bad_frames {
            return Flow::Continue;
        }
        self.state.metrics.rejected(ErrorCode::TooManyErrors);
        debug!(name: "signal.server.reject", code = "too_many_errors", bad_frames = self.bad_frames);
        self.send_error(ErrorCode::TooManyErrors, "too many bad frames", None);
        self.close(close_code::TOO_MANY_ERRORS, "too many errors", SessionEnd::Abuse);
        Flow::Stop
    }

    /// Queues an error frame that precedes a close: best effort, never waits.
    fn send_error(&self, code: ErrorCode, detail: &str, id: Option<u64>) {
        let message = ServerMessage::Error { code, message: detail.to_owned(), id };
        let _ = self.handle.outbound.try_send(Utf8Bytes::from(encode_server_message(&message)));
    }

    /// Queues an answer to this client's own frame. A full queue makes the
    /// reader wait (so the client is slowed down by TCP flow control rather
    /// than dropped); a writer that cannot write for `write_timeout` closes
    /// the session, which ends the wait.
    async fn reply(&self, message: &ServerMessage) {
        let frame = Utf8Bytes::from(encode_server_message(message));
        tokio::select! {
            biased;
            () = self.handle.closer.token.cancelled() => {}
            _ = self.handle.outbound.send(frame) => {}
        }
    }

    fn close(&self, code: u16, reason: &'static str, end: SessionEnd) {
        self.handle.close(code, reason, end);
    }
}

/// Drains the outbound queue into the socket, pings, and on close flushes
/// what is queued and writes the close frame, all bounded by `close_timeout`.
async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    mut queue: mpsc::Receiver<Utf8Bytes>,
    closer: Arc<Closer>,
    activity: Arc<Activity>,
    state: Arc<ServerState>,
) -> SplitSink<Socket, Message> {
    let period = state.limits.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let write_timeout = state.limits.write_timeout;
    let closed = closer.token.cancelled();
    tokio::pin!(closed);
    loop {
        // The closer is watched during writes too: a socket that stopped
        // draining must not keep the session alive past its close.
        let written = tokio::select! {
            biased;
            () = &mut closed => break,
            written = async {
                tokio::select! {
                    frame = queue.recv() => match frame {
                        Some(frame) => Some(
                            tokio::time::timeout(write_timeout, write_batch(&mut sink, &mut queue, frame))
                                .await,
                        ),
                        None => None,
                    },
                    now = ping.tick() => {
                        if activity.silent_for(now) < period {
                            // Heard from recently (e.g. its own pings): no need.
                            Some(Ok(Ok(())))
                        } else {
                            let ping = sink.send(Message::Ping(Bytes::new()));
                            Some(tokio::time::timeout(write_timeout, ping).await)
                        }
                    }
                }
            } => match written {
                Some(written) => written,
                None => break,
            },
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                debug!(name: "signal.server.write_error", %error);
                closer.close(close_code::NORMAL, "write error", SessionEnd::Error);
                return sink;
            }
            Err(_) => {
                debug!(name: "signal.server.slow_consumer", stalled_for = ?write_timeout);
                closer.close(close_code::SLOW_CONSUMER, "slow consumer", SessionEnd::SlowConsumer);
                break;
            }
        }
    }
    let request = closer.request.get().copied();
    // A slow consumer's queue is dropped (it would not drain), and its close
    // frame waits behind what the socket already holds: give it as long as
    // any write, so a client that reads late still learns why (4004).
    let slow = request.is_some_and(|request| request.end == SessionEnd::SlowConsumer);
    let budget = if slow { write_timeout } else { state.limits.close_timeout };
    let _ = tokio::time::timeout(budget, async {
        while !slow && let Ok(frame) = queue.try_recv() {
            if sink.feed(Message::Text(frame)).await.is_err() {
                break;
            }
        }
        if let Some(request) = request {
            let frame =
                CloseFrame { code: CloseCode::from(request.code), reason: request.reason.into() };
            // Fails harmlessly when the client closed first (the reply to its
            // close frame is then written by `close` below).
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    })
    .await;
    sink
}

/// The `id` of a message that could not be decoded, when it has a readable
/// one (so `invalid_message` and friends can echo it).
fn message_id(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<serde_json::Value>,
    }
    serde_json::from_str::<IdOnly>(text).ok()?.id?.as_u64()
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch<W>(
    sink: &mut W,
    queue: &mut mpsc::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<(), WsError>
where
    W: Sink<Message, Error = WsError> + Unpin,
{
    sink.feed(Message::Text(first)).await?;
    while let Ok(frame) = queue.try_recv() {
        sink.feed(Message::Text(frame)).await?;
    }
    sink.flush().await
}
