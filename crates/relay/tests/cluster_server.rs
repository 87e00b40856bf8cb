//! Two relay servers sharing routing through one real nats-server: relays
//! both ways, presence, rooms as a boundary, global re-registration and a
//! broker restart, all seen through clients' WebSockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
// Shared with tests/cluster.rs and the CLI tests.
#[allow(dead_code)]
#[path = "cluster/nats_server.rs"]
mod nats_server;

use std::time::Duration;

use common::{Harness, RawSocket};
use nats_server::NatsServer;
use serde_json::{Value, json};
use tether_relay::auth::Authenticator;
use tether_relay::cluster::{ClusterConfig, InstanceId};
use tether_relay::{ServerConfig, SignalServer};
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

/// A server in cluster mode on `urls` with 3 replicas, retried while the
/// NATS cluster's JetStream elects its leader (bounded).
async fn instance_on_cluster(urls: Vec<String>, id: &str) -> Harness {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut config = ServerConfig::new(Authenticator::with_secret(common::secret()));
        // The default TTL (15 s) outlasts JetStream moving a lost node's
        // stream leaders, so members refreshed through it do not expire.
        let mut cluster = ClusterConfig::new(urls.clone(), InstanceId::new(id).unwrap());
        cluster.replicas = 3;
        config.cluster = Some(cluster);
        match SignalServer::bind(config).await {
            Ok(server) => return Harness { server: server.spawn() },
            Err(error) => {
                assert!(Instant::now() < deadline, "{id} never joined the cluster: {error:?}");
                // Bounded retry while JetStream has no leader yet.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Relays `from` → `to` until one arrives, bounded: frames published while
/// an instance moves to another NATS node may be lost.
async fn relay_gets_through(
    (from, sender): (&mut RawSocket, &str),
    (to, recipient): (&mut RawSocket, &str),
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        from.send_json(&json!({"type": "ice_restart", "to": recipient})).await;
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) =
            timeout(Duration::from_millis(250), futures_next(to)).await
        {
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame == json!({"type": "ice_restart", "from": sender}) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what}: no relay got through");
    }
}

#[tokio::test]
async fn service_continues_when_one_node_of_a_three_node_nats_cluster_dies() {
    if let Ok(filter) = std::env::var("TETHER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let Some(mut nodes) = NatsServer::start_cluster(3) else { return };
    // Each instance is given one node only: after losing it, it must find
    // the others the NATS cluster advertised.
    let a = instance_on_cluster(vec![nodes[0].url()], "serve-a").await;
    let b = instance_on_cluster(vec![nodes[1].url()], "serve-b").await;
    let (mut alice, _) = a.raw_registered("alice", Some("lobby")).await;
    let (mut bob, registered) = b.raw_registered("bob", Some("lobby")).await;
    assert_eq!(registered["peers"], json!(["alice"]));
    assert_eq!(alice.next_json().await, json!({"type": "peer_joined", "peer_id": "bob"}));
    alice.send_json(&json!({"type": "ice_restart", "to": "bob"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "ice_restart", "from": "alice"}));

    let killed = Instant::now();
    drop(nodes.remove(0));
    relay_gets_through((&mut alice, "alice"), (&mut bob, "bob"), "a -> b after the node died")
        .await;
    relay_gets_through((&mut bob, "bob"), (&mut alice, "alice"), "b -> a after the node died")
        .await;
    eprintln!("relays through the surviving NATS nodes {:?} after the kill", killed.elapsed());
    a.wait_metrics("serve-a to reconnect to another node", |metrics| {
        metrics.cluster.is_some_and(|cluster| cluster.reconnects >= 1 && cluster.connected)
    })
    .await;

    // The replicated buckets keep serving, once JetStream has moved the
    // lost node's stream leaders (seconds; a registration meanwhile is
    // closed with 1013, possibly right after `registered`, and the client
    // tries again). Carol is in when bob, on the other instance, hears it.
    let deadline = killed + Duration::from_secs(60);
    let mut attempts = 0;
    let _carol = loop {
        attempts += 1;
        assert!(Instant::now() < deadline, "carol never joined after {attempts} attempts");
        let mut socket = a.raw().await;
        socket
            .send_json(&json!({
                "type": "register", "version": 1, "peer_id": "carol",
                "token": a.token("carol"), "room": "lobby",
            }))
            .await;
        let answer = timeout(Duration::from_secs(10), futures_next(&mut socket)).await;
        let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) = answer else {
            // Closed with 1013: back off as a client does before retrying.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let answer: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(answer["type"], "registered", "{answer}");
        let heard = timeout(Duration::from_secs(10), async {
            loop {
                match futures_next(&mut bob).await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))
                        if serde_json::from_str::<Value>(text.as_str()).unwrap()
                            == json!({"type": "peer_joined", "peer_id": "carol"}) =>
                    {
                        return;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("bob: {other:?}"),
                }
            }
        })
        .await;
        if heard.is_ok() {
            break socket;
        }
    };
    eprintln!(
        "carol registered and bob heard of it {:?} after the kill ({attempts} attempts)",
        killed.elapsed()
    );
    let (mut moved, registered) = b.raw_registered("alice", Some("lobby")).await;
    assert_eq!(registered["type"], "registered");
    let (_, code) = alice.until_close().await;
    assert_eq!(code, Some(close_code::REPLACED));
    relay_gets_through((&mut bob, "bob"), (&mut moved, "alice"), "b -> alice moved to b").await;
}
