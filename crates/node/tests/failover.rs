//! Two real nodes given two signaling servers of one deployment: when the
//! server they use goes away, each node's Supervisor restores onto the other
//! server, they find each other there, and messages keep flowing with
//! nothing lost or duplicated.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use tether::live::testbed::Traffic;
use tether::live::{RtcNodeConfig, SignalingTiming};
use tether::{Availability, NetworkSnapshot, PeerId, RtcNode, Transport, TransportSet};
use tether_relay::auth::{Authenticator, HmacSecret, mint_token_for};
use tether_relay::{RunningServer, ServerConfig, SignalServer};
use tether_rtc::RtcConfig;
use tokio::time::{Instant, timeout};

const PROMPT: Duration = Duration::from_secs(20);

fn id(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

async fn server(secret: &HmacSecret) -> RunningServer {
    let config = ServerConfig::new(Authenticator::with_secret(secret.clone()));
    SignalServer::bind(config).await.unwrap().spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_move_to_the_fallback_server_when_theirs_goes_away() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let secret = HmacSecret::ephemeral();
    let (first, second) = (server(&secret).await, server(&secret).await);
    let (a, b) = (id("alice"), id("bob"));
    let start = |peer: &PeerId| {
        let token = mint_token_for(&secret, peer, Duration::from_secs(600));
        let mut config = RtcNodeConfig::new(peer.clone(), first.websocket_url(), token);
        config.fallback_signaling_urls = vec![second.websocket_url()];
        config.room = Some("failover".into());
        config.rtc = RtcConfig::loopback();
        config.signaling = SignalingTiming::responsive();
        RtcNode::start(config).unwrap()
    };
    let (alice, bob) = (start(&a), start(&b));
    let online =
        NetworkSnapshot::new(1, Availability::Available, TransportSet::only(Transport::Wifi));
    alice.handle().network_path_changed(online).await.unwrap();
    bob.handle().network_path_changed(online).await.unwrap();
    let mut alice_inbox = alice.messages().unwrap();
    let mut bob_inbox = bob.messages().unwrap();
    timeout(PROMPT, alice.connect_peer(&b)).await.unwrap().unwrap();

    let mut traffic = Traffic::default();
    let exchange = async |traffic: &mut Traffic, count: usize| {
        for _ in 0..count {
            let message = traffic.next_message(&a, &b);
            timeout(PROMPT, alice.send(&b, message)).await.unwrap().unwrap();
            traffic.sent(&a, &b);
            let message = traffic.next_message(&b, &a);
            timeout(PROMPT, bob.send(&a, message)).await.unwrap().unwrap();
            traffic.sent(&b, &a);
        }
    };
    exchange(&mut traffic, 5).await;
    assert_eq!(first.metrics().connections_open, 2);

    first.shutdown().await;
    // Both nodes notice, restore onto the second server and meet there.
    let deadline = Instant::now() + PROMPT;
    while second.metrics().connections_open < 2 {
        assert!(Instant::now() < deadline, "the nodes did not move to the fallback server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exchange(&mut traffic, 5).await;

    let deadline = Instant::now() + PROMPT;
    while traffic.summary().lost > 0 {
        assert!(Instant::now() < deadline, "messages did not arrive: {:?}", traffic.summary());
        tokio::select! {
            Some(message) = alice_inbox.recv() => traffic.received(&a, &message),
            Some(message) = bob_inbox.recv() => traffic.received(&b, &message),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    let summary = traffic.summary();
    assert_eq!((summary.lost, summary.duplicated), (0, 0), "{summary:?}");
}
