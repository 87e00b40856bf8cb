//! A client with several servers of one deployment (`fallback_urls`): when
//! the one in use dies, refuses, or swallows the handshake, the next attempt
//! registers on another, within one `connect_timeout`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../relay/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Harness, Proxy, next_event, peer};
use tether_signal::protocol::RelayPayload;
use tether_signal::{SignalClient, SignalEvent, SignalEvents};
use tokio::time::Instant;

/// Waits until `events` shows a relay of `payload` from `from`.
async fn expect_relay(events: &mut SignalEvents, from: &str, payload: RelayPayload) {
    match next_event(events).await {
        SignalEvent::Relay { from: sender, payload: got } => {
            assert_eq!((sender, got), (peer(from), payload));
        }
        other => panic!("expected a relay from {from}, got {other:?}"),
    }
}

#[tokio::test]
async fn when_the_server_dies_the_next_attempt_registers_on_the_fallback() {
    let first = Harness::start().await;
    let second = Harness::start().await;
    let mut config = first.client_config("alice", &first.url());
    config.fallback_urls = vec![second.url()];
    let (alice, mut events) = SignalClient::new(config).unwrap();
    let connected = alice.connect_once().await.unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
    assert_eq!(first.server.metrics().connections_open, 1);

    first.server.shutdown().await;
    // The loss is reported like any other (the Supervisor restores).
    loop {
        match next_event(&mut events).await {
            SignalEvent::Lost { .. } => break,
            SignalEvent::ServerError { .. } => {}
            other => panic!("expected the loss, got {other:?}"),
        }
    }
    let connected = alice.connect_once().await.expect("registers on the fallback");
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));

    let (bob, mut bob_events) = second.client("bob").await;
    alice.send(&peer("bob"), RelayPayload::Bye).unwrap();
    expect_relay(&mut bob_events, "alice", RelayPayload::Bye).await;
    bob.send(&peer("alice"), RelayPayload::IceRestart).unwrap();
    expect_relay(&mut events, "bob", RelayPayload::IceRestart).await;
}

#[tokio::test]
async fn a_refusing_first_server_is_skipped_within_the_same_attempt() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("ws://{}/ws", closed.local_addr().unwrap());
    drop(closed);
    let live = Harness::start().await;
    let mut config = live.client_config("alice", &dead_url);
    config.fallback_urls = vec![live.url()];
    let (alice, mut events) = SignalClient::new(config).unwrap();
    let connected = alice.connect_once().await.expect("the second server takes over at once");
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
}

#[tokio::test]
async fn a_server_that_swallows_the_handshake_gets_only_its_share_of_the_timeout() {
    let live = Harness::start().await;
    let proxy = Proxy::start(live.addr()).await;
    let _gate = proxy.hold_next(); // the first connection through the proxy hangs
    let mut config = live.client_config("alice", &proxy.url());
    config.fallback_urls = vec![live.url()];
    config.connect_timeout = Duration::from_secs(4);
    let (alice, mut events) = SignalClient::new(config).unwrap();
    let started = Instant::now();
    let connected = alice.connect_once().await.expect("the second server within the same attempt");
    let took = started.elapsed();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
    // Half the bound went to the hung server; the rest sufficed.
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "took {took:?}");

    // The server that worked is preferred from now on: the next attempt
    // goes there first and never meets the proxy, which would hang it again
    // for its share (2 s).
    let _second_gate = proxy.hold_next();
    let started = Instant::now();
    let connected = alice.connect_once().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
}
