//! `tether serve` and `tether bench signal` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{SECRET, http_get, output_within, serve, wait_within};

/// A hang guard for one run of `tether` or one step of the server: each
/// takes well under a second when healthy.
const GUARD: Duration = Duration::from_secs(30);

fn tether(args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_tether")).args(args).env_remove("TETHER_SECRET"),
        GUARD,
    )
}

#[test]
fn serve_answers_health_checks_and_stops_on_sigterm() {
    let (mut server, addr) = serve(&[]);

    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(&addr, "/metrics").contains("tether_signal_connections_open 0"));

    let status = Command::new("kill").args(["-TERM", &server.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = wait_within(&mut server.0, GUARD).expect("tether serve did not stop on SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn serve_refuses_to_run_without_authentication() {
    let output = tether(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no authentication configured"), "{stderr}");
}

#[test]
fn serve_mints_tokens() {
    let output =
        tether(&["serve", "--secret", SECRET, "--mint-token", "alice", "--token-ttl", "60"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let parts: Vec<_> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    assert_eq!(parts[0], "v1");
}

#[test]
fn serve_demo_hands_out_tokens_only_a_demo_server_accepts() {
    let (_server, addr) = serve(&["--demo"]);
    let response = http_get(&addr, "/demo/token?peer=alice");
    let token = response.split("\r\n\r\n").nth(1).unwrap().trim().to_owned();
    let secret = tether_relay::auth::HmacSecret::new(SECRET.as_bytes().to_vec()).unwrap();
    let alice = tether_signal::protocol::PeerId::new("alice").unwrap();
    let now = std::time::SystemTime::now();
    let production = tether_relay::auth::Authenticator::with_secret(secret);
    assert_eq!(
        production.verify(&alice, &token, now).unwrap_err(),
        tether_relay::auth::AuthRejection::DemoToken,
        "the same secret without --demo refuses it"
    );
    assert!(production.accept_demo_tokens().verify(&alice, &token, now).is_ok());
}

#[test]
fn serve_mints_room_bound_tokens() {
    let output =
        tether(&["serve", "--secret", SECRET, "--mint-token", "alice", "--token-room", "lobby"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let secret = tether_relay::auth::HmacSecret::new(SECRET.as_bytes().to_vec()).unwrap();
    let auth = tether_relay::auth::Authenticator::with_secret(secret);
    let alice = tether_signal::protocol::PeerId::new("alice").unwrap();
    let grant = auth.verify(&alice, token.trim(), std::time::SystemTime::now()).unwrap();
    assert_eq!(grant.room.as_deref(), Some("lobby"));
}

#[test]
fn serve_refuses_unusable_limits() {
    for (flag, value, complaint) in [
        ("--relay-rate", "0", "invalid configuration"),
        ("--register-timeout", "0", "--register-timeout must be a positive number of seconds"),
        ("--max-unregistered-per-source", "0", "invalid configuration"),
    ] {
        let output = tether(&["serve", "--secret", SECRET, "--listen", "127.0.0.1:0", flag, value]);
        assert!(!output.status.success(), "{flag} {value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(complaint), "{flag} {value}: {stderr}");
    }
}

#[test]
fn bench_signal_prints_the_json_contract() {
    let args = "bench signal --clients 10 --rate 200 --seconds 0.5 --json";
    let output = tether(&args.split(' ').collect::<Vec<_>>());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["clients"], 10);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["relay_p50_us"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["relay_p99_us"].as_f64().unwrap() >= report["relay_p50_us"].as_f64().unwrap());
}
