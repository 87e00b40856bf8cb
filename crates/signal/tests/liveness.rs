//! Half-open detection through a proxy that silently black-holes traffic:
//! the probe fails within its bound, the background ping declares the link
//! dead within the configured window, and only spontaneous losses are
//! reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, PROMPT, Proxy, next_event};
use tether_signal::{LossCause, SignalClient, SignalErrorKind, SignalEvent};
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn a_healthy_link_answers_its_probe() {
    let harness = Harness::start().await;
    let (client, _events) = harness.client("alice").await;
    let rtt = client.probe_alive(Duration::from_secs(1)).await.unwrap();
    assert!(rtt < Duration::from_secs(1));
}

#[tokio::test]
async fn probe_without_a_link_fails_as_closed() {
    let harness = Harness::start().await;
    let (client, _events) =
        SignalClient::new(harness.client_config("alice", &harness.url())).unwrap();
    let error = client.probe_alive(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Closed);
}

#[tokio::test]
async fn a_black_holed_link_fails_its_probe_then_is_declared_dead() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let mut config = harness.client_config("alice", &proxy.url());
    config.ping_interval = Duration::from_millis(100);
    config.dead_after = Duration::from_millis(700);
    let (client, mut events) = SignalClient::new(config).unwrap();
    client.connect_once().await.unwrap();
    assert!(matches!(next_event(&mut events).await, SignalEvent::Connected(_)));
    client.probe_alive(Duration::from_secs(1)).await.unwrap();

    proxy.blackhole_existing();
    let blackholed_at = Instant::now();
    let bound = Duration::from_millis(250);
    let error = client.probe_alive(bound).await.unwrap_err();
    let waited = blackholed_at.elapsed();
    assert_eq!(error.kind(), SignalErrorKind::Timeout, "{error}");
    assert!(waited >= bound, "probe gave up early: {waited:?}");
    assert!(waited < bound + Duration::from_millis(200), "probe overran its bound: {waited:?}");
    assert!(client.is_connected(), "a failed probe does not close the link");

    let event = timeout(PROMPT, events.recv()).await.unwrap().unwrap();
    let detected = blackholed_at.elapsed();
    match event {
        SignalEvent::Lost { cause, .. } => {
            assert_eq!(cause, LossCause::PingTimeout { silent_for: Duration::from_millis(700) });
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    // The last inbound frame came at most one ping interval (plus a round
    // trip) before the black hole, so death is declared inside this window.
    assert!(detected >= Duration::from_millis(500), "declared dead too early: {detected:?}");
    assert!(detected <= Duration::from_millis(1000), "declared dead too late: {detected:?}");
    assert!(!client.is_connected());
    assert_eq!(
        client
            .send(&common::peer("bob"), tether_signal::protocol::RelayPayload::Bye)
            .unwrap_err()
            .kind(),
        SignalErrorKind::Closed
    );
}

#[tokio::test]
async fn a_deliberate_disconnect_is_not_a_loss() {
    let harness = Harness::start().await;
    let (client, mut events) = harness.client("alice").await;
    client.disconnect().await;
    assert!(!client.is_connected());
    // Reconnect and check that the first event after the disconnect is the
    // new Connected, not a Lost for the old link.
    client.connect_once().await.unwrap();
    match next_event(&mut events).await {
        SignalEvent::Connected(connected) => assert_eq!(connected.generation.get(), 2),
        other => panic!("expected Connected, got {other:?}"),
    }
    harness
        .wait_metrics("the first session to end", |metrics| metrics.session_ends_for("closed") == 1)
        .await;
}

#[tokio::test]
async fn a_server_shutdown_is_a_loss_with_close_code_1001() {
    let harness = Harness::start().await;
    let (client, mut events) = harness.client("alice").await;
    harness.server.shutdown().await;
    match next_event(&mut events).await {
        SignalEvent::Lost { cause, .. } => assert_eq!(
            cause,
            LossCause::ClosedByServer { code: 1001, reason: "server shutting down".into() }
        ),
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(!client.is_connected());
}

#[tokio::test]
async fn a_hung_handshake_times_out_within_the_connect_bound() {
    let harness = Harness::start().await;
    let proxy = Proxy::start(harness.addr()).await;
    let _gate = proxy.hold_next();
    let mut config = harness.client_config("alice", &proxy.url());
    config.connect_timeout = Duration::from_millis(300);
    let (client, _events) = SignalClient::new(config).unwrap();
    let started = Instant::now();
    let error = client.connect_once().await.unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Timeout, "{error}");
    assert!(started.elapsed() < Duration::from_millis(600));
}

#[tokio::test]
async fn the_server_pings_quiet_clients() {
    let harness = Harness::start_with(|config| {
        config.limits.ping_interval = Duration::from_millis(50);
    })
    .await;
    let (mut socket, _) = harness.raw_registered("browser", None).await;
    let frame = timeout(PROMPT, futures_util::StreamExt::next(&mut socket.socket))
        .await
        .expect("no ping from the server")
        .unwrap()
        .unwrap();
    assert!(frame.is_ping(), "{frame:?}");
}

#[tokio::test]
async fn a_client_that_falls_silent_is_closed_with_4006() {
    let harness = Harness::start_with(|config| {
        config.limits.idle_timeout = Duration::from_millis(300);
        config.limits.ping_interval = Duration::from_secs(60);
    })
    .await;
    let (mut socket, _) = harness.raw_registered("sleepy", None).await;
    // Not reading means not answering pings either; the server closes.
    harness
        .wait_metrics("the idle session to end", |metrics| {
            metrics.session_ends_for("idle_timeout") == 1
        })
        .await;
    let (_, code) = socket.until_close().await;
    assert_eq!(code, Some(tether_signal::protocol::close_code::IDLE_TIMEOUT));
}

#[tokio::test]
async fn a_severed_link_is_reported_as_a_loss_and_the_server_lets_go() {
    let harness = Harness::start().await;
    let (client, mut events) = harness.client("alice").await;
    assert!(client.sever());
    match next_event(&mut events).await {
        SignalEvent::Lost { cause: LossCause::Io(detail), .. } => {
            assert!(detail.contains("severed"), "{detail}")
        }
        other => panic!("expected Lost(Io), got {other:?}"),
    }
    assert!(!client.is_connected());
    assert!(!client.sever(), "nothing left to sever");
    // A fresh connection works again.
    client.connect_once().await.unwrap();
    assert!(client.is_connected());
}
