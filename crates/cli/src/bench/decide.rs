//! `tether bench decide`: the Supervisor's sustained input rate and the time
//! to absorb a 10 000-event storm, on the shared workloads of
//! `tether_recovery::workload`.

use std::time::{Duration, Instant};

use anyhow::ensure;
use serde::Serialize;
use tether_recovery::workload::{MixedWorkload, Storm};

/// Events per mixed run; completions and timers come on top.
const MIXED_EVENTS: usize = 1_000_000;
const MIXED_RUNS: usize = 7;
const STORM_EVENTS: usize = 10_000;
const STORM_RUNS: usize = 101;

#[derive(Serialize)]
pub(crate) struct DecideReport {
    /// Median over runs of inputs fed per second.
    inputs_per_s: f64,
    /// Median time to absorb the storm, in microseconds.
    storm_10k_us: f64,
}

pub(crate) fn measure() -> anyhow::Result<DecideReport> {
    let workload = MixedWorkload::generate(MIXED_EVENTS, 42);
    let mut rates = Vec::with_capacity(MIXED_RUNS);
    for _ in 0..MIXED_RUNS {
        let mut supervisor = workload.supervisor();
        let started = Instant::now();
        let stats = workload.drive(&mut supervisor, started);
        let elapsed = started.elapsed();
        ensure!(stats.starts > 0, "the mixed workload started no action: it measured nothing");
        rates.push(stats.inputs as f64 / elapsed.as_secs_f64());
    }

    let storm = Storm::generate(STORM_EVENTS, 7);
    let mut storm_times = Vec::with_capacity(STORM_RUNS);
    for _ in 0..STORM_RUNS {
        let epoch = Instant::now();
        let (mut supervisor, running) = Storm::prepare(epoch);
        let started = Instant::now();
        let commands = storm.absorb(&mut supervisor, epoch);
        let elapsed = started.elapsed();
        Storm::finish(&mut supervisor, running, commands, epoch + Duration::from_millis(30))?;
        storm_times.push(elapsed.as_secs_f64() * 1e6);
    }
    Ok(DecideReport { inputs_per_s: median(&mut rates), storm_10k_us: median(&mut storm_times) })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn print_table(report: &DecideReport) {
    println!("Supervisor decisions (median of runs)");
    println!(
        "  sustained input rate   {:>12.0} inputs/s   (target >= 5 000 000)",
        report.inputs_per_s
    );
    println!("  10 000-event storm     {:>12.1} µs         (target < 1 000)", report.storm_10k_us);
}
