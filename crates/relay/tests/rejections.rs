//! Everything the server refuses: bad credentials, impersonation, malformed,
//! unknown, oversized and binary frames, abuse, late or wrong registration.
//! Each gets its documented error code / close code, and the server keeps
//! serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{Harness, next_event, peer, secret};
use serde_json::json;
use tether_relay::auth::{Authenticator, mint_token};
use tether_signal::protocol::{ErrorCode, RelayPayload, close_code};
use tether_signal::{SignalClient, SignalError, SignalErrorKind, SignalEvent};

/// Asserts that alice can still relay to bob through the server.
async fn server_still_relays(harness: &Harness) {
    let (mut alice, _) = harness.raw_registered("witness-a", None).await;
    let (mut bob, _) = harness.raw_registered("witness-b", None).await;
    alice.send_json(&json!({"type": "bye", "to": "witness-b"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "bye", "from": "witness-a"}));
    drop(alice);
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_rejection() {
    let harness = Harness::start().await;
    let mut config = harness.client_config("alice", &harness.url());
    config.token = harness.token("bob");
    let (client, _events) = SignalClient::new(config).unwrap();
    let error = client.connect_once().await.unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::AuthRejected, "{error}");
    assert!(
        matches!(error, SignalError::AuthRejected { ref message } if message == "token issued for another peer id")
    );
    assert!(!client.is_connected());

    // New credentials fix it without a new client.
    client.set_token(harness.token("alice"));
    client.connect_once().await.unwrap();
    assert_eq!(harness.server.metrics().rejections_for(ErrorCode::AuthFailed), 1);
}

#[tokio::test]
async fn expired_and_forged_tokens_are_refused_with_close_4001() {
    let harness = Harness::start().await;
    let expired = mint_token(&secret(), &peer("alice"), SystemTime::now() - Duration::from_secs(1));
    let foreign =
        tether_relay::auth::HmacSecret::new(b"some-other-secret-entirely".to_vec()).unwrap();
    let forged = mint_token(&foreign, &peer("alice"), SystemTime::now() + Duration::from_secs(60));
    for (token, reason) in [(expired, "token expired"), (forged, "token signature invalid")] {
        let mut socket = harness.raw().await;
        socket
            .send_json(
                &json!({"type": "register", "version": 1, "peer_id": "alice", "token": token}),
            )
            .await;
        let (frames, code) = socket.until_close().await;
        assert_eq!(
            frames,
            vec![json!({"type": "error", "code": "auth_failed", "message": reason})]
        );
        assert_eq!(code, Some(close_code::AUTH_FAILED));
    }
    server_still_relays(&harness).await;
}

#[tokio::test]
async fn static_token_file_admits_listed_peers_only() {
    let auth = Authenticator::default().add_token_file_text("inline", "alice letmein\n").unwrap();
    let harness = Harness::start_with(|config| config.auth = auth).await;
    let mut config = harness.client_config("alice", &harness.url());
    config.token = "letmein".into();
    let (client, _events) = SignalClient::new(config.clone()).unwrap();
    client.connect_once().await.unwrap();
    config.token = "guess".into();
    let (intruder, _events) = SignalClient::new(config).unwrap();
    assert_eq!(intruder.connect_once().await.unwrap_err().kind(), SignalErrorKind::AuthRejected);
}

#[tokio::test]
async fn a_peer_cannot_send_as_someone_else() {
    let harness = Harness::start().await;
    let (mut mallory, _) = harness.raw_registered("mallory", None).await;
    let (mut bob, _) = harness.raw_registered("bob", None).await;
    mallory
        .send_json(&json!({"type": "offer", "to": "bob", "from": "alice", "sdp": "v=0", "id": 9}))
        .await;
    let error = mallory.next_json().await;
    assert_eq!(error["code"], "impersonation");
    assert_eq!(error["id"], 9);
    // Bob got nothing from it: the next thing he sees is mallory's honest message.
    mallory.send_json(&json!({"type": "bye", "to": "bob"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "bye", "from": "mallory"}));
    // Naming yourself in `from` is allowed; the server stamps it anyway.
    mallory.send_json(&json!({"type": "ice_restart", "to": "bob", "from": "mallory"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "ice_restart", "from": "mallory"}));
    assert_eq!(harness.server.metrics().rejections_for(ErrorCode::Impersonation), 1);
}

#[tokio::test]
async fn bad_frames_get_their_documented_error_and_the_connection_survives() {
    let harness = Harness::start_with(|config| config.limits.max_bad_frames = 100).await;
    let (mut socket, _) = harness.raw_registered("alice", None).await;
    let oversized = format!(r#"{{"type":"offer","to":"bob","sdp":"{}"}}"#, "x".repeat(5000));
    let cases: Vec<(&str, String)> = vec![
        ("malformed_json", "{not json".into()),
        ("malformed_json", "[1,2,3]".into()),
        ("invalid_message", r#"{"to":"bob"}"#.into()),
        ("invalid_message", r#"{"type":"offer","to":"bob"}"#.into()),
        ("unknown_type", r#"{"type":"teleport","to":"bob"}"#.into()),
        ("invalid_peer_id", r#"{"type":"bye","to":"../etc"}"#.into()),
        ("frame_too_large", oversized),
        (
            "already_registered",
            format!(
                r#"{{"type":"register","version":1,"peer_id":"alice","token":"{}"}}"#,
                harness.token("alice")
            ),
        ),
    ];
    for (code, frame) in &cases {
        socket.send_text(frame).await;
        let error = socket.next_json().await;
        assert_eq!(error["type"], "error", "{frame}");
        assert_eq!(error["code"], *code, "{frame} -> {error}");
    }
    socket.send_binary(&[0xff, 0x00, 0x13, 0x37]).await;
    assert_eq!(socket.next_json().await["code"], "binary_not_supported");
    // Still registered and serving: a relay from this very socket works.
    let (mut bob, _) = harness.raw_registered("bob", None).await;
    socket.send_json(&json!({"type": "bye", "to": "bob"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "bye", "from": "alice"}));
    let metrics = harness.server.metrics();
    assert_eq!(metrics.rejections_for(ErrorCode::MalformedJson), 2);
    assert_eq!(metrics.rejections_for(ErrorCode::BinaryNotSupported), 1);
    assert_eq!(metrics.rejections_for(ErrorCode::FrameTooLarge), 1);
}

#[tokio::test]
async fn relaying_before_register_is_refused() {
    let harness = Harness::start().await;
    let mut socket = harness.raw().await;
    socket.send_json(&json!({"type": "offer", "to": "bob", "sdp": "v=0", "id": 1})).await;
    let error = socket.next_json().await;
    assert_eq!(error["code"], "not_registered");
    assert_eq!(error["id"], 1);
}

#[tokio::test]
async fn repeated_abuse_closes_the_socket_and_spares_the_others() {
    let harness = Harness::start().await; // max_bad_frames = 5
    let (mut abuser, _) = harness.raw_registered("abuser", None).await;
    for _ in 0..5 {
        abuser.send_text("garbage").await;
    }
    let (frames, code) = abuser.until_close().await;
    let codes: Vec<_> =
        frames.iter().map(|frame| frame["code"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        codes,
        ["malformed_json"; 5].iter().copied().chain(["too_many_errors"]).collect::<Vec<_>>()
    );
    assert_eq!(code, Some(close_code::TOO_MANY_ERRORS));
    server_still_relays(&harness).await;
    harness
        .wait_metrics("the abuser's session to end", |metrics| {
            metrics.session_ends_for("abuse") == 1
        })
        .await;
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_closes_with_1009() {
    let harness = Harness::start().await; // hard cap 16 KiB
    let (mut socket, _) = harness.raw_registered("alice", None).await;
    socket.send_text(&"x".repeat(64 * 1024)).await;
    let (frames, code) = socket.until_close().await;
    assert_eq!(frames.first().map(|frame| frame["code"].clone()), Some(json!("frame_too_large")));
    assert_eq!(code, Some(close_code::MESSAGE_TOO_BIG));
    server_still_relays(&harness).await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_register_timeout() {
    let harness = Harness::start_with(|config| {
        config.limits.register_timeout = Duration::from_millis(200);
    })
    .await;
    let mut socket = harness.raw().await;
    let (frames, code) = socket.until_close().await;
    assert_eq!(
        frames,
        vec![
            json!({"type": "error", "code": "register_timeout", "message": "no register in time"})
        ]
    );
    assert_eq!(code, Some(close_code::REGISTER_TIMEOUT));
}

#[tokio::test]
async fn a_protocol_version_mismatch_is_a_config_rejection() {
    let harness = Harness::start().await;
    let mut socket = harness.raw().await;
    socket
        .send_json(&json!({"type": "register", "version": 99, "peer_id": "alice", "token": harness.token("alice")}))
        .await;
    let (frames, code) = socket.until_close().await;
    assert_eq!(frames[0]["code"], "version_unsupported");
    assert_eq!(code, Some(close_code::VERSION_UNSUPPORTED));
}

#[tokio::test]
async fn client_side_configuration_errors_are_config_rejections() {
    let harness = Harness::start().await;
    for url in ["http://127.0.0.1:1/ws", "ftp://127.0.0.1:1/ws", "not a url"] {
        let config = harness.client_config("alice", url);
        let error = SignalClient::new(config).unwrap_err();
        assert_eq!(error.kind(), SignalErrorKind::ConfigRejected, "{url}: {error}");
    }
    // The wrong path: the server answers the upgrade with 404.
    let url = format!("ws://{}/nope", harness.addr());
    let (client, _events) = SignalClient::new(harness.client_config("alice", &url)).unwrap();
    let error = client.connect_once().await.unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::ConfigRejected, "{error}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let harness = Harness::start().await;
    let url = format!("ws://{addr}/ws");
    let (client, _events) = SignalClient::new(harness.client_config("alice", &url)).unwrap();
    let error = client.connect_once().await.unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Unreachable, "{error}");
}

#[tokio::test]
async fn an_unregistered_target_is_not_an_abuse() {
    let harness = Harness::start().await; // max_bad_frames = 5
    let (alice, mut events) = harness.client("alice").await;
    for _ in 0..8 {
        alice.send(&peer("ghost"), RelayPayload::Bye).unwrap();
    }
    for _ in 0..8 {
        assert!(matches!(
            next_event(&mut events).await,
            SignalEvent::ServerError { code: ErrorCode::PeerUnknown, .. }
        ));
    }
    assert!(alice.is_connected());
}

/// A `register` in the upgrade request is refused exactly like a `register` frame: the
/// same error, the same close.
#[tokio::test]
async fn a_refused_register_in_the_upgrade_request_closes_like_a_frame() {
    let harness = Harness::start().await;
    let expired = mint_token(&secret(), &peer("alice"), SystemTime::now() - Duration::from_secs(1));
    let register = json!({"type": "register", "version": 1, "peer_id": "alice", "token": expired});
    let (mut socket, answer) =
        common::RawSocket::connect_registering(&harness.url(), &register).await;
    assert_eq!(answer.as_deref(), Some("taken"));
    let (frames, code) = socket.until_close().await;
    assert_eq!(
        frames,
        vec![json!({"type": "error", "code": "auth_failed", "message": "token expired"})]
    );
    assert_eq!(code, Some(close_code::AUTH_FAILED));
    // Not JSON at all: the documented error, and the connection may still register.
    let (mut socket, _) =
        common::RawSocket::connect_registering(&harness.url(), &json!("garbage")).await;
    assert_eq!(socket.next_json().await["code"], "malformed_json");
    socket
        .send_json(&json!({"type": "register", "version": 1, "peer_id": "bob", "token": harness.token("bob")}))
        .await;
    assert_eq!(socket.next_json().await["type"], "registered");
    server_still_relays(&harness).await;
}
