//! The signaling client the recovery executor drives.
//!
//! [`SignalClient`] is a cheap clonable handle. It never reconnects on its
//! own: the Supervisor decides, the executor calls [`SignalClient::connect_once`],
//! [`SignalClient::probe_alive`], [`SignalClient::rebuild`] or
//! [`SignalClient::disconnect`], and spontaneous losses come out of
//! [`SignalEvents`] as [`SignalEvent::Lost`].
//!
//! Architecture invariant: every connection attempt gets a new, larger
//! [`LinkGeneration`]; an attempt commits only if no newer attempt committed and
//! no `disconnect()` happened since it started. The server enforces the same
//! order (`session` + `generation` in `register`), so a late attempt can
//! neither become current locally nor displace the current registration.

mod endpoint;
mod link;
mod tls;

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::{SignalError, SignalErrorKind};
use crate::protocol::{
    ClientMessage, ErrorCode, IceServerGrant, PROTOCOL_VERSION, PeerId, Register, Registered,
    RelayOut, RelayPayload, RoomId, encode_client_message,
};

pub use self::tls::TlsTrust;

use self::endpoint::{ClientSocket, Endpoints, Opened};
use self::link::{Command, Link, LinkTiming};

/// The number of a signaling connection attempt (a link); strictly increasing
/// per client. It orders attempts and fences late ones (not to be confused
/// with the peer connection ids of tether-rtc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkGeneration(u64);

impl LinkGeneration {
    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LinkGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Client settings. Build with [`ClientConfig::new`] and adjust fields.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `ws://host:port/ws` or `wss://host[:port]/ws`.
    pub url: String,
    /// More servers of the same deployment (same tokens), tried in turn when
    /// the one in use cannot be reached: an attempt starts with the server
    /// that last worked, and moves on within the same attempt (each server
    /// gets an equal share of `connect_timeout`). Empty by default.
    pub fallback_urls: Vec<String>,
    /// Whom a `wss://` connection trusts; the system's roots by default.
    pub tls: TlsTrust,
    /// Who this client registers as.
    pub peer_id: PeerId,
    /// The credential for `peer_id` (replace later with [`SignalClient::set_token`]).
    pub token: String,
    /// Presence scope; without one, no `peer_joined`/`peer_left` arrive.
    pub room: Option<RoomId>,
    /// Bound on TCP connect + WebSocket handshake + `register` round trip.
    pub connect_timeout: Duration,
    /// Interval of background WebSocket pings.
    pub ping_interval: Duration,
    /// Silence (no inbound frame at all) after which the link is declared dead.
    pub dead_after: Duration,
    /// How long [`SignalClient::rebuild`] lets the existing connection's probe
    /// run alone before it races a fresh connection against it.
    pub rebuild_head_start: Duration,
    /// Bound on the polite close of a deliberately closed connection.
    pub close_timeout: Duration,
    /// Frames queued for writing before [`SignalClient::send`] reports
    /// [`SignalError::QueueFull`].
    pub outbound_queue: usize,
    /// This client instance's id, sent as `session` in `register`; random
    /// when `None`.
    pub instance_id: Option<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("fallback_urls", &self.fallback_urls)
            .field("peer_id", &self.peer_id)
            .field("room", &self.room)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("dead_after", &self.dead_after)
            .field("rebuild_head_start", &self.rebuild_head_start)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults: connect timeout 5 s, ping every 5 s, dead after 10 s of
    /// silence, rebuild head start 100 ms, close timeout 1 s, queue 256.
    pub fn new(url: impl Into<String>, peer_id: PeerId, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            tls: TlsTrust::system(),
            fallback_urls: Vec::new(),
            peer_id,
            token: token.into(),
            room: None,
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(10),
            rebuild_head_start: Duration::from_millis(100),
            close_timeout: Duration::from_secs(1),
            outbound_queue: 256,
            instance_id: None,
        }
    }
}

/// A committed connection, as returned by [`SignalClient::connect_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connected {
    /// The connection's generation.
    pub generation: LinkGeneration,
    /// The registered identity.
    pub peer_id: PeerId,
    /// The room, when one was configured.
    pub room: Option<RoomId>,
    /// The other peers in the room at registration time.
    pub peers: Vec<PeerId>,
    /// Whether the server replaced an older connection of this peer id.
    pub replaced_previous: bool,
    /// Largest frame the server accepts.
    pub max_frame_bytes: usize,
    /// STUN/TURN servers the server handed out (with TURN credentials for
    /// this peer id); empty when it offers none.
    pub ice_servers: Vec<IceServerGrant>,
    /// The peers the server sends an `ice_restart` from us right after registering (see
    /// [`SignalClient::rebuild_asking_ice_restart`]): asking them again is not needed.
    pub ice_restart_requested: Vec<PeerId>,
    /// Whether the server relays `detour` payloads ([`crate::protocol::RelayPayload::Detour`]); send none when it
    /// does not (an older server answers them with `unknown_type`, which counts towards closing
    /// the connection).
    pub detour: bool,
}

/// The outcome of [`SignalClient::rebuild`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rebuilt {
    /// The existing connection answered its probe first and stays current.
    Kept {
        /// Its generation.
        generation: LinkGeneration,
        /// The probe's round-trip time.
        rtt: Duration,
    },
    /// A fresh connection won (or there was no connection) and is now current.
    Replaced {
        /// The new connection.
        connected: Connected,
        /// The connection it replaced, if any.
        previous: Option<LinkGeneration>,
    },
}

/// Why a link was lost without anyone asking.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossCause {
    /// Nothing arrived (not even a pong) for `dead_after`, or a write stalled
    /// that long.
    PingTimeout {
        /// The configured silence bound.
        silent_for: Duration,
    },
    /// The server sent a close frame.
    ClosedByServer {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Another connection registered this peer id (another device or process).
    Replaced,
    /// The stream ended without a close frame.
    StreamEnded,
    /// A transport error.
    Io(String),
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossCause::PingTimeout { silent_for } => write!(f, "no frame for {silent_for:?}"),
            LossCause::ClosedByServer { code, reason } => {
                write!(f, "closed by server ({code}: {reason})")
            }
            LossCause::Replaced => f.write_str("replaced by another connection"),
            LossCause::StreamEnded => f.write_str("stream ended"),
            LossCause::Io(detail) => write!(f, "i/o failure: {detail}"),
        }
    }
}

/// What the client reports, in order, on [`SignalEvents`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalEvent {
    /// A connection was committed (also returned to the caller that made
    /// it; here so the stream is a complete, ordered history).
    Connected(Connected),
    /// The current link died on its own ("signaling lost"). Never sent for
    /// `disconnect()` or for a link replaced by `rebuild`/`connect_once`.
    Lost {
        /// The lost link's generation.
        generation: LinkGeneration,
        /// What happened.
        cause: LossCause,
    },
    /// A message relayed from another peer.
    Relay {
        /// The authenticated sender.
        from: PeerId,
        /// The content.
        payload: RelayPayload,
    },
    /// A peer registered (or re-registered: treat as "it reconnected") in the room.
    PeerJoined(PeerId),
    /// A peer's connection in the room ended.
    PeerLeft(PeerId),
    /// The server refused something this client sent (e.g. `peer_unknown`
    /// for a `send` whose id is `id`).
    ServerError {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// The id [`SignalClient::send`] returned for the refused message.
        id: Option<u64>,
    },
}

/// The receiving end of a client's events. Unbounded: the node's loop must
/// keep draining it (inbound volume is bounded by the server's queues).
#[derive(Debug)]
pub struct SignalEvents {
    receiver: mpsc::UnboundedReceiver<SignalEvent>,
}

impl SignalEvents {
    /// The next event; `None` once every client handle and link is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no event is lost if the future is dropped.
    pub async fn recv(&mut self) -> Option<SignalEvent> {
        self.receiver.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<SignalEvent> {
        self.receiver.try_recv().ok()
    }
}

impl futures_util::Stream for SignalEvents {
    type Item = SignalEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SignalEvent>> {
        self.receiver.poll_recv(cx)
    }
}

/// The client's view of one committed link.
#[derive(Debug, Clone)]
struct LinkHandle {
    generation: u64,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
    ended: CancellationToken,
    max_frame_bytes: usize,
    /// The link's local address: once the host no longer has it, the link cannot answer a
    /// probe, and [`SignalClient::rebuild`] replaces it without waiting for one.
    local_address: Option<IpAddr>,
    /// The server's address, to tell whether the route to it now leaves from another local
    /// address (see [`SignalClient::rebuild`]).
    server_address: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct Links {
    current: Option<LinkHandle>,
    /// Attempts with a generation at or below this may not commit
    /// (raised by `disconnect`).
    fence: u64,
    /// Attempts that sent `register` and have not committed or failed yet.
    registering: BTreeSet<u64>,
    /// A link lost to `replaced` while a newer attempt of ours was
    /// registering: reported only if none of those attempts commits.
    held_loss: Option<u64>,
}

/// One registration attempt: what it registers and its place among the attempts in flight.
struct Attempt {
    generation: u64,
    register: Register,
    registering: Registering,
}

/// Marks an attempt as registering for as long as it lives.
struct Registering {
    shared: Arc<Shared>,
    generation: u64,
}

impl Registering {
    fn start(shared: &Arc<Shared>, generation: u64) -> Registering {
        lock(&shared.links).registering.insert(generation);
        Registering { shared: Arc::clone(shared), generation }
    }
}

impl Drop for Registering {
    fn drop(&mut self) {
        let release = {
            let mut links = lock(&self.shared.links);
            links.registering.remove(&self.generation);
            match links.held_loss {
                Some(lost) if links.registering.range(lost + 1..).next().is_none() => {
                    links.held_loss.take()
                }
                _ => None,
            }
        };
        // Every attempt that could have explained the loss failed: report it.
        if let Some(generation) = release {
            self.shared.report_loss(generation, LossCause::Replaced);
        }
    }
}

/// A registered socket waiting to be committed.
struct PendingLink {
    socket: ClientSocket,
    generation: u64,
    registered: Registered,
    /// Dropped only after the commit decision.
    registering: Registering,
}

struct Shared {
    endpoints: Endpoints,
    config: ClientConfig,
    token: Mutex<String>,
    instance_id: String,
    last_generation: AtomicU64,
    next_message_id: AtomicU64,
    next_probe: AtomicU64,
    links: Mutex<Links>,
    events: mpsc::UnboundedSender<SignalEvent>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned lock still holds
    // consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Called by a link that died on its own: report it if it is current.
    fn link_lost(&self, generation: u64, cause: LossCause) {
        let (was_current, self_inflicted) = {
            let mut links = lock(&self.links);
            // Replaced by our own newer attempt (connect_once or rebuild
            // racing the current link): that attempt's result is what counts.
            let self_inflicted = cause == LossCause::Replaced
                && links.registering.range(generation + 1..).next().is_some();
            let current = links.current.as_ref().is_some_and(|link| link.generation == generation);
            if current {
                links.current = None;
                if self_inflicted {
                    links.held_loss = Some(generation);
                }
            }
            (current, self_inflicted)
        };
        if was_current && !self_inflicted {
            self.report_loss(generation, cause);
        } else {
            debug!(name: "signal.client.link.ended", generation, %cause, "superseded link ended");
        }
    }

    fn report_loss(&self, generation: u64, cause: LossCause) {
        warn!(name: "signal.client.lost", peer = %self.config.peer_id, generation, %cause, "signaling lost");
        let _ =
            self.events.send(SignalEvent::Lost { generation: LinkGeneration(generation), cause });
    }

    fn is_fenced(links: &Links, generation: u64) -> bool {
        generation <= links.fence
            || links.current.as_ref().is_some_and(|link| link.generation > generation)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(link) = lock(&self.links).current.take() {
            link.stop.cancel();
        }
    }
}

/// The signaling client handle. Clone freely; all clones share one link.
#[derive(Clone)]
pub struct SignalClient {
    shared: Arc<Shared>,
}

impl fmt::Debug for SignalClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalClient")
            .field("peer_id", &self.shared.config.peer_id)
            .field("generation", &self.generation())
            .finish()
    }
}

fn random_instance_id() -> String {
    // RandomState is seeded from the operating system's randomness.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

impl SignalClient {
    /// Validates the configuration; does not connect.
    pub fn new(config: ClientConfig) -> Result<(SignalClient, SignalEvents), SignalError> {
        let endpoints = Endpoints::parse(&config.url, &config.fallback_urls, &config.tls)?;
        if config.ping_interval.is_zero()
            || config.dead_after <= config.ping_interval
            || config.connect_timeout.is_zero()
            || config.outbound_queue == 0
        {
            return Err(SignalError::InvalidConfig(
                "need ping_interval > 0, dead_after > ping_interval, connect_timeout > 0 \
                 and outbound_queue > 0"
                    .into(),
            ));
        }
        let instance_id = match &config.instance_id {
            Some(id) if id.is_empty() || id.len() > crate::protocol::MAX_NAME_BYTES => {
                return Err(SignalError::InvalidConfig("instance_id must be 1 to 64 bytes".into()));
            }
            Some(id) => id.clone(),
            None => random_instance_id(),
        };
        let (events, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            endpoints,
            token: Mutex::new(config.token.clone()),
            config,
            instance_id,
            last_generation: AtomicU64::new(0),
            next_message_id: AtomicU64::new(1),
            next_probe: AtomicU64::new(1),
            links: Mutex::new(Links::default()),
            events,
        };
        Ok((SignalClient { shared: Arc::new(shared) }, SignalEvents { receiver }))
    }

    /// The peer id this client registers as.
    pub fn peer_id(&self) -> &PeerId {
        &self.shared.config.peer_id
    }

    /// Replaces the token used by later connection attempts (after an
    /// `auth_rejected`, or before the current token expires).
    pub fn set_token(&self, token: impl Into<String>) {
        *lock(&self.shared.token) = token.into();
    }

    /// Whether a link is committed and has not been declared lost.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.links).current.as_ref().is_some_and(|link| !link.commands.is_closed())
    }

    /// The current link's generation.
    pub fn generation(&self) -> Option<LinkGeneration> {
        lock(&self.shared.links).current.as_ref().map(|link| LinkGeneration(link.generation))
    }

    fn current(&self) -> Option<LinkHandle> {
        lock(&self.shared.links).current.clone()
    }

    fn allocate_generation(&self) -> u64 {
        self.shared.last_generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Opens a new connection, registers, and makes it current (replacing a
    /// current one deliberately: no `Lost` is reported for it). Bounded by
    /// `connect_timeout`.
    ///
    /// Fails with [`SignalError::Superseded`] (kind `cancelled`) when a newer
    /// attempt committed or `disconnect()` ran while this one was in flight.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe for the client's state: a dropped attempt never commits
    /// and its socket is closed. If it was dropped after its `register` was
    /// sent, the server may already serve this peer on the dropped socket;
    /// the current link then ends with `Lost { cause: Replaced }`, which the
    /// Supervisor handles as a loss.
    pub async fn connect_once(&self) -> Result<Connected, SignalError> {
        self.connect_asking_ice_restart(&[]).await
    }

    async fn connect_asking_ice_restart(
        &self,
        ice_restart: &[PeerId],
    ) -> Result<Connected, SignalError> {
        let generation = self.allocate_generation();
        let span = info_span!("signal.link", peer = %self.shared.config.peer_id, generation);
        async move {
            debug!(name: "signal.client.connecting", url = %self.shared.endpoints.preferred_url(), servers = self.shared.endpoints.len());
            let pending = self.establish(generation, ice_restart).await;
            let result = pending.and_then(|pending| self.commit(pending));
            if let Err(error) = &result {
                info!(name: "signal.client.connect_failed", kind = error.kind().name(), %error);
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Opens and registers within `connect_timeout`, `register` riding in the upgrade request.
    async fn establish(
        &self,
        generation: u64,
        ice_restart: &[PeerId],
    ) -> Result<PendingLink, SignalError> {
        let bound = self.shared.config.connect_timeout;
        let deadline = Instant::now() + bound;
        let attempt = self.attempt(generation, ice_restart)?;
        let (index, opened) =
            self.shared.endpoints.open(deadline, bound, Some(&attempt.register)).await?;
        let result = tokio::time::timeout_at(deadline, self.register(opened, attempt))
            .await
            .map_err(|_| SignalError::Timeout { what: "connect", after: bound })
            .and_then(|registered| registered);
        if let Err(error) = &result {
            self.registration_failed(index, error);
        }
        result
    }

    /// A server that opened but did not register us (it is going away,
    /// overloaded, or slow): the next attempt tries another one first.
    /// Refusals that every server would repeat (credentials, protocol
    /// version, a newer registration) keep the server.
    fn registration_failed(&self, index: usize, error: &SignalError) {
        match error.kind() {
            SignalErrorKind::AuthRejected
            | SignalErrorKind::ConfigRejected
            | SignalErrorKind::Cancelled => {}
            _ => self.shared.endpoints.failed(index),
        }
    }

    /// A registration attempt of `generation`, unless a newer one fenced it off.
    fn attempt(&self, generation: u64, ice_restart: &[PeerId]) -> Result<Attempt, SignalError> {
        if Shared::is_fenced(&lock(&self.shared.links), generation) {
            return Err(SignalError::Superseded { generation });
        }
        let register = Register {
            version: PROTOCOL_VERSION,
            peer_id: self.shared.config.peer_id.clone(),
            token: lock(&self.shared.token).clone(),
            room: self.shared.config.room.clone(),
            session: Some(self.shared.instance_id.clone()),
            generation: Some(generation),
            ice_restart: ice_restart.to_vec(),
        };
        let registering = Registering::start(&self.shared, generation);
        Ok(Attempt { generation, register, registering })
    }

    /// Registers on `opened` (sending `register` unless its upgrade request carried it) and
    /// waits for `registered`.
    async fn register(&self, opened: Opened, attempt: Attempt) -> Result<PendingLink, SignalError> {
        let Opened { mut socket, register_sent } = opened;
        let Attempt { generation, register, registering } = attempt;
        if !register_sent && Shared::is_fenced(&lock(&self.shared.links), generation) {
            self.close_in_background(socket);
            return Err(SignalError::Superseded { generation });
        }
        match endpoint::register(&mut socket, register, register_sent).await {
            Ok(registered) => Ok(PendingLink { socket, generation, registered, registering }),
            Err(error) => {
                self.close_in_background(socket);
                Err(error)
            }
        }
    }

    fn close_in_background(&self, socket: ClientSocket) {
        tokio::spawn(endpoint::close_quietly(socket, self.shared.config.close_timeout));
    }

    /// Makes `pending` current unless it was fenced meanwhile.
    fn commit(&self, pending: PendingLink) -> Result<Connected, SignalError> {
        let PendingLink { socket, generation, registered, registering } = pending;
        let connected = Connected {
            generation: LinkGeneration(generation),
            peer_id: registered.peer_id,
            room: registered.room,
            peers: registered.peers,
            replaced_previous: registered.replaced,
            max_frame_bytes: registered.max_frame_bytes,
            ice_servers: registered.ice_servers,
            ice_restart_requested: registered.ice_restart,
            detour: registered.detour,
        };
        let config = &self.shared.config;
        let previous = {
            let mut links = lock(&self.shared.links);
            if Shared::is_fenced(&links, generation) {
                drop(links);
                debug!(name: "signal.client.fenced", generation);
                self.close_in_background(socket);
                return Err(SignalError::Superseded { generation });
            }
            let (commands, command_queue) = mpsc::channel(config.outbound_queue);
            let (local_address, server_address) = endpoint::addresses(&socket);
            let handle = LinkHandle {
                generation,
                commands,
                stop: CancellationToken::new(),
                ended: CancellationToken::new(),
                max_frame_bytes: connected.max_frame_bytes,
                local_address,
                server_address,
            };
            let link = Link {
                socket,
                generation,
                commands: command_queue,
                stop: handle.stop.clone(),
                ended: handle.ended.clone(),
                events: self.shared.events.clone(),
                shared: Arc::downgrade(&self.shared),
                timing: LinkTiming {
                    ping_interval: config.ping_interval,
                    dead_after: config.dead_after,
                    close_timeout: config.close_timeout,
                },
            };
            // Queued before the link can emit anything: the stream stays ordered.
            let _ = self.shared.events.send(SignalEvent::Connected(connected.clone()));
            let span = info_span!("signal.link", peer = %config.peer_id, generation);
            tokio::spawn(link.drive().instrument(span));
            links.held_loss = None;
            links.current.replace(handle)
        };
        drop(registering);
        if let Some(previous) = previous {
            previous.stop.cancel();
        }
        info!(
            name: "signal.client.connected",
            generation,
            peers = connected.peers.len(),
            replaced_previous = connected.replaced_previous
        );
        Ok(connected)
    }

    /// Closes the current link (close frame 1000, bounded by `close_timeout`)
    /// and fences every attempt still in flight. Reports no `Lost`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the link is detached and told to close at the first poll;
    /// dropping the future only stops waiting for the close to finish.
    pub async fn disconnect(&self) {
        let previous = {
            let mut links = lock(&self.shared.links);
            links.fence = self.shared.last_generation.load(Ordering::SeqCst);
            links.held_loss = None;
            links.current.take()
        };
        if let Some(link) = previous {
            link.stop.cancel();
            link.ended.cancelled().await;
            info!(name: "signal.client.disconnected", peer = %self.shared.config.peer_id, generation = link.generation);
        }
    }

    /// Fault injection for demos and tests: drops the current connection's
    /// socket at once, without a close frame, as a network failure would.
    /// The loss is reported on [`SignalEvents`] like any spontaneous one.
    /// Returns `false` when there is no current connection.
    pub fn sever(&self) -> bool {
        match self.current() {
            Some(link) => link.commands.try_send(Command::Sever).is_ok(),
            None => false,
        }
    }

    /// Checks the current link with a WebSocket ping carrying a unique
    /// payload; only the pong echoing that payload counts. Returns the
    /// round-trip time. A failed probe does not close the link.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped probe leaves nothing behind but an unanswered ping.
    pub async fn probe_alive(&self, timeout: Duration) -> Result<Duration, SignalError> {
        let link = self.current().ok_or(SignalError::NotConnected)?;
        let result = self.probe_link(&link, timeout).await;
        debug!(
            name: "signal.client.probe",
            generation = link.generation,
            ok = result.is_ok(),
            rtt_us = result.as_ref().map_or(0, |rtt| rtt.as_micros() as u64)
        );
        result
    }

    async fn probe_link(
        &self,
        link: &LinkHandle,
        timeout: Duration,
    ) -> Result<Duration, SignalError> {
        let sequence = self.shared.next_probe.fetch_add(1, Ordering::Relaxed);
        let mut payload = Vec::with_capacity(17);
        payload.push(b'p');
        payload.extend_from_slice(&link.generation.to_be_bytes());
        payload.extend_from_slice(&sequence.to_be_bytes());
        let (reply, answer) = oneshot::channel();
        let sent_at = Instant::now();
        let exchange = async {
            let command = Command::Probe { payload: Bytes::from(payload), reply };
            link.commands.send(command).await.map_err(|_| SignalError::NotConnected)?;
            answer.await.map_err(|_| SignalError::NotConnected)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(arrived)) => Ok(arrived.saturating_duration_since(sent_at)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SignalError::Timeout { what: "probe", after: timeout }),
        }
    }

    /// Makes signaling healthy as fast as possible (happy-eyeballs style):
    /// probes the current link; if no pong arrives within
    /// `rebuild_head_start`, also opens a fresh connection, and keeps
    /// whichever is healthy first. A fresh socket that loses is closed before
    /// it registers; a link that loses is closed deliberately (no `Lost`).
    /// Once the probe failed, or at once when the host no longer has the
    /// link's local address (it cannot answer), the fresh connection
    /// registers in its upgrade request. When the route to the server now
    /// leaves from another local address than the link's (make-before-break:
    /// a new uplink is preferred while the old one still works), the fresh
    /// connection registers in its upgrade request at once and wins; the
    /// current link is kept only if it fails. Without a current link this is
    /// `connect_once`.
    ///
    /// Bounded by `rebuild_head_start + connect_timeout`, plus what remains of
    /// `probe_timeout` if the fresh attempt fails first.
    ///
    /// # Cancel safety
    ///
    /// Same as [`SignalClient::connect_once`].
    pub async fn rebuild(&self, probe_timeout: Duration) -> Result<Rebuilt, SignalError> {
        self.rebuild_asking_ice_restart(probe_timeout, &[]).await
    }

    /// [`SignalClient::rebuild`], whose fresh connection's `register` also asks the server to
    /// send each of `peers` an `ice_restart` from us right after `registered` (PROTOCOL.md
    /// §3). An answerer whose uplink changed asks its offerers for restart offers this way, a
    /// round trip sooner than relaying `ice_restart` once registered could. The peers the
    /// server did ask are in [`Rebuilt::Replaced`]'s [`Connected::ice_restart_requested`]: an
    /// older server asks none, and a kept link was not registered again.
    ///
    /// # Cancel safety
    ///
    /// Same as [`SignalClient::connect_once`].
    pub async fn rebuild_asking_ice_restart(
        &self,
        probe_timeout: Duration,
        peers: &[PeerId],
    ) -> Result<Rebuilt, SignalError> {
        let Some(old) = self.current() else {
            let connected = self.connect_asking_ice_restart(peers).await?;
            return Ok(Rebuilt::Replaced { connected, previous: None });
        };
        let span =
            info_span!("signal.rebuild", peer = %self.shared.config.peer_id, old = old.generation);
        async move {
            let result = self.race(&old, probe_timeout, peers).await;
            match &result {
                Ok(Rebuilt::Kept { rtt, .. }) => {
                    info!(name: "signal.client.rebuild", outcome = "kept", rtt_us = rtt.as_micros() as u64);
                }
                Ok(Rebuilt::Replaced { connected, .. }) => {
                    info!(name: "signal.client.rebuild", outcome = "replaced", generation = connected.generation.get());
                }
                Err(error) => {
                    info!(name: "signal.client.rebuild", outcome = "failed", kind = error.kind().name(), %error);
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn race(
        &self,
        old: &LinkHandle,
        probe_timeout: Duration,
        ice_restart: &[PeerId],
    ) -> Result<Rebuilt, SignalError> {
        let kept = |rtt| Rebuilt::Kept { generation: LinkGeneration(old.generation), rtt };
        let probe = self.probe_link(old, probe_timeout);
        tokio::pin!(probe);
        // A link whose local address the host no longer has (the uplink it used went away)
        // cannot answer: it counts as failed from the start, so the fresh connection registers
        // in its upgrade request and saves the round trip of a `register` frame.
        let address_gone =
            old.local_address.is_some_and(|address| !endpoint::is_local_address(address));
        // Make-before-break: the link still works, but the route to the server now leaves from
        // another local address (a new uplink the host prefers), so the link's own uplink may
        // be about to go. A fresh link takes the new route and replaces it at once; the old one
        // stays only if the fresh one fails.
        let route_moved = !address_gone
            && old.local_address.zip(old.server_address).is_some_and(|(local, server)| {
                endpoint::route_source(server).is_some_and(|source| source != local)
            });
        let mut probe_failed = address_gone;
        if address_gone {
            debug!(name: "signal.client.address_gone", generation = old.generation);
        } else if route_moved {
            debug!(name: "signal.client.route_moved", generation = old.generation);
        } else {
            // The existing link's head start.
            tokio::select! {
                result = &mut probe => match result {
                    Ok(rtt) => return Ok(kept(rtt)),
                    Err(_) => probe_failed = true,
                },
                () = tokio::time::sleep(self.shared.config.rebuild_head_start) => {}
            }
        }
        let generation = self.allocate_generation();
        let bound = self.shared.config.connect_timeout;
        let deadline = Instant::now() + bound;
        let attempt = self.attempt(generation, ice_restart)?;
        // `register` rides in the upgrade request only once the existing link has failed its
        // probe, or is to be replaced anyway: a server that took it would replace that link,
        // which may still win the race.
        let early = (probe_failed || route_moved).then(|| attempt.register.clone());
        let open = self.shared.endpoints.open(deadline, bound, early.as_ref());
        tokio::pin!(open);
        // Race the fresh handshake against the probe (when the probe has not failed yet, the
        // fresh socket has not registered, so dropping it leaves the server untouched).
        let opened = loop {
            tokio::select! {
                result = &mut probe, if !probe_failed && !route_moved => match result {
                    Ok(rtt) => return Ok(kept(rtt)),
                    Err(_) => probe_failed = true,
                },
                result = &mut open => break result,
            }
        };
        let fresh = match opened {
            Ok((index, opened)) => {
                let registered =
                    match tokio::time::timeout_at(deadline, self.register(opened, attempt)).await {
                        Ok(registered) => registered,
                        Err(_) => Err(SignalError::Timeout { what: "connect", after: bound }),
                    };
                if let Err(error) = &registered {
                    self.registration_failed(index, error);
                }
                registered
            }
            Err(error) => Err(error),
        };
        match fresh {
            Ok(pending) => {
                let connected = self.commit(pending)?;
                Ok(Rebuilt::Replaced { connected, previous: Some(LinkGeneration(old.generation)) })
            }
            Err(error) if !probe_failed => match probe.await {
                Ok(rtt) => Ok(kept(rtt)),
                Err(_) => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    /// Queues a relay message to `to`. Returns the message id the server
    /// echoes if it refuses the message (see [`SignalEvent::ServerError`]).
    /// Does not wait: fails at once when not connected
    /// ([`SignalError::NotConnected`]), when the queue is full
    /// ([`SignalError::QueueFull`]), or when the message exceeds the server's
    /// frame limit ([`SignalError::MessageTooLarge`]).
    pub fn send(&self, to: &PeerId, payload: RelayPayload) -> Result<u64, SignalError> {
        let link = self.current().ok_or(SignalError::NotConnected)?;
        let id = self.shared.next_message_id.fetch_add(1, Ordering::Relaxed);
        let text = encode_client_message(&ClientMessage::Relay(RelayOut {
            to: to.clone(),
            id: Some(id),
            claimed_from: None,
            payload,
        }));
        if text.len() > link.max_frame_bytes {
            return Err(SignalError::MessageTooLarge {
                size: text.len(),
                max: link.max_frame_bytes,
            });
        }
        match link.commands.try_send(Command::Frame(text)) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(_)) => {
                Err(SignalError::QueueFull { capacity: self.shared.config.outbound_queue })
            }
            Err(TrySendError::Closed(_)) => Err(SignalError::NotConnected),
        }
    }
}
