//! `tether replay FILE...`: scenario files through the real Supervisor.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tether_recovery::expectation;
use tether_recovery::scenario::Scenario;
use tether_recovery::simulation;

/// Exit code when a run falls short of its scenario's `expect`.
const EXIT_EXPECTATION_FAILED: u8 = 1;
/// Exit code when a file cannot be read or parsed.
const EXIT_MALFORMED: u8 = 2;

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// Scenario files (JSON, see scenarios/README.md).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also check each file's `expect`; exit 1 with a diff when any falls short.
    #[arg(long)]
    check: bool,
}

pub(crate) fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut worst = 0u8;
    let several = args.files.len() > 1;
    // The virtual clock's zero; nothing depends on its value.
    let epoch = Instant::now();
    for file in &args.files {
        let scenario = match load(file) {
            Ok(scenario) => scenario,
            Err(message) => {
                eprintln!("tether replay: {}: {message}", file.display());
                worst = worst.max(EXIT_MALFORMED);
                continue;
            }
        };
        if several {
            writeln!(out, "{}", serde_json::json!({ "scenario": scenario.name }))?;
        }
        let trace = simulation::run(&scenario, epoch)
            .with_context(|| format!("{}: the run failed", file.display()))?;
        for line in trace.json_lines() {
            writeln!(out, "{line}")?;
        }
        if args.check
            && let Some(expect) = &scenario.expect
        {
            let outcome = expectation::check(expect, &trace);
            if !outcome.passed() {
                out.flush()?;
                eprintln!("FAIL {} ({})", scenario.name, file.display());
                for problem in &outcome.problems {
                    eprintln!("  - {problem}");
                }
                eprint!("{}", outcome.report);
                worst = worst.max(EXIT_EXPECTATION_FAILED);
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::from(worst))
}

/// Reads and parses one file; the error is a one-line message.
fn load(file: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(file).map_err(|err| format!("cannot read: {err}"))?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Scenario::from_json(&text, &stem).map_err(|err| err.to_string())
}
