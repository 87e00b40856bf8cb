//! The signaling load generator behind `tether bench signal`: an embedded server,
//! N real clients on loopback, relays between random pairs at a fixed total
//! rate, and the relay latency distribution (client `send` to the
//! receiver's event stream).
//!
//! The server runs on a thread of its own with a current-thread tokio
//! runtime, so it uses one core at most (the target is per core);
//! the clients run on the caller's runtime.
//!
//! With `instances` above 1, that many servers (each on its own thread)
//! share routing through a `nats-server` started for the run, clients are
//! spread across them, and latency is also reported separately for pairs
//! on one instance and pairs on different ones.
//!
//! Needs about two file descriptors per client (both ends live in this
//! process); the caller raises `RLIMIT_NOFILE` first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tether_relay::auth::{Authenticator, HmacSecret, mint_token_for};
use tether_relay::cluster::{ClusterConfig, InstanceId};
use tether_relay::{ServerConfig, SignalServer};
use tether_signal::protocol::{IceCandidate, PeerId, RelayPayload};
use tether_signal::{ClientConfig, SignalClient, SignalEvent, SignalEvents};
use tokio::time::{Instant, MissedTickBehavior};

use super::nats::NatsProcess;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoadConfig {
    /// Concurrent clients (at least 2).
    pub(crate) clients: usize,
    /// Total relayed messages per second, across all clients.
    pub(crate) rate: u32,
    /// How long to send, in seconds.
    pub(crate) seconds: f64,
    /// Connection attempts in flight at once during setup.
    pub(crate) connect_concurrency: usize,
    /// Seed for the choice of sender/receiver pairs.
    pub(crate) seed: u64,
    /// Server instances (each on its own thread); above 1 they share
    /// routing through a `nats-server` the test starts, and client `i`
    /// connects to instance `i % instances`.
    pub(crate) instances: usize,
}

impl LoadConfig {
    /// `clients` clients at 5 000 messages/s for 10 s.
    pub(crate) fn new(clients: usize) -> LoadConfig {
        LoadConfig {
            clients,
            rate: 5_000,
            seconds: 10.0,
            connect_concurrency: 64,
            seed: 1,
            instances: 1,
        }
    }
}

/// What was measured. The first four fields are the CLI's `--json` contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct LoadReport {
    /// Clients connected.
    pub(crate) clients: usize,
    /// Median relay latency, microseconds.
    pub(crate) relay_p50_us: f64,
    /// 99th percentile relay latency, microseconds.
    pub(crate) relay_p99_us: f64,
    /// Failed connects + failed sends + server errors and lost links seen by
    /// clients + messages unaccounted for at the end of the drain.
    pub(crate) errors: u64,
    /// 99.9th percentile relay latency, microseconds.
    pub(crate) relay_p999_us: f64,
    /// Largest relay latency, microseconds.
    pub(crate) relay_max_us: f64,
    /// Messages sent.
    pub(crate) sent: u64,
    /// Messages received.
    pub(crate) received: u64,
    /// Achieved send rate, messages per second.
    pub(crate) achieved_rate: f64,
    /// Time to connect every client, seconds.
    pub(crate) connect_seconds: f64,
    /// Server instances.
    pub(crate) instances: usize,
    /// With several instances: latency between clients of one instance
    /// (p50, p99, microseconds) and between clients of different ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) same_instance: Option<SplitLatency>,
    /// See `same_instance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cross_instance: Option<SplitLatency>,
}

/// Latency of one kind of pair, microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct SplitLatency {
    pub(crate) count: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

impl SplitLatency {
    fn of(histogram: &Histogram) -> SplitLatency {
        SplitLatency {
            count: histogram.count(),
            p50_us: histogram.quantile(0.50),
            p99_us: histogram.quantile(0.99),
            max_us: histogram.max_us.load(Ordering::Relaxed) as f64,
        }
    }
}

/// A latency histogram with 1 µs buckets up to 100 ms (larger values land
/// in the last bucket), updated lock-free.
struct Histogram {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Histogram {
    const BUCKETS: usize = 100_001;

    fn new() -> Histogram {
        Histogram {
            buckets: (0..Histogram::BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    fn record(&self, micros: u64) {
        let index = (micros as usize).min(Histogram::BUCKETS - 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(micros, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    fn quantile(&self, quantile: f64) -> f64 {
        let counts: Vec<u64> =
            self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((quantile * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (micros, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return micros as f64;
            }
        }
        (Histogram::BUCKETS - 1) as f64
    }
}

/// splitmix64: a tiny seeded generator for picking pairs.
struct PairPicker(u64);

impl PairPicker {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Two distinct indices below `count` (count >= 2).
    fn pair(&mut self, count: usize) -> (usize, usize) {
        let from = (self.next() % count as u64) as usize;
        let offset = 1 + (self.next() % (count as u64 - 1)) as usize;
        (from, (from + offset) % count)
    }
}

struct Counters {
    received: AtomicU64,
    errors: AtomicU64,
    latencies: Histogram,
    /// Split by pair kind when there are several instances.
    same_instance: Histogram,
    cross_instance: Histogram,
}

/// The payload marker: `bench:<micros since start>:<s|x>` (`s`: sender and
/// receiver on the same instance, `x`: on different ones).
const MARKER: &str = "bench:";

async fn drain(mut events: SignalEvents, start: Instant, counters: Arc<Counters>) {
    while let Some(event) = events.recv().await {
        match event {
            SignalEvent::Relay { payload: RelayPayload::Candidate(candidate), .. } => {
                let sent = candidate.candidate.strip_prefix(MARKER).and_then(|rest| {
                    let (micros, kind) = rest.split_once(':')?;
                    Some((micros.parse::<u64>().ok()?, kind == "x"))
                });
                match sent {
                    Some((sent, cross)) => {
                        let now = start.elapsed().as_micros() as u64;
                        let latency = now.saturating_sub(sent);
                        counters.latencies.record(latency);
                        let split =
                            if cross { &counters.cross_instance } else { &counters.same_instance };
                        split.record(latency);
                        counters.received.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            SignalEvent::Lost { .. } | SignalEvent::ServerError { .. } => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Runs the load test to completion (setup, `seconds` of sending, up to 5 s
/// of draining, teardown).
///
/// # Cancel safety
///
/// Dropping the future stops the test; the embedded server and clients are
/// shut down as they are dropped.
pub(crate) async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    ensure!(
        config.clients >= 2 && config.rate > 0 && !config.seconds.is_nan() && config.seconds > 0.0,
        "need clients >= 2, rate > 0 and seconds > 0"
    );
    ensure!((1..=16).contains(&config.instances), "need 1 to 16 instances");
    let secret = HmacSecret::new(format!("loadtest-secret-{}", config.seed).into_bytes())?;
    let mut server_config = ServerConfig::new(Authenticator::with_secret(secret.clone()));
    server_config.limits.max_connections = config.clients as u64 * 2 + 64;
    server_config.limits.outbound_queue = 1024;
    // A benchmark, not an attack: every client comes from loopback and
    // sends as fast as the configured total rate asks.
    server_config.limits.max_unregistered = config.clients + 64;
    server_config.limits.max_unregistered_per_source = config.clients + 64;
    let per_client = u32::try_from(config.clients).unwrap_or(u32::MAX).max(1);
    let relay_rate = (config.rate / per_client).saturating_mul(4).max(1_000);
    server_config.limits.relay_rate = tether_relay::RateLimit::new(relay_rate, relay_rate);
    let nats = match config.instances {
        1 => None,
        _ => Some(NatsProcess::start()?),
    };
    let mut servers = Vec::with_capacity(config.instances);
    for index in 0..config.instances {
        let mut instance_config = server_config.clone();
        if let Some(nats) = &nats {
            let instance = InstanceId::new(format!("bench-{index}"))?;
            instance_config.cluster =
                Some(ClusterConfig::new(vec![nats.url().to_owned()], instance));
        }
        servers.push(ServerThread::start(instance_config).await?);
    }
    let urls: Vec<String> = servers.iter().map(|server| server.url.clone()).collect();

    let connect_started = Instant::now();
    let connected: Vec<anyhow::Result<(SignalClient, SignalEvents)>> =
        futures_util::stream::iter(0..config.clients)
            .map(|index| {
                let url = urls[index % urls.len()].clone();
                let secret = secret.clone();
                async move {
                    let peer = PeerId::new(format!("load-{index}"))?;
                    let token = mint_token_for(&secret, &peer, Duration::from_secs(3600));
                    let mut client_config = ClientConfig::new(url, peer, token);
                    client_config.connect_timeout = Duration::from_secs(30);
                    let (client, events) = SignalClient::new(client_config)?;
                    client.connect_once().await?;
                    Ok((client, events))
                }
            })
            .buffer_unordered(config.connect_concurrency.max(1))
            .collect()
            .await;
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    let counters = Arc::new(Counters {
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies: Histogram::new(),
        same_instance: Histogram::new(),
        cross_instance: Histogram::new(),
    });
    let start = Instant::now();
    let mut clients = Vec::with_capacity(config.clients);
    // Which instance each connected client is on.
    let mut homes = Vec::with_capacity(config.clients);
    for (index, result) in connected.into_iter().enumerate() {
        match result {
            Ok((client, events)) => {
                tokio::spawn(drain(events, start, Arc::clone(&counters)));
                clients.push(client);
                homes.push(index % config.instances);
            }
            Err(error) => {
                tracing::warn!(name: "signal.loadtest.connect_failed", error = %format_args!("{error:#}"))
            }
        }
    }
    ensure!(clients.len() >= 2, "only {} of {} clients connected", clients.len(), config.clients);
    let peers: Vec<PeerId> = clients.iter().map(|client| client.peer_id().clone()).collect();

    let connect_failures = (config.clients - clients.len()) as u64;
    let mut picker = PairPicker(config.seed);
    let mut sent: u64 = 0;
    let mut send_failures: u64 = 0;
    let send_for = Duration::from_secs_f64(config.seconds);
    let sending_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = sending_started.elapsed().min(send_for);
        let due = (elapsed.as_secs_f64() * f64::from(config.rate)) as u64;
        while sent < due {
            let (from, to) = picker.pair(clients.len());
            let stamp = start.elapsed().as_micros();
            let kind = if homes[from] == homes[to] { 's' } else { 'x' };
            let payload = RelayPayload::Candidate(IceCandidate {
                candidate: format!("{MARKER}{stamp}:{kind}"),
                sdp_mid: None,
                sdp_mline_index: None,
            });
            if clients[from].send(&peers[to], payload).is_err() {
                send_failures += 1;
            }
            sent += 1;
        }
        if elapsed >= send_for {
            break;
        }
    }
    let sending_seconds = sending_started.elapsed().as_secs_f64();

    let drain_deadline = Instant::now() + Duration::from_secs(5);
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    let accounted = || {
        counters.received.load(Ordering::Relaxed)
            + counters.errors.load(Ordering::Relaxed)
            + send_failures
    };
    while accounted() < sent && Instant::now() < drain_deadline {
        poll.tick().await;
    }
    let received = counters.received.load(Ordering::Relaxed);
    let missing = sent.saturating_sub(accounted());
    let errors =
        connect_failures + send_failures + counters.errors.load(Ordering::Relaxed) + missing;

    let report = LoadReport {
        clients: clients.len(),
        relay_p50_us: counters.latencies.quantile(0.50),
        relay_p99_us: counters.latencies.quantile(0.99),
        errors,
        relay_p999_us: counters.latencies.quantile(0.999),
        relay_max_us: counters.latencies.max_us.load(Ordering::Relaxed) as f64,
        sent,
        received,
        achieved_rate: sent as f64 / sending_seconds.max(f64::EPSILON),
        connect_seconds,
        instances: config.instances,
        same_instance: (config.instances > 1).then(|| SplitLatency::of(&counters.same_instance)),
        cross_instance: (config.instances > 1).then(|| SplitLatency::of(&counters.cross_instance)),
    };
    for client in &clients {
        client.disconnect().await;
    }
    for server in servers {
        server.shutdown().await;
    }
    drop(nats);
    Ok(report)
}

/// The server on its own OS thread and current-thread runtime.
struct ServerThread {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    async fn start(config: ServerConfig) -> anyhow::Result<ServerThread> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("signal-server".to_owned())
            .spawn(move || {
                let runtime =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let error = anyhow::Error::new(error)
                                .context("cannot build the server's runtime");
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                runtime.block_on(async move {
                    let server = match SignalServer::bind(config).await {
                        Ok(server) => server.spawn(),
                        Err(error) => {
                            let _ = ready_tx.send(Err(anyhow::Error::new(error)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(server.websocket_url()));
                    // A dropped sender (the test was dropped) stops it too.
                    let _ = stop_rx.await;
                    server.shutdown().await;
                });
            })
            .context("cannot start the server thread")?;
        let mut server =
            ServerThread { url: String::new(), stop: Some(stop), thread: Some(thread) };
        match ready_rx.await {
            Ok(Ok(url)) => server.url = url,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(anyhow!("the server thread panicked while starting")),
        }
        Ok(server)
    }

    /// Shuts the server down and waits for its thread.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        // Stops the server without waiting (the thread ends on its own).
        drop(self.stop.take());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_load_test_delivers_every_message() {
        let mut config = LoadConfig::new(20);
        config.rate = 400;
        config.seconds = 1.0;
        let report = run(config).await.unwrap();
        assert_eq!(report.clients, 20);
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(report.sent, 400, "{report:?}");
        assert_eq!(report.received, report.sent, "{report:?}");
        assert!(
            report.relay_p50_us > 0.0 && report.relay_p50_us <= report.relay_p99_us,
            "{report:?}"
        );
        assert!(report.relay_p99_us <= report.relay_max_us, "{report:?}");
        let json = serde_json::to_value(&report).unwrap();
        for key in ["clients", "relay_p50_us", "relay_p99_us", "errors"] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
    }

    #[tokio::test]
    async fn nonsense_configurations_are_refused() {
        let mut config = LoadConfig::new(1);
        assert!(run(config.clone()).await.is_err());
        config.clients = 2;
        config.rate = 0;
        assert!(run(config).await.is_err());
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let histogram = Histogram::new();
        for micros in 1..=100 {
            histogram.record(micros);
        }
        assert_eq!(histogram.quantile(0.5), 50.0);
        assert_eq!(histogram.quantile(0.99), 99.0);
        assert_eq!(histogram.quantile(1.0), 100.0);
        histogram.record(10_000_000);
        assert_eq!(histogram.max_us.load(Ordering::Relaxed), 10_000_000);
    }

    #[test]
    fn pairs_are_distinct_and_in_range() {
        let mut picker = PairPicker(7);
        for _ in 0..10_000 {
            let (from, to) = picker.pair(3);
            assert!(from < 3 && to < 3 && from != to);
        }
    }
}
