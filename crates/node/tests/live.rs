//! Two real nodes on loopback (signaling server, WebRTC, reliable
//! messaging, recovery) exchange numbered messages while things break:
//! none may be lost, duplicated or reordered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use tether::live::testbed::{LoopbackTestbed, Traffic};
use tether::{
    ActionKind, ActionReport, CleanupReason, ConnectionState, Messages, NetworkSnapshot,
    ReconnectReason, RtcNode, SendError, Transport, TransportSet,
};
use tokio::time::{Instant, timeout};

const PROMPT: Duration = Duration::from_secs(20);

struct Pair {
    testbed: LoopbackTestbed,
    alice: RtcNode,
    bob: RtcNode,
    alice_inbox: Messages,
    bob_inbox: Messages,
    traffic: Traffic,
}

impl Pair {
    async fn start() -> Pair {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let testbed = LoopbackTestbed::start().await.unwrap();
        let alice = testbed.online(testbed.config("alice").unwrap()).await.unwrap();
        let bob = testbed.online(testbed.config("bob").unwrap()).await.unwrap();
        let alice_inbox = alice.messages().unwrap();
        let bob_inbox = bob.messages().unwrap();
        alice.connect_peer("bob").await.unwrap();
        let mut pair =
            Pair { testbed, alice, bob, alice_inbox, bob_inbox, traffic: Traffic::default() };
        pair.exchange(5).await;
        pair
    }

    /// Posts `count` messages each way.
    async fn post(&mut self, count: usize) {
        for _ in 0..count {
            let message = self.traffic.next_message("alice", "bob");
            self.alice.post("bob", message).await.unwrap();
            self.traffic.sent("alice", "bob");
            let message = self.traffic.next_message("bob", "alice");
            self.bob.post("alice", message).await.unwrap();
            self.traffic.sent("bob", "alice");
        }
    }

    /// Receives until everything sent so far arrived, or fails.
    async fn settle(&mut self) {
        let deadline = Instant::now() + PROMPT;
        loop {
            let summary = self.traffic.summary();
            if summary.lost == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "messages did not arrive: {summary:?}");
            tokio::select! {
                Some(message) = self.alice_inbox.recv() => self.traffic.received("alice", &message),
                Some(message) = self.bob_inbox.recv() => self.traffic.received("bob", &message),
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        // Anything extra (a duplicate) shows up right behind.
        while let Ok(Some(message)) =
            timeout(Duration::from_millis(200), self.alice_inbox.recv()).await
        {
            self.traffic.received("alice", &message);
        }
        while let Some(message) = self.bob_inbox.try_recv() {
            self.traffic.received("bob", &message);
        }
        let summary = self.traffic.summary();
        assert_eq!(
            (summary.lost, summary.duplicated, summary.out_of_order),
            (0, 0, 0),
            "{summary:?}"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_every_disruption() {
    let mut pair = Pair::start().await;

    // A forced reconnect: new signaling, new peer connections.
    pair.post(20).await;
    let result =
        pair.alice.handle().force_reconnect(ReconnectReason::ManualReconnect).await.unwrap();
    assert!(result.success, "{result:?}");
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
    pair.bob.faults().drop_peer_connection("alice").await.unwrap();
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
    assert_eq!(result.action, Some(ActionKind::Restore));
    assert!(result.success, "{result:?}");
    pair.exchange(20).await;

    let summary = pair.traffic.summary();
    assert!(summary.sent >= 300, "{summary:?}");
    let report = pair.alice.shutdown().await;
    assert_eq!(report.messaging.stats.duplicates, 0);
    pair.bob.shutdown().await;
    pair.testbed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_closes_everything_and_later_sends_fail_clearly() {
    let mut pair = Pair::start().await;
    let result = pair.alice.handle().cleanup_connections(CleanupReason::ManualReset).await.unwrap();
    assert_eq!(result.action, Some(ActionKind::Cleanup));
    assert!(result.success, "{result:?}");
    assert_eq!(*pair.alice.state().borrow(), ConnectionState::Closed);
    assert!(pair.alice.connected_peers().is_empty(), "{:?}", pair.alice.connected_peers());
    let err = pair.alice.post("bob", "after cleanup").await.unwrap_err();
    assert!(matches!(err, SendError::Closed { .. }), "{err}");
    assert!(err.to_string().contains("closed"), "{err}");

    // A later path event may restore (rule 6), and messages flow again.
    let snapshot = NetworkSnapshot::available(5, TransportSet::only(Transport::Cellular));
    let result = pair.alice.handle().network_path_changed(snapshot).await.unwrap();
    assert!(result.success, "{result:?}");
    pair.exchange(10).await;

    // After shutdown, sends fail at once with a clear error.
    let Pair { alice, bob, testbed, .. } = pair;
    alice.shutdown().await;
    bob.shutdown().await;
    testbed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_make_one_peer_connection_and_sends_connect_on_demand() {
    let testbed = LoopbackTestbed::start().await.unwrap();
    let mut config = testbed.config("carol").unwrap();
    config.room = None;
    let carol = testbed.online(config).await.unwrap();
    let mut config = testbed.config("dave").unwrap();
    config.room = None;
    let dave = testbed.online(config).await.unwrap();
    let mut dave_inbox = dave.messages().unwrap();
    let (a, b, c) = tokio::join!(
        carol.connect_peer("dave"),
        carol.connect_peer("dave"),
        carol.connect_peer("dave")
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(carol.connected_peers(), ["dave"]);
    // Sending to a peer waits for the connection and the acknowledgement.
    carol.send("dave", "hello").await.unwrap();
    let message = timeout(PROMPT, dave_inbox.recv()).await.unwrap().unwrap();
    assert_eq!((message.from.as_str(), &message.payload[..]), ("carol", &b"hello"[..]));
    let err = carol.send("carol", "self").await.unwrap_err();
    assert!(matches!(err, SendError::InvalidPeer { .. }));
    let big = vec![0u8; 70_000];
    assert!(matches!(carol.post("dave", big).await.unwrap_err(), SendError::TooLarge { .. }));
    carol.shutdown().await;
    dave.shutdown().await;
    testbed.shutdown().await;
}
