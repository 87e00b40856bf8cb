//! The `tether` command-line tool.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod chat;
mod demo;
mod lab;
mod percentile;
mod replay;
mod serve;
mod startup;

/// tether: connection recovery for real-time apps on mobile networks.
#[derive(Parser)]
#[command(name = "tether", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files through the Supervisor on a virtual clock and print
    /// what it decided, as JSON lines.
    Replay(replay::ReplayArgs),
    /// Measure tether's parts.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the signaling relay server until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Two nodes on loopback stream messages while the demo breaks their
    /// connections; shows each recovery and counts every message.
    Demo(demo::DemoArgs),
    /// One node in the terminal chatting with a peer (e.g. the browser page
    /// of `tether serve --demo`); slash commands break its connections.
    Chat(chat::ChatArgs),
    /// The network-namespace handoff lab (root only).
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(&args),
        Command::Bench(command) => bench::run(command),
        Command::Serve(args) => serve::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Lab(command) => lab::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tether: {err:#}");
            ExitCode::FAILURE
        }
    }
}
