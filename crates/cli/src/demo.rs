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
    ActionReport, CleanupReason, Messages, NetworkSnapshot, ReconnectReason, RtcNode, SendError,
    Transport, TransportSet,
};
use tokio::sync::broadcast;
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
        Self { bars, counters, plain }
    }

    fn step(&self, label: &str) -> Step {
        let bar = self.bars.insert_before(&self.counters, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(80));
        bar.set_message(format!("{label} …"));
        Step { bar, label: label.to_owned(), started: Instant::now(), plain: self.plain }
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
}

impl Step {
    fn done(self, outcome: &str) {
        let ms = self.started.elapsed().as_secs_f64() * 1e3;
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
}

impl Shared {
    fn books(&self) -> std::sync::MutexGuard<'_, Traffic> {
        // The books stay consistent whatever panicked while holding the lock.
        self.traffic.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<DemoReport> {
    let timeline = Timeline::new(args.json);
    let pause = Duration::from_secs_f64(args.pause);

    let setup = timeline.step("starting a signaling server and two nodes on loopback");
    let testbed = LoopbackTestbed::start().await?;
    let alice = Arc::new(testbed.online(testbed.config("alice")?).await?);
    let bob = Arc::new(testbed.online(testbed.config("bob")?).await?);
    alice.connect_peer("bob").await?;
    setup.done("alice ⇄ bob connected");

    let shared = Arc::new(Shared { traffic: Mutex::new(Traffic::default()) });
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    for (from, to, node) in [("alice", "bob", &alice), ("bob", "alice", &bob)] {
        tasks.spawn(stream(
            Arc::clone(node),
            from,
            to,
            interval,
            Arc::clone(&shared),
            stop.clone(),
        ));
    }
    let inboxes = [("alice", alice.messages()), ("bob", bob.messages())];
    for (name, inbox) in inboxes {
        let inbox = inbox.context("the inbox was taken")?;
        tasks.spawn(receive(name, inbox, Arc::clone(&shared), stop.clone()));
    }
    let recoveries = Arc::new(Mutex::new(Vec::new()));
    for node in [&alice, &bob] {
        tasks.spawn(collect(node.actions(), Arc::clone(&recoveries), stop.clone()));
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

    let step = timeline.step("signaling socket killed (alice)");
    let mut actions = alice.actions();
    ensure!(alice.faults().sever_signaling(), "alice had no signaling socket to kill");
    let outcome = ended(&mut actions).await?;
    step.done(&outcome);
    tokio::time::sleep(pause).await;

    let step = timeline.step("force reconnect (bob)");
    let result = bob.handle().force_reconnect(ReconnectReason::ManualReconnect).await?;
    step.done(&describe(&result));
    tokio::time::sleep(pause).await;

    let step = timeline.step("cleanup: manual reset (alice)");
    let result = alice.handle().cleanup_connections(CleanupReason::ManualReset).await?;
    step.done(&describe(&result));
    let step = timeline.step("restore: the path is back (alice)");
    let snapshot = NetworkSnapshot::available(2, TransportSet::only(Transport::Wifi));
    let result = alice.handle().network_path_changed(snapshot).await?;
    step.done(&describe(&result));
    tokio::time::sleep(pause).await;

    let step = timeline.step("peer connection torn down (bob → alice)");
    let mut actions = bob.actions();
    bob.faults().drop_peer_connection("alice").await?;
    let outcome = ended(&mut actions).await?;
    step.done(&outcome);
    tokio::time::sleep(pause).await;

    let step = timeline.step("Wi-Fi → cellular handoff (alice)");
    let snapshot =
        NetworkSnapshot::available(3, TransportSet::only(Transport::Cellular)).with_expensive(true);
    let result = alice.handle().network_path_changed(snapshot).await?;
    step.done(&describe(&result));
    tokio::time::sleep(pause).await;

    let step = timeline.step("stopping traffic, waiting for the last messages");
    stop.cancel();
    // The senders stop; the receivers read on until nothing is in flight
    // (bounded by the demo's patience).
    while let Some(joined) = tasks.join_next().await {
        joined.context("a demo task failed")??;
    }
    let summary = shared.books().summary();
    timeline.show(&summary);
    step.done("settled");
    ticker.abort();

    let recoveries =
        std::mem::take(&mut *recoveries.lock().unwrap_or_else(PoisonError::into_inner));
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
    })
}

fn describe(result: &tether::NetworkEventResult) -> String {
    let action = result.action.map_or("no action", |a| a.name());
    match &result.error {
        None => format!("{action} ok"),
        Some(error) => format!("{action}: {error}"),
    }
}

/// Waits for the next action to end on a node, and describes it.
async fn ended(actions: &mut broadcast::Receiver<ActionReport>) -> anyhow::Result<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let report = tokio::time::timeout_at(deadline, actions.recv())
            .await
            .context("no recovery within the demo's patience")?;
        match report {
            Ok(ActionReport::Ended { kind, outcome, .. }) => {
                return Ok(format!("{kind} {}", outcome.name()));
            }
            Ok(ActionReport::Started { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => bail!("the node stopped"),
        }
    }
}

/// Posts numbered messages from `from` to `to` at a steady rate. While the
/// node refuses (closed after a cleanup), nothing is counted as sent.
async fn stream(
    node: Arc<RtcNode>,
    from: &'static str,
    to: &'static str,
    interval: Duration,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let message = shared.books().next_message(from, to);
        match node.post(to, message).await {
            Ok(_) => shared.books().sent(from, to),
            Err(SendError::Closed { .. }) => {}
            Err(err) => bail!("{from} could not send: {err}"),
        }
    }
    Ok(())
}

async fn receive(
    name: &'static str,
    mut inbox: Messages,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            message = inbox.recv() => match message {
                Some(message) => shared.books().received(name, &message),
                None => break,
            },
        }
    }
    // Keep reading what is already on its way.
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if shared.books().summary().lost == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await {
            Ok(Some(message)) => shared.books().received(name, &message),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    Ok(())
}

async fn collect(
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
        println!("  {:<10} {:>8.1} ms  {mark}", recovery.action, recovery.ms);
    }
}
