//! The fast rebuild: a probe of the existing link races a fresh connection;
//! the first healthy one is kept and the loser is fenced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The harness is shared with tether-relay's tests (one file, see its docs).
#[path = "../../relay/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Harness, Proxy, next_event, peer};
use tether_signal::protocol::RelayPayload;
use tether_signal::{Rebuilt, SignalClient, SignalEvent};
use tokio::time::Instant;

#[tokio::test]
async fn rebuild_picks_the_fresh_connection_when_the_old_one_is_black_holed() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let mut config = harness.client_config("alice", &proxy.url());
    config.dead_after = Duration::from_secs(30); // keep the ping watchdog out of it
    config.ping_interval = Duration::from_secs(10);
    let (client, mut events) = SignalClient::new(config).unwrap();
    let first = client.connect_once().await.unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(first.clone()));

    proxy.blackhole_existing();
    let probe_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let outcome = client.rebuild(probe_timeout).await.unwrap();
    let took = started.elapsed();
    let Rebuilt::Replaced { connected, previous } = outcome else {
        panic!("expected a fresh connection, got {outcome:?}");
    };
    assert_eq!(previous, Some(first.generation));
    assert!(connected.generation > first.generation);
    assert!(connected.replaced_previous, "the server moved alice to the fresh socket");
    assert!(took < probe_timeout, "did not wait for the probe to time out: {took:?}");
    assert_eq!(client.generation(), Some(connected.generation));

    // Relays reach the new link; the old one was fenced without a Lost.
    let (bob, _bob_events) = harness.client("bob").await;
    bob.send(&peer("alice"), RelayPayload::IceRestart).unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
    assert_eq!(
        next_event(&mut events).await,
        SignalEvent::Relay { from: peer("bob"), payload: RelayPayload::IceRestart }
    );
}

/// The answerer's shortcut after a handoff: the fresh connection's `register` asks the named
/// peers for an ICE restart, and `Connected` says which ones the server asked. A kept link
/// registers nothing, so asks nobody.
#[tokio::test]
async fn a_rebuild_asks_for_ice_restarts_only_when_it_registers_again() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let (_bob, mut bob_events) = harness.client("bob").await;
    let mut config = harness.client_config("alice", &proxy.url());
    config.dead_after = Duration::from_secs(30);
    config.ping_interval = Duration::from_secs(10);
    let (client, mut events) = SignalClient::new(config).unwrap();
    client.connect_once().await.unwrap();
    let _ = next_event(&mut events).await;
    let asked = [peer("bob")];

    let outcome = client.rebuild_asking_ice_restart(Duration::from_secs(2), &asked).await.unwrap();
    assert!(matches!(outcome, Rebuilt::Kept { .. }), "{outcome:?}");
    client.send(&peer("bob"), RelayPayload::Bye).unwrap();
    // Messages from one sender arrive in order: an `ice_restart` would have come first.
    assert_eq!(
        next_event(&mut bob_events).await,
        SignalEvent::Relay { from: peer("alice"), payload: RelayPayload::Bye }
    );

    proxy.blackhole_existing();
    let outcome = client.rebuild_asking_ice_restart(Duration::from_secs(2), &asked).await.unwrap();
    let Rebuilt::Replaced { connected, .. } = outcome else {
        panic!("expected a fresh connection, got {outcome:?}");
    };
    assert_eq!(connected.ice_restart_requested, asked);
    assert_eq!(
        next_event(&mut bob_events).await,
        SignalEvent::Relay { from: peer("alice"), payload: RelayPayload::IceRestart }
    );
}

#[tokio::test]
async fn rebuild_keeps_a_healthy_link() {
    let harness = Harness::start().await;
    let (client, mut events) = harness.client("alice").await;
    let generation = client.generation().unwrap();
    let outcome = client.rebuild(Duration::from_secs(1)).await.unwrap();
    match outcome {
        Rebuilt::Kept { generation: kept, rtt } => {
            assert_eq!(kept, generation);
            assert!(rtt < Duration::from_secs(1));
        }
        other => panic!("expected the link to be kept, got {other:?}"),
    }
    assert_eq!(client.generation(), Some(generation));
    assert_eq!(harness.server.metrics().connections_total, 1, "no fresh socket was opened");
    let (bob, _bob_events) = harness.client("bob").await;
    bob.send(&peer("alice"), RelayPayload::Bye).unwrap();
    assert_eq!(
        next_event(&mut events).await,
        SignalEvent::Relay { from: peer("bob"), payload: RelayPayload::Bye }
    );
}

#[tokio::test]
async fn rebuild_without_a_link_connects() {
    let harness = Harness::start().await;
    let (client, _events) =
        SignalClient::new(harness.client_config("alice", &harness.url())).unwrap();
    match client.rebuild(Duration::from_millis(500)).await.unwrap() {
        Rebuilt::Replaced { previous: None, connected } => {
            assert_eq!(connected.generation.get(), 1)
        }
        other => panic!("expected a fresh connection, got {other:?}"),
    }
    assert!(client.is_connected());
}

#[tokio::test]
async fn rebuild_times_out_when_both_paths_hang() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let mut config = harness.client_config("alice", &proxy.url());
    config.dead_after = Duration::from_secs(30);
    config.ping_interval = Duration::from_secs(10);
    config.connect_timeout = Duration::from_millis(300);
    let (client, _events) = SignalClient::new(config).unwrap();
    client.connect_once().await.unwrap();
    proxy.blackhole_existing();
    let _gate = proxy.hold_next(); // the fresh attempt hangs too
    let error = client.rebuild(Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(error.kind(), tether_signal::SignalErrorKind::Timeout, "{error}");
}
