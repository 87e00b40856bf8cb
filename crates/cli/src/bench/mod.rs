//! `tether bench ...`: measurements of tether's parts.

use std::process::ExitCode;

use clap::Subcommand;

mod decide;
mod handle;
mod loadtest;
mod nats;
mod signal;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// The Supervisor's sustained input rate and 10 000-event storm absorption.
    Decide {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Latency from a caller's `network_path_changed` to the start of the
    /// action it triggers, default policy vs the seed's 400 ms settle.
    Handle {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Route changes measured with the default policy.
        #[arg(long, default_value_t = 5000)]
        samples: usize,
        /// Route changes measured with the seed policy (each waits 400 ms).
        #[arg(long, default_value_t = 25)]
        seed_samples: usize,
    },
    /// Relay latency of the signaling server (on one thread: one core) with
    /// N clients on loopback.
    Signal(signal::SignalArgs),
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Decide { json } => {
            let report = decide::measure()?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                decide::print_table(&report);
            }
        }
        BenchCommand::Handle { json, samples, seed_samples } => {
            let report = handle::measure(samples.max(1), seed_samples.max(1))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                handle::print_table(&report);
            }
        }
        BenchCommand::Signal(args) => return signal::run(&args),
    }
    Ok(ExitCode::SUCCESS)
}
