//! Scale-out layer against a real nats-server: two `Cluster` instances
//! delivering, superseding registrations, and sharing presence, through
//! an instance vanishing, a broker restart and garbage on the bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with tests/cluster_server.rs (which also starts NATS clusters).
#[allow(dead_code)]
#[path = "cluster/nats_server.rs"]
mod nats_server;

use std::time::{Duration, Instant};

use nats_server::NatsServer;
use tether_relay::cluster::{
    Announcement, Cluster, ClusterConfig, ClusterEvent, ClusterEvents, Frame, InstanceId,
    LeftReason, PresenceChange, Superseded,
};
use tether_signal::protocol::{PeerId, RoomId};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn peer(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn instance(server: &NatsServer, id: &str, ttl: Duration) -> (Cluster, ClusterEvents) {
    let mut config = ClusterConfig::new(vec![server.url()], InstanceId::new(id).unwrap());
    config.presence_ttl = ttl;
    Cluster::connect(config).await.expect("connect to nats")
}

fn frame(from: &str, n: u64) -> Frame {
    Frame {
        from: peer(from),
        room: None,
        id: Some(n),
        text: format!(r#"{{"type":"bye","from":"{from}","n":{n}}}"#),
    }
}

#[tokio::test]
async fn frames_cross_instances_with_one_publish() {
    let Some(server) = NatsServer::start() else { return };
    let (a, _) = instance(&server, "a", Duration::from_secs(15)).await;
    let (b, _) = instance(&server, "b", Duration::from_secs(15)).await;
    let alice = peer("alice.phone@home:1");
    let mut inbox = a.hold(&alice).await.unwrap();
    a.flush().await.unwrap();

    b.deliver(&alice, &frame("bob", 1)).await.unwrap();
    let got = timeout(WAIT, inbox.next()).await.unwrap().unwrap();
    assert_eq!(got, frame("bob", 1));
    assert_eq!(b.stats().published, 1);
    assert_eq!(a.stats().delivered, 1);

    // A small loop for the report: one frame at a time, b -> a.
    let mut samples = Vec::new();
    for n in 0..500 {
        let started = Instant::now();
        b.deliver(&alice, &frame("bob", n)).await.unwrap();
        let got = timeout(WAIT, inbox.next()).await.unwrap().unwrap();
        samples.push(started.elapsed());
        assert_eq!(got.id, Some(n));
    }
    samples.sort();
    eprintln!(
        "cross-instance delivery, {} frames one at a time: p50 {:?} p99 {:?} max {:?}",
        samples.len(),
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1]
    );

    // And a burst, for throughput: b publishes without waiting, a drains.
    let burst = 20_000u64;
    let started = Instant::now();
    let drain = async {
        for n in 0..burst {
            let got = timeout(WAIT, inbox.next()).await.unwrap().unwrap();
            assert_eq!(got.id, Some(n), "frames from one instance arrive in order");
        }
    };
    let send = async {
        for n in 0..burst {
            b.deliver(&alice, &frame("bob", n)).await.unwrap();
        }
    };
    tokio::join!(drain, send);
    let elapsed = started.elapsed();
    eprintln!(
        "cross-instance burst: {burst} frames in {elapsed:?} ({:.0} frames/s)",
        burst as f64 / elapsed.as_secs_f64()
    );

    // Dropping the inbox unsubscribes: the next frame reaches nobody.
    drop(inbox);
    a.flush().await.unwrap();
    let mut again = a.hold(&alice).await.unwrap();
    a.flush().await.unwrap();
    b.deliver(&alice, &frame("bob", 9_999)).await.unwrap();
    assert_eq!(timeout(WAIT, again.next()).await.unwrap().unwrap().id, Some(9_999));
}

async fn next_superseded(events: &mut ClusterEvents) -> Superseded {
    match timeout(WAIT, events.next()).await.expect("a supersede notice").unwrap() {
        ClusterEvent::Superseded(superseded) => superseded,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn newer_registration_elsewhere_supersedes_in_generation_order() {
    let Some(server) = NatsServer::start() else { return };
    let (a, mut a_events) = instance(&server, "a", Duration::from_secs(15)).await;
    let (b, mut b_events) = instance(&server, "b", Duration::from_secs(15)).await;
    let alice = peer("alice");

    let Announcement::Registered { revision: first, replaced: None } =
        a.announce_registration(&alice, Some("s1"), Some(1)).await.unwrap()
    else {
        panic!("first registration")
    };
    assert_eq!(b.registration_holder(&alice).await.unwrap(), Some(a.instance_id().clone()));

    // Generation 2 of the same client session on b replaces a's.
    let Announcement::Registered { revision: second, replaced: Some(replaced) } =
        b.announce_registration(&alice, Some("s1"), Some(2)).await.unwrap()
    else {
        panic!("second registration")
    };
    assert_eq!((replaced.instance.as_str(), replaced.revision), ("a", first));
    assert_eq!(
        next_superseded(&mut a_events).await,
        Superseded { peer: alice.clone(), revision: first, by: b.instance_id().clone() }
    );

    // A late attempt 1 of the same session is stale wherever it lands.
    assert_eq!(
        a.announce_registration(&alice, Some("s1"), Some(1)).await.unwrap(),
        Announcement::Stale { held_by: b.instance_id().clone() }
    );
    assert_eq!(
        b.announce_registration(&alice, Some("s1"), Some(2)).await.unwrap(),
        Announcement::Stale { held_by: b.instance_id().clone() }
    );

    // a's old session ending must not remove b's registration.
    assert!(!a.release_registration(&alice, first).await.unwrap());
    assert_eq!(a.registration_holder(&alice).await.unwrap(), Some(b.instance_id().clone()));

    // Another client session (a restarted app) always wins, here on a.
    let Announcement::Registered { revision: third, replaced: Some(replaced) } =
        a.announce_registration(&alice, Some("s2"), Some(1)).await.unwrap()
    else {
        panic!("third registration")
    };
    assert_eq!((replaced.instance.as_str(), replaced.revision), ("b", second));
    assert_eq!(next_superseded(&mut b_events).await.revision, second);

    // Released by its holder, the id is free; the next one replaces nothing.
    assert!(a.release_registration(&alice, third).await.unwrap());
    assert_eq!(b.registration_holder(&alice).await.unwrap(), None);
    assert!(matches!(
        b.announce_registration(&alice, None, None).await.unwrap(),
        Announcement::Registered { replaced: None, .. }
    ));
    assert_eq!(b.stats().superseded_received, 1);
    assert_eq!(a.stats().superseded_received, 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_peer_leave_exactly_one_holder() {
    let Some(server) = NatsServer::start() else { return };
    let (a, mut a_events) = instance(&server, "a", Duration::from_secs(15)).await;
    let (b, mut b_events) = instance(&server, "b", Duration::from_secs(15)).await;
    let peers: Vec<PeerId> = (0..50).map(|n| peer(&format!("p{n}"))).collect();

    // Each peer registers on both instances at once, from two app
    // installs (different sessions), so both attempts are valid.
    let register = |cluster: &Cluster, session: &'static str| {
        let cluster = cluster.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            for peer in &peers {
                match cluster.announce_registration(peer, Some(session), Some(1)).await.unwrap() {
                    Announcement::Registered { revision, .. } => revisions.push(revision),
                    other => panic!("{other:?}"),
                }
            }
            revisions
        })
    };
    let (on_a, on_b) = tokio::join!(register(&a, "install-1"), register(&b, "install-2"));
    let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());

    // Whoever wrote last holds the peer; the other was told, with its own
    // revision, exactly once.
    let mut superseded_a = Vec::new();
    let mut superseded_b = Vec::new();
    for (n, peer) in peers.iter().enumerate() {
        let holder = a.registration_holder(peer).await.unwrap().unwrap();
        if holder == *a.instance_id() {
            assert!(on_a[n] > on_b[n]);
            superseded_b.push((peer.clone(), on_b[n]));
        } else {
            assert!(on_b[n] > on_a[n]);
            superseded_a.push((peer.clone(), on_a[n]));
        }
    }
    for (events, expected, by) in [
        (&mut a_events, superseded_a, b.instance_id()),
        (&mut b_events, superseded_b, a.instance_id()),
    ] {
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let superseded = next_superseded(events).await;
            assert_eq!(&superseded.by, by);
            got.push((superseded.peer, superseded.revision));
        }
        got.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected);
    }
    assert_eq!(a.stats().superseded_received + b.stats().superseded_received, peers.len() as u64);
}

async fn next_change(watch: &mut tether_relay::cluster::RoomWatch) -> PresenceChange {
    timeout(WAIT, watch.next()).await.expect("a presence change").expect("watch running")
}

#[tokio::test]
async fn presence_is_shared_across_instances() {
    let Some(server) = NatsServer::start() else { return };
    let (a, _) = instance(&server, "a", Duration::from_secs(15)).await;
    let (b, _) = instance(&server, "b", Duration::from_secs(15)).await;
    let lobby = room("lobby.1");
    let (alice, bob) = (peer("alice"), peer("bob"));

    a.join(&lobby, &alice).await.unwrap();
    let mut watch = a.watch_room(&lobby).await.unwrap();
    assert_eq!(watch.members().into_keys().collect::<Vec<_>>(), vec![alice.clone()]);

    b.join(&lobby, &bob).await.unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        PresenceChange::Joined { peer: bob.clone(), instance: b.instance_id().clone() }
    );
    let members = b.members(&lobby).await.unwrap();
    assert_eq!(members.get(&alice), Some(a.instance_id()));
    assert_eq!(members.get(&bob), Some(b.instance_id()));
    assert!(b.members(&room("elsewhere")).await.unwrap().is_empty());

    // bob moves to a: a's entry takes over (watchers see him join there,
    // as a re-registration on one server); b's leave must not remove it.
    a.join(&lobby, &bob).await.unwrap();
    assert_eq!(
        next_change(&mut watch).await,
        PresenceChange::Joined { peer: bob.clone(), instance: a.instance_id().clone() }
    );
    assert!(!b.leave(&lobby, &bob).await.unwrap());
    assert_eq!(b.members(&lobby).await.unwrap().get(&bob), Some(a.instance_id()));

    assert!(a.leave(&lobby, &bob).await.unwrap());
    assert_eq!(
        next_change(&mut watch).await,
        PresenceChange::Left {
            peer: bob.clone(),
            instance: a.instance_id().clone(),
            reason: LeftReason::Left
        }
    );
    assert_eq!(watch.members().into_keys().collect::<Vec<_>>(), vec![alice.clone()]);
}

#[tokio::test]
async fn a_vanished_instance_s_members_leave_within_the_ttl() {
    let Some(server) = NatsServer::start() else { return };
    let ttl = Duration::from_secs(1);
    let (a, _) = instance(&server, "a", ttl).await;
    let (b, _) = instance(&server, "b", ttl).await;
    assert_eq!(a.presence_ttl(), ttl);
    let lobby = room("lobby");
    let (alice, bob) = (peer("alice"), peer("bob"));

    a.join(&lobby, &alice).await.unwrap();
    b.join(&lobby, &bob).await.unwrap();
    let mut watch = a.watch_room(&lobby).await.unwrap();
    assert_eq!(watch.members().len(), 2);

    // b goes away without leaving (as a crash would).
    let dropped = Instant::now();
    drop(b);
    assert_eq!(
        next_change(&mut watch).await,
        PresenceChange::Left {
            peer: bob.clone(),
            instance: InstanceId::new("b").unwrap(),
            reason: LeftReason::Expired
        }
    );
    let gone_after = dropped.elapsed();
    eprintln!("a dropped instance's member left after {gone_after:?} (ttl {ttl:?})");
    assert!(gone_after <= ttl + Duration::from_secs(1), "{gone_after:?}");

    // alice joined before bob and is only alive because a refreshes her.
    assert!(watch.members().contains_key(&alice));
    let members = a.members(&lobby).await.unwrap();
    assert_eq!(members.keys().collect::<Vec<_>>(), vec![&alice]);
    assert_eq!(a.stats().presence_refresh_failures, 0);
}

#[tokio::test]
async fn clients_reconnect_after_a_broker_restart_and_delivery_resumes() {
    let Some(mut server) = NatsServer::start() else { return };
    let (a, _) = instance(&server, "a", Duration::from_secs(15)).await;
    let (b, _) = instance(&server, "b", Duration::from_secs(15)).await;
    let alice = peer("alice");
    let mut inbox = a.hold(&alice).await.unwrap();
    a.flush().await.unwrap();
    b.deliver(&alice, &frame("bob", 1)).await.unwrap();
    assert_eq!(timeout(WAIT, inbox.next()).await.unwrap().unwrap().id, Some(1));

    let lobby = room("lobby");
    a.join(&lobby, &alice).await.unwrap();
    let mut watch = b.watch_room(&lobby).await.unwrap();
    assert!(watch.members().contains_key(&alice));

    let port = server.port();
    server.restart();
    assert_eq!(server.port(), port);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 100;
    loop {
        assert!(
            Instant::now() < deadline,
            "no delivery after the restart: {:?} {:?}",
            a.stats(),
            b.stats()
        );
        n += 1;
        if b.deliver(&alice, &frame("bob", n)).await.is_ok()
            && let Ok(Some(got)) = timeout(Duration::from_millis(200), inbox.next()).await
        {
            assert!(got.id >= Some(101));
            break;
        }
    }
    let reconnected = Instant::now();
    for cluster in [&a, &b] {
        let stats = cluster.stats();
        assert!(stats.connected && stats.reconnects >= 1, "{stats:?}");
    }
    // The KV side works again too: registration, and presence (the
    // bucket's file storage kept alice; the watch follows new members).
    assert!(matches!(
        b.announce_registration(&alice, None, None).await.unwrap(),
        Announcement::Registered { .. }
    ));
    assert!(b.members(&lobby).await.unwrap().contains_key(&alice));
    let bob = peer("bob");
    a.join(&lobby, &bob).await.unwrap();
    // The watch restarts on the reconnection rather than waiting for its
    // consumer's heartbeats to notice the loss (about 10 s).
    let change = timeout(Duration::from_secs(4), watch.next()).await.expect("watch resynchronised");
    assert_eq!(
        change,
        Some(PresenceChange::Joined { peer: bob, instance: a.instance_id().clone() })
    );
    eprintln!("presence change seen {:?} after reconnecting", reconnected.elapsed());
}

#[tokio::test]
async fn malformed_bus_messages_are_counted_and_ignored() {
    let Some(server) = NatsServer::start() else { return };
    let (a, mut a_events) = instance(&server, "a", Duration::from_secs(15)).await;
    let (b, _) = instance(&server, "b", Duration::from_secs(15)).await;
    let raw = async_nats::connect(server.url()).await.unwrap();
    let alice = peer("alice");
    let mut inbox = a.hold(&alice).await.unwrap();
    a.flush().await.unwrap();

    let garbage: [&[u8]; 6] = [
        b"",
        b"\xff\xfe\x00",
        b"not json",
        br#"{"v":99,"from":"bob","frame":{}}"#,
        br#"{"v":1,"from":"bad id!","frame":{}}"#,
        br#"{"v":1,"from":"bob","frame":"a string"}"#,
    ];
    let peer_subject = format!("tether.v1.peer.{}", hex("alice"));
    let instance_subject = format!("tether.v1.instance.{}", hex("a"));
    for payload in garbage {
        raw.publish(peer_subject.clone(), payload.to_vec().into()).await.unwrap();
        raw.publish(instance_subject.clone(), payload.to_vec().into()).await.unwrap();
    }
    // A frame written by hand in the documented format, on the same
    // connection, so it arrives after the garbage.
    let valid = br#"{"v":1,"from":"bob","id":7,"frame":{"type":"bye","from":"bob","n":7}}"#;
    raw.publish(peer_subject.clone(), valid.to_vec().into()).await.unwrap();
    raw.flush().await.unwrap();
    let got = timeout(WAIT, inbox.next()).await.unwrap().unwrap();
    assert_eq!(got, frame("bob", 7));
    b.deliver(&alice, &frame("bob", 8)).await.unwrap();
    assert_eq!(timeout(WAIT, inbox.next()).await.unwrap().unwrap(), frame("bob", 8));

    // The notices were garbage too: no event, and all twelve counted.
    let deadline = Instant::now() + WAIT;
    while a.stats().malformed < 12 {
        assert!(Instant::now() < deadline, "{:?}", a.stats());
        tokio::task::yield_now().await;
        a.flush().await.unwrap();
    }
    assert_eq!(a.stats().malformed, 12);
    assert!(timeout(Duration::from_millis(100), a_events.next()).await.is_err());
    assert_eq!(a.stats().delivered, 2);
}
