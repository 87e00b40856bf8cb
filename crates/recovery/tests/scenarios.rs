//! Every scenario in the repository's `scenarios/` folder runs and meets its
//! `expect` (what `tether replay --check` does, through the library).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use tether_recovery::expectation;
use tether_recovery::scenario::Scenario;
use tether_recovery::simulation;

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_meets_its_expectations() {
    let files = scenario_files(&scenario_dir());
    assert!(files.len() >= 40, "expected the public and our own scenarios, found {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let stem = file.file_stem().unwrap().to_string_lossy();
        let scenario = Scenario::from_json(&text, &stem)
            .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert_eq!(scenario.name, stem, "{}: name and file name differ", file.display());
        let expect = scenario.expect.as_ref().unwrap_or_else(|| {
            panic!("{}: a corpus scenario must say what it expects", file.display())
        });
        assert!(
            expect.starts.is_some(),
            "{}: expect.starts is required in the corpus",
            file.display()
        );
        let trace = simulation::run(&scenario, Instant::now()).unwrap();
        let outcome = expectation::check(expect, &trace);
        if !outcome.passed() {
            failures.push(format!("{}:\n{}", scenario.name, outcome.report));
        }
    }
    assert!(failures.is_empty(), "scenarios fell short:\n{}", failures.join("\n"));
}

/// The public scenarios pin the policy: our copies must stay byte-identical.
#[test]
fn public_scenarios_are_unchanged_copies() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/scenarios");
    if !shared.is_dir() {
        eprintln!("skipping: {} is not here", shared.display());
        return;
    }
    let ours = scenario_dir();
    let public = scenario_files(&shared);
    assert!(!public.is_empty());
    for file in public {
        let name = file.file_name().unwrap();
        let copy = ours.join(name);
        let original = std::fs::read(&file).unwrap();
        let copied = std::fs::read(&copy)
            .unwrap_or_else(|err| panic!("{} is missing from scenarios/: {err}", copy.display()));
        assert!(original == copied, "{} differs from the public copy", copy.display());
    }
}

/// The check itself can fail: a wrong expectation is reported, naming what
/// differs.
#[test]
fn a_wrong_expectation_is_reported() {
    let text = std::fs::read_to_string(scenario_dir().join("wifi_to_cellular_gap.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["expect"]["starts"][0]["at_ms"] = 151.into();
    json["expect"]["final"]["path"] = "offline".into();
    let scenario = Scenario::from_json(&json.to_string(), "x").unwrap();
    let trace = simulation::run(&scenario, Instant::now()).unwrap();
    let outcome = expectation::check(scenario.expect.as_ref().unwrap(), &trace);
    assert!(!outcome.passed());
    assert_eq!(outcome.problems.len(), 2, "{:?}", outcome.problems);
    assert!(outcome.report.contains("restore at 151"), "{}", outcome.report);
    assert!(
        outcome.report.contains("final path: expected offline, got online"),
        "{}",
        outcome.report
    );

    json["expect"]["ends"] = serde_json::json!([{ "action": "restore", "outcome": "cancelled" }]);
    json["expect"]["starts"][0]["at_ms"] = 150.into();
    json["expect"]["final"]["path"] = "online".into();
    let scenario = Scenario::from_json(&json.to_string(), "x").unwrap();
    let outcome = expectation::check(scenario.expect.as_ref().unwrap(), &trace);
    assert_eq!(outcome.problems.len(), 1, "{:?}", outcome.problems);
    assert!(outcome.problems[0].contains("restore cancelled"), "{:?}", outcome.problems);
}

/// The JSON lines are exactly the ones scenarios/README.md describes.
#[test]
fn replay_prints_the_documented_lines() {
    let text =
        std::fs::read_to_string(scenario_dir().join("probe_failure_escalates_to_restore.json"))
            .unwrap();
    let scenario = Scenario::from_json(&text, "x").unwrap();
    let trace = simulation::run(&scenario, Instant::now()).unwrap();
    let lines: Vec<String> = trace.json_lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"at_ms":10000,"start":"probe"}"#,
            r#"{"at_ms":10030,"end":"probe","outcome":"failed"}"#,
            r#"{"at_ms":10030,"start":"restore"}"#,
            r#"{"at_ms":10060,"end":"restore","outcome":"ok"}"#,
            r#"{"final":{"state":"connected","path":"online","phase":"foreground"}}"#,
        ]
    );
}
