//! Every scenario file, run live through a node with the scripted executor
//! on paused tokio time, gives the same starts and ends (and final state) as
//! `tether replay` does: one harness, all files.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tether::{ActionReport, LinkReporter, Node, NodeConfig, ScriptedExecutor};
use tether_recovery::scenario::{Scenario, ScenarioInput};
use tether_recovery::simulation::{self, Record};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;

/// One start or end, as both sides can describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    at_ms: u64,
    what: String,
}

fn replayed(scenario: &Scenario) -> (Vec<Line>, &'static str) {
    let trace = simulation::run(scenario, std::time::Instant::now()).unwrap();
    let lines = trace
        .records
        .iter()
        .filter_map(|record| match *record {
            Record::Start { kind, .. } => {
                Some(Line { at_ms: record.at_ms(), what: format!("start {kind}") })
            }
            Record::End { kind, outcome, .. } => {
                Some(Line { at_ms: record.at_ms(), what: format!("end {kind} {}", outcome.name()) })
            }
            Record::Event { .. } => None,
        })
        .collect();
    (lines, trace.final_state.state.name())
}

fn live(scenario: &Scenario) -> (Vec<Line>, &'static str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let epoch = Instant::now();
        let executor = Arc::new(ScriptedExecutor::new(scenario.effects.clone()));
        let config = NodeConfig {
            name: scenario.name.clone(),
            policy: scenario.policy.clone(),
            initial: scenario.start,
            ..NodeConfig::default()
        };
        let (link, link_events) = LinkReporter::channel();
        let node = Node::spawn(config, executor, link_events).unwrap();
        let mut reports = node.actions();
        let node_ref = node.node_ref();
        for event in &scenario.events {
            tokio::time::sleep_until(epoch + Duration::from_millis(event.at_ms)).await;
            match event.input {
                ScenarioInput::Network(event) => node_ref.submit(event).await.unwrap(),
                ScenarioInput::SignalingLost => assert!(link.signaling_lost()),
                ScenarioInput::PeerLost => assert!(link.peer_lost()),
            }
        }
        let end = epoch + Duration::from_millis(scenario.run_ms);
        tokio::time::sleep_until(end).await;
        // Let the driver finish what this very instant brought.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        let mut lines = Vec::new();
        loop {
            match reports.try_recv() {
                Ok(report) => {
                    if report.at() > end {
                        break;
                    }
                    let at_ms = (report.at() - epoch).as_millis() as u64;
                    let what = match report {
                        ActionReport::Started { kind, .. } => format!("start {kind}"),
                        ActionReport::Ended { kind, outcome, .. } => {
                            format!("end {kind} {}", outcome.name())
                        }
                    };
                    lines.push(Line { at_ms, what });
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                Err(TryRecvError::Lagged(n)) => panic!("{}: lost {n} reports", scenario.name),
            }
        }
        let state = node.state().borrow().name();
        node.shutdown().await;
        (lines, state)
    })
}

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_runs_live_as_it_replays() {
    let files = scenario_files();
    assert!(files.len() >= 40, "found only {} scenarios", files.len());
    let mut differences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let stem = file.file_stem().unwrap().to_string_lossy();
        let scenario = Scenario::from_json(&text, &stem).unwrap();
        let expected = replayed(&scenario);
        assert!(
            !expected.0.is_empty()
                || scenario.expect.as_ref().is_some_and(|e| e.starts == Some(vec![]))
        );
        let actual = live(&scenario);
        if actual != expected {
            differences.push(format!(
                "{}:\n  replay: {:?}\n  live:   {:?}",
                scenario.name, expected, actual
            ));
        }
    }
    assert!(differences.is_empty(), "live runs differ from replay:\n{}", differences.join("\n"));
}
