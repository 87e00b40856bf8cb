//! `tether bench signal`: relay latency of the signaling server under load
//! (embedded server and N clients on loopback).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::loadtest::{LoadConfig, LoadReport, run as run_load};

#[derive(Args)]
pub(crate) struct SignalArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 5000)]
    clients: usize,
    /// Relayed messages per second, in total.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Server instances; above 1 they share routing through a nats-server
    /// (from PATH) started on a free loopback port for the run, clients are
    /// spread across them, and same-instance and cross-instance relay
    /// latency are reported separately.
    #[arg(long, default_value_t = 1)]
    instances: usize,
}

/// Both ends of every connection live in this process.
fn raise_file_limit(clients: usize) -> anyhow::Result<()> {
    let needed = clients as u64 * 2 + 256;
    let granted = rlimit::increase_nofile_limit(needed).context("cannot raise RLIMIT_NOFILE")?;
    if granted < needed {
        bail!("{clients} clients need {needed} file descriptors, the hard limit allows {granted}");
    }
    Ok(())
}

pub(crate) fn run(args: &SignalArgs) -> anyhow::Result<ExitCode> {
    raise_file_limit(args.clients)?;
    let mut config = LoadConfig::new(args.clients);
    config.rate = args.rate;
    config.seconds = args.seconds;
    config.instances = args.instances;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run_load(config))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(report: &LoadReport) {
    println!("signaling relay, embedded server, loopback");
    println!("  clients          {:>12}", report.clients);
    println!("  connect time     {:>12.2} s", report.connect_seconds);
    println!("  sent / received  {:>12} / {}", report.sent, report.received);
    println!("  achieved rate    {:>12.0} msg/s", report.achieved_rate);
    println!("  relay p50        {:>12.0} us", report.relay_p50_us);
    println!("  relay p99        {:>12.0} us", report.relay_p99_us);
    println!("  relay p99.9      {:>12.0} us", report.relay_p999_us);
    println!("  relay max        {:>12.0} us", report.relay_max_us);
    println!("  errors           {:>12}", report.errors);
    if let (Some(same), Some(cross)) = (report.same_instance, report.cross_instance) {
        println!(
            "  instances        {:>12} (sharing routing through nats-server)",
            report.instances
        );
        for (label, split) in [("same instance ", same), ("cross instance", cross)] {
            println!(
                "  {label}   {:>8} msgs, p50 {:.0} us, p99 {:.0} us, max {:.0} us",
                split.count, split.p50_us, split.p99_us, split.max_us
            );
        }
    }
}
