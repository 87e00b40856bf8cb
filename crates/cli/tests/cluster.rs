//! `tether serve --nats` as an operator runs it: two real server processes
//! on one real nats-server, Rust signaling clients with fallback URLs, and
//! one instance killed with SIGKILL while they relay.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
// Shared with tether-relay's cluster tests.
#[allow(dead_code)]
#[path = "../../relay/tests/cluster/nats_server.rs"]
mod nats_server;

use std::time::Duration;

use common::{SECRET, http_get, serve};
use nats_server::NatsServer;
use tether_relay::auth::{HmacSecret, mint_token_for};
use tether_signal::protocol::{PeerId, RelayPayload, RoomId};
use tether_signal::{ClientConfig, SignalClient, SignalEvent, SignalEvents};
use tokio::time::{Instant, timeout};

/// Generous bound on anything that should happen promptly; not a target.
const PROMPT: Duration = Duration::from_secs(10);
const TTL_MS: &str = "1000";

fn peer(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

fn instance(nats: &NatsServer, id: &str) -> (common::Server, String) {
    serve(&["--nats", &nats.url(), "--instance-id", id, "--presence-ttl-ms", TTL_MS])
}

async fn client(name: &str, url: &str, fallback: Option<&str>) -> (SignalClient, SignalEvents) {
    let secret = HmacSecret::new(SECRET.as_bytes().to_vec()).unwrap();
    let token = mint_token_for(&secret, &peer(name), Duration::from_secs(600));
    let mut config = ClientConfig::new(format!("ws://{url}/ws"), peer(name), token);
    config.fallback_urls = fallback.map(|url| format!("ws://{url}/ws")).into_iter().collect();
    config.room = Some(RoomId::new("lobby").unwrap());
    config.connect_timeout = Duration::from_secs(3);
    config.ping_interval = Duration::from_millis(200);
    config.dead_after = Duration::from_secs(1);
    let (client, mut events) = SignalClient::new(config).unwrap();
    client.connect_once().await.unwrap();
    until(&mut events, "connected", |event| matches!(event, SignalEvent::Connected(_))).await;
    (client, events)
}

/// Events up to and including the first that `wanted` accepts.
async fn until(
    events: &mut SignalEvents,
    what: &str,
    wanted: impl Fn(&SignalEvent) -> bool,
) -> Vec<SignalEvent> {
    let deadline = Instant::now() + PROMPT;
    let mut seen = Vec::new();
    loop {
        let event = timeout(deadline.saturating_duration_since(Instant::now()), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {PROMPT:?}; saw {seen:?}"))
            .expect("event stream ended");
        let done = wanted(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

async fn relay_arrives(from: &SignalClient, to: &PeerId, events: &mut SignalEvents) {
    from.send(to, RelayPayload::IceRestart).unwrap();
    let sender = from.peer_id().clone();
    until(events, "the relay", |event| {
        matches!(event, SignalEvent::Relay { from, payload: RelayPayload::IceRestart } if *from == sender)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_instance_move_on_and_its_peers_leave_within_the_ttl() {
    let Some(nats) = NatsServer::start() else { return };
    let (mut a, a_addr) = instance(&nats, "serve-a");
    let (_b, b_addr) = instance(&nats, "serve-b");

    // Movers on A (B as fallback), stayers on B, and one client of A that
    // knows no other server: it stays away, so its presence must expire.
    let mut movers = Vec::new();
    for n in 0..4 {
        movers.push(client(&format!("mover-{n}"), &a_addr, Some(&b_addr)).await);
    }
    let mut stayers = Vec::new();
    for n in 0..4 {
        stayers.push(client(&format!("stayer-{n}"), &b_addr, Some(&a_addr)).await);
    }
    let (_stranded, mut stranded_events) = client("stranded", &a_addr, None).await;
    // Everyone sees everyone (the last one to join is seen by all).
    for (_, events) in stayers.iter_mut().chain(movers.iter_mut()) {
        until(events, "stranded joining", |event| {
            *event == SignalEvent::PeerJoined(peer("stranded"))
        })
        .await;
    }
    for ((mover, mover_events), (stayer, stayer_events)) in movers.iter_mut().zip(&mut stayers) {
        relay_arrives(mover, stayer.peer_id(), stayer_events).await;
        relay_arrives(stayer, mover.peer_id(), mover_events).await;
    }

    a.0.kill().unwrap();
    let killed = Instant::now();
    let _ = a.0.wait();
    let mut moved_after = Duration::ZERO;
    for (mover, events) in &mut movers {
        until(events, "the loss of A", |event| matches!(event, SignalEvent::Lost { .. })).await;
        timeout(PROMPT, mover.connect_once()).await.expect("re-registration hung").unwrap();
        moved_after = moved_after.max(killed.elapsed());
    }
    until(&mut stranded_events, "the loss of A", |event| matches!(event, SignalEvent::Lost { .. }))
        .await;
    eprintln!("every client of the killed instance re-registered on the other in {moved_after:?}");

    // The stayers see the stranded peer leave within about the TTL, and
    // never see a mover leave (they moved).
    let observer = &mut stayers[0].1;
    let seen = until(observer, "stranded leaving", |event| {
        *event == SignalEvent::PeerLeft(peer("stranded"))
    })
    .await;
    let left_after = killed.elapsed();
    eprintln!("the stranded peer left its room {left_after:?} after the kill (TTL {TTL_MS} ms)");
    assert!(
        !seen.iter().any(
            |event| matches!(event, SignalEvent::PeerLeft(who) if who.as_str().starts_with("mover"))
        ),
        "{seen:?}"
    );

    // Relays resume both ways.
    for ((mover, mover_events), (stayer, stayer_events)) in movers.iter_mut().zip(&mut stayers) {
        relay_arrives(mover, stayer.peer_id(), stayer_events).await;
        relay_arrives(stayer, mover.peer_id(), mover_events).await;
    }
    let metrics = http_get(&b_addr, "/metrics");
    assert!(metrics.contains("tether_signal_cluster_connected 1"), "{metrics}");
    assert!(metrics.contains("tether_signal_peers_registered 8"), "{metrics}");
}

#[test]
fn serve_refuses_bad_cluster_settings() {
    let run = |args: &[&str]| {
        common::output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
                .args(["serve", "--secret", SECRET, "--listen", "127.0.0.1:0"])
                .args(args),
            Duration::from_secs(30),
        )
    };
    for (args, complaint) in [
        (&["--nats", "nats://127.0.0.1:1", "--instance-id", "a b"][..], "invalid instance id"),
        (&["--nats", "nats://127.0.0.1:1", "--presence-ttl-ms", "10"][..], "at least 300"),
        (&["--instance-id", "a"][..], "--nats"),
        // Nothing listens on port 1: the broker is required, not optional.
        (&["--nats", "nats://127.0.0.1:1"][..], "cannot join the cluster"),
    ] {
        let output = run(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_signal_across_three_instances_reports_both_kinds_of_pairs() {
    // Skips (or fails under TETHER_REQUIRE_NATS=1) like the other tests
    // when nats-server is missing; the bench starts its own.
    if NatsServer::start().is_none() {
        return;
    }
    let output = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_tether")).args([
            "bench",
            "signal",
            "--clients",
            "30",
            "--rate",
            "300",
            "--seconds",
            "0.5",
            "--instances",
            "3",
            "--json",
        ]),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["instances"], 3, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let same = report["same_instance"]["count"].as_u64().unwrap();
    let cross = report["cross_instance"]["count"].as_u64().unwrap();
    assert_eq!(same + cross, report["received"].as_u64().unwrap(), "{report}");
    assert!(same > 0 && cross > 0, "random pairs over 3 instances are of both kinds: {report}");
    assert!(report["cross_instance"]["p99_us"].as_f64().unwrap() > 0.0, "{report}");
}
