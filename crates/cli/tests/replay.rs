//! `tether replay` as a user runs it: output lines, `--check`, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether")).args(args).output().unwrap()
}

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn scenario(name: &str) -> String {
    scenarios().join(format!("{name}.json")).to_string_lossy().into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn temp_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("tether-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn one_file_prints_exactly_the_json_lines() {
    let output = tether(&["replay", &scenario("wifi_to_cellular_gap")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "{\"at_ms\":150,\"start\":\"restore\"}\n\
         {\"at_ms\":180,\"end\":\"restore\",\"outcome\":\"ok\"}\n\
         {\"final\":{\"state\":\"connected\",\"path\":\"online\",\"phase\":\"foreground\"}}\n"
    );
}

#[test]
fn several_files_get_a_scenario_line_each() {
    let output = tether(&[
        "replay",
        &scenario("signaling_lost_restores"),
        &scenario("metered_only_change_no_action"),
    ]);
    assert!(output.status.success());
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines[0], r#"{"scenario":"signaling_lost_restores"}"#);
    let second =
        lines.iter().position(|l| l == r#"{"scenario":"metered_only_change_no_action"}"#).unwrap();
    assert!(lines[second - 1].starts_with(r#"{"final""#));
    assert_eq!(lines.len(), second + 2, "no start for a metered-only change: {lines:?}");
}

#[test]
fn check_passes_on_the_whole_corpus() {
    let mut files: Vec<String> = std::fs::read_dir(scenarios())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut args = vec!["replay", "--check"];
    args.extend(files.iter().map(String::as_str));
    let output = tether(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).matches("{\"scenario\":").count(), files.len());
}

#[test]
fn check_exits_1_with_a_readable_diff() {
    let text = std::fs::read_to_string(scenario("offline_long_then_back")).unwrap();
    let wrong = text.replace("\"at_ms\": 400", "\"at_ms\": [500, 600]");
    assert_ne!(wrong, text);
    let file = temp_file("wrong.json", &wrong);
    let output = tether(&["replay", "--check", &file]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("FAIL offline_long_then_back"), "{err}");
    assert!(err.contains("disconnect at [500, 600]") && err.contains("disconnect at 400"), "{err}");
    // Without --check the same file just runs.
    assert_eq!(tether(&["replay", &file]).status.code(), Some(0));
}

#[test]
fn malformed_files_exit_2_naming_the_problem() {
    let bad = temp_file(
        "bad.json",
        "{\n  \"events\": [\n    {\"at_ms\": 5, \"path\": {\"sequence\": 1, \"availability\": \"maybe\"}}\n  ]\n}\n",
    );
    let output = tether(&["replay", &bad, &scenario("signaling_lost_restores")]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("events[0].path.availability") && err.contains("line 3"), "{err}");
    // The good file still ran.
    assert!(stdout(&output).contains(r#"{"scenario":"signaling_lost_restores"}"#));

    let missing = tether(&["replay", "/nonexistent/tether.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read"), "{}", stderr(&missing));

    let binary = temp_file("binary.json", "\u{0}\u{1}\u{2}garbage");
    assert_eq!(tether(&["replay", &binary]).status.code(), Some(2));
}
