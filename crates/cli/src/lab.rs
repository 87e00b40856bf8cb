//! `tether lab handoff`: real Wi-Fi <-> cellular handoffs in network
//! namespaces (lab/README.md), under a live message stream, measured from
//! the path monitor's Available snapshot to the first message echoed over
//! the data channel afterwards — for the default policy and for the seed
//! design's (400 ms settle, probe-then-rebuild with a 1 s probe timeout) in
//! the same run. The lab can be as unkind as the field: delay, jitter and
//! seeded loss in the router, outages between uplinks, or overlapping
//! uplinks (lab/README.md lists every flag and report field).
//!
//! The phone (path monitor + node) runs on a thread inside the phone
//! namespace; the signaling server on a thread inside the cloud namespace,
//! and the far peer, which echoes every message, on one inside the home
//! namespace. All log with the process's monotonic clock, so their
//! instants compare directly.
//!
//! `--nat cone|symmetric` puts NAT in the gateways of the phone's uplinks
//! and of home, runs coturn in the cloud, and gives both nodes its STUN and
//! TURN addresses (credentials minted from coturn's shared secret with
//! tether-relay's `TurnSecret`). Whether a connection went through the
//! relay is read from the home gateway's packet counters while the stream
//! runs steadily (tether-rtc does not expose the selected candidate pair).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tether::live::{RtcNodeConfig, SignalingTiming};
use tether::{
    ActionKind, ActionOutcome, ActionReport, Availability, Messages, NetworkEvent, NetworkSnapshot,
    RtcNode, Transport, TransportSet,
};
use tether_lab::{
    HandoffMode, Lab, LabConfig, Nat, NatCounters, NetnsTask, Uplink, spawn_in_netns,
};
use tether_pathmon::{PathMonitor, PathMonitorConfig, SnapshotReceiver};
use tether_relay::auth::{Authenticator, HmacSecret, mint_token_for};
use tether_relay::turn::TurnSecret;
use tether_relay::{ServerConfig, SignalServer};
use tether_rtc::{IceServer, LocalAddresses, RtcConfig};
use tether_signal::protocol::PeerId;
use tokio::sync::{Notify, broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use crate::percentile::{Samples, ms, rounded};
use crate::startup;

/// The signaling port in the cloud namespace.
const SIGNAL_PORT: u16 = 7447;
/// The far peer's id; the phone's is `phone`.
const CLOUD: &str = "cloud";
/// Messages per second from the phone (each is echoed back).
const STREAM_RATE: u64 = 100;
/// Bound on any one recovery before a handoff counts as failed.
const HANDOFF_BOUND: Duration = Duration::from_secs(15);
/// Largest `--rtt-ms` (the lab's signaling timing,
/// `SignalingTiming::responsive`, declares a socket dead after 2 s of
/// silence).
const MAX_RTT_MS: u64 = 2000;
/// Bound on the initial connection and on draining at the end.
const SETTLE_BOUND: Duration = Duration::from_secs(20);
/// Largest `--jitter-ms`.
const MAX_JITTER_MS: u64 = 2000;
/// Largest `--outage-ms` and `--overlap-ms`.
const MAX_GAP_MS: u64 = 120_000;
/// The replay buffer of both peers, in messages: the phone accepts the
/// stream (100 a second) through the longest outage (120 s) without waiting
/// for room, and the far peer echoes the whole backlog the phone replays
/// after it at once.
const PEER_BUFFER: usize = 16_384;
/// The shortest time from one handoff to the next. tether's signaling
/// budget (docs/NEGOTIATION.md §13.3: four offers or restart requests, then
/// one per 2 s) is what paces faster ones, and a handoff every second for
/// the whole run would measure that budget rather than a handoff.
const HANDOFF_SPACING: Duration = Duration::from_secs(2);
/// Echoes that make a steady stream: after recovery, and the window in
/// which the home gateway's counters tell a relayed connection from a
/// direct one.
const STEADY_ECHOES: usize = 20;
/// Echoes (a second of the stream) that drain the first connection's
/// set-up backlog, and then mark the second of messages whose round trips
/// are measured.
const STEADY_RTT_ECHOES: usize = 100;
/// Lifetime of the TURN credentials the lab mints.
const TURN_CREDENTIAL_TTL: Duration = Duration::from_secs(3600);

/// `--nat`: what the gateways of the phone's uplinks and of home do.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NatArg {
    /// Plain routing (no NAT, no TURN server).
    None,
    /// Endpoint-independent mapping (masquerade keeping the port): the
    /// peers connect directly.
    Cone,
    /// A new mapping per destination (masquerade random,fully-random): only
    /// the TURN relay connects the peers.
    Symmetric,
}

impl NatArg {
    fn nat(self) -> Nat {
        match self {
            Self::None => Nat::None,
            Self::Cone => Nat::Cone,
            Self::Symmetric => Nat::Symmetric,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum LabCommand {
    /// Hand the phone over between Wi-Fi and cellular under a live stream
    /// and measure recovery, default policy vs the seed design.
    Handoff(HandoffArgs),
}

#[derive(Args)]
pub(crate) struct HandoffArgs {
    /// Handoffs per policy (alternating Wi-Fi -> cellular -> Wi-Fi ...).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Added round-trip time between phone and cloud, in milliseconds: the
    /// lab's router delays every packet it forwards (signaling, ICE, data)
    /// by half of it, in userspace (at most 2000).
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Jitter, in milliseconds: each packet's one-way delay through the
    /// router is drawn uniformly from RTT/2 ± J/2 (never below zero);
    /// packets of one flow keep their order (at most 2000).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Random loss in the router, in percent, on every packet in both
    /// directions (0 to below 100; seeded by --seed).
    #[arg(long, default_value_t = 0.0)]
    loss_pct: f64,
    /// Seeds the router's loss and jitter draws, so that a run can be
    /// repeated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Break before make with a gap: the old uplink goes and the new one
    /// comes up only this many milliseconds later (at most 120000).
    #[arg(long, conflicts_with = "overlap_ms")]
    outage_ms: Option<u64>,
    /// Make before break: the new uplink comes up (and takes the default
    /// route) this many milliseconds before the old one goes (at most
    /// 120000).
    #[arg(long)]
    overlap_ms: Option<u64>,
    /// NAT in the gateways of the phone's uplinks and of the far peer's
    /// home (nftables); with cone or symmetric, coturn runs in the cloud
    /// and both nodes use it for STUN and TURN.
    #[arg(long, value_enum, default_value = "none")]
    nat: NatArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

impl HandoffArgs {
    fn mode(&self) -> HandoffMode {
        match (self.outage_ms, self.overlap_ms) {
            (Some(gap), _) => HandoffMode::Outage(Duration::from_millis(gap)),
            (None, Some(gap)) => HandoffMode::Overlap(Duration::from_millis(gap)),
            (None, None) => HandoffMode::Immediate,
        }
    }
}

/// One policy's measurements.
#[derive(Serialize, Clone, Copy, Default)]
struct PolicyReport {
    /// Path Available -> first echo of a message sent on the new path.
    p50_ms: f64,
    p95_ms: f64,
    /// Path Available -> the node's restore (or reconnect) ended ok.
    restore_p50_ms: f64,
    restore_p95_ms: f64,
    /// Handoffs where such a restore was seen.
    restores: usize,
    /// Per handoff, the longest silence between consecutive echoes, from
    /// the last echo before it to the stream running steadily again: the
    /// largest over the handoffs, and their median.
    echo_gap_max_ms: f64,
    echo_gap_p50_ms: f64,
    /// The first connection's round trip while it runs steadily (the
    /// median over a second of messages, once its set-up backlog drained):
    /// direct or through the relay.
    round_trip_p50_ms: f64,
    /// The phone's messages carried on the detour through signaling while its data path was
    /// being replaced (docs/MESSAGING.md rule 10).
    detoured: u64,
}

#[derive(Serialize)]
struct HandoffReport {
    default: PolicyReport,
    seed: PolicyReport,
    ratio_p50: f64,
    handoffs: usize,
    lost: u64,
    duplicated: u64,
    /// Handoffs (both policies) whose recovery did not finish in time.
    failed: usize,
    /// The `--rtt-ms` the run had.
    added_rtt_ms: u64,
    /// `--jitter-ms`.
    added_jitter_ms: u64,
    /// `--loss-pct`.
    loss_pct: f64,
    /// `--seed`.
    rng_seed: u64,
    /// `--outage-ms` (0: none).
    outage_ms: u64,
    /// `--overlap-ms` (0: none).
    overlap_ms: u64,
    /// Packets the router's loss model discarded, both directions.
    router_lost: u64,
    /// Packets the router dropped because its delay line was full.
    router_dropped: u64,
    /// `--nat`.
    nat: &'static str,
    /// Connections judged (both policies): each phone's first one and one
    /// per handoff, while the stream ran steadily.
    connections: usize,
    /// Of those, how many carried their data through the TURN relay (0
    /// without NAT: there is no TURN server then).
    relayed: usize,
    /// Of those, how many showed no data at all in the window (neither
    /// relayed nor direct).
    unjudged: usize,
    /// Relay allocations coturn granted during the run (0 without NAT).
    turn_allocations: usize,
}

/// What one policy's handoffs measured.
#[derive(Default)]
struct PolicySamples {
    echo: Vec<Duration>,
    restore: Vec<Duration>,
    gaps: Vec<Duration>,
    round_trips: Vec<Duration>,
    detoured: u64,
}

/// How the connections went: through the relay, directly, or not seen.
#[derive(Default)]
struct PathTally {
    connections: usize,
    relayed: usize,
    unjudged: usize,
}

impl PathTally {
    /// Counts one connection by what the home gateway saw while it carried
    /// the steady stream; without NAT (no counters) it is direct.
    fn count(&mut self, seen: Option<NatCounters>) {
        self.connections += 1;
        match seen.map(NatCounters::relayed) {
            Some(Some(true)) => self.relayed += 1,
            Some(None) => self.unjudged += 1,
            None | Some(Some(false)) => {}
        }
    }
}

pub(crate) fn run(command: LabCommand) -> anyhow::Result<ExitCode> {
    let LabCommand::Handoff(args) = command;
    // Logs (one `lab.handoff` line per handoff at info) only when asked for.
    startup::init_logging(None);
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(
        args.rtt_ms <= MAX_RTT_MS,
        "--rtt-ms {} is more than {MAX_RTT_MS}: the nodes' signaling timeouts assume less",
        args.rtt_ms
    );
    ensure!(
        args.jitter_ms <= MAX_JITTER_MS,
        "--jitter-ms {} is more than {MAX_JITTER_MS}",
        args.jitter_ms
    );
    ensure!(
        (0.0..100.0).contains(&args.loss_pct),
        "--loss-pct {} is not within 0 to below 100",
        args.loss_pct
    );
    for (flag, gap) in [("--outage-ms", args.outage_ms), ("--overlap-ms", args.overlap_ms)] {
        if let Some(gap) = gap {
            ensure!(gap <= MAX_GAP_MS, "{flag} {gap} is more than {MAX_GAP_MS}");
        }
    }
    tether_lab::require_root().context("the lab needs root (network namespaces and veth)")?;
    let runtime = startup::node_runtime()?;
    let report = runtime.block_on(async {
        // Dropping the run on a signal drops the lab, which tears it down.
        tokio::select! {
            outcome = handoffs(&args) => outcome,
            () = interrupted() => bail!("interrupted; the lab was torn down"),
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    let clean = report.failed == 0 && report.lost == 0 && report.duplicated == 0;
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What the phone saw, stamped with the process's monotonic clock.
#[derive(Default)]
struct PhoneLog {
    snapshots: Vec<(Instant, NetworkSnapshot)>,
    /// When each message was accepted for sending (index: sequence - 1).
    sent_at: Vec<Instant>,
    /// Echo arrivals, in arrival order: (when, sequence).
    echoes: Vec<(Instant, u64)>,
    /// When each restore or reconnect action ended ok.
    restores: Vec<Instant>,
    /// Per sequence number, how many echoes came back.
    echo_counts: BTreeMap<u64, u32>,
    /// Echoes of an earlier phone's messages (a restarted peer may receive
    /// what its previous instance did not acknowledge).
    stale_echoes: u64,
    errors: Vec<String>,
}

struct Phone {
    log: Mutex<PhoneLog>,
    changed: Notify,
}

impl Phone {
    fn log(&self) -> MutexGuard<'_, PhoneLog> {
        // The log stays consistent whatever panicked while holding it.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs an echo of `PHASE-SEQ`.
    fn echoed(&self, phase: usize, payload: &[u8]) {
        let at = Instant::now();
        let parsed = std::str::from_utf8(payload).ok().and_then(|text| {
            let (p, seq) = text.split_once('-')?;
            Some((p.parse::<usize>().ok()?, seq.parse::<u64>().ok()?))
        });
        let mut log = self.log();
        match parsed {
            Some((p, seq)) if p == phase => {
                log.echoes.push((at, seq));
                *log.echo_counts.entry(seq).or_default() += 1;
            }
            Some(_) => log.stale_echoes += 1,
            None => log.errors.push(format!("malformed echo {payload:?}")),
        }
        drop(log);
        self.changed.notify_waiters();
    }

    /// Waits until `found` finds something in the log, or `bound` passes.
    async fn wait_for<T>(
        &self,
        bound: Duration,
        found: impl Fn(&PhoneLog) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.changed.notified();
            if let Some(value) = found(&self.log()) {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return found(&self.log());
            }
        }
    }
}

struct Credentials {
    secret: HmacSecret,
    url: String,
    /// The lab's TURN server (URLs and its shared secret), under NAT.
    turn: Option<TurnAccess>,
}

struct TurnAccess {
    stun_url: String,
    turn_url: String,
    secret: TurnSecret,
}

impl Credentials {
    fn token(&self, peer: &PeerId) -> String {
        mint_token_for(&self.secret, peer, Duration::from_secs(3600))
    }

    fn node(&self, peer: &PeerId) -> RtcNodeConfig {
        let mut config = RtcNodeConfig::new(peer.clone(), self.url.clone(), self.token(peer));
        config.room = Some("lab".into());
        config.rtc =
            RtcConfig { local_addresses: LocalAddresses::DefaultRoute, ..RtcConfig::loopback() };
        if let Some(turn) = &self.turn {
            let minted =
                turn.secret.mint(peer.as_str(), std::time::SystemTime::now(), TURN_CREDENTIAL_TTL);
            config.rtc.ice_servers = vec![
                IceServer { urls: vec![turn.stun_url.clone()], ..IceServer::default() },
                IceServer {
                    urls: vec![turn.turn_url.clone()],
                    username: minted.username,
                    credential: minted.credential,
                },
            ];
        }
        // The lab's links are fast: notice a dead socket in seconds.
        config.signaling = SignalingTiming::responsive();
        config
    }
}

async fn handoffs(args: &HandoffArgs) -> anyhow::Result<HandoffReport> {
    tether_lab::check_support().await.context("network namespaces are not available here")?;
    let nat = args.nat.nat();
    let config = LabConfig::unique()
        .round_trip_delay(Duration::from_millis(args.rtt_ms))
        .jitter(Duration::from_millis(args.jitter_ms))
        .loss_percent(args.loss_pct)
        .seed(args.seed)
        .nat(nat)
        .turn(nat != Nat::None);
    let mut lab = Lab::setup(config).await.context("cannot build the lab")?;
    let topology = lab.topology().clone();
    let cloud_addr = SocketAddr::from((topology.cloud_addr, SIGNAL_PORT));
    let turn = match lab.turn() {
        Some(server) => Some(TurnAccess {
            stun_url: server.stun_url(),
            turn_url: server.turn_url(),
            secret: TurnSecret::new(server.secret().as_bytes().to_vec())
                .context("the lab's TURN secret")?,
        }),
        None => None,
    };
    let credentials = Arc::new(Credentials {
        secret: HmacSecret::ephemeral(),
        url: format!("ws://{cloud_addr}/ws"),
        turn,
    });

    let stop_cloud = CancellationToken::new();
    let (server, far_peer) = start_cloud(
        (&topology.cloud, &topology.home),
        cloud_addr,
        Arc::clone(&credentials),
        stop_cloud.clone(),
    )
    .await?;
    let mut paths = PathTally::default();

    let mode = args.mode();
    let mut samples = [PolicySamples::default(), PolicySamples::default()];
    let mut failures = 0;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut uplink = Uplink::Wifi;
    for (index, seed_style) in [false, true].into_iter().enumerate() {
        let phone =
            Arc::new(Phone { log: Mutex::new(PhoneLog::default()), changed: Notify::new() });
        let stop_phone = CancellationToken::new();
        let mut config = credentials.node(&PeerId::new("phone")?);
        if seed_style {
            config = config.seed_style();
        }
        config.messaging.stream.max_buffered_messages = PEER_BUFFER;
        let task =
            start_phone(&topology.phone, config, index, Arc::clone(&phone), stop_phone.clone())?;
        phone
            .wait_for(SETTLE_BOUND, |log| (!log.echoes.is_empty()).then_some(()))
            .await
            .with_context(|| format!("the phone never got an echo ({:?})", phone.log().errors))?;
        let measured = &mut samples[index];
        // The first connection, as it carries the steady stream: judged,
        // and (once the backlog of its set-up has drained) its round trip
        // measured over a second of messages.
        let before = lab.nat_counters().await?;
        steady(&phone, Instant::now(), STEADY_ECHOES).await;
        paths.count(window(before, lab.nat_counters().await?));
        steady(&phone, Instant::now(), STEADY_RTT_ECHOES).await;
        let rtt_from = Instant::now();
        steady(&phone, rtt_from, STEADY_RTT_ECHOES).await;
        let rtt_to = Instant::now();
        // Until the messages sent in between are back (a backlog may still
        // hold them), bounded.
        phone
            .wait_for(HANDOFF_BOUND, |log| {
                let window = log.sent_at.iter().zip(1u64..).filter(|(at, _)| **at >= rtt_from);
                window
                    .take_while(|(at, _)| **at <= rtt_to)
                    .all(|(_, seq)| log.echo_counts.contains_key(&seq))
                    .then_some(())
            })
            .await;
        measured.round_trips = round_trips(&phone.log(), rtt_from, rtt_to);

        let mut previous_start: Option<Instant> = None;
        for _ in 0..args.runs {
            let to = uplink.other();
            if let Some(previous) = previous_start {
                // Part of the workload, not a wait for anything: see HANDOFF_SPACING.
                tokio::time::sleep_until((previous + HANDOFF_SPACING).into()).await;
            }
            let started = Instant::now();
            previous_start = Some(started);
            let timing = lab
                .handoff_with(to, mode)
                .await
                .with_context(|| format!("handoff to {}", to.name()))?;
            // Only a message sent after the old address was gone proves the
            // new path: earlier ones may have left on the old one, and their
            // echoes can still be read after the Available snapshot.
            let old_path_gone = timing.old_address_removed.unwrap_or(timing.started);
            uplink = to;
            let transport = to.transport();
            let available = phone
                .wait_for(HANDOFF_BOUND, |log| {
                    log.snapshots.iter().find_map(|(at, s)| {
                        (*at >= started
                            && s.availability == Availability::Available
                            && s.transports.contains(transport))
                        .then_some(*at)
                    })
                })
                .await;
            let Some(available) = available else {
                failures += 1;
                continue;
            };
            // With an overlap the new path is Available while the old one
            // still works: the echo latency counts from the old one's end.
            let from = match mode {
                HandoffMode::Overlap(_) => available.max(timing.completed()),
                HandoffMode::Immediate | HandoffMode::Outage(_) => available,
            };
            let echoed = phone
                .wait_for(HANDOFF_BOUND, |log| {
                    log.echoes.iter().find_map(|&(at, seq)| {
                        let sent = usize::try_from(seq)
                            .ok()
                            .and_then(|s| log.sent_at.get(s.checked_sub(1)?));
                        (at > from && sent.is_some_and(|sent| *sent >= old_path_gone)).then_some(at)
                    })
                })
                .await;
            let restored = phone
                .wait_for(HANDOFF_BOUND, |log| {
                    log.restores.iter().copied().find(|at| *at >= available)
                })
                .await;
            let policy = if seed_style { "seed" } else { "default" };
            match echoed {
                Some(echoed) => {
                    let latency = echoed.duration_since(from);
                    tracing::info!(
                        name: "lab.handoff",
                        policy,
                        to = to.name(),
                        available_after_ms = ms(available.duration_since(started)),
                        latency_ms = ms(latency),
                        restore_ms = restored.map(|at| ms(at.duration_since(available))),
                    );
                    measured.echo.push(latency);
                }
                None => failures += 1,
            }
            if let Some(restored) = restored {
                measured.restore.push(restored.duration_since(available));
            }
            // Let the stream run steadily on the new path before the next
            // one, and see which way it runs: caught up, not still echoing
            // the backlog the handoff held (a handoff in the middle of that
            // burst measures two handoffs at once).
            let before = lab.nat_counters().await?;
            caught_up(&phone, Instant::now(), STEADY_ECHOES).await;
            paths.count(window(before, lab.nat_counters().await?));
            if let Some(gap) = longest_echo_gap(&phone.log().echoes, started) {
                measured.gaps.push(gap);
            }
        }

        stop_phone.cancel();
        let report = task.join().await.context("the phone thread failed")??;
        let log = phone.log();
        samples[index].detoured = report.detoured;
        let echoed = log.echo_counts.len() as u64;
        lost += report.sent.saturating_sub(echoed);
        duplicated +=
            log.echo_counts.values().map(|&n| u64::from(n.saturating_sub(1))).sum::<u64>();
        if !log.errors.is_empty() {
            eprintln!("phone errors: {:?}", log.errors);
        }
        if log.stale_echoes > 0 {
            eprintln!("phase {index}: {} echoes for an earlier phone instance", log.stale_echoes);
        }
    }
    stop_cloud.cancel();
    far_peer.join().await.context("the far peer's thread failed")??;
    server.join().await.context("the cloud thread failed")??;
    let router = lab.delay_stats().unwrap_or_default();
    let turn_allocations = lab.turn().map_or(0, tether_lab::TurnServer::allocations);
    lab.teardown().await.context("tearing the lab down")?;

    let [default, seed] = samples.map(policy_report);
    let ratio_p50 =
        if default.p50_ms > 0.0 { rounded(seed.p50_ms / default.p50_ms, 3) } else { 0.0 };
    Ok(HandoffReport {
        default,
        seed,
        ratio_p50,
        handoffs: args.runs,
        lost,
        duplicated,
        failed: failures,
        added_rtt_ms: args.rtt_ms,
        added_jitter_ms: args.jitter_ms,
        loss_pct: args.loss_pct,
        rng_seed: args.seed,
        outage_ms: args.outage_ms.unwrap_or(0),
        overlap_ms: args.overlap_ms.unwrap_or(0),
        router_lost: router.lost,
        router_dropped: router.dropped,
        nat: nat.name(),
        connections: paths.connections,
        relayed: paths.relayed,
        unjudged: paths.unjudged,
        turn_allocations,
    })
}

/// Waits (at most [`HANDOFF_BOUND`]) until `echoes` echoes arrived after
/// `from`.
async fn steady(phone: &Phone, from: Instant, echoes: usize) {
    phone
        .wait_for(HANDOFF_BOUND, |log| {
            (log.echoes.iter().filter(|(at, _)| *at > from).count() >= echoes).then_some(())
        })
        .await;
}

/// Waits (at most [`HANDOFF_BOUND`]) until `echoes` messages sent after
/// `from` were echoed: the stream has caught up with its backlog.
async fn caught_up(phone: &Phone, from: Instant, echoes: usize) {
    phone
        .wait_for(HANDOFF_BOUND, |log| {
            let fresh = log.echoes.iter().filter(|&&(_, seq)| {
                usize::try_from(seq)
                    .ok()
                    .and_then(|seq| log.sent_at.get(seq.checked_sub(1)?))
                    .is_some_and(|sent| *sent > from)
            });
            (fresh.count() >= echoes).then_some(())
        })
        .await;
}

/// The round trips of the messages sent from `from` to `to` and echoed.
fn round_trips(log: &PhoneLog, from: Instant, to: Instant) -> Vec<Duration> {
    log.echoes
        .iter()
        .filter_map(|&(at, seq)| {
            let sent = *log.sent_at.get(usize::try_from(seq).ok()?.checked_sub(1)?)?;
            (sent >= from && sent <= to).then(|| at.saturating_duration_since(sent))
        })
        .collect()
}

/// What the home gateway counted between two readings (`None` without NAT).
fn window(before: Option<NatCounters>, after: Option<NatCounters>) -> Option<NatCounters> {
    Some(after?.since(before?))
}

/// The longest silence between consecutive echoes (in arrival order) from
/// the last echo before `started` (or the first after it) to the last one
/// logged; `None` with fewer than two echoes there.
fn longest_echo_gap(echoes: &[(Instant, u64)], started: Instant) -> Option<Duration> {
    let first = echoes.iter().rposition(|(at, _)| *at <= started).unwrap_or(0);
    echoes
        .get(first..)?
        .windows(2)
        .map(|pair| match pair {
            [(earlier, _), (later, _)] => later.saturating_duration_since(*earlier),
            _ => Duration::ZERO,
        })
        .max()
}

/// Percentiles to the microsecond, for readable JSON.
fn percentile_ms(samples: &Samples, q: f64) -> f64 {
    rounded(ms(samples.at(q)), 3)
}

fn policy_report(measured: PolicySamples) -> PolicyReport {
    let echo = Samples::new(measured.echo);
    let restores = measured.restore.len();
    let restore = Samples::new(measured.restore);
    let gaps = Samples::new(measured.gaps);
    let round_trips = Samples::new(measured.round_trips);
    PolicyReport {
        p50_ms: percentile_ms(&echo, 0.50),
        p95_ms: percentile_ms(&echo, 0.95),
        restore_p50_ms: percentile_ms(&restore, 0.50),
        restore_p95_ms: percentile_ms(&restore, 0.95),
        restores,
        echo_gap_max_ms: percentile_ms(&gaps, 1.0),
        echo_gap_p50_ms: percentile_ms(&gaps, 0.50),
        round_trip_p50_ms: percentile_ms(&round_trips, 0.50),
        detoured: measured.detoured,
    }
}

/// The signaling server (in the cloud namespace, `netns.0`) and, once it
/// listens, the far peer, which echoes every message (at home, `netns.1`).
async fn start_cloud(
    netns: (&tether_lab::Netns, &tether_lab::Netns),
    listen: SocketAddr,
    credentials: Arc<Credentials>,
    stop: CancellationToken,
) -> anyhow::Result<(NetnsTask<anyhow::Result<()>>, NetnsTask<anyhow::Result<()>>)> {
    let (listening_tx, listening) = oneshot::channel();
    let server_credentials = Arc::clone(&credentials);
    let server_stop = stop.clone();
    let server = spawn_in_netns(netns.0, move || async move {
        let mut config =
            ServerConfig::new(Authenticator::with_secret(server_credentials.secret.clone()));
        config.listen = listen;
        let server = SignalServer::bind(config).await?.spawn();
        let _ = listening_tx.send(());
        server_stop.cancelled().await;
        server.shutdown().await;
        Ok(())
    })?;
    if listening.await.is_err() {
        // The task ended without binding: its error says why.
        server.join().await.context("the cloud thread failed")??;
        bail!("the signaling server stopped before it listened");
    }
    let far_peer = spawn_in_netns(netns.1, move || async move {
        let mut node_config = credentials.node(&PeerId::new(CLOUD)?);
        node_config.auto_connect = true;
        node_config.messaging.stream.max_buffered_messages = PEER_BUFFER;
        let node = RtcNode::start(node_config)?;
        let online = NetworkSnapshot::available(1, TransportSet::only(Transport::Ethernet));
        node.handle().submit(NetworkEvent::NetworkPathChanged { snapshot: online }).await?;
        let mut inbox = node.messages().context("inbox taken")?;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                message = inbox.recv() => match message {
                    Some(message) => {
                        if let Err(err) = node.post(&message.from, message.payload).await {
                            tracing::warn!(name: "lab.cloud.echo_failed", error = %err);
                        }
                    }
                    None => break,
                },
            }
        }
        node.shutdown().await;
        Ok(())
    })?;
    Ok((server, far_peer))
}

struct PhoneReport {
    sent: u64,
    detoured: u64,
}

/// The phone: the path monitor feeds the node; a stream of numbered
/// messages goes to the cloud; echoes are logged.
fn start_phone(
    netns: &tether_lab::Netns,
    config: RtcNodeConfig,
    phase: usize,
    phone: Arc<Phone>,
    stop: CancellationToken,
) -> anyhow::Result<NetnsTask<anyhow::Result<PhoneReport>>> {
    Ok(spawn_in_netns(netns, move || async move {
        let (monitor, snapshots) = PathMonitor::start(PathMonitorConfig::default()).await?;
        let cloud = PeerId::new(CLOUD)?;
        let node = RtcNode::start(config)?;
        let inbox = node.messages().context("inbox taken")?;
        // Path changes, echoes and actions are handled by their own task,
        // so that a post waiting for room never holds them up (or skews
        // their stamps).
        let observer = tokio::spawn(observe(
            Arc::clone(&phone),
            phase,
            Observed { snapshots, inbox, actions: node.actions(), handle: node.handle() },
            stop.clone(),
        ));
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / STREAM_RATE));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = 0u64;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    let seq = sent + 1;
                    match node.post(&cloud, format!("{phase}-{seq}")).await {
                        Ok(_) => {
                            sent = seq;
                            phone.log().sent_at.push(Instant::now());
                        }
                        Err(err) => phone.log().errors.push(format!("post {seq}: {err}")),
                    }
                }
            }
        }
        stop.cancel();
        let mut inbox = observer.await.context("the phone's observer panicked")??;
        // Drain: every accepted message should come back.
        let deadline = tokio::time::Instant::now() + SETTLE_BOUND;
        while (phone.log().echo_counts.len() as u64) < sent {
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(message)) => phone.echoed(phase, &message.payload),
                Ok(None) | Err(_) => break,
            }
        }
        let report = node.shutdown().await;
        monitor.stop().await;
        Ok(PhoneReport { sent, detoured: report.messaging.stats.detoured })
    })?)
}

/// What the phone's observer follows.
struct Observed {
    snapshots: SnapshotReceiver,
    inbox: Messages,
    actions: broadcast::Receiver<ActionReport>,
    handle: tether::NetworkEventHandle,
}

/// Feeds path snapshots to the node and logs them, the echoes and the
/// restores that ended ok, until `stop`; returns the inbox for draining.
async fn observe(
    phone: Arc<Phone>,
    phase: usize,
    mut observed: Observed,
    stop: CancellationToken,
) -> anyhow::Result<Messages> {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            snapshot = observed.snapshots.recv() => {
                let Some(snapshot) = snapshot else { break };
                phone.log().snapshots.push((Instant::now(), snapshot));
                phone.changed.notify_waiters();
                observed.handle.submit(NetworkEvent::NetworkPathChanged { snapshot }).await?;
            }
            message = observed.inbox.recv() => {
                let Some(message) = message else { break };
                phone.echoed(phase, &message.payload);
            }
            report = observed.actions.recv() => match report {
                Ok(ActionReport::Ended {
                    kind: ActionKind::Restore | ActionKind::Reconnect,
                    outcome: ActionOutcome::Succeeded,
                    at,
                    ..
                }) => {
                    phone.log().restores.push(at.into_std());
                    phone.changed.notify_waiters();
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    phone.log().errors.push(format!("missed {missed} action reports"));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    Ok(observed.inbox)
}

fn print_table(report: &HandoffReport) {
    println!(
        "Wi-Fi <-> cellular handoffs, {} per policy ({} failed), NAT {}, added RTT {} ms, \
         jitter {} ms, loss {} % (seed {}), outage {} ms, overlap {} ms",
        report.handoffs,
        report.failed,
        report.nat,
        report.added_rtt_ms,
        report.added_jitter_ms,
        report.loss_pct,
        report.rng_seed,
        report.outage_ms,
        report.overlap_ms,
    );
    println!(
        "ms from path Available: to the first echo over the data channel (echo), to the \
         restore ending ok (restore); longest silence between echoes per handoff (gap); \
         the first connection's steady round trip (rtt)"
    );
    println!(
        "  {:<40} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9} {:>8}",
        "policy",
        "echo p50",
        "echo p95",
        "restore p50",
        "restore p95",
        "gap p50",
        "gap max",
        "rtt p50"
    );
    for (name, policy) in [
        ("default (act at once, race rebuild)", &report.default),
        ("seed (400 ms settle, probe then rebuild)", &report.seed),
    ] {
        println!(
            "  {:<40} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>9.1} {:>9.1} {:>8.1}",
            name,
            policy.p50_ms,
            policy.p95_ms,
            policy.restore_p50_ms,
            policy.restore_p95_ms,
            policy.echo_gap_p50_ms,
            policy.echo_gap_max_ms,
            policy.round_trip_p50_ms,
        );
    }
    println!("  seed / default echo at p50: {:.1}x", report.ratio_p50);
    println!(
        "messages lost {}, duplicated {}; router: {} packets lost on purpose, {} dropped (full)",
        report.lost, report.duplicated, report.router_lost, report.router_dropped
    );
    println!(
        "connections {}: {} through the TURN relay, {} without data seen; coturn granted {} \
         allocations",
        report.connections, report.relayed, report.unjudged, report.turn_allocations
    );
}
