//! Real WebRTC peers and a real TURN server (coturn, started on a free loopback port): the route
//! a peer connection selected, and relay escalation when direct ICE failed.
//!
//! Needs `turnserver` (Debian's `coturn`) on PATH. Without it the tests are skipped with a
//! message, unless `TETHER_REQUIRE_TURN=1` (CI) makes that a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod lab;

#[allow(dead_code)]
mod coturn;

use coturn::{Coturn, TurnAuth};
use lab::{Lab, cid, fast_config, id};
use tether_rtc::{CandidateKind, Escalation, IceServer, PeerState, RtcConfig, RtcError};

/// coturn with one long-term user.
fn start_coturn() -> Option<Coturn> {
    Coturn::start(TurnAuth::LongTerm { user: "tether", password: "turn-password" })
}

/// Loopback peer sets with ICE policy `all` and `coturn`.
fn config(coturn: &Coturn) -> RtcConfig {
    RtcConfig {
        ice_servers: vec![IceServer {
            urls: vec![coturn.url()],
            username: "tether".into(),
            credential: "turn-password".into(),
        }],
        ..fast_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_direct_ice_escalates_the_peer_to_a_relay_only_replacement() {
    let Some(coturn) = start_coturn() else { return };
    let lab = Lab::with_config(&["alice", "bob"], config(&coturn));
    let (alice, bob) = (lab.set("alice"), id("bob"));

    // Policy `all`, TURN configured: on loopback the direct host path wins.
    lab.connect("alice", "bob").await;
    let route = alice.selected_route(&bob).await.expect("a route once connected");
    assert_eq!(route.local.kind, CandidateKind::Host, "{route}");
    assert!(!route.is_relayed(), "{route}");
    lab.send_and_expect("alice", "bob", "direct").await;

    // No candidate reaches the other side any more: the restart (fresh sockets, policy `all`)
    // has nothing to check, and ICE does not come back.
    lab.relay.drop_only_candidates(&["host", "srflx", "prflx", "relay"]);
    let error = alice.restart_ice(&bob).await.unwrap_err();
    assert!(matches!(error, RtcError::RestartTimeout { .. }), "{error}");
    // The restarted ICE agent is still checking (nothing to check): not connected.
    let state = alice.status(&bob).and_then(|status| status.state);
    assert!(
        matches!(state, Some(PeerState::Connecting | PeerState::Disconnected | PeerState::Failed)),
        "ICE is down after the failed restart: {state:?}"
    );

    // What the node does then: escalate, and replace.
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::Escalated);
    assert!(alice.status(&bob).unwrap().relay_escalated);
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::AlreadyRelayOnly);
    // The peers can still not learn each other's host addresses: direct paths stay blocked.
    lab.relay.drop_only_candidates(&["host"]);
    alice.replace(&bob).await.expect("the relay-only replacement connects");
    lab.node("bob").log.wait_channel_open("alice", 2).await;
    assert_eq!(alice.status(&bob).unwrap().connection_id, cid(2));
    let route = alice.selected_route(&bob).await.expect("a route once connected");
    eprintln!("after escalation: {route}");
    assert_eq!(route.local.kind, CandidateKind::Relay, "alice gathers relay candidates only");
    assert!(route.is_relayed(), "{route}");
    lab.send_and_expect("alice", "bob", "through the relay").await;
    lab.send_and_expect("bob", "alice", "back through the relay").await;
    assert!(
        lab.relay.seen().iter().any(|m| m.from == "alice"
            && matches!(&m.payload, tether_rtc::SignalPayload::Candidate { candidate, .. }
                if candidate.contains(" typ relay"))),
        "alice offered relay candidates"
    );

    // Closing the peer forgets the escalation: a fresh start tries direct paths again.
    alice.close(&bob).await.unwrap();
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::Escalated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_turn_server_there_is_no_escalation() {
    let lab = Lab::new(&["alice", "bob"]);
    let (alice, bob) = (lab.set("alice"), id("bob"));
    lab.connect("alice", "bob").await;
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::NoTurnServer);
    assert!(!alice.status(&bob).unwrap().relay_escalated);
    let route = alice.selected_route(&bob).await.expect("a route once connected");
    assert_eq!(route.local.kind, CandidateKind::Host, "{route}");
}
