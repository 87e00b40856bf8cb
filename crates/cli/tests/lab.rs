//! A short handoff lab (3 Wi-Fi <-> cellular handoffs per policy) in real
//! network namespaces: fails on any lost or duplicated message or failed
//! recovery, with and without added delay. Skips, loudly, only where
//! namespaces cannot be created, and fails there too when
//! `TETHER_REQUIRE_NETNS=1` is set (CI). How fast recovery is, is the
//! benchmarks' business; these tests check what happened.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::output_within;

/// A hang guard for one `tether lab handoff` run, not a timing target.
/// Healthy runs take seconds. The command bounds its own waits (20 s for a
/// phone to start, 3 x 15 s per handoff, per policy), so this sits above
/// its worst case with `--runs 3`: a slow failure is still reported by the
/// command itself, and only a true hang is cut here.
const GUARD: Duration = Duration::from_secs(600);

/// Runs `tether lab handoff --json` with `args`; `None` when the lab
/// cannot run here (after a loud skip message, or a failure when
/// `TETHER_REQUIRE_NETNS=1`: see [`tether_lab::netns_available`]).
async fn lab_report(args: &[&str]) -> Option<serde_json::Value> {
    // The harness names the test's thread after the test.
    let test = std::thread::current().name().unwrap_or("a tether lab handoff test").to_owned();
    if !tether_lab::netns_available(&test).await {
        return None;
    }
    let output = output_within(
        Command::new(env!("CARGO_BIN_EXE_tether")).args(["lab", "handoff", "--json"]).args(args),
        GUARD,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the lab failed:\nstdout: {stdout}\nstderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    // The JSON contract: every field there, with its type.
    for field in ["handoffs", "lost", "duplicated", "failed", "added_rtt_ms"] {
        assert!(report[field].is_u64(), "{field} missing or not a count: {report}");
    }
    for field in ["default", "seed"] {
        for percentile in ["p50_ms", "p95_ms"] {
            assert!(
                report[field][percentile].is_f64(),
                "{field}.{percentile} missing or not a number: {report}"
            );
        }
    }
    assert!(report["ratio_p50"].is_f64(), "ratio_p50 missing or not a number: {report}");
    Some(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_handoffs_lose_nothing() {
    let Some(report) = lab_report(&["--runs", "3"]).await else { return };
    assert_eq!(report["handoffs"], 3, "{report}");
    assert_eq!(report["added_rtt_ms"], 0, "{report}");
    for policy in ["default", "seed"] {
        // Every handoff recovered (`failed` is 0), so each policy has
        // measurements: a zero here means none was recorded.
        let p50 = report[policy]["p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.0, "{policy}: no handoff was measured: {report}");
    }
    // Which policy is faster, and by how much, is a measurement
    // (`sudo tether lab handoff --runs N`), not a pass/fail property.
}

/// With 60 ms added round trip on every packet (signaling, ICE, data),
/// recovery still loses nothing, and no handoff can recover faster than
/// one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_over_a_slow_network_lose_nothing() {
    let Some(report) = lab_report(&["--runs", "2", "--rtt-ms", "60"]).await else { return };
    assert_eq!(report["handoffs"], 2, "{report}");
    assert_eq!(report["added_rtt_ms"], 60, "{report}");
    for policy in ["default", "seed"] {
        let p50 = report[policy]["p50_ms"].as_f64().unwrap();
        assert!(p50 >= 60.0, "{policy}: recovered in {p50} ms, under one round trip: {report}");
    }
}

/// Bad arguments are refused before anything is built (no root needed).
#[test]
fn bad_arguments_are_refused_clearly() {
    for (args, want) in [
        (["--runs", "0", "--rtt-ms", "0"], "--runs must be at least 1"),
        (["--runs", "1", "--rtt-ms", "5000"], "--rtt-ms 5000 is more than 2000"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["lab", "handoff"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
