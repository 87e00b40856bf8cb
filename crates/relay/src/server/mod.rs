//! The relay server: HTTP listener, WebSocket sessions, peer registry.
//!
//! Embed it with [`SignalServer::bind`] then [`SignalServer::spawn`] (tests,
//! `tether demo`) or [`SignalServer::serve`] with a shutdown future
//! (`tether serve`).
//!
//! Architecture invariant: a session only ever speaks as the peer id its
//! token proved; `from` is stamped by the server, never copied from input.

mod admission;
mod cluster_link;
mod rate;
mod registry;
mod routes;
mod session;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::cluster::{Cluster, ClusterConfig, ClusterEvents};
use crate::error::RelayError;
use crate::metrics::{MetricsSnapshot, Refused, ServerMetrics};
use crate::tls::ServerTls;
use crate::turn::TurnGrants;
use tether_signal::protocol::{DEFAULT_MAX_FRAME_BYTES, IceServerGrant, PeerId, WEBSOCKET_PATH};

use self::admission::{Admission, Refusal};
use self::cluster_link::ClusterLink;
use self::rate::AcceptBackoff;
pub use self::rate::RateLimit;
use self::registry::Registry;

/// Descriptors kept free for the listener, the runtime and logging when the
/// connection caps are fitted to the process's open-file limit.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Bounds that protect the server from slow, silent or abusive clients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Largest TEXT frame accepted; a larger one gets `frame_too_large` and
    /// counts as a bad frame. Advertised in `registered`.
    pub max_frame_bytes: usize,
    /// Frames above this are refused by the WebSocket layer itself: the
    /// connection is closed with 1009 (the stream cannot be resynchronised).
    pub hard_frame_bytes: usize,
    /// Frames queued for one connection. A relay that finds the receiver's
    /// queue full drops the receiver as a slow consumer (close 4004). Keep
    /// it above `relay_rate.burst`, so one sender within its own rate limit
    /// cannot overflow a receiver that reads.
    pub outbound_queue: usize,
    /// A write to a client that does not complete within this time drops
    /// the client as a slow consumer (close 4004).
    pub write_timeout: Duration,
    /// Bad frames (protocol violations) tolerated before closing with 4003.
    pub max_bad_frames: u32,
    /// Time a new connection has to send a valid `register`.
    pub register_timeout: Duration,
    /// A connection that sends nothing (pongs included) this long is closed.
    pub idle_timeout: Duration,
    /// Interval of the server's own WebSocket pings (browsers answer them).
    pub ping_interval: Duration,
    /// Open connections (HTTP plus WebSocket sessions) accepted at once.
    /// At the cap an unregistered connection is closed to admit a new one
    /// (up to 32 over the cap while those close); with none to close, new
    /// connections are closed right after accept. Lowered at bind to the
    /// process's open-file limit minus a reserve of 64.
    pub max_connections: u64,
    /// Connections that have not registered yet (HTTP or WebSocket), all
    /// sources together. At the cap the oldest is closed (1013 once it is a
    /// WebSocket) to admit the new one. Lowered at bind to half of
    /// `max_connections`.
    pub max_unregistered: usize,
    /// Unregistered connections from one source address; more are closed
    /// right after accept.
    pub max_unregistered_per_source: usize,
    /// Relay messages (`offer` ... `bye`) one connection may send, to known
    /// and unknown peers alike; over it: `error` `rate_limited`.
    pub relay_rate: RateLimit,
    /// `ping` messages and WebSocket pings one connection may send.
    pub ping_rate: RateLimit,
    /// Messages over a rate limit tolerated before closing with 4009.
    pub max_rate_violations: u32,
    /// How long after a registration the `generation` order of its
    /// `session` holds: within it an older or equal generation is refused
    /// (`stale_generation`); after it any valid `register` replaces as usual,
    /// so a pinned (huge) generation cannot lock the owner out.
    pub generation_fence: Duration,
    /// Time to flush queued frames and the close frame when closing a session.
    pub close_timeout: Duration,
    /// Time graceful shutdown waits for sessions to close.
    pub shutdown_grace: Duration,
    /// Time a client has to send its HTTP request head.
    pub header_read_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            hard_frame_bytes: 1024 * 1024,
            outbound_queue: 256,
            write_timeout: Duration::from_secs(10),
            max_bad_frames: 10,
            register_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            max_connections: 50_000,
            max_unregistered: 10_000,
            max_unregistered_per_source: 64,
            relay_rate: RateLimit::new(50, 200),
            ping_rate: RateLimit::new(20, 50),
            max_rate_violations: 20,
            generation_fence: Duration::from_secs(10),
            close_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The handler type behind [`ExtraRoutes`].
type RouteFn = dyn Fn(&http::request::Parts) -> Option<http::Response<Bytes>> + Send + Sync;

/// An embedder's hook for extra HTTP routes (e.g. a web page served next to
/// the WebSocket endpoint). Consulted after `/ws`, `/healthz` and `/metrics`
/// and before `static_dir`; returning `None` passes the request on.
#[derive(Clone)]
pub struct ExtraRoutes(Arc<RouteFn>);

impl ExtraRoutes {
    /// Wraps a route handler.
    pub fn new(
        handler: impl Fn(&http::request::Parts) -> Option<http::Response<Bytes>> + Send + Sync + 'static,
    ) -> ExtraRoutes {
        ExtraRoutes(Arc::new(handler))
    }

    fn handle(&self, parts: &http::request::Parts) -> Option<http::Response<Bytes>> {
        (self.0)(parts)
    }
}

impl fmt::Debug for ExtraRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExtraRoutes(..)")
    }
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Token checking; must accept at least one kind of token.
    pub auth: Authenticator,
    /// Protective bounds.
    pub limits: ServerLimits,
    /// Serve files from this directory for GET requests no other route took
    /// (`/` serves `index.html`).
    pub static_dir: Option<PathBuf>,
    /// Extra routes supplied by the embedder.
    pub extra_routes: Option<ExtraRoutes>,
    /// Terminate TLS: every route (`/ws`, `/healthz`, `/metrics`, files) is
    /// then served over HTTPS only. `None` serves plain HTTP, for use behind
    /// a TLS-terminating proxy.
    pub tls: Option<ServerTls>,
    /// STUN/TURN servers handed to every registered client in `registered`,
    /// with TURN credentials minted per peer (coturn's `use-auth-secret`).
    pub turn: Option<TurnGrants>,
    /// When set, a WebSocket upgrade whose `Origin` header is present and
    /// not in this list is refused with 403 (browser deployments). Entries
    /// are compared exactly (`https://app.example`); requests without
    /// `Origin` (non-browser clients) are not affected.
    pub allowed_origins: Option<Vec<String>>,
    /// Run as one instance of several sharing routing through NATS
    /// (docs/SCALE-OUT.md): registrations, relays to peers held by other
    /// instances, and room presence go through the broker. `None` (the
    /// default) is a single process that needs no broker.
    pub cluster: Option<ClusterConfig>,
}

impl ServerConfig {
    /// A configuration listening on `127.0.0.1:0` with default limits.
    pub fn new(auth: Authenticator) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth,
            limits: ServerLimits::default(),
            static_dir: None,
            extra_routes: None,
            tls: None,
            turn: None,
            allowed_origins: None,
            cluster: None,
        }
    }
}

/// State shared by the accept loop, HTTP handlers and sessions.
struct ServerState {
    auth: Authenticator,
    limits: ServerLimits,
    static_dir: Option<PathBuf>,
    extra_routes: Option<ExtraRoutes>,
    tls: Option<ServerTls>,
    turn: Option<TurnGrants>,
    allowed_origins: Option<Vec<String>>,
    registry: Arc<Registry>,
    /// Cluster mode's link to the broker; `None` on a single server.
    cluster: Option<ClusterLink>,
    admission: Arc<Admission>,
    metrics: ServerMetrics,
    /// Cancelled when shutdown starts; every task watches it.
    shutdown: CancellationToken,
    tasks: TaskTracker,
    next_connection_id: AtomicU64,
    /// TCP connections being served as HTTP (an upgraded one moves to the
    /// session count in `metrics`).
    open_connections: AtomicU64,
}

impl ServerState {
    /// What `registered` hands `peer`: the configured ICE servers, with
    /// TURN credentials minted now.
    fn ice_servers_for(&self, peer: &PeerId) -> Vec<IceServerGrant> {
        self.turn.as_ref().map(|turn| turn.grant(peer, SystemTime::now())).unwrap_or_default()
    }

    /// The server's counters, with the broker's view in cluster mode.
    fn metrics_snapshot(&self) -> MetricsSnapshot {
        let mut snapshot = self.metrics.snapshot();
        snapshot.cluster = self.cluster.as_ref().map(|link| link.cluster.stats());
        snapshot
    }
}

/// A bound, not yet running server.
pub struct SignalServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    /// Supersede notices from other instances, handled once serving.
    cluster_events: Option<ClusterEvents>,
}

impl fmt::Debug for SignalServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalServer").field("local_addr", &self.local_addr).finish()
    }
}

fn websocket_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{addr}{WEBSOCKET_PATH}")
}

impl SignalServer {
    /// Validates the configuration, binds the listening socket and, in
    /// cluster mode, connects to the broker.
    ///
    /// # Errors
    ///
    /// [`RelayError::InvalidConfig`] for unusable settings,
    /// [`RelayError::Bind`] when the address cannot be bound,
    /// [`RelayError::Cluster`] when the broker cannot be reached or set up.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it completes closes the socket.
    pub async fn bind(config: ServerConfig) -> Result<SignalServer, RelayError> {
        if !config.auth.is_configured() {
            return Err(RelayError::InvalidConfig(
                "no token authentication configured (secret or token file)".into(),
            ));
        }
        let limits = &config.limits;
        if limits.max_frame_bytes == 0
            || limits.hard_frame_bytes < limits.max_frame_bytes
            || limits.outbound_queue == 0
            || limits.max_bad_frames == 0
            || limits.max_connections == 0
            || limits.max_unregistered == 0
            || limits.max_unregistered_per_source == 0
            || limits.max_rate_violations == 0
            || [limits.relay_rate, limits.ping_rate]
                .iter()
                .any(|rate| rate.per_second == 0 || rate.burst == 0)
        {
            return Err(RelayError::InvalidConfig(
                "limits need max_frame_bytes > 0, hard_frame_bytes >= max_frame_bytes, and \
                 outbound_queue, max_bad_frames, max_connections, max_unregistered, \
                 max_unregistered_per_source, max_rate_violations and both rates above 0"
                    .into(),
            ));
        }
        let mut limits = config.limits;
        let descriptors = open_file_limit();
        if let Some(descriptors) = descriptors {
            limits.max_connections =
                limits.max_connections.min(descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(1));
        }
        let half = usize::try_from(limits.max_connections / 2).unwrap_or(usize::MAX).max(1);
        limits.max_unregistered = limits.max_unregistered.min(half);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| RelayError::Bind { addr: config.listen, source })?;
        let registry = Arc::new(Registry::default());
        let (cluster, cluster_events) = match config.cluster {
            Some(cluster_config) => {
                let (cluster, events) = Cluster::connect(cluster_config).await?;
                info!(
                    name: "signal.server.cluster_joined",
                    instance = %cluster.instance_id(),
                    presence_ttl_ms = cluster.presence_ttl().as_millis() as u64,
                );
                (Some(ClusterLink::new(cluster, registry.clone())), Some(events))
            }
            None => (None, None),
        };
        let state = Arc::new(ServerState {
            auth: config.auth,
            admission: Admission::new(limits.max_unregistered, limits.max_unregistered_per_source),
            limits,
            static_dir: config.static_dir,
            extra_routes: config.extra_routes,
            tls: config.tls,
            turn: config.turn,
            allowed_origins: config.allowed_origins,
            registry,
            cluster,
            metrics: ServerMetrics::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
            open_connections: AtomicU64::new(0),
        });
        Ok(SignalServer { listener, local_addr, state, cluster_events })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://ADDR/ws` (`wss://` with TLS), the URL clients connect to.
    pub fn websocket_url(&self) -> String {
        websocket_url(self.local_addr, self.state.tls.is_some())
    }

    /// The limits in force: the configured ones, with `max_connections` and
    /// `max_unregistered` lowered to fit the process's open-file limit.
    pub fn limits(&self) -> &ServerLimits {
        &self.state.limits
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops
    /// accepting, closes every session with 1001 after an `error`
    /// `shutting_down`, and waits up to `shutdown_grace` for them.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the graceful sense: dropping this future stops
    /// accepting at once but leaves already accepted sessions running until
    /// the runtime ends. Complete `shutdown` instead.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RelayError> {
        let SignalServer { listener, local_addr, state, cluster_events } = self;
        if let Some(events) = cluster_events {
            state.tasks.spawn(cluster_link::handle_events(events, Arc::clone(&state)));
        }
        info!(
            name: "signal.server.listening",
            addr = %local_addr,
            open_file_limit = open_file_limit(),
            max_connections = state.limits.max_connections,
            max_unregistered = state.limits.max_unregistered,
            max_unregistered_per_source = state.limits.max_unregistered_per_source,
        );
        tokio::pin!(shutdown);
        let mut backoff = AcceptBackoff::new(
            Duration::from_millis(5),
            Duration::from_millis(500),
            Duration::from_secs(10),
        );
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = state.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        backoff.succeeded();
                        accept(&state, stream, remote);
                    }
                    Err(error) => {
                        // Typically EMFILE: back off (up to 500 ms) instead of
                        // spinning, and warn at most once per 10 s.
                        state.metrics.refused(Refused::AcceptError);
                        let failure = backoff.failed(tokio::time::Instant::now());
                        if let Some(failures) = failure.log {
                            warn!(name: "signal.server.accept_error", %error, failures);
                        }
                        tokio::select! {
                            () = tokio::time::sleep(failure.wait) => {}
                            () = &mut shutdown => break,
                        }
                    }
                },
            }
        }
        drop(listener);
        info!(name: "signal.server.shutdown", sessions = state.tasks.len());
        state.shutdown.cancel();
        state.tasks.close();
        if tokio::time::timeout(state.limits.shutdown_grace, state.tasks.wait()).await.is_err() {
            warn!(name: "signal.server.shutdown_timeout", remaining = state.tasks.len());
        }
        Ok(())
    }

    /// Runs the server on the current tokio runtime and returns its handle.
    pub fn spawn(self) -> RunningServer {
        let local_addr = self.local_addr;
        let state = Arc::clone(&self.state);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = self.serve(stopped.cancelled_owned()).await {
                warn!(name: "signal.server.failed", %error);
            }
        });
        RunningServer { local_addr, state, stop, task: Some(task) }
    }
}

fn accept(state: &Arc<ServerState>, stream: tokio::net::TcpStream, remote: SocketAddr) {
    // HTTP connections not (yet) upgraded, plus WebSocket sessions.
    let open =
        state.open_connections.fetch_add(1, Ordering::Relaxed) + state.metrics.connections_open();
    if open >= state.limits.max_connections {
        // Full: an unregistered connection makes room for the newcomer (the
        // evicted one is still closing, so allow a little slack within the
        // descriptor reserve); registered sessions are never displaced.
        let within_slack = open < state.limits.max_connections + RESERVED_DESCRIPTORS / 2;
        if !(within_slack && state.admission.evict_one()) {
            state.open_connections.fetch_sub(1, Ordering::Relaxed);
            state.metrics.refused(Refused::MaxConnections);
            debug!(name: "signal.server.refused", %remote, open, reason = "max_connections");
            return;
        }
        state.metrics.refused(Refused::UnregisteredEvicted);
        debug!(name: "signal.server.evicted", %remote, reason = "max_connections");
    }
    let admitted = match state.admission.admit(remote.ip()) {
        Ok(admitted) => admitted,
        Err(Refusal::PerSource) => {
            state.open_connections.fetch_sub(1, Ordering::Relaxed);
            state.metrics.refused(Refused::UnregisteredPerSource);
            debug!(name: "signal.server.refused", %remote, reason = "unregistered_per_source");
            return;
        }
    };
    if admitted.evicted_other {
        state.metrics.refused(Refused::UnregisteredEvicted);
        debug!(name: "signal.server.evicted", %remote, reason = "max_unregistered");
    }
    let _ = stream.set_nodelay(true);
    let task_state = Arc::clone(state);
    state.tasks.spawn(async move {
        match &task_state.tls {
            None => routes::serve_connection(stream, remote, admitted.pending, &task_state).await,
            Some(tls) => {
                // The handshake shares the header bound: a client that opens TCP
                // and says nothing is dropped as an HTTP one would be.
                let bound = task_state.limits.header_read_timeout;
                match tokio::time::timeout(bound, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => {
                        routes::serve_connection(stream, remote, admitted.pending, &task_state)
                            .await
                    }
                    Ok(Err(error)) => {
                        debug!(name: "signal.server.tls_refused", %remote, %error);
                    }
                    Err(_) => debug!(name: "signal.server.tls_timeout", %remote),
                }
            }
        }
        task_state.open_connections.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The process's soft open-file limit, when the platform has one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _hard)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises this process's soft open-file limit to its hard limit and returns
/// the limit now in force (for `tether serve` to call, and report, at start;
/// a library embedding the server leaves its process's limits alone).
///
/// # Errors
///
/// The operating system's error when the limit cannot be read or set.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        rlimit::increase_nofile_limit(u64::MAX)
    }
    #[cfg(not(unix))]
    {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no open-file limit here"))
    }
}

/// A server running in the background. Dropping it starts shutdown without
/// waiting; [`RunningServer::shutdown`] waits for it.
pub struct RunningServer {
    local_addr: SocketAddr,
    state: Arc<ServerState>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningServer").field("local_addr", &self.local_addr).finish()
    }
}

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://ADDR/ws` (`wss://` with TLS), the URL clients connect to.
    pub fn websocket_url(&self) -> String {
        websocket_url(self.local_addr, self.state.tls.is_some())
    }

    /// A copy of the server's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics_snapshot()
    }

    /// Shuts down gracefully and waits for the server task to finish
    /// (bounded by `shutdown_grace` plus the session close timeout).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: shutdown has started when the first poll returns; dropping
    /// the future only stops waiting for it.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
