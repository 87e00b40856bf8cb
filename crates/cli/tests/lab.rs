//! Short handoff labs (1-3 Wi-Fi <-> cellular handoffs per policy) in real
//! network namespaces: each fails on any lost or duplicated message or
//! failed recovery — plain, over added delay, delay with jitter, random
//! loss, an outage between uplinks, overlapping uplinks, and through cone
//! and symmetric NAT (where the connections must be direct, and relayed
//! by the lab's coturn, respectively). Skips, loudly, only where
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
    for field in [
        "handoffs",
        "lost",
        "duplicated",
        "failed",
        "added_rtt_ms",
        "added_jitter_ms",
        "rng_seed",
        "outage_ms",
        "overlap_ms",
        "router_lost",
        "router_dropped",
        "connections",
        "relayed",
        "unjudged",
        "turn_allocations",
    ] {
        assert!(report[field].is_u64(), "{field} missing or not a count: {report}");
    }
    for field in ["default", "seed"] {
        for number in [
            "p50_ms",
            "p95_ms",
            "restore_p50_ms",
            "restore_p95_ms",
            "echo_gap_max_ms",
            "echo_gap_p50_ms",
            "round_trip_p50_ms",
        ] {
            assert!(
                report[field][number].is_f64(),
                "{field}.{number} missing or not a number: {report}"
            );
        }
        assert!(report[field]["restores"].is_u64(), "{field}.restores missing: {report}");
        assert!(report[field]["detoured"].is_u64(), "{field}.detoured missing: {report}");
    }
    for field in ["ratio_p50", "loss_pct"] {
        assert!(report[field].is_f64(), "{field} missing or not a number: {report}");
    }
    assert!(report["nat"].is_string(), "nat missing: {report}");
    // Every handoff recovered: each phone's first connection and one per
    // handoff, for both policies, carried the stream.
    let runs = report["handoffs"].as_u64().unwrap();
    assert_eq!(report["connections"], 2 * (runs + 1), "{report}");
    Some(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_handoffs_lose_nothing() {
    let Some(report) = lab_report(&["--runs", "3"]).await else { return };
    assert_eq!(report["handoffs"], 3, "{report}");
    assert_eq!(report["added_rtt_ms"], 0, "{report}");
    // No NAT, no TURN server: nothing can be relayed.
    assert_eq!(report["nat"], "none", "{report}");
    assert_eq!(report["relayed"], 0, "{report}");
    assert_eq!(report["turn_allocations"], 0, "{report}");
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
/// one round trip. While each ICE restart runs (rounds trips of it), the
/// phone's messages take the sealed detour through signaling (MESSAGING.md
/// rule 10), and still arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_over_a_slow_network_lose_nothing() {
    let Some(report) = lab_report(&["--runs", "2", "--rtt-ms", "60"]).await else { return };
    assert_eq!(report["handoffs"], 2, "{report}");
    assert_eq!(report["added_rtt_ms"], 60, "{report}");
    for policy in ["default", "seed"] {
        let p50 = report[policy]["p50_ms"].as_f64().unwrap();
        assert!(p50 >= 60.0, "{policy}: recovered in {p50} ms, under one round trip: {report}");
        let detoured = report[policy]["detoured"].as_u64().unwrap();
        assert!(detoured > 0, "{policy}: nothing took the detour: {report}");
    }
}

/// Every policy measured something: each handoff recovered (`failed` is 0
/// too), so a zero here means none was recorded.
fn every_policy_measured(report: &serde_json::Value) {
    for policy in ["default", "seed"] {
        let p50 = report[policy]["p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.0, "{policy}: no handoff was measured: {report}");
        let gap = report[policy]["echo_gap_max_ms"].as_f64().unwrap();
        assert!(gap > 0.0, "{policy}: no echo gap was measured: {report}");
    }
}

/// Delay with jitter on every packet (per-flow order kept): nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_with_jitter_lose_nothing() {
    let args = ["--runs", "1", "--rtt-ms", "40", "--jitter-ms", "30"];
    let Some(report) = lab_report(&args).await else { return };
    assert_eq!(report["added_rtt_ms"], 40, "{report}");
    assert_eq!(report["added_jitter_ms"], 30, "{report}");
    every_policy_measured(&report);
}

/// 2 % random loss in both directions (seeded): the reliable stream still
/// delivers every message exactly once, and the router did drop packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoffs_under_random_loss_lose_no_message() {
    let args = ["--runs", "1", "--loss-pct", "2", "--seed", "7"];
    let Some(report) = lab_report(&args).await else { return };
    assert_eq!(report["loss_pct"], 2.0, "{report}");
    assert_eq!(report["rng_seed"], 7, "{report}");
    // Thousands of packets cross the router: with 2 % loss some are gone.
    assert!(report["router_lost"].as_u64().unwrap() > 0, "no packet was lost: {report}");
    every_policy_measured(&report);
}

/// No uplink at all for 3 s between the old and the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_second_outage_loses_nothing() {
    let Some(report) = lab_report(&["--runs", "1", "--outage-ms", "3000"]).await else { return };
    assert_eq!(report["outage_ms"], 3000, "{report}");
    every_policy_measured(&report);
}

/// Make before break: the new uplink comes up 500 ms before the old goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlap_of_uplinks_loses_nothing() {
    let Some(report) = lab_report(&["--runs", "1", "--overlap-ms", "500"]).await else { return };
    assert_eq!(report["overlap_ms"], 500, "{report}");
    every_policy_measured(&report);
}

/// The NAT labs need nftables and coturn besides namespaces.
fn nat_tools_available() -> bool {
    tether_lab::tool_available("nft", tether_lab::REQUIRE_NETNS_VAR)
        && tether_lab::tool_available("turnserver", "TETHER_REQUIRE_TURN")
}

/// Cone NAT on the phone's uplinks and at home: ICE punches through it
/// (server-reflexive candidates from the lab's coturn), so every
/// connection, the first and each one after a handoff, is direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_cone_nat_the_peers_connect_directly() {
    if !nat_tools_available() {
        return;
    }
    let Some(report) = lab_report(&["--runs", "2", "--nat", "cone"]).await else { return };
    assert_eq!(report["nat"], "cone", "{report}");
    assert_eq!(report["unjudged"], 0, "{report}");
    assert_eq!(report["relayed"], 0, "a connection went through the relay: {report}");
    every_policy_measured(&report);
}

/// Symmetric NAT on both ends: no direct pair can work, so the TURN relay
/// carries every connection, also after each handoff, when the phone's old
/// allocation died with its old address and ICE had to allocate anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_symmetric_nat_every_connection_is_relayed() {
    if !nat_tools_available() {
        return;
    }
    let Some(report) = lab_report(&["--runs", "2", "--nat", "symmetric"]).await else { return };
    assert_eq!(report["nat"], "symmetric", "{report}");
    assert_eq!(report["unjudged"], 0, "{report}");
    assert_eq!(report["relayed"], report["connections"], "a connection was direct: {report}");
    // The phone alone needs a new allocation for each of its connections.
    let connections = report["connections"].as_u64().unwrap();
    let allocations = report["turn_allocations"].as_u64().unwrap();
    assert!(allocations >= connections, "{allocations} allocations for {connections}: {report}");
    every_policy_measured(&report);
}

/// Bad arguments are refused before anything is built (no root needed).
#[test]
fn bad_arguments_are_refused_clearly() {
    for (args, want) in [
        (&["--runs", "0", "--rtt-ms", "0"][..], "--runs must be at least 1"),
        (&["--runs", "1", "--rtt-ms", "5000"], "--rtt-ms 5000 is more than 2000"),
        (&["--jitter-ms", "5000"], "--jitter-ms 5000 is more than 2000"),
        (&["--loss-pct", "100"], "--loss-pct 100 is not within 0 to below 100"),
        (&["--loss-pct=-1"], "--loss-pct -1 is not within 0 to below 100"),
        (&["--outage-ms", "200000"], "--outage-ms 200000 is more than 120000"),
        (&["--overlap-ms", "200000"], "--overlap-ms 200000 is more than 120000"),
        (&["--outage-ms", "1", "--overlap-ms", "1"], "cannot be used with"),
        (&["--nat", "full-cone"], "invalid value 'full-cone' for '--nat <NAT>'"),
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
