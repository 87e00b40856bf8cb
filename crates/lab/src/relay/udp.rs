//! The UDP side of the delay relay.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::clock::PreciseClock;
use super::{Counters, DelayRelayConfig};
use crate::error::LabError;

/// Datagrams waiting in one direction's delay line.
const QUEUE: usize = 8192;
/// Sessions at most; datagrams from further clients are dropped.
const MAX_SESSIONS: usize = 1024;
/// A session without traffic either way for this long is removed.
const IDLE: Duration = Duration::from_secs(120);
/// How often idle sessions are looked for.
const SWEEP: Duration = Duration::from_secs(10);
/// Largest datagram.
const DATAGRAM: usize = 65_536;

struct Session {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the relay started, at the last datagram.
    last_active: Arc<AtomicU64>,
    reader: AbortHandle,
}

type ToUpstream = (Instant, Arc<UdpSocket>, Vec<u8>);
type ToClient = (Instant, SocketAddr, Vec<u8>);

pub(super) async fn start(
    config: DelayRelayConfig,
    counters: Arc<Counters>,
    clock: PreciseClock,
) -> Result<(SocketAddr, JoinHandle<()>), LabError> {
    let socket = UdpSocket::bind(config.listen).await.map_err(|source| LabError::Relay {
        what: format!("bind udp {}", config.listen),
        source,
    })?;
    let local = socket
        .local_addr()
        .map_err(|source| LabError::Relay { what: "read the udp address".to_owned(), source })?;
    let task = tokio::spawn(run(Arc::new(socket), config, counters, clock));
    Ok((local, task))
}

async fn run(
    listen: Arc<UdpSocket>,
    config: DelayRelayConfig,
    counters: Arc<Counters>,
    clock: PreciseClock,
) {
    let delay = config.one_way_delay;
    let started = Instant::now();
    let (up_tx, up_rx) = mpsc::channel::<ToUpstream>(QUEUE);
    let (down_tx, down_rx) = mpsc::channel::<ToClient>(QUEUE);
    let mut tasks = JoinSet::new();
    tasks.spawn(deliver_upstream(up_rx, counters.clone(), clock.clone()));
    tasks.spawn(deliver_to_clients(listen.clone(), down_rx, counters.clone(), clock));
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM];
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = listen.recv_from(&mut buf) => {
                let (len, client) = match received {
                    Ok(r) => r,
                    Err(error) => {
                        tracing::debug!(event = "lab.relay.udp.recv_error", %error);
                        continue;
                    }
                };
                let due = Instant::now() + delay;
                let now_ms = elapsed_ms(started);
                if !sessions.contains_key(&client) {
                    if sessions.len() >= MAX_SESSIONS {
                        counters.dropped();
                        continue;
                    }
                    let Some(session) = open_session(&config, client, started, &down_tx, &counters, &mut tasks).await else {
                        continue;
                    };
                    sessions.insert(client, session);
                }
                let Some(session) = sessions.get(&client) else { continue };
                session.last_active.store(now_ms, Ordering::Relaxed);
                if up_tx.try_send((due, session.upstream.clone(), buf[..len].to_vec())).is_err() {
                    counters.dropped();
                }
            }
            _ = sweep.tick() => {
                let now_ms = elapsed_ms(started);
                let idle_ms = IDLE.as_millis() as u64;
                sessions.retain(|client, session| {
                    let keep = now_ms.saturating_sub(session.last_active.load(Ordering::Relaxed)) < idle_ms;
                    if !keep {
                        tracing::debug!(event = "lab.relay.udp.session_expired", %client);
                        session.reader.abort();
                    }
                    keep
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn open_session(
    config: &DelayRelayConfig,
    client: SocketAddr,
    started: Instant,
    down_tx: &mpsc::Sender<ToClient>,
    counters: &Arc<Counters>,
    tasks: &mut JoinSet<()>,
) -> Option<Session> {
    let any: SocketAddr = if config.upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(any).await {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(event = "lab.relay.udp.upstream_failed", %client, %error);
            counters.upstream_failure();
            return None;
        }
    };
    if let Err(error) = socket.connect(config.upstream).await {
        tracing::warn!(event = "lab.relay.udp.upstream_failed", %client, %error);
        counters.upstream_failure();
        return None;
    }
    counters.session();
    tracing::debug!(event = "lab.relay.udp.session", %client, upstream = %config.upstream);
    let upstream = Arc::new(socket);
    let last_active = Arc::new(AtomicU64::new(elapsed_ms(started)));
    let reader = tasks.spawn(read_upstream(
        upstream.clone(),
        client,
        config.one_way_delay,
        started,
        last_active.clone(),
        down_tx.clone(),
        counters.clone(),
    ));
    Some(Session { upstream, last_active, reader })
}

/// Reads one session's upstream socket into the client-bound delay line.
async fn read_upstream(
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    delay: Duration,
    started: Instant,
    last_active: Arc<AtomicU64>,
    down_tx: mpsc::Sender<ToClient>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(len) => {
                let due = Instant::now() + delay;
                last_active.store(elapsed_ms(started), Ordering::Relaxed);
                if down_tx.try_send((due, client, buf[..len].to_vec())).is_err() {
                    counters.dropped();
                }
            }
            // ICMP port unreachable on a connected socket: the upstream is
            // not (yet) listening. Keep the session.
            Err(error) => {
                tracing::trace!(event = "lab.relay.udp.upstream_recv_error", %client, %error)
            }
        }
    }
}

async fn deliver_upstream(
    mut rx: mpsc::Receiver<ToUpstream>,
    counters: Arc<Counters>,
    clock: PreciseClock,
) {
    while let Some((due, socket, datagram)) = rx.recv().await {
        clock.sleep_until(due).await;
        match socket.send(&datagram).await {
            Ok(_) => counters.forwarded(datagram.len()),
            Err(error) => tracing::trace!(event = "lab.relay.udp.send_error", %error),
        }
    }
}

async fn deliver_to_clients(
    listen: Arc<UdpSocket>,
    mut rx: mpsc::Receiver<ToClient>,
    counters: Arc<Counters>,
    clock: PreciseClock,
) {
    while let Some((due, client, datagram)) = rx.recv().await {
        clock.sleep_until(due).await;
        match listen.send_to(&datagram, client).await {
            Ok(_) => counters.forwarded(datagram.len()),
            Err(error) => tracing::trace!(event = "lab.relay.udp.send_error", %client, %error),
        }
    }
}
