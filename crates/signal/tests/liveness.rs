//! Half-open detection through a proxy that silently black-holes traffic:
//! the probe fails on its own bound, the background ping declares the link
//! dead (never before `dead_after` of silence), and only spontaneous losses
//! are reported. Upper bounds on time are hang guards only (a test fails
//! instead of hanging); lower bounds are the correctness properties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The harness is shared with tether-relay's tests (one file, see its docs).
#[path = "../../relay/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Harness, PROMPT, Proxy, next_event};
use tether_signal::{LossCause, SignalClient, SignalError, SignalErrorKind, SignalEvent};
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn a_healthy_link_answers_its_probe() {
    let harness = Harness::start().await;
    let (client, _events) = harness.client("alice").await;
    let called = Instant::now();
    let rtt = client.probe_alive(Duration::from_secs(1)).await.unwrap();
    // The round trip is measured inside the call, not from somewhere else
    // (the connect, the last ping).
    assert!(rtt <= called.elapsed(), "rtt {rtt:?} longer than the call");
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
    let dead_after = Duration::from_millis(1500);
    config.ping_interval = Duration::from_millis(100);
    config.dead_after = dead_after;
    let (client, mut events) = SignalClient::new(config).unwrap();
    client.connect_once().await.unwrap();
    assert!(matches!(next_event(&mut events).await, SignalEvent::Connected(_)));
    // The pong to this probe is an inbound frame: the link's silence cannot
    // have started before this instant.
    let last_probe_sent = Instant::now();
    client.probe_alive(Duration::from_secs(1)).await.unwrap();

    proxy.blackhole_existing();
    let blackholed_at = Instant::now();
    let bound = Duration::from_millis(250);
    let error = timeout(PROMPT, client.probe_alive(bound))
        .await
        .expect("the probe ignored its bound and hung")
        .unwrap_err();
    let waited = blackholed_at.elapsed();
    assert!(
        matches!(error, SignalError::Timeout { what: "probe", after } if after == bound),
        "{error}"
    );
    assert!(waited >= bound, "probe gave up early: {waited:?}");
    // The probe gave up on its own bound, well before the link's death
    // (`dead_after` is six times the bound): the link is still up and no
    // loss was reported yet.
    assert!(client.is_connected(), "a failed probe does not close the link");
    assert!(events.try_recv().is_none(), "the link died before the probe gave up");

    // Detection: the link must be declared dead by the background ping, on
    // its own. The bound is a hang guard only; if half-open detection broke,
    // no loss would ever come and this fails.
    let event = timeout(dead_after + PROMPT, events.recv())
        .await
        .expect("a black-holed link was never declared dead")
        .expect("event stream ended");
    let detected = last_probe_sent.elapsed();
    match event {
        SignalEvent::Lost { cause, .. } => {
            assert_eq!(cause, LossCause::PingTimeout { silent_for: dead_after });
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    // Never early: the last inbound frame (at the earliest, the probe's
    // pong) came after `last_probe_sent`, and death needs `dead_after` of
    // silence after it.
    assert!(detected >= dead_after, "declared dead after {detected:?} of silence at most");
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
    let connect_timeout = Duration::from_millis(300);
    config.connect_timeout = connect_timeout;
    let (client, _events) = SignalClient::new(config).unwrap();
    let started = Instant::now();
    // The handshake is held forever: without the connect bound this would
    // hang, and the hang guard fails it (PROMPT is many times the bound).
    let error = timeout(PROMPT, client.connect_once())
        .await
        .expect("a hung handshake was not bounded")
        .unwrap_err();
    assert!(
        matches!(error, SignalError::Timeout { what: "connect", after } if after == connect_timeout),
        "{error}"
    );
    assert!(started.elapsed() >= connect_timeout, "gave up early: {:?}", started.elapsed());
    assert!(!client.is_connected());
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
