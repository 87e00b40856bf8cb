//! The handshake (PROTOCOL.md §2): the client puts `register` in the upgrade request, and
//! sends it as the first frame only when the server did not say it took it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The harness is shared with tether-relay's tests (one file, see its docs).
#[path = "../../relay/tests/common/mod.rs"]
mod common;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tether_signal::protocol::{ErrorCode, REGISTER_HEADER, RelayPayload};
use tether_signal::{SignalClient, SignalEvent};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use common::{Harness, next_event, peer};

/// Against tether's server the upgrade carries `register`: no `register` frame follows (the
/// server would refuse a second one as `already_registered`).
#[tokio::test]
async fn the_client_registers_in_the_upgrade_request() {
    let harness = Harness::start().await;
    let (alice, _alice_events) = harness.client("alice").await;
    let (_bob, mut bob_events) = harness.client("bob").await;
    // A relay after the registration: once it arrived, the server has read everything alice
    // sent before it.
    alice.send(&peer("bob"), RelayPayload::Bye).unwrap();
    assert_eq!(
        next_event(&mut bob_events).await,
        SignalEvent::Relay { from: peer("alice"), payload: RelayPayload::Bye }
    );
    let metrics = harness.server.metrics();
    assert_eq!(metrics.rejections_for(ErrorCode::AlreadyRegistered), 0);
}

/// A server that ignores the header (an older one, or a proxy that drops it) does not answer
/// it: the client sends `register` as its first frame, as before.
#[tokio::test]
async fn a_server_that_ignores_the_header_gets_a_register_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut request_header = None;
        // The callback's type is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                        response| {
            request_header = request.headers().get(REGISTER_HEADER).cloned();
            Ok(response)
        };
        let mut socket = tokio_tungstenite::accept_hdr_async(stream, callback).await.unwrap();
        let first = match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => serde_json::from_str::<Value>(text.as_str()).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        };
        let registered = json!({
            "type": "registered", "version": 1, "peer_id": "alice", "peers": [],
            "replaced": false, "max_frame_bytes": 65536,
        });
        socket.send(Message::text(registered.to_string())).await.unwrap();
        (request_header, first, socket)
    });
    let harness_config = Harness::start().await.client_config("alice", &url);
    let (client, _events) = SignalClient::new(harness_config).unwrap();
    let connected = client.connect_once().await.unwrap();
    assert_eq!(connected.peer_id, peer("alice"));
    let (request_header, first, _socket) = server.await.unwrap();
    assert!(request_header.is_some(), "the upgrade request carried register");
    assert_eq!(first["type"], "register", "{first}");
    assert_eq!(first["peer_id"], "alice");
}
