//! Registration, relaying with a server-stamped `from`, presence, and the
//! client's send errors — over real sockets on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, next_event, peer};
use tether_signal::protocol::{ErrorCode, IceCandidate, RelayPayload, RoomId};
use tether_signal::{SignalClient, SignalErrorKind, SignalEvent};

#[tokio::test]
async fn every_relay_type_arrives_stamped_with_its_sender() {
    let harness = Harness::start().await;
    let (alice, _alice_events) = harness.client("alice").await;
    let (_bob, mut bob_events) = harness.client("bob").await;
    let payloads = [
        RelayPayload::Offer { sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n".into() },
        RelayPayload::Answer { sdp: "v=0\r\n".into() },
        RelayPayload::Candidate(IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }),
        RelayPayload::Candidate(IceCandidate::default()),
        RelayPayload::IceRestart,
        RelayPayload::Bye,
        RelayPayload::Detour { sealed: "c2VhbGVk".into() },
    ];
    for payload in &payloads {
        alice.send(&peer("bob"), payload.clone()).unwrap();
    }
    for payload in payloads {
        match next_event(&mut bob_events).await {
            SignalEvent::Relay { from, payload: received } => {
                assert_eq!(from, peer("alice"));
                assert_eq!(received, payload);
            }
            other => panic!("expected a relay, got {other:?}"),
        }
    }
    let metrics = harness.server.metrics();
    assert_eq!(metrics.relayed_total, 7);
    assert!(metrics.relayed_by_type.contains(&("detour", 1)), "{:?}", metrics.relayed_by_type);
    assert_eq!(metrics.peers_registered, 2);
}

/// PROTOCOL.md §3, §4: the server says it relays `detour`, relays a well-formed one as it is,
/// and refuses a `sealed` that is not base64 without relaying it.
#[tokio::test]
async fn a_detour_is_relayed_opaque_and_a_malformed_one_refused() {
    let harness = Harness::start().await;
    let (mut alice, registered) = harness.raw_registered("alice", None).await;
    assert_eq!(registered["features"], serde_json::json!(["detour"]), "{registered}");
    let (_bob, mut bob_events) = harness.client("bob").await;
    alice
        .send_json(
            &serde_json::json!({"type": "detour", "to": "bob", "id": 4, "sealed": "not base64"}),
        )
        .await;
    let error = alice.next_json().await;
    assert_eq!(
        (&error["code"], &error["id"]),
        (&serde_json::json!("invalid_message"), &serde_json::json!(4)),
        "{error}"
    );
    alice
        .send_json(&serde_json::json!({"type": "detour", "to": "bob", "sealed": "AAECAw=="}))
        .await;
    assert_eq!(
        next_event(&mut bob_events).await,
        SignalEvent::Relay {
            from: peer("alice"),
            payload: RelayPayload::Detour { sealed: "AAECAw==".into() }
        }
    );
    assert_eq!(harness.server.metrics().relayed_total, 1, "only the well-formed one");
}

#[tokio::test]
async fn room_members_see_each_other_join_and_leave() {
    let harness = Harness::start().await;
    let room = RoomId::new("lobby").unwrap();
    let mut config = harness.client_config("alice", &harness.url());
    config.room = Some(room.clone());
    let (alice, mut alice_events) = SignalClient::new(config).unwrap();
    let connected = alice.connect_once().await.unwrap();
    assert!(connected.peers.is_empty());
    assert!(matches!(next_event(&mut alice_events).await, SignalEvent::Connected(_)));

    let mut config = harness.client_config("bob", &harness.url());
    config.room = Some(room.clone());
    let (bob, _bob_events) = SignalClient::new(config).unwrap();
    let connected = bob.connect_once().await.unwrap();
    assert_eq!(connected.peers, vec![peer("alice")]);
    assert_eq!(next_event(&mut alice_events).await, SignalEvent::PeerJoined(peer("bob")));

    // A peer outside the room is invisible to it.
    let (_carol, _carol_events) = harness.client("carol").await;

    bob.disconnect().await;
    assert_eq!(next_event(&mut alice_events).await, SignalEvent::PeerLeft(peer("bob")));
    assert!(!bob.is_connected());
}

#[tokio::test]
async fn sending_to_an_unknown_peer_reports_the_message_id() {
    let harness = Harness::start().await;
    let (alice, mut alice_events) = harness.client("alice").await;
    let id = alice.send(&peer("nobody"), RelayPayload::IceRestart).unwrap();
    match next_event(&mut alice_events).await {
        SignalEvent::ServerError { code, id: echoed, .. } => {
            assert_eq!(code, ErrorCode::PeerUnknown);
            assert_eq!(echoed, Some(id));
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(alice.is_connected(), "peer_unknown must not cost the connection");
    assert_eq!(harness.server.metrics().rejections_for(ErrorCode::PeerUnknown), 1);
}

#[tokio::test]
async fn send_without_a_connection_fails_clearly() {
    let harness = Harness::start().await;
    let (client, _events) =
        SignalClient::new(harness.client_config("alice", &harness.url())).unwrap();
    let error = client.send(&peer("bob"), RelayPayload::Bye).unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Closed);
    assert_eq!(error.to_string(), "signaling is not connected");

    client.connect_once().await.unwrap();
    client.disconnect().await;
    let error = client.send(&peer("bob"), RelayPayload::Bye).unwrap_err();
    assert_eq!(error.kind(), SignalErrorKind::Closed);
}

#[tokio::test]
async fn oversized_messages_are_refused_before_sending() {
    let harness = Harness::start().await;
    let (alice, _events) = harness.client("alice").await;
    let sdp = "a".repeat(8 * 1024);
    let error = alice.send(&peer("bob"), RelayPayload::Offer { sdp }).unwrap_err();
    assert!(error.to_string().contains("exceeds the server's limit of 4096 bytes"), "{error}");
    assert!(alice.is_connected());
}

#[tokio::test]
async fn browser_style_ping_gets_a_pong() {
    let harness = Harness::start().await;
    let (mut socket, _) = harness.raw_registered("alice", None).await;
    socket.send_text(r#"{"type":"ping","nonce":"n-1"}"#).await;
    let pong = socket.next_json().await;
    assert_eq!(pong, serde_json::json!({"type": "pong", "nonce": "n-1"}));
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_as_a_slow_consumer() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let harness = Harness::start_with(|config| {
        config.limits.outbound_queue = 4;
        // This test is about the receiver's slowness, not the sender's rate.
        config.limits.relay_rate = tether_relay::RateLimit::new(100_000, 100_000);
        // The stuck peer's close frame waits this long for it to read.
        config.limits.write_timeout = std::time::Duration::from_secs(1);
        config.limits.max_frame_bytes = 64 * 1024;
        config.limits.hard_frame_bytes = 64 * 1024;
    })
    .await;
    // `stuck` registers, then never reads again.
    let (_stuck, _) = harness.raw_registered("stuck", None).await;
    let (alice, _) = harness.raw_registered("alice", None).await;
    let (mut alice_out, mut alice_in) = alice.socket.split();
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    tokio::spawn(async move {
        while let Some(Ok(message)) = alice_in.next().await {
            if let Message::Text(text) = message {
                let _ = errors_tx.send(serde_json::from_str(text.as_str()).unwrap());
            }
        }
    });
    let offer = serde_json::json!({"type": "offer", "to": "stuck", "sdp": "x".repeat(60 * 1024)});
    // Loopback socket buffers hold a few MiB; far fewer than 2 000 offers
    // of 60 KiB fill them and then the 4-frame queue.
    let mut dropped = false;
    for index in 0..2_000u64 {
        let mut offer = offer.clone();
        offer["id"] = index.into();
        alice_out.send(Message::text(offer.to_string())).await.unwrap();
        if harness.server.metrics().rejections_for(ErrorCode::PeerUnavailable) > 0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stuck peer was never dropped: {:?}", harness.server.metrics());
    // Alice was told (maybe after peer_unknown for later offers)...
    loop {
        let frame = tokio::time::timeout(common::PROMPT, errors.recv()).await.unwrap().unwrap();
        if frame["code"] == "peer_unavailable" {
            break;
        }
    }
    // ...the stuck peer is gone, and alice is still served.
    harness
        .wait_metrics("the stuck peer's session to end", |metrics| {
            metrics.session_ends_for("slow_consumer") == 1 && metrics.peers_registered == 1
        })
        .await;
    alice_out.send(Message::text(r#"{"type":"bye","to":"stuck","id":99999}"#)).await.unwrap();
    loop {
        let frame = tokio::time::timeout(common::PROMPT, errors.recv()).await.unwrap().unwrap();
        if frame["id"] == 99999 {
            assert_eq!(frame["code"], "peer_unknown");
            break;
        }
    }
}

/// PROTOCOL.md §2: `register` in the upgrade request saves a round trip. The server says it
/// took it (`tether-register: taken`) and answers with `registered` as the first frame, with no
/// `register` frame; the peer relays like any other.
#[tokio::test]
async fn a_register_in_the_upgrade_request_registers_without_a_frame() {
    let harness = Harness::start().await;
    let (_bob, mut bob_events) = harness.client("bob").await;
    let register = serde_json::json!({
        "type": "register", "version": 1, "peer_id": "alice", "token": harness.token("alice"),
    });
    let (mut alice, answer) =
        common::RawSocket::connect_registering(&harness.url(), &register).await;
    assert_eq!(answer.as_deref(), Some("taken"));
    let registered = alice.next_json().await;
    assert_eq!(registered["type"], "registered", "{registered}");
    assert_eq!(registered["peer_id"], "alice");
    alice.send_json(&serde_json::json!({"type": "bye", "to": "bob"})).await;
    assert_eq!(
        next_event(&mut bob_events).await,
        SignalEvent::Relay { from: peer("alice"), payload: RelayPayload::Bye }
    );
    // A `register` frame after it is a second one.
    alice.send_json(&register).await;
    assert_eq!(alice.next_json().await["code"], "already_registered");
}

/// PROTOCOL.md §3: `register`'s `ice_restart` list. `registered` repeats it (each peer once, the
/// registering peer left out), then the server relays `ice_restart` to each exactly as frames
/// sent right after `registered` would be: a peer that is not there gets `peer_unknown`.
#[tokio::test]
async fn a_register_asks_its_peers_for_an_ice_restart() {
    let harness = Harness::start().await;
    let (_bob, mut bob_events) = harness.client("bob").await;
    let register = serde_json::json!({
        "type": "register", "version": 1, "peer_id": "alice", "token": harness.token("alice"),
        "ice_restart": ["bob", "alice", "ghost", "bob"],
    });
    let (mut alice, answer) =
        common::RawSocket::connect_registering(&harness.url(), &register).await;
    assert_eq!(answer.as_deref(), Some("taken"));
    let registered = alice.next_json().await;
    assert_eq!(registered["type"], "registered", "{registered}");
    assert_eq!(registered["ice_restart"], serde_json::json!(["bob", "ghost"]), "{registered}");
    assert_eq!(
        next_event(&mut bob_events).await,
        SignalEvent::Relay { from: peer("alice"), payload: RelayPayload::IceRestart }
    );
    let error = alice.next_json().await;
    assert_eq!(error["code"], "peer_unknown", "{error}");
    assert!(error.get("id").is_none(), "{error}");
    let metrics = harness.server.metrics();
    assert_eq!(metrics.register_ice_restarts, 2, "bob and ghost");
    assert_eq!(metrics.relayed_total, 1, "only bob's was delivered");
    // Without the field, `registered` has none either.
    let (_carol, registered) = harness.raw_registered("carol", None).await;
    assert!(registered.get("ice_restart").is_none(), "{registered}");
}
