//! Two real nodes whose WebRTC data flows through a real TURN server
//! (coturn, started by the test on a free loopback port) with relay-only
//! ICE, using credentials minted by tether-relay's shared-secret scheme.
//!
//! Needs `turnserver` (Debian's `coturn`) on PATH. Without it the test is
//! skipped with a message, unless `TETHER_REQUIRE_TURN=1` (CI) makes that a
//! failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// Each test crate uses part of the shared fixture.
#[allow(dead_code)]
#[path = "../../rtc/tests/coturn/mod.rs"]
mod coturn;

use std::time::{Duration, SystemTime};

use coturn::{Coturn, TurnAuth};

use tether::live::testbed::LoopbackTestbed;
use tether::live::{CandidateKind, CandidateProtocol};
use tether::{PeerId, RtcNode};
use tether_relay::turn::{TurnGrants, TurnSecret};
use tether_rtc::{IceServer, IceTransportPolicy};
use tokio::time::{Instant, timeout};

const PROMPT: Duration = Duration::from_secs(20);
const SECRET: &[u8] = b"turn-test-secret-0123456789";

fn id(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

/// Credentials for `user` minted from `secret`, for `coturn`.
fn ice_server(coturn: &Coturn, user: &PeerId, secret: &[u8]) -> IceServer {
    let minted = TurnSecret::new(secret.to_vec()).unwrap().mint(
        user.as_str(),
        SystemTime::now(),
        Duration::from_secs(600),
    );
    IceServer { urls: vec![coturn.url()], username: minted.username, credential: minted.credential }
}

/// coturn checking credentials minted from [`SECRET`].
fn start_coturn() -> Option<Coturn> {
    let secret = std::str::from_utf8(SECRET).unwrap();
    Coturn::start(TurnAuth::SharedSecret(secret))
}

/// Online nodes for `peers` that may only use relayed candidates from
/// `coturn`, with credentials minted from `secret`.
async fn relay_only_nodes(
    testbed: &LoopbackTestbed,
    coturn: &Coturn,
    secret: &[u8],
    peers: [&PeerId; 2],
    connect_timeout: Option<Duration>,
) -> Vec<RtcNode> {
    let mut nodes = Vec::new();
    for peer in peers {
        let mut config = testbed.config(peer);
        config.rtc.ice_servers = vec![ice_server(coturn, peer, secret)];
        config.rtc.ice_transport_policy = IceTransportPolicy::Relay;
        if let Some(bound) = connect_timeout {
            config.rtc.connect_timeout = bound;
        }
        nodes.push(testbed.online(config).await.unwrap());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_peers_exchange_messages_through_turn() {
    let Some(coturn) = start_coturn() else { return };
    let testbed = LoopbackTestbed::start().await.unwrap();
    let (a, b) = (id("alice"), id("bob"));
    let nodes = relay_only_nodes(&testbed, &coturn, SECRET, [&a, &b], None).await;
    let (alice, bob) = (&nodes[0], &nodes[1]);
    let mut bob_inbox = bob.messages().unwrap();
    let mut alice_inbox = alice.messages().unwrap();
    let connecting = Instant::now();
    timeout(PROMPT, alice.connect_peer(&b))
        .await
        .expect("connect within bound")
        .expect("alice connects to bob through the relay");

    eprintln!("connected through TURN in {:?}", connecting.elapsed());
    let started = Instant::now();
    for i in 0..20 {
        timeout(PROMPT, alice.send(&b, format!("to bob {i}"))).await.unwrap().unwrap();
        timeout(PROMPT, bob.send(&a, format!("to alice {i}"))).await.unwrap().unwrap();
    }
    for i in 0..20 {
        let message = timeout(PROMPT, bob_inbox.recv()).await.unwrap().unwrap();
        assert_eq!(message.payload.as_ref(), format!("to bob {i}").as_bytes());
        let message = timeout(PROMPT, alice_inbox.recv()).await.unwrap().unwrap();
        assert_eq!(message.payload.as_ref(), format!("to alice {i}").as_bytes());
    }
    eprintln!("40 acknowledged messages through TURN in {:?}", started.elapsed());
    assert!(
        coturn.allocations() >= 2,
        "each peer allocates a relay: {} seen",
        coturn.allocations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_turn_secret_leaves_relay_only_peers_unconnected() {
    let Some(coturn) = start_coturn() else { return };
    let testbed = LoopbackTestbed::start().await.unwrap();
    let (a, b) = (id("alice"), id("bob"));
    let wrong = b"not-the-turn-servers-secret";
    let bound = Some(Duration::from_secs(3));
    let nodes = relay_only_nodes(&testbed, &coturn, wrong, [&a, &b], bound).await;
    let outcome =
        timeout(PROMPT, nodes[0].connect_peer(&b)).await.expect("connect ends within its bound");
    assert!(outcome.is_err(), "no relay allocation, no candidate: the connect must fail");
    assert_eq!(coturn.allocations(), 0, "coturn must have refused every allocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_handed_out_by_the_signaling_server_carry_the_data() {
    let Some(coturn) = start_coturn() else { return };
    let grants = TurnGrants {
        secret: TurnSecret::new(SECRET.to_vec()).unwrap(),
        turn_urls: vec![coturn.url()],
        stun_urls: Vec::new(),
        ttl: Duration::from_secs(600),
    };
    let testbed = LoopbackTestbed::start_with(|config| config.turn = Some(grants)).await.unwrap();
    let (a, b) = (id("alice"), id("bob"));
    let mut nodes = Vec::new();
    for peer in [&a, &b] {
        // No ICE server of its own: only what `registered` hands out.
        let mut config = testbed.config(peer);
        config.rtc.ice_transport_policy = IceTransportPolicy::Relay;
        nodes.push(testbed.online(config).await.unwrap());
    }
    let mut bob_inbox = nodes[1].messages().unwrap();
    timeout(PROMPT, nodes[0].connect_peer(&b))
        .await
        .expect("connect within bound")
        .expect("alice connects to bob through the relay the server named");
    timeout(PROMPT, nodes[0].send(&b, "through the granted relay")).await.unwrap().unwrap();
    let message = timeout(PROMPT, bob_inbox.recv()).await.unwrap().unwrap();
    assert_eq!(message.payload.as_ref(), b"through the granted relay");
    assert!(
        coturn.allocations() >= 2,
        "each peer allocates a relay: {} seen",
        coturn.allocations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_selected_route_names_the_relay_or_the_direct_path() {
    let Some(coturn) = start_coturn() else { return };
    let (a, b) = (id("alice"), id("bob"));

    // Relay-only: this node's end of the selected pair is a relay candidate
    // on coturn's relay address, and the route says relayed.
    let relayed = LoopbackTestbed::start().await.unwrap();
    let nodes = relay_only_nodes(&relayed, &coturn, SECRET, [&a, &b], None).await;
    assert_eq!(nodes[0].peer_route(&b).await, None, "no peer connection, no route");
    timeout(PROMPT, nodes[0].connect_peer(&b)).await.unwrap().unwrap();
    for (node, peer) in [(&nodes[0], &b), (&nodes[1], &a)] {
        let route = timeout(PROMPT, node.peer_route(peer)).await.unwrap().expect("a route");
        eprintln!("relay-only {} -> {peer}: {route}", node.peer_id());
        assert!(route.is_relayed(), "{route}");
        assert_eq!(route.local.kind, CandidateKind::Relay, "{route}");
        assert_eq!(route.local.protocol, CandidateProtocol::Udp, "{route}");
        assert_eq!(route.local.address, "127.0.0.1", "coturn's relay address: {route}");
    }

    // All candidates, TURN configured too: on loopback the direct host path
    // wins, and the route says so.
    let direct = LoopbackTestbed::start().await.unwrap();
    let mut nodes = Vec::new();
    for peer in [&a, &b] {
        let mut config = direct.config(peer);
        config.rtc.ice_servers = vec![ice_server(&coturn, peer, SECRET)];
        nodes.push(direct.online(config).await.unwrap());
    }
    timeout(PROMPT, nodes[0].connect_peer(&b)).await.unwrap().unwrap();
    for (node, peer) in [(&nodes[0], &b), (&nodes[1], &a)] {
        let route = timeout(PROMPT, node.peer_route(peer)).await.unwrap().expect("a route");
        eprintln!("all candidates {} -> {peer}: {route}", node.peer_id());
        assert!(!route.is_relayed(), "{route}");
        assert_eq!(route.local.kind, CandidateKind::Host, "{route}");
    }
}
