//! `tether bench handle`: the time from a caller's `network_path_changed`
//! to the start of the action it triggers, through a real node (mailbox,
//! driver, Supervisor) with the scripted executor, for the default policy
//! and for the seed design's 400 ms settle window, in one run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tether::{
    ActionReport, Availability, InitialState, LinkReporter, NetworkSnapshot, Node, NodeConfig,
    Phase, PolicyConfig, ScriptedExecutor, Transport, TransportSet,
};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;

use crate::percentile::{Samples, us};
use crate::startup;

const WARMUP: usize = 200;

#[derive(Serialize)]
pub(crate) struct Latency {
    p50_us: f64,
    p99_us: f64,
}

#[derive(Serialize)]
pub(crate) struct HandleReport {
    default: Latency,
    seed: Latency,
}

pub(crate) fn measure(samples: usize, seed_samples: usize) -> anyhow::Result<HandleReport> {
    let runtime = startup::node_runtime()?;
    // The callers run as runtime tasks, as an app's would (not on the
    // thread blocked in `block_on`).
    runtime.block_on(async {
        let default = tokio::spawn(sample(PolicyConfig::default(), WARMUP, samples)).await??;
        let seed = tokio::spawn(sample(PolicyConfig::seed_style(), 2, seed_samples)).await??;
        Ok(HandleReport { default: summarize(default), seed: summarize(seed) })
    })
}

/// Route changes one after another; each one's latency to its Restore.
async fn sample(
    policy: PolicyConfig,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let config = NodeConfig {
        name: "bench".into(),
        policy,
        initial: InitialState {
            phase: Phase::Foreground,
            availability: Availability::Available,
            transports: TransportSet::only(Transport::Wifi),
            sequence: 0,
            signaling_connected: true,
        },
        ..NodeConfig::default()
    };
    // Nothing watches a scripted link: its reporter is not needed.
    let (_, link_events) = LinkReporter::channel();
    let executor = Arc::new(ScriptedExecutor::succeeding(Duration::ZERO));
    let node = Node::spawn(config, executor, link_events)?;
    let handle = node.handle();
    let mut reports = node.actions();
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let transport = if i % 2 == 0 { Transport::Cellular } else { Transport::Wifi };
        let snapshot = NetworkSnapshot::available(i as u64 + 1, TransportSet::only(transport));
        let called = Instant::now();
        if let Err(err) = handle.network_path_changed(snapshot).await {
            bail!("route change {i} did not restore: {err}");
        }
        let started = loop {
            match reports.try_recv() {
                Ok(ActionReport::Started { at, .. }) => break at,
                Ok(ActionReport::Ended { .. }) => continue,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(err) => bail!("no start report for route change {i}: {err}"),
            }
        };
        if i >= warmup {
            latencies.push(started.saturating_duration_since(called));
        }
    }
    node.shutdown().await;
    Ok(latencies)
}

fn summarize(latencies: Vec<Duration>) -> Latency {
    let samples = Samples::new(latencies);
    Latency { p50_us: us(samples.at(0.50)), p99_us: us(samples.at(0.99)) }
}

pub(crate) fn print_table(report: &HandleReport) {
    println!("network_path_changed -> action start (µs)");
    println!("  {:<28} {:>12} {:>12}", "policy", "p50", "p99");
    println!(
        "  {:<28} {:>12.1} {:>12.1}   (target p99 < 200)",
        "default", report.default.p50_us, report.default.p99_us
    );
    println!(
        "  {:<28} {:>12.1} {:>12.1}",
        "seed (400 ms settle)", report.seed.p50_us, report.seed.p99_us
    );
}
