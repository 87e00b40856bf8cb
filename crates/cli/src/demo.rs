//! `tether demo`: two real nodes on loopback stream messages both ways
//! while the demo breaks things the way phones and networks do; a live
//! timeline shows each disruption and the recovery tether chose, and the
//! summary counts what was sent, delivered, lost and duplicated.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tether::live::testbed::{LoopbackTestbed, Traffic, TrafficSummary};
use tether::{
    ActionKind, ActionReport, CleanupReason, ConnectionState, EventError, Handled, Messages,
    NetworkSnapshot, PeerId, ReconnectReason, RtcNode, SendError, Transport, TransportSet,
};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{percentile, startup};

/// How long the demo waits for any one recovery or for traffic to settle.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Print one JSON object (sent, delivered, lost, duplicated, recoveries)
    /// instead of the live timeline.
    #[arg(long)]
    json: bool,
    /// Messages per second, each way.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of steady traffic between disruptions.
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
}

#[derive(Serialize)]
struct Recovery {
    node: &'static str,
    action: &'static str,
    ms: f64,
    ok: bool,
}

#[derive(Serialize)]
struct DemoReport {
    sent: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    recoveries: Vec<Recovery>,
    /// How long each step took, disruption to traffic flowing again.
    steps: Vec<StepTime>,
}

#[derive(Serialize, Clone)]
struct StepTime {
    step: String,
    ms: f64,
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    // Logs only when asked for (RUST_LOG=...), so the timeline stays clean.
    startup::init_logging(None);
    ensure!(args.rate > 0, "--rate must be at least 1");
    ensure!(args.pause.is_finite() && args.pause >= 0.0, "--pause must be a number of seconds");
    let runtime = startup::node_runtime()?;
    let report = runtime.block_on(demo(args))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_summary(&report);
    }
    let clean =
        report.lost == 0 && report.duplicated == 0 && report.recoveries.iter().all(|r| r.ok);
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The live timeline: one line per step, and a counter line. On a
/// terminal it animates; otherwise (logs, CI) each finished step is one
/// plain line.
struct Timeline {
    bars: MultiProgress,
    counters: ProgressBar,
    plain: bool,
    /// Every finished step's duration, in order.
    times: Arc<Mutex<Vec<StepTime>>>,
}

impl Timeline {
    fn new(hidden: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let target = if hidden || !terminal {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let plain = !hidden && !terminal;
        let bars = MultiProgress::with_draw_target(target);
        let counters = bars.add(ProgressBar::new_spinner());
        counters.set_style(
            ProgressStyle::with_template("  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Self { bars, counters, plain, times: Arc::default() }
    }

    fn step(&self, label: &str) -> Step {
        let times = Arc::clone(&self.times);
        let bar = self.bars.insert_before(&self.counters, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(80));
        bar.set_message(format!("{label} …"));
        Step { bar, label: label.to_owned(), started: Instant::now(), plain: self.plain, times }
    }

    fn show(&self, summary: &TrafficSummary) {
        self.counters.set_message(counter_line(summary));
    }
}

fn counter_line(summary: &TrafficSummary) -> String {
    format!(
        "sent {} · delivered {} · in flight {} · duplicated {}",
        summary.sent, summary.delivered, summary.lost, summary.duplicated
    )
}

struct Step {
    bar: ProgressBar,
    label: String,
    started: Instant,
    plain: bool,
    times: Arc<Mutex<Vec<StepTime>>>,
}

impl Step {
    fn done(self, outcome: &str) {
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(StepTime { step: self.label.clone(), ms: percentile::rounded(ms, 1) });
        self.bar.set_style(
            ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let line = format!("✔ {} → {outcome} ({ms:.0} ms)", self.label);
        if self.plain {
            eprintln!("{line}");
        }
        self.bar.finish_with_message(line);
    }
}

struct Shared {
    traffic: Mutex<Traffic>,
    /// Woken whenever a message arrives.
    arrived: Notify,
}

impl Shared {
    fn books(&self) -> std::sync::MutexGuard<'_, Traffic> {
        // The books stay consistent whatever panicked while holding the lock.
        self.traffic.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn received(&self, to: &PeerId, message: &tether::Message) {
        self.books().received(to, message);
        self.arrived.notify_waiters();
    }
}

/// The two nodes and their books: what every step waits on.
struct Pair {
    alice: Arc<RtcNode>,
    bob: Arc<RtcNode>,
    shared: Arc<Shared>,
}

/// The action reports of both nodes from the moment a step began.
struct Watch {
    reports: [(&'static str, broadcast::Receiver<ActionReport>); 2],
    ended: Vec<String>,
}

impl Watch {
    /// Records an ended action of `node`; returns whether it was one.
    fn record(&mut self, node: &str, report: &ActionReport) -> bool {
        let ActionReport::Ended { kind, outcome, .. } = report else { return false };
        self.ended.push(format!("{node}: {kind} {}", outcome.name()));
        true
    }

    /// Waits (until `deadline`) for `node` to end an action, recording what
    /// either node ends meanwhile.
    async fn next_end_of(&mut self, node: &str, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let [(first, a), (second, b)] = &mut self.reports;
            let (name, report) = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    report = a.recv() => (*first, report),
                    report = b.recv() => (*second, report),
                }
            })
            .await
            .with_context(|| format!("{node} ran no recovery within the demo's patience"))?;
            match report {
                Ok(report) => {
                    if self.record(name, &report) && name == node {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => bail!("{name} stopped"),
            }
        }
    }

    /// Records whatever ended since the last look, without waiting.
    fn catch_up(&mut self) {
        for index in 0..self.reports.len() {
            let name = self.reports[index].0;
            while let Ok(report) = self.reports[index].1.try_recv() {
                self.record(name, &report);
            }
        }
    }
}

impl Pair {
    fn watch(&self) -> Watch {
        Watch {
            reports: [("alice", self.alice.actions()), ("bob", self.bob.actions())],
            ended: Vec::new(),
        }
    }

    /// Waits until a disruption is behind us, whichever node recovered:
    /// `must_act` (if any) ended a recovery, messages sent from now on
    /// have arrived both ways, and both nodes are connected with nothing
    /// running. Describes what the nodes ran meanwhile.
    async fn recovered(&self, mut watch: Watch, must_act: Option<&str>) -> anyhow::Result<String> {
        let deadline = Instant::now() + PATIENCE;
        if let Some(node) = must_act {
            watch.next_end_of(node, deadline).await?;
        }
        let (a, b) = (self.alice.peer_id(), self.bob.peer_id());
        let mark = {
            let books = self.shared.books();
            [books.sent_so_far(a, b), books.sent_so_far(b, a)]
        };
        let mut states = [self.alice.state(), self.bob.state()];
        loop {
            // Registered before looking, so no arrival slips between the
            // look and the wait.
            let arrived = self.shared.arrived.notified();
            let flowing = {
                let books = self.shared.books();
                books.highest_received(a, b) > mark[0] && books.highest_received(b, a) > mark[1]
            };
            let settled = states.iter().all(|state| *state.borrow() == ConnectionState::Connected);
            if flowing && settled {
                break;
            }
            let [alice_state, bob_state] = &mut states;
            tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    () = arrived => {}
                    _ = alice_state.changed() => {}
                    _ = bob_state.changed() => {}
                }
            })
            .await
            .context("traffic did not flow both ways again within the demo's patience")?;
        }
        watch.catch_up();
        Ok(if watch.ended.is_empty() {
            "flowing".to_owned()
        } else {
            format!("{} · flowing", watch.ended.join(", "))
        })
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<DemoReport> {
    let timeline = Timeline::new(args.json);
    let pause = Duration::from_secs_f64(args.pause);

    let setup = timeline.step("starting a signaling server and two nodes on loopback");
    let testbed = LoopbackTestbed::start().await?;
    let (alice_id, bob_id) = (PeerId::new("alice")?, PeerId::new("bob")?);
    let alice = Arc::new(testbed.online(testbed.config(&alice_id)).await?);
    let bob = Arc::new(testbed.online(testbed.config(&bob_id)).await?);
    alice.connect_peer(&bob_id).await?;
    setup.done("alice ⇄ bob connected");

    let shared =
        Arc::new(Shared { traffic: Mutex::new(Traffic::default()), arrived: Notify::new() });
    // Senders stop first; only once none can count another message as sent
    // do the receivers (and the rest) stop, so the books are final.
    let stop_sending = CancellationToken::new();
    let stop = CancellationToken::new();
    let mut senders = JoinSet::new();
    let mut tasks = JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    for (node, to) in [(&alice, &bob_id), (&bob, &alice_id)] {
        senders.spawn(stream(
            Arc::clone(node),
            to.clone(),
            interval,
            Arc::clone(&shared),
            stop_sending.clone(),
        ));
    }
    for node in [&alice, &bob] {
        let inbox = node.messages().context("the inbox was taken")?;
        let me = node.peer_id().clone();
        tasks.spawn(receive(me, inbox, Arc::clone(&shared), stop.clone()));
    }
    let recoveries = Arc::new(Mutex::new(Vec::new()));
    for (name, node) in [("alice", &alice), ("bob", &bob)] {
        tasks.spawn(collect(name, node.actions(), Arc::clone(&recoveries), stop.clone()));
    }
    let ticker = {
        let shared = Arc::clone(&shared);
        let counters = timeline.counters.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.is_cancelled() {
                tick.tick().await;
                counters.set_message(counter_line(&shared.books().summary()));
            }
        })
    };

    let step = timeline.step("streaming both ways");
    tokio::time::sleep(pause).await;
    step.done("flowing");

    let pair =
        Pair { alice: Arc::clone(&alice), bob: Arc::clone(&bob), shared: Arc::clone(&shared) };

    // Each step breaks something, then waits for what the step is about:
    // traffic flowing both ways again and both nodes connected, whichever
    // node did the recovering.
    let step = timeline.step("signaling socket killed (alice)");
    let watch = pair.watch();
    ensure!(alice.faults().sever_signaling(), "alice had no signaling socket to kill");
    // Alice's own socket died: she notices and restores, every time.
    step.done(&pair.recovered(watch, Some("alice")).await?);
    tokio::time::sleep(pause).await;

    let step = timeline.step("force reconnect (bob)");
    let watch = pair.watch();
    let result = bob.handle().force_reconnect(ReconnectReason::ManualReconnect).await;
    let after = pair.recovered(watch, None).await?;
    step.done(&format!("answered {} · {after}", describe(&result)));
    tokio::time::sleep(pause).await;

    let step = timeline.step("cleanup: manual reset (alice)");
    let result = alice.handle().cleanup_connections(CleanupReason::ManualReset).await;
    step.done(&describe(&result));
    let step = timeline.step("restore: the path is back (alice)");
    let watch = pair.watch();
    let snapshot = NetworkSnapshot::available(2, TransportSet::only(Transport::Wifi));
    let result = alice.handle().network_path_changed(snapshot).await;
    let after = pair.recovered(watch, None).await?;
    step.done(&format!("answered {} · {after}", describe(&result)));
    tokio::time::sleep(pause).await;

    let step = timeline.step("peer connection torn down (bob → alice)");
    let watch = pair.watch();
    bob.faults().drop_peer_connection(&alice_id).await?;
    // The connection died on bob's side: bob reports it and restores,
    // every time; alice may notice first and restore too.
    step.done(&pair.recovered(watch, Some("bob")).await?);
    tokio::time::sleep(pause).await;

    let step = timeline.step("Wi-Fi → cellular handoff (alice)");
    let watch = pair.watch();
    let snapshot =
        NetworkSnapshot::available(3, TransportSet::only(Transport::Cellular)).with_expensive(true);
    let result = alice.handle().network_path_changed(snapshot).await;
    let after = pair.recovered(watch, None).await?;
    step.done(&format!("answered {} · {after}", describe(&result)));
    tokio::time::sleep(pause).await;

    let step = timeline.step("stopping traffic, waiting for the last messages");
    stop_sending.cancel();
    while let Some(joined) = senders.join_next().await {
        joined.context("a demo sender failed")??;
    }
    // Nothing more is sent; the receivers read on until nothing is in
    // flight (bounded by the demo's patience).
    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined.context("a demo task failed")??;
    }
    let summary = shared.books().summary();
    timeline.show(&summary);
    step.done("settled");
    ticker.abort();

    let recoveries =
        std::mem::take(&mut *recoveries.lock().unwrap_or_else(PoisonError::into_inner));
    drop(pair);
    for node in [alice, bob] {
        if let Ok(node) = Arc::try_unwrap(node) {
            node.shutdown().await;
        }
    }
    testbed.shutdown().await;
    Ok(DemoReport {
        sent: summary.sent,
        delivered: summary.delivered,
        lost: summary.lost,
        duplicated: summary.duplicated,
        recoveries,
        steps: timeline.times.lock().unwrap_or_else(PoisonError::into_inner).clone(),
    })
}

fn describe(result: &Result<Handled, EventError>) -> String {
    match result {
        Ok(handled) => format!("{} ok", handled.action().map_or("no action", ActionKind::name)),
        Err(error) => error.to_string(),
    }
}

/// Posts numbered messages from `node` to `to` at a steady rate. While the
/// node refuses (closed after a cleanup), nothing is counted as sent.
async fn stream(
    node: Arc<RtcNode>,
    to: PeerId,
    interval: Duration,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let from = node.peer_id().clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let message = shared.books().next_message(&from, &to);
        match node.post(&to, message).await {
            Ok(_) => shared.books().sent(&from, &to),
            Err(SendError::Closed { .. }) => {}
            Err(err) => bail!("{from} could not send: {err}"),
        }
    }
    Ok(())
}

async fn receive(
    me: PeerId,
    mut inbox: Messages,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            message = inbox.recv() => match message {
                Some(message) => shared.received(&me, &message),
                None => break,
            },
        }
    }
    // Keep reading what is already on its way, until the books balance
    // (the other receiver may be the one that balances them).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let arrived = shared.arrived.notified();
        if shared.books().summary().lost == 0 {
            break;
        }
        tokio::select! {
            message = inbox.recv() => match message {
                Some(message) => shared.received(&me, &message),
                None => break,
            },
            () = arrived => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(())
}

async fn collect(
    node: &'static str,
    mut actions: broadcast::Receiver<ActionReport>,
    into: Arc<Mutex<Vec<Recovery>>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let report = tokio::select! {
            () = stop.cancelled() => break,
            report = actions.recv() => report,
        };
        match report {
            Ok(ActionReport::Ended { kind, outcome, elapsed, .. }) => {
                into.lock().unwrap_or_else(PoisonError::into_inner).push(Recovery {
                    node,
                    action: kind.name(),
                    ms: percentile::rounded(percentile::ms(elapsed), 1),
                    ok: outcome.name() == "ok",
                });
            }
            Ok(ActionReport::Started { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    Ok(())
}

fn print_summary(report: &DemoReport) {
    println!();
    println!(
        "sent {}  delivered {}  lost {}  duplicated {}",
        report.sent, report.delivered, report.lost, report.duplicated
    );
    println!("recoveries:");
    for recovery in &report.recoveries {
        let mark = if recovery.ok { "ok" } else { "FAILED" };
        println!("  {:<6} {:<10} {:>8.1} ms  {mark}", recovery.node, recovery.action, recovery.ms);
    }
}
