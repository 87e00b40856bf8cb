//! `tether bench ...`: measurements of tether's parts.

use std::process::ExitCode;

use clap::Subcommand;

mod decide;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// The Supervisor's sustained input rate and 10 000-event storm absorption.
    Decide {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    }
    Ok(ExitCode::SUCCESS)
}
