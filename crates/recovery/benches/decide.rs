//! Supervisor decision benchmarks (divan). `cargo bench -p tether-recovery`.
//!
//! The same workloads back `tether bench decide`, which prints the figures
//! the project tracks (inputs/s, storm absorption time).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use divan::Bencher;
use tether_recovery::workload::{MixedWorkload, Storm};

fn main() {
    divan::main();
}

/// A sustained realistic mix: 100 000 events plus their completions and timers.
#[divan::bench(sample_count = 30)]
fn mixed_100k(bencher: Bencher<'_, '_>) {
    let workload = MixedWorkload::generate(100_000, 42);
    bencher
        .with_inputs(|| workload.supervisor())
        .bench_local_refs(|supervisor| workload.drive(supervisor, Instant::now()));
}

/// 10 000 path/lifecycle events while a Restore runs.
#[divan::bench(sample_count = 100)]
fn storm_10k(bencher: Bencher<'_, '_>) {
    let storm = Storm::generate(10_000, 7);
    let epoch = Instant::now();
    bencher.with_inputs(|| Storm::prepare(epoch)).bench_local_refs(|(supervisor, running)| {
        let commands = storm.absorb(supervisor, epoch);
        Storm::finish(supervisor, *running, commands, epoch + Duration::from_millis(30))
    });
}
