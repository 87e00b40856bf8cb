//! Two real nodes on loopback (signaling server, WebRTC, reliable
//! messaging, recovery) exchange numbered messages while things break:
//! none may be lost, duplicated or reordered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use tether::live::RtcShutdownReport;
use tether::live::testbed::{LoopbackTestbed, Traffic};
use tether::{
    ActionKind, ActionReport, Availability, CleanupReason, ConnectionState, Messages,
    NetworkSnapshot, PeerId, PeerLinkState, PeerStates, ReconnectReason, RtcNode, SendError,
    Transport, TransportSet,
};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

const PROMPT: Duration = Duration::from_secs(20);

fn id(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

/// Test logs at RUST_LOG's level, once per test binary.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct Pair {
    testbed: LoopbackTestbed,
    /// The nodes' ids.
    a: PeerId,
    b: PeerId,
    alice: RtcNode,
    bob: RtcNode,
    alice_inbox: Messages,
    bob_inbox: Messages,
    traffic: Traffic,
}

impl Pair {
    async fn start() -> Pair {
        init_tracing();
        let testbed = LoopbackTestbed::start().await.unwrap();
        let (a, b) = (id("alice"), id("bob"));
        let alice = testbed.online(testbed.config(&a)).await.unwrap();
        let bob = testbed.online(testbed.config(&b)).await.unwrap();
        let alice_inbox = alice.messages().unwrap();
        let bob_inbox = bob.messages().unwrap();
        alice.connect_peer(&b).await.unwrap();
        let traffic = Traffic::default();
        let mut pair = Pair { testbed, a, b, alice, bob, alice_inbox, bob_inbox, traffic };
        pair.exchange(5).await;
        pair
    }

    /// Posts `count` messages each way.
    async fn post(&mut self, count: usize) {
        for _ in 0..count {
            let message = self.traffic.next_message(&self.a, &self.b);
            self.alice.post(&self.b, message).await.unwrap();
            self.traffic.sent(&self.a, &self.b);
            let message = self.traffic.next_message(&self.b, &self.a);
            self.bob.post(&self.a, message).await.unwrap();
            self.traffic.sent(&self.b, &self.a);
        }
    }

    /// Receives until everything sent so far arrived, or fails after
    /// [`PROMPT`].
    async fn receive_all(&mut self) {
        let deadline = Instant::now() + PROMPT;
        loop {
            let summary = self.traffic.summary();
            if summary.lost == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "messages did not arrive: {summary:?}");
            tokio::select! {
                Some(message) = self.alice_inbox.recv() => self.traffic.received(&self.a, &message),
                Some(message) = self.bob_inbox.recv() => self.traffic.received(&self.b, &message),
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Receives until everything sent so far arrived, then checks that
    /// nothing was duplicated or reordered.
    ///
    /// A late duplicate is caught without a time window: once everything
    /// arrived, each side `send`s one more numbered message, a marker, which
    /// returns only once the peer acknowledged it, and we receive until both
    /// markers are in the books. A data channel is ordered, a stream replays
    /// what is unacknowledged before anything new, and frames of a replaced
    /// channel are never applied, so every copy of an earlier message that
    /// was put on the wire before the marker reaches the inbox ahead of it.
    /// The acknowledged markers also acknowledge everything before them
    /// (acks are cumulative), so nothing is left to replay: no copy can be
    /// produced later either, unless the stream is broken, and
    /// [`finish`](Self::finish) catches even that by reading the inboxes to
    /// their end after shutdown.
    async fn settle(&mut self) {
        self.receive_all().await;
        let to_bob = self.traffic.next_message(&self.a, &self.b);
        let to_alice = self.traffic.next_message(&self.b, &self.a);
        // The inboxes are not read meanwhile; the markers fit in their
        // backlog (4096) with everything this test sends.
        let (to_bob, to_alice) = timeout(PROMPT, async {
            tokio::join!(self.alice.send(&self.b, to_bob), self.bob.send(&self.a, to_alice))
        })
        .await
        .expect("the markers were not acknowledged in time");
        to_bob.expect("alice's marker");
        to_alice.expect("bob's marker");
        self.traffic.sent(&self.a, &self.b);
        self.traffic.sent(&self.b, &self.a);
        self.receive_all().await;
        while let Some(message) = self.alice_inbox.try_recv() {
            self.traffic.received(&self.a, &message);
        }
        while let Some(message) = self.bob_inbox.try_recv() {
            self.traffic.received(&self.b, &message);
        }
        let summary = self.traffic.summary();
        assert_eq!(
            (summary.lost, summary.duplicated, summary.out_of_order),
            (0, 0, 0),
            "{summary:?}"
        );
    }

    /// Shuts everything down, then reads both inboxes to their end (they end
    /// once their node stopped), so that the books hold every message ever
    /// delivered: exact, not "nothing showed up for a while". Returns the
    /// nodes' reports (alice, bob).
    async fn finish(self) -> (RtcShutdownReport, RtcShutdownReport) {
        let Pair { testbed, a, b, alice, bob, mut alice_inbox, mut bob_inbox, mut traffic } = self;
        let alice_report = timeout(PROMPT, alice.shutdown()).await.expect("alice shut down");
        let bob_report = timeout(PROMPT, bob.shutdown()).await.expect("bob shut down");
        timeout(PROMPT, testbed.shutdown()).await.expect("the server shut down");
        for (name, inbox) in [(&a, &mut alice_inbox), (&b, &mut bob_inbox)] {
            let rest = timeout(PROMPT, async {
                let mut rest = Vec::new();
                while let Some(message) = inbox.recv().await {
                    rest.push(message);
                }
                rest
            })
            .await
            .unwrap_or_else(|_| panic!("{name}'s inbox did not end after shutdown"));
            for message in &rest {
                traffic.received(name, message);
            }
        }
        let summary = traffic.summary();
        assert_eq!(
            (summary.lost, summary.duplicated, summary.out_of_order),
            (0, 0, 0),
            "the complete books: {summary:?}"
        );
        // The last markers were acknowledged, and acks are cumulative.
        assert_eq!(alice_report.messaging.unacknowledged, 0, "{alice_report:?}");
        assert_eq!(bob_report.messaging.unacknowledged, 0, "{bob_report:?}");
        (alice_report, bob_report)
    }

    async fn exchange(&mut self, count: usize) {
        self.post(count).await;
        self.settle().await;
    }
}

async fn wait_for_action(
    reports: &mut tokio::sync::broadcast::Receiver<ActionReport>,
    kind: ActionKind,
) -> bool {
    let deadline = Instant::now() + PROMPT;
    loop {
        match timeout(deadline.saturating_duration_since(Instant::now()), reports.recv()).await {
            Ok(Ok(ActionReport::Ended { kind: ended, outcome, .. })) if ended == kind => {
                return outcome.name() == "ok";
            }
            Ok(Ok(_)) => {}
            other => panic!("no {kind} ended: {other:?}"),
        }
    }
}

/// Waits up to [`PROMPT`] until `peer`'s state in `states` is `what`
/// (`want`), and returns it.
async fn wait_for_peer(
    states: &mut watch::Receiver<PeerStates>,
    peer: &PeerId,
    what: &str,
    want: impl Fn(&PeerLinkState) -> bool,
) -> PeerLinkState {
    let seen = timeout(PROMPT, async {
        let states = states.wait_for(|s| s.get(peer).is_some_and(|p| want(&p))).await;
        states.expect("the node stopped").get(peer)
    })
    .await;
    match seen {
        Ok(Some(state)) => state,
        _ => panic!("{peer} was not {what} within {PROMPT:?}: {:?}", states.borrow().get(peer)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_state_stream_follows_a_dropped_peer_connection() {
    let mut pair = Pair::start().await;
    let mut states = pair.alice.peer_states();
    let bob = pair.b.clone();
    let first = wait_for_peer(&mut states, &bob, "connected", PeerLinkState::is_connected).await;
    assert_eq!(states.borrow().connected().collect::<Vec<_>>(), [&bob]);
    assert_eq!(pair.alice.connected_peers(), ["bob"]);

    // Offline first (a Disconnect: signaling closed, peer connections kept,
    // messages still flow), so that nothing can build a new peer connection
    // before the stream was seen saying the old one is gone: a state that
    // lasts no time may be skipped.
    let offline = NetworkSnapshot::new(2, Availability::Unavailable, TransportSet::EMPTY);
    let mut state = pair.alice.state();
    let alice = pair.alice.handle();
    let went_offline = tokio::spawn(async move { alice.network_path_changed(offline).await });
    timeout(PROMPT, state.wait_for(|s| *s == ConnectionState::Offline))
        .await
        .expect("alice did not go offline")
        .unwrap();
    let result = timeout(PROMPT, went_offline).await.unwrap().unwrap().unwrap();
    assert_eq!(result.action(), Some(ActionKind::Disconnect), "{result:?}");
    assert!(states.borrow().is_connected(&bob), "a Disconnect keeps the peer connections");

    pair.alice.faults().drop_peer_connection(&bob).await.unwrap();
    let gone = wait_for_peer(&mut states, &bob, "disconnected", |s| !s.is_connected()).await;
    assert_eq!(gone.connection_id, first.connection_id, "{gone:?}");
    assert!(pair.alice.connected_peers().is_empty());

    // Back online: the Restore connects bob again, on a new peer connection.
    let online =
        NetworkSnapshot::new(3, Availability::Available, TransportSet::only(Transport::Wifi));
    let result = pair.alice.handle().network_path_changed(online).await.unwrap();
    assert_eq!(result.action(), Some(ActionKind::Restore));
    let again =
        wait_for_peer(&mut states, &bob, "connected again", PeerLinkState::is_connected).await;
    assert!(again.connection_id > first.connection_id, "{first:?} then {again:?}");

    pair.exchange(5).await;
    pair.finish().await;
    timeout(PROMPT, async { while states.changed().await.is_ok() {} })
        .await
        .expect("the stream ends with the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_every_disruption() {
    let mut pair = Pair::start().await;

    // A forced reconnect: new signaling, new peer connections.
    pair.post(20).await;
    pair.alice.handle().force_reconnect(ReconnectReason::ManualReconnect).await.unwrap();
    pair.post(20).await;
    pair.settle().await;

    // A killed signaling socket: the node notices and restores by itself.
    let mut reports = pair.alice.actions();
    assert!(pair.alice.faults().sever_signaling());
    pair.post(20).await;
    assert!(
        wait_for_action(&mut reports, ActionKind::Restore).await,
        "restore after a severed socket"
    );
    pair.post(20).await;
    pair.settle().await;

    // A killed peer connection: a new one replaces it, the replay buffer
    // fills the gap.
    let mut reports = pair.bob.actions();
    pair.post(20).await;
    pair.bob.faults().drop_peer_connection(&pair.a).await.unwrap();
    pair.post(20).await;
    assert!(
        wait_for_action(&mut reports, ActionKind::Restore).await,
        "restore after a dropped peer connection"
    );
    pair.post(20).await;
    pair.settle().await;

    // A path change (Wi-Fi to cellular): restore with ICE restarts.
    let snapshot = NetworkSnapshot::available(2, TransportSet::only(Transport::Cellular));
    pair.post(20).await;
    let result = pair.alice.handle().network_path_changed(snapshot).await.unwrap();
    assert_eq!(result.action(), Some(ActionKind::Restore));
    pair.exchange(20).await;

    let summary = pair.traffic.summary();
    assert!(summary.sent >= 300, "{summary:?}");
    let (alice, bob) = pair.finish().await;
    // Copies arrive only where a sender resent on purpose (after an ICE restart, everything
    // unacknowledged goes again, MESSAGING.md rule 8) or sent on both the detour and a channel
    // (rule 10), and the stream drops every one.
    let sent_twice = bob.messaging.stats.replayed + bob.messaging.stats.detoured;
    assert!(
        alice.messaging.stats.duplicates <= sent_twice,
        "alice dropped {} copies, bob resent or detoured {sent_twice}",
        alice.messaging.stats.duplicates,
    );
}

/// MESSAGING.md rule 10: while a peer connection is being replaced, messages take the detour
/// through the signaling server, sealed with the keys the peers agreed on their channel, and
/// every one is still delivered exactly once and in order when the new channel replays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_take_the_sealed_detour_while_the_peer_connection_is_replaced() {
    let mut pair = Pair::start().await;
    let detours = |pair: &Pair| {
        let metrics = pair.testbed.metrics();
        metrics.relayed_by_type.iter().find(|(kind, _)| *kind == "detour").map(|(_, n)| *n)
    };
    assert_eq!(detours(&pair), Some(0), "nothing needs the detour while the channel works");
    let mut reports = pair.bob.actions();
    pair.bob.faults().drop_peer_connection(&pair.a).await.unwrap();
    // Until the new channel is open, these have no channel to go on.
    pair.post(20).await;
    pair.receive_all().await;
    assert!(
        wait_for_action(&mut reports, ActionKind::Restore).await,
        "restore after a dropped peer connection"
    );
    pair.exchange(20).await;
    let relayed = detours(&pair).unwrap_or(0);
    let (alice, bob) = pair.finish().await;
    let detoured = alice.messaging.stats.detoured + bob.messaging.stats.detoured;
    assert!(relayed > 0 && detoured > 0, "relayed {relayed} batches, {detoured} messages");
}

/// PROTOCOL.md §3, NEGOTIATION.md §11.4: an answerer that registers again names the peers it
/// answers in its `register`, and the server asks each for the ICE restart: one `ice_restart`
/// relayed per Restore, none sent by the answerer itself, and the peer comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answerer_asks_for_its_ice_restart_in_register_only() {
    let mut pair = Pair::start().await;
    let restarts = |pair: &Pair| {
        let metrics = pair.testbed.metrics();
        let relayed = metrics.relayed_by_type.iter().find(|(kind, _)| *kind == "ice_restart");
        (relayed.map(|(_, n)| *n), metrics.register_ice_restarts)
    };
    let (Some(relayed), asked) = restarts(&pair) else { panic!("ice_restart is a relayed type") };
    let mut reports = pair.bob.actions();
    assert!(pair.bob.faults().sever_signaling());
    assert!(wait_for_action(&mut reports, ActionKind::Restore).await, "bob restores");
    pair.exchange(20).await;
    assert_eq!(
        restarts(&pair),
        (Some(relayed + 1), asked + 1),
        "one request relayed, the one bob's register asked for"
    );
    pair.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_closes_everything_and_later_sends_fail_clearly() {
    let mut pair = Pair::start().await;
    let result = pair.alice.handle().cleanup_connections(CleanupReason::ManualReset).await.unwrap();
    assert_eq!(result.action(), Some(ActionKind::Cleanup));
    assert_eq!(*pair.alice.state().borrow(), ConnectionState::Closed);
    assert!(pair.alice.connected_peers().is_empty(), "{:?}", pair.alice.connected_peers());
    let err = pair.alice.post(&pair.b, "after cleanup").await.unwrap_err();
    assert!(matches!(err, SendError::Closed { .. }), "{err}");
    assert!(err.to_string().contains("closed"), "{err}");

    // Cleanup never reconnects, but a later path event may restore, and
    // messages flow again.
    let snapshot = NetworkSnapshot::available(5, TransportSet::only(Transport::Cellular));
    let result = pair.alice.handle().network_path_changed(snapshot).await.unwrap();
    assert_eq!(result.action(), Some(ActionKind::Restore));
    pair.exchange(10).await;

    pair.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_make_one_peer_connection_and_sends_connect_on_demand() {
    let testbed = LoopbackTestbed::start().await.unwrap();
    let (carol_id, dave_id) = (id("carol"), id("dave"));
    let mut config = testbed.config(&carol_id);
    config.room = None;
    let carol = testbed.online(config).await.unwrap();
    let mut config = testbed.config(&dave_id);
    config.room = None;
    let dave = testbed.online(config).await.unwrap();
    let mut dave_inbox = dave.messages().unwrap();
    let (a, b, c) = tokio::join!(
        carol.connect_peer(&dave_id),
        carol.connect_peer(&dave_id),
        carol.connect_peer(&dave_id)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(carol.connected_peers(), ["dave"]);
    // Sending to a peer waits for the connection and the acknowledgement.
    carol.send(&dave_id, "hello").await.unwrap();
    let message = timeout(PROMPT, dave_inbox.recv()).await.unwrap().unwrap();
    assert_eq!((message.from.as_str(), &message.payload[..]), ("carol", &b"hello"[..]));
    let err = carol.send(&carol_id, "self").await.unwrap_err();
    assert!(matches!(err, SendError::InvalidPeer { .. }));
    let big = vec![0u8; 70_000];
    assert!(matches!(carol.post(&dave_id, big).await.unwrap_err(), SendError::TooLarge { .. }));
    carol.shutdown().await;
    dave.shutdown().await;
    testbed.shutdown().await;
}

/// Liveness: a channel that stays open on a connection claiming `connected`, but whose stream
/// makes no progress while messages wait, is replaced. Here the receiver's application stops
/// reading (its backlog fills and its node stops acknowledging), which looks the same from the
/// sender: the sender replaces the connection once, never again until the receiver shows
/// progress, and nothing is lost or duplicated when the receiver reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_replaced_once() {
    init_tracing();
    let testbed = LoopbackTestbed::start().await.unwrap();
    let (a, b) = (id("alice"), id("bob"));
    let mut alice_config = testbed.config(&a);
    alice_config.messaging.stream.stall_after = Duration::from_secs(1);
    let mut bob_config = testbed.config(&b);
    bob_config.messaging.receive_backlog = 4;
    let alice = testbed.online(alice_config).await.unwrap();
    let bob = testbed.online(bob_config).await.unwrap();
    let mut bob_inbox = bob.messages().unwrap();
    alice.connect_peer(&b).await.unwrap();
    let mut states = alice.peer_states();
    let first = wait_for_peer(&mut states, &b, "connected", PeerLinkState::is_connected).await;

    let mut traffic = Traffic::default();
    for _ in 0..50 {
        alice.post(&b, traffic.next_message(&a, &b)).await.unwrap();
        traffic.sent(&a, &b);
    }
    let replaced = wait_for_peer(&mut states, &b, "replaced after the stall", |s| {
        s.connection_id > first.connection_id
    })
    .await;
    // Several stall bounds without progress: no second replacement.
    let churn = timeout(
        Duration::from_secs(4),
        states.wait_for(|s| s.get(&b).is_some_and(|p| p.connection_id > replaced.connection_id)),
    )
    .await
    .map(|states| states.map(|states| states.get(&b)));
    assert!(churn.is_err(), "a second replacement without progress: {churn:?}");

    let deadline = Instant::now() + PROMPT;
    while traffic.summary().lost > 0 {
        assert!(Instant::now() < deadline, "messages did not arrive: {:?}", traffic.summary());
        if let Ok(Some(message)) = timeout(PROMPT, bob_inbox.recv()).await {
            traffic.received(&b, &message);
        }
    }
    let summary = traffic.summary();
    assert_eq!((summary.duplicated, summary.out_of_order), (0, 0), "{summary:?}");
    let _ = timeout(PROMPT, alice.shutdown()).await;
    let _ = timeout(PROMPT, bob.shutdown()).await;
    timeout(PROMPT, testbed.shutdown()).await.expect("the server shut down");
}
