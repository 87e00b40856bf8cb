//! Two relay servers sharing routing through one real nats-server: relays
//! both ways, presence, rooms as a boundary, global re-registration and a
//! broker restart, all seen through clients' WebSockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
// Shared with tests/cluster.rs, which uses all of it.
#[allow(dead_code)]
#[path = "cluster/nats_server.rs"]
mod nats_server;

use std::time::Duration;

use common::{Harness, RawSocket};
use nats_server::NatsServer;
use serde_json::{Value, json};
use tether_relay::cluster::{ClusterConfig, InstanceId};
use tether_signal::protocol::close_code;
use tokio::time::{Instant, timeout};

async fn instance(nats: &NatsServer, id: &str) -> Harness {
    Harness::start_with(|config| {
        let mut cluster = ClusterConfig::new(vec![nats.url()], InstanceId::new(id).unwrap());
        cluster.presence_ttl = Duration::from_secs(2);
        config.cluster = Some(cluster);
    })
    .await
}

/// Sends `register` for `name` on `harness` with a client session and
/// generation; returns the socket and the answer.
async fn register_attempt(
    harness: &Harness,
    name: &str,
    room: &str,
    session: &str,
    generation: u64,
) -> (RawSocket, Value) {
    let mut socket = harness.raw().await;
    socket
        .send_json(&json!({
            "type": "register", "version": 1, "peer_id": name, "token": harness.token(name),
            "room": room, "session": session, "generation": generation,
        }))
        .await;
    let answer = socket.next_json().await;
    (socket, answer)
}

fn unknown(to: &str) -> impl Fn(&Value) -> bool + '_ {
    move |frame| {
        frame["type"] == "error" && frame["code"] == "peer_unknown" && {
            frame["message"].as_str().is_some_and(|message| message.contains(to))
        }
    }
}

#[tokio::test]
async fn relays_and_presence_cross_instances_within_a_room() {
    let Some(nats) = NatsServer::start() else { return };
    let a = instance(&nats, "serve-a").await;
    let b = instance(&nats, "serve-b").await;

    let (mut alice, registered) = a.raw_registered("alice", Some("lobby")).await;
    assert_eq!(registered["peers"], json!([]));
    let (mut bob, registered) = b.raw_registered("bob", Some("lobby")).await;
    assert_eq!(registered["peers"], json!(["alice"]), "a member on another instance is listed");
    assert_eq!(alice.next_json().await, json!({"type": "peer_joined", "peer_id": "bob"}));

    // Both ways, the server stamping `from` as on one server.
    alice.send_json(&json!({"type": "ice_restart", "to": "bob"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "ice_restart", "from": "alice"}));
    bob.send_json(&json!({"type": "bye", "to": "alice", "from": "bob"})).await;
    assert_eq!(alice.next_json().await, json!({"type": "bye", "from": "bob"}));

    // Rooms stay a boundary: a peer in another room on the other instance
    // is as unknown as a peer nobody holds.
    let (mut carol, registered) = b.raw_registered("carol", Some("attic")).await;
    assert_eq!(registered["peers"], json!([]));
    alice.send_json(&json!({"type": "ice_restart", "to": "carol", "id": 1})).await;
    let answer = alice.next_json().await;
    assert!(unknown("carol")(&answer), "{answer}");
    assert_eq!(answer["id"], 1);
    carol.send_json(&json!({"type": "ice_restart", "to": "alice"})).await;
    let answer = carol.next_json().await;
    assert!(unknown("alice")(&answer), "{answer}");
    alice.send_json(&json!({"type": "ice_restart", "to": "nobody"})).await;
    let answer = alice.next_json().await;
    assert!(unknown("nobody")(&answer), "{answer}");

    let published = a.server.metrics().cluster.expect("cluster mode").published;
    assert_eq!(published, 1, "one publish for one relay");
    let delivered = b.server.metrics().cluster.unwrap().delivered;
    assert_eq!(delivered, 1);
    let (_, metrics_text) = common::http_get(b.addr(), "/metrics").await;
    assert!(metrics_text.contains("tether_signal_cluster_delivered_total 1\n"), "{metrics_text}");
    assert!(metrics_text.contains("tether_signal_cluster_connected 1\n"), "{metrics_text}");

    // Leaving on one instance is seen on the other.
    bob.socket.close(None).await.unwrap();
    assert_eq!(alice.next_json().await, json!({"type": "peer_left", "peer_id": "bob"}));
    // Carol's room heard nothing of the lobby.
    let (mut dave, _) = a.raw_registered("dave", Some("attic")).await;
    assert_eq!(carol.next_json().await, json!({"type": "peer_joined", "peer_id": "dave"}));
    dave.send_json(&json!({"type": "bye", "to": "carol"})).await;
    assert_eq!(carol.next_json().await, json!({"type": "bye", "from": "dave"}));
}

#[tokio::test]
async fn room_less_peers_reach_each_other_across_instances() {
    let Some(nats) = NatsServer::start() else { return };
    let a = instance(&nats, "serve-a").await;
    let b = instance(&nats, "serve-b").await;
    let (mut alice, _) = a.raw_registered("alice", None).await;
    let (mut bob, _) = b.raw_registered("bob", None).await;
    let (mut carol, _) = b.raw_registered("carol", Some("attic")).await;
    let (mut dave, _) = a.raw_registered("dave", Some("attic")).await;
    assert_eq!(carol.next_json().await, json!({"type": "peer_joined", "peer_id": "dave"}));

    alice.send_json(&json!({"type": "ice_restart", "to": "bob"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "ice_restart", "from": "alice"}));
    bob.send_json(&json!({"type": "ice_restart", "to": "alice"})).await;
    assert_eq!(alice.next_json().await, json!({"type": "ice_restart", "from": "bob"}));

    // A room-less peer cannot reach into a room on another instance: the
    // receiving instance drops the frame. Dave's relay, sent after it from
    // the same instance (so it arrives after it), is the first carol sees.
    alice.send_json(&json!({"type": "offer", "to": "carol", "sdp": "v=0"})).await;
    dave.send_json(&json!({"type": "bye", "to": "carol"})).await;
    assert_eq!(carol.next_json().await, json!({"type": "bye", "from": "dave"}));
}

#[tokio::test]
async fn a_newer_registration_on_another_instance_replaces_the_old_socket() {
    let Some(nats) = NatsServer::start() else { return };
    let a = instance(&nats, "serve-a").await;
    let b = instance(&nats, "serve-b").await;
    let (mut bob, _) = a.raw_registered("bob", Some("lobby")).await;
    let (mut old, registered) = register_attempt(&a, "alice", "lobby", "c0ffee", 1).await;
    assert_eq!(registered["type"], "registered", "{registered}");
    assert_eq!(bob.next_json().await, json!({"type": "peer_joined", "peer_id": "alice"}));

    let (mut new, registered) = register_attempt(&b, "alice", "lobby", "c0ffee", 2).await;
    assert_eq!(registered["type"], "registered", "{registered}");
    assert_eq!(registered["peers"], json!(["bob"]));
    let (frames, code) = old.until_close().await;
    assert_eq!(frames.last().map(|frame| &frame["code"]), Some(&json!("replaced")), "{frames:?}");
    assert_eq!(code, Some(close_code::REPLACED));
    a.wait_metrics("the old session to end replaced", |metrics| {
        metrics.session_ends_for("replaced") == 1
    })
    .await;

    // An older attempt of the same client session is stale anywhere.
    let (mut late, answer) = register_attempt(&a, "alice", "lobby", "c0ffee", 1).await;
    assert_eq!(answer["code"], "stale_generation", "{answer}");
    assert_eq!(late.until_close().await.1, Some(close_code::STALE_GENERATION));

    // Bob, on the old instance, learns alice re-joined (his cue to
    // renegotiate, as on one server), never that she left; and reaches her
    // on the new instance.
    assert_eq!(bob.next_json().await, json!({"type": "peer_joined", "peer_id": "alice"}));
    bob.send_json(&json!({"type": "ice_restart", "to": "alice"})).await;
    assert_eq!(new.next_json().await, json!({"type": "ice_restart", "from": "bob"}));
    new.send_json(&json!({"type": "bye", "to": "bob"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "bye", "from": "alice"}));
}

#[tokio::test]
async fn routing_recovers_after_the_broker_restarts() {
    let Some(mut nats) = NatsServer::start() else { return };
    let a = instance(&nats, "serve-a").await;
    let b = instance(&nats, "serve-b").await;
    let (mut alice, _) = a.raw_registered("alice", Some("lobby")).await;
    let (mut bob, _) = b.raw_registered("bob", Some("lobby")).await;
    assert_eq!(alice.next_json().await, json!({"type": "peer_joined", "peer_id": "bob"}));

    nats.restart();
    let restarted = Instant::now();
    // Bounded polling: relay until one arrives (frames published while the
    // instances reconnect may be lost, as NATS core promises no more).
    let deadline = restarted + Duration::from_secs(15);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        alice.send_json(&json!({"type": "ice_restart", "to": "bob", "id": attempt})).await;
        if let Ok(Some(Ok(message))) =
            timeout(Duration::from_millis(250), futures_next(&mut bob)).await
            && let tokio_tungstenite::tungstenite::Message::Text(text) = message
        {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(frame, json!({"type": "ice_restart", "from": "alice"}));
            break;
        }
        assert!(Instant::now() < deadline, "no relay got through after the broker restart");
    }
    eprintln!("relay through the restarted broker after {:?}", restarted.elapsed());
    a.wait_metrics("a reconnection to the broker", |metrics| {
        metrics.cluster.is_some_and(|cluster| cluster.reconnects >= 1 && cluster.connected)
    })
    .await;
    // New registrations and presence work after the restart too.
    let (_carol, registered) = b.raw_registered("carol", Some("lobby")).await;
    let mut peers = registered["peers"].as_array().unwrap().clone();
    peers.sort_by_key(|peer| peer.as_str().unwrap_or_default().to_owned());
    assert_eq!(peers, vec![json!("alice"), json!("bob")]);
    loop {
        let frame = alice.next_json().await;
        if frame["type"] == "peer_joined" {
            assert_eq!(frame["peer_id"], "carol");
            break;
        }
    }
}

async fn futures_next(
    socket: &mut RawSocket,
) -> Option<Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
{
    use futures_util::StreamExt as _;
    loop {
        match socket.socket.next().await {
            Some(Ok(
                tokio_tungstenite::tungstenite::Message::Ping(_)
                | tokio_tungstenite::tungstenite::Message::Pong(_),
            )) => continue,
            other => return other,
        }
    }
}
