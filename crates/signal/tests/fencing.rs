//! Connection generations: a slow, superseded connect can never become
//! current, and `disconnect()` fences attempts still in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The harness is shared with tether-relay's tests (one file, see its docs).
#[path = "../../relay/tests/common/mod.rs"]
mod common;

use common::{Harness, Proxy, next_event, peer};
use tether_signal::protocol::RelayPayload;
use tether_signal::{SignalClient, SignalErrorKind, SignalEvent};

#[tokio::test]
async fn a_slow_superseded_connect_cannot_win() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let (client, mut events) =
        SignalClient::new(harness.client_config("alice", &proxy.url())).unwrap();

    let gate = proxy.hold_next();
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.connect_once().await }
    });
    proxy.wait_accepted(1).await; // the slow attempt is stuck in its handshake
    let fast = client.connect_once().await.unwrap();
    assert_eq!(fast.generation.get(), 2);

    gate.release();
    let error = slow.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Cancelled, "{error}");
    assert_eq!(client.generation(), Some(fast.generation));
    assert!(client.is_connected());

    // The server still routes alice to the fast connection, and the client
    // reported no loss: the next events are Connected(2) and the relay.
    let (bob, _bob_events) = harness.client("bob").await;
    bob.send(&peer("alice"), RelayPayload::IceRestart).unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(fast));
    assert_eq!(
        next_event(&mut events).await,
        SignalEvent::Relay { from: peer("bob"), payload: RelayPayload::IceRestart }
    );
    assert_eq!(harness.server.metrics().registrations_total, 2, "alice once, bob once");
}

#[tokio::test]
async fn disconnect_fences_an_attempt_in_flight() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let (client, _events) =
        SignalClient::new(harness.client_config("alice", &proxy.url())).unwrap();
    let gate = proxy.hold_next();
    let attempt = tokio::spawn({
        let client = client.clone();
        async move { client.connect_once().await }
    });
    proxy.wait_accepted(1).await;
    client.disconnect().await;
    gate.release();
    let error = attempt.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Cancelled, "{error}");
    assert!(!client.is_connected());
    // A connect started after the disconnect is not fenced.
    client.connect_once().await.unwrap();
    assert!(client.is_connected());
}

#[tokio::test]
async fn a_newer_connect_replaces_the_current_link_without_a_loss() {
    let harness = Harness::start().await;
    let (client, mut events) = harness.client("alice").await;
    let second = client.connect_once().await.unwrap();
    assert_eq!(second.generation.get(), 2);
    assert!(second.replaced_previous, "the server replaced the first registration");
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(second.clone()));
    let (bob, _bob_events) = harness.client("bob").await;
    bob.send(&peer("alice"), RelayPayload::Bye).unwrap();
    assert_eq!(
        next_event(&mut events).await,
        SignalEvent::Relay { from: peer("bob"), payload: RelayPayload::Bye }
    );
    assert_eq!(client.generation(), Some(second.generation));
}

/// The server replaces the current link before our newer attempt hears
/// `registered`: the old link's `replaced` is our own doing, not a loss.
#[tokio::test]
async fn being_replaced_by_our_own_newer_attempt_is_not_a_loss() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let (client, mut events) =
        SignalClient::new(harness.client_config("alice", &proxy.url())).unwrap();
    let first = client.connect_once().await.unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(first));

    let gate = proxy.hold_next_after_handshake();
    let attempt = tokio::spawn({
        let client = client.clone();
        async move { client.connect_once().await }
    });
    // The server registered the new socket and closed the old link with
    // `replaced`; the old link noticed.
    wait_until("the old link to end", || !client.is_connected()).await;
    gate.release();
    let second = attempt.await.unwrap().unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(second));
}

/// ...but if that attempt then fails, the loss is reported after all.
#[tokio::test]
async fn the_held_back_loss_is_reported_when_our_attempt_fails() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let mut config = harness.client_config("alice", &proxy.url());
    config.connect_timeout = std::time::Duration::from_millis(400);
    let (client, mut events) = SignalClient::new(config).unwrap();
    let first = client.connect_once().await.unwrap();
    assert_eq!(next_event(&mut events).await, SignalEvent::Connected(first.clone()));

    let _gate = proxy.hold_next_after_handshake(); // `registered` never arrives
    let error = client.connect_once().await.unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Timeout, "{error}");
    assert_eq!(
        next_event(&mut events).await,
        SignalEvent::Lost {
            generation: first.generation,
            cause: tether_signal::LossCause::Replaced
        }
    );
    assert!(!client.is_connected());
}

/// Polls `condition` until it holds, failing after a bounded wait.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + common::PROMPT;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(2));
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tick.tick().await;
    }
}
