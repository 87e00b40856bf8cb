//! The HTTP side: health, Prometheus metrics, extra routes, static files,
//! and refusing non-WebSocket requests on `/ws`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Harness, http_get, next_event, peer};
use tether_relay::ExtraRoutes;
use tether_signal::protocol::RelayPayload;

#[tokio::test]
async fn healthz_answers_ok() {
    let harness = Harness::start().await;
    assert_eq!(http_get(harness.addr(), "/healthz").await, (200, "ok\n".to_owned()));
}

#[tokio::test]
async fn metrics_count_connections_relays_and_rejections() {
    let harness = Harness::start().await;
    let (alice, mut alice_events) = harness.client("alice").await;
    let (_bob, mut bob_events) = harness.client("bob").await;
    alice.send(&peer("bob"), RelayPayload::IceRestart).unwrap();
    next_event(&mut bob_events).await;
    alice.send(&peer("nobody"), RelayPayload::Bye).unwrap();
    next_event(&mut alice_events).await;

    let (status, body) = http_get(harness.addr(), "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE tether_signal_connections_open gauge",
        "tether_signal_connections_open 2",
        "tether_signal_peers_registered 2",
        "tether_signal_registrations_total 2",
        "tether_signal_register_ice_restarts_total 0",
        "tether_signal_relayed_messages_total{type=\"ice_restart\"} 1",
        "tether_signal_relayed_messages_total{type=\"offer\"} 0",
        "tether_signal_rejections_total{reason=\"peer_unknown\"} 1",
        "tether_signal_rejections_total{reason=\"auth_failed\"} 0",
    ] {
        assert!(body.lines().any(|candidate| candidate == line), "missing {line:?} in\n{body}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_plain_gets_on_ws_are_426() {
    let harness = Harness::start().await;
    assert_eq!(http_get(harness.addr(), "/nope").await.0, 404);
    assert_eq!(http_get(harness.addr(), "/ws").await.0, 426);
}

#[tokio::test]
async fn extra_routes_and_a_static_dir_are_served() {
    let dir = std::env::temp_dir().join(format!("tether-signal-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>tether</h1>").unwrap();
    std::fs::write(dir.join("app/main.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join(".secret"), "hidden").unwrap();
    let static_dir = dir.clone();
    let harness = Harness::start_with(move |config| {
        config.static_dir = Some(static_dir);
        config.extra_routes = Some(ExtraRoutes::new(|parts| {
            (parts.uri.path() == "/hello")
                .then(|| http::Response::new(Bytes::from_static(b"hello from the embedder")))
        }));
    })
    .await;
    let addr = harness.addr();
    assert_eq!(http_get(addr, "/hello").await, (200, "hello from the embedder".to_owned()));
    assert_eq!(http_get(addr, "/").await, (200, "<h1>tether</h1>".to_owned()));
    assert_eq!(http_get(addr, "/app/main.js").await, (200, "console.log(1)".to_owned()));
    assert_eq!(http_get(addr, "/.secret").await.0, 404);
    assert_eq!(http_get(addr, "/app/../index.html").await.0, 404);
    assert_eq!(http_get(addr, "/missing.css").await.0, 404);
    // The built-in routes win over the static directory.
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    std::fs::remove_dir_all(dir).unwrap();
}
