//! The delay relay: a userspace forwarder that adds a fixed one-way delay,
//! standing in for `netem`, which this kernel lacks.
//!
//! Each direction is a FIFO delay line: a datagram or chunk read at `t` is
//! written at `t + delay`, never earlier, in the order it was read, so the
//! relay delays without reordering. The last two milliseconds of each wait
//! run on a timer thread with sub-millisecond precision (tokio's timer
//! alone is 1-1.5 ms late); the relay's tests measure the result.
//!
//! - UDP: one session per client address, each with its own upstream
//!   socket (so the upstream sees one source port per client, like a NAT),
//!   idle sessions expire after 2 minutes, at most 1024 sessions; a full
//!   delay line drops datagrams (counted).
//! - TCP: each accepted connection gets its own upstream connection; data
//!   and the end of stream are delayed; a full delay line applies
//!   backpressure. The TCP handshake itself is not delayed (the relay
//!   accepts at once), so a new connection costs one RTT less than over a
//!   real delayed path.
//!
//! - Router ([`DelayRouter`]): not a proxy but a TUN device in the lab's
//!   router that all forwarded traffic is routed through (`lab.sh delay
//!   on`), so the real addresses stay in place: ICE, handoffs and the
//!   signaling handshake all see the delay, as on a slow network. It can
//!   also add jitter (per-flow order kept) and seeded random loss
//!   ([`DelayRouterConfig`]). This is what `LabConfig::round_trip_delay`,
//!   `jitter` and `loss_percent` use.
//!
//! Run them inside a lab namespace with [`spawn_in_netns`](crate::spawn_in_netns).

mod clock;
mod router;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::LabError;

/// Which traffic a relay forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayProtocol {
    /// UDP datagrams (WebRTC media and data channels).
    Udp,
    /// TCP streams (WebSocket signaling).
    Tcp,
}

/// How a [`DelayRelay`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayRelayConfig {
    /// UDP or TCP.
    pub protocol: RelayProtocol,
    /// Where the relay listens (port 0 picks one; see
    /// [`DelayRelay::local_addr`]).
    pub listen: SocketAddr,
    /// Where it forwards to.
    pub upstream: SocketAddr,
    /// Added in each direction; the round trip grows by twice this.
    pub one_way_delay: Duration,
}

/// What a relay has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// Datagrams (UDP) or chunks (TCP) forwarded, both directions.
    pub packets: u64,
    /// Payload bytes forwarded, both directions.
    pub bytes: u64,
    /// UDP datagrams dropped because a delay line was full or the session
    /// table was (the router: packets dropped because its line was full
    /// or the device refused them).
    pub dropped: u64,
    /// Packets the router's loss model discarded on purpose
    /// ([`DelayRouterConfig::loss_percent`]); 0 for the relays.
    pub lost: u64,
    /// UDP sessions created or TCP connections accepted.
    pub sessions: u64,
    /// Upstream sockets or connections that could not be set up.
    pub upstream_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    lost: AtomicU64,
    sessions: AtomicU64,
    upstream_failures: AtomicU64,
}

impl Counters {
    fn forwarded(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn lost(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    fn session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    fn upstream_failure(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RelayStats {
        RelayStats {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            upstream_failures: self.upstream_failures.load(Ordering::Relaxed),
        }
    }
}

fn start_clock() -> Result<clock::PreciseClock, LabError> {
    clock::PreciseClock::start()
        .map_err(|source| LabError::Relay { what: "start the timer thread".to_owned(), source })
}

/// A running delay relay. It runs as tasks on the runtime that started it
/// (in that runtime's network namespace) and stops when dropped.
#[derive(Debug)]
pub struct DelayRelay {
    config: DelayRelayConfig,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl DelayRelay {
    /// Binds `config.listen` and starts forwarding.
    ///
    /// # Errors
    ///
    /// [`LabError::Relay`] when the listening socket cannot be bound or the
    /// timer thread cannot start.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing runs until this returns.
    pub async fn start(config: DelayRelayConfig) -> Result<DelayRelay, LabError> {
        let counters = Arc::new(Counters::default());
        let clock = start_clock()?;
        let (local_addr, task) = match config.protocol {
            RelayProtocol::Udp => udp::start(config, counters.clone(), clock).await?,
            RelayProtocol::Tcp => tcp::start(config, counters.clone(), clock).await?,
        };
        tracing::debug!(
            event = "lab.relay.start",
            protocol = ?config.protocol,
            listen = %local_addr,
            upstream = %config.upstream,
            one_way_delay_ms = config.one_way_delay.as_secs_f64() * 1e3,
        );
        Ok(DelayRelay { config, local_addr, counters, task })
    }

    /// A UDP relay; see [`start`](Self::start).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn udp(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way_delay: Duration,
    ) -> Result<DelayRelay, LabError> {
        Self::start(DelayRelayConfig {
            protocol: RelayProtocol::Udp,
            listen,
            upstream,
            one_way_delay,
        })
        .await
    }

    /// A TCP relay; see [`start`](Self::start).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn tcp(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way_delay: Duration,
    ) -> Result<DelayRelay, LabError> {
        Self::start(DelayRelayConfig {
            protocol: RelayProtocol::Tcp,
            listen,
            upstream,
            one_way_delay,
        })
        .await
    }

    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DelayRelayConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        // The relay's task owns every socket and sub-task (JoinSet), so
        // aborting it stops everything.
        self.task.abort();
    }
}

/// What a [`DelayRouter`] does to each packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayRouterConfig {
    /// The fixed part of each packet's delay (half the added round trip).
    pub one_way_delay: Duration,
    /// The width of the jitter band: each packet's delay is drawn
    /// uniformly from `one_way_delay ± jitter / 2` (never below zero), then
    /// raised if needed so that it does not leave before an earlier packet
    /// of its flow (same addresses, protocol and ports), which never takes
    /// it past the band's top. Packets of one flow keep their order;
    /// different flows may overtake each other.
    pub jitter: Duration,
    /// Chance, in percent (0 to 100), that a packet is discarded, in either
    /// direction, independently of every other packet.
    pub loss_percent: f64,
    /// Seeds the loss and jitter draws (two independent streams): the same
    /// seed gives the same sequence of decisions, packet by packet in
    /// arrival order.
    pub seed: u64,
}

impl DelayRouterConfig {
    /// A fixed delay: no jitter, no loss.
    pub fn fixed(one_way_delay: Duration) -> Self {
        Self { one_way_delay, jitter: Duration::ZERO, loss_percent: 0.0, seed: 0 }
    }
}

/// A running delay router: a TUN device and the delay line behind it. It
/// runs as a task on the runtime that started it; dropping it closes the
/// device, which removes it (and the routes through it).
#[derive(Debug)]
pub struct DelayRouter {
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl DelayRouter {
    /// Creates the TUN device `device` (up, without an address) in the
    /// calling thread's network namespace and delays every packet routed
    /// into it by `one_way_delay` before writing it back. Routing packets
    /// into the device is the caller's part (`lab.sh delay on`).
    ///
    /// Must be called from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`LabError::Relay`] when the device cannot be created (no
    /// `/dev/net/tun`, no `CAP_NET_ADMIN`, the name is taken) or the timer
    /// thread cannot start.
    pub fn start(device: &str, one_way_delay: Duration) -> Result<DelayRouter, LabError> {
        Self::start_with(device, DelayRouterConfig::fixed(one_way_delay))
    }

    /// Like [`start`](Self::start), with jitter and loss as `config` says.
    ///
    /// Must be called from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), and [`LabError::Relay`] (invalid input)
    /// when `loss_percent` is not within 0 to 100.
    pub fn start_with(device: &str, config: DelayRouterConfig) -> Result<DelayRouter, LabError> {
        if !(0.0..=100.0).contains(&config.loss_percent) {
            return Err(LabError::Relay {
                what: format!("use a loss of {} %", config.loss_percent),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the loss must be within 0 to 100 %",
                ),
            });
        }
        let counters = Arc::new(Counters::default());
        let clock = start_clock()?;
        let task = router::start(device, config, counters.clone(), clock)?;
        tracing::debug!(
            event = "lab.relay.router.start",
            device,
            one_way_delay_ms = config.one_way_delay.as_secs_f64() * 1e3,
            jitter_ms = config.jitter.as_secs_f64() * 1e3,
            loss_percent = config.loss_percent,
            seed = config.seed,
        );
        Ok(DelayRouter { counters, task })
    }

    /// Counters so far (`sessions` and `upstream_failures` stay 0).
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// A handle that reads the counters after the router has moved
    /// elsewhere (to the thread of its namespace).
    pub fn stats_handle(&self) -> RelayStatsHandle {
        RelayStatsHandle { counters: self.counters.clone() }
    }
}

impl Drop for DelayRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a relay's or router's counters from anywhere.
#[derive(Debug, Clone)]
pub struct RelayStatsHandle {
    counters: Arc<Counters>,
}

impl RelayStatsHandle {
    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }
}
