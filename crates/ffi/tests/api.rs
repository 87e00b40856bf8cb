//! The foreign API, driven from Rust: what the bindings call, without a
//! foreign language in the way.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_ffi::{
    ActionKind, AppLifecycleState, Availability, ConnectionState, ListenerError, NetworkEvent,
    NetworkSnapshot, PeerConnectionState, PeerStateListener, PeerStatus, ReconnectReason,
    SimulatedEffects, StateListener, TetherError, TetherNodeBuilder, Transport,
};

fn wifi(sequence: i64) -> NetworkSnapshot {
    NetworkSnapshot {
        sequence,
        availability: Availability::Available,
        transports: vec![Transport::Wifi],
        is_expensive: false,
        is_constrained: false,
        path_id: 0,
    }
}

fn simulated(duration_ms: i64) -> Arc<tether_ffi::TetherNode> {
    TetherNodeBuilder::new()
        .name("api-test".into())
        .simulated(SimulatedEffects { duration_ms: Some(duration_ms), failures: Vec::new() })
        .build()
        .unwrap()
}

#[derive(Default)]
struct Recorder(Mutex<Vec<ConnectionState>>);

impl StateListener for Recorder {
    fn on_state_changed(&self, state: ConnectionState) -> Result<(), ListenerError> {
        self.0.lock().unwrap().push(state);
        Ok(())
    }
}

impl Recorder {
    async fn wait_for(&self, want: &[ConnectionState]) {
        for _ in 0..500 {
            if self.0.lock().unwrap().ends_with(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("saw {:?}, wanted to end with {want:?}", self.0.lock().unwrap());
    }
}

/// Records every peer list a [`PeerStateListener`] is given.
#[derive(Default)]
struct PeerRecorder(Mutex<Vec<Vec<PeerStatus>>>);

impl PeerStateListener for PeerRecorder {
    fn on_peer_states_changed(&self, peers: Vec<PeerStatus>) -> Result<(), ListenerError> {
        self.0.lock().unwrap().push(peers);
        Ok(())
    }
}

impl PeerRecorder {
    /// Waits (bounded) until the last list says `peer` is `connected`.
    async fn wait_for(&self, peer: &str, connected: bool) {
        for _ in 0..3000 {
            let last = self.0.lock().unwrap().last().cloned().unwrap_or_default();
            if last.iter().any(|p| p.peer == peer && p.connected == connected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{peer} never connected={connected}: {:?}", self.0.lock().unwrap());
    }
}

#[tokio::test]
async fn a_simulated_node_has_no_peer_states() {
    let node = simulated(10);
    assert!(node.peer_states().is_empty());
    let err = node.subscribe_peer_states(Arc::new(PeerRecorder::default())).unwrap_err();
    assert!(matches!(err, TetherError::Unsupported(_)), "{err}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_get_results_and_the_listener_follows() {
    let node = simulated(40);
    let handle = node.handle();
    let recorder = Arc::new(Recorder::default());
    let _subscription = node.subscribe_state(recorder.clone()).unwrap();

    let result = handle.network_path_changed(wifi(1)).await.unwrap();
    assert_eq!(result.action, Some(ActionKind::Restore));
    assert!(result.success && result.error.is_none());
    assert_eq!(node.state(), ConnectionState::Connected);

    let result = handle.force_reconnect(ReconnectReason::ManualReconnect).await.unwrap();
    assert_eq!(result.action, Some(ActionKind::Reconnect));
    recorder
        .wait_for(&[
            ConnectionState::Recovering { action: ActionKind::Reconnect, attempt: 1 },
            ConnectionState::Connected,
        ])
        .await;

    node.shutdown().await.unwrap();
    assert_eq!(
        handle.force_reconnect(ReconnectReason::ManualReconnect).await,
        Err(TetherError::ShutDown)
    );
    assert_eq!(node.shutdown().await, Err(TetherError::ShutDown));
}

#[tokio::test]
async fn invalid_input_is_rejected_before_the_node() {
    let node = simulated(10);
    let handle = node.handle();
    let err = handle
        .app_lifecycle_changed(AppLifecycleState::Foreground { background_duration_ms: -1 })
        .await
        .unwrap_err();
    assert!(matches!(err, TetherError::InvalidArgument { .. }), "{err}");
    let err = handle
        .submit(NetworkEvent::NetworkPathChanged { snapshot: wifi(i64::MIN) })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NetworkSnapshot.sequence"), "{err}");
    // Nothing reached the node: the first real snapshot is still news.
    let result = handle.network_path_changed(wifi(1)).await.unwrap();
    assert_eq!(result.action, Some(ActionKind::Restore));
    node.shutdown().await.unwrap();
}

#[test]
fn a_node_builds_and_shuts_down_without_any_caller_runtime() {
    // Foreign callers have no tokio runtime: build() and the async methods
    // must work from a plain thread with any executor.
    let node = simulated(5);
    let handle = node.handle();
    let result = block_on_without_tokio(handle.network_path_changed(wifi(1))).unwrap();
    assert!(result.success);
    block_on_without_tokio(node.shutdown()).unwrap();
    assert!(handle.is_shut_down());
}

/// A minimal executor with no tokio context, as a foreign runtime would be.
fn block_on_without_tokio<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// A hang guard for one step on loopback (healthy: well under a second):
/// a broken node fails the test naming the step instead of hanging it.
async fn bounded<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    const GUARD: Duration = Duration::from_secs(30);
    tokio::time::timeout(GUARD, step)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {GUARD:?}"))
}

#[tokio::test]
async fn two_live_nodes_exchange_a_message() {
    let server = tether_ffi::start_test_signaling_server().await.unwrap();
    let alice = server.node_builder("alice".into()).unwrap().build().unwrap();
    let bob = server.node_builder("bob".into()).unwrap().build().unwrap();
    for node in [&alice, &bob] {
        let result =
            bounded("going online", node.handle().network_path_changed(wifi(1))).await.unwrap();
        assert!(result.success, "{result:?}");
    }
    let peers = Arc::new(PeerRecorder::default());
    let subscription = alice.subscribe_peer_states(peers.clone()).unwrap();
    bounded("connect", alice.connect_peer("bob".into())).await.unwrap();
    peers.wait_for("bob", true).await;
    let bob_status = alice.peer_states().into_iter().find(|p| p.peer == "bob").unwrap();
    assert_eq!(
        (bob_status.connected, bob_status.connection),
        (true, PeerConnectionState::Connected)
    );
    assert!(!bob_status.relay_escalated);
    // On loopback without TURN, ICE selected a direct host pair.
    let route = bounded("route", alice.peer_route("bob".into())).await.unwrap().expect("a route");
    assert_eq!((route.local.candidate_type.as_str(), route.relayed), ("host", false), "{route:?}");
    assert_eq!(route.local.protocol, "udp");
    assert_eq!(bounded("no route", alice.peer_route("carol".into())).await.unwrap(), None);
    bounded("send", alice.send("bob".into(), b"hello".to_vec())).await.unwrap();
    let message = bounded("receive", bob.receive()).await.unwrap();
    assert_eq!((message.sender.as_str(), message.payload.as_slice()), ("alice", &b"hello"[..]));
    assert!(matches!(
        alice.post("bob".into(), vec![0; 70_000]).await,
        Err(TetherError::InvalidArgument { field: "payload", .. })
    ));
    let report = bounded("alice's shutdown", alice.shutdown()).await.unwrap();
    assert_eq!(report.cleanup_error, None);
    // The final cleanup closed the peer connection; the last list says so.
    peers.wait_for("bob", false).await;
    for _ in 0..3000 {
        if !subscription.is_active() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!subscription.is_active(), "the subscription ends with the node");
    bounded("bob's shutdown", bob.shutdown()).await.unwrap();
    assert_eq!(bounded("receive after shutdown", bob.receive()).await, Err(TetherError::ShutDown));
    server.shutdown().await.unwrap();
}

#[test]
fn bad_tls_and_fallback_settings_fail_the_build_naming_the_setting() {
    let live = || {
        TetherNodeBuilder::new()
            .signaling_url("wss://signal.example:443/ws".into())
            .peer_id("alice".into())
            .token("t".into())
    };
    let refused = |builder: Arc<TetherNodeBuilder>, needle: &str| match builder.build() {
        Err(TetherError::InvalidConfig(message)) => {
            assert!(message.contains(needle), "{message:?} does not name {needle:?}");
        }
        Err(other) => panic!("wanted InvalidConfig naming {needle:?}, got {other:?}"),
        Ok(_) => panic!("a builder with a bad {needle} built a node"),
    };
    refused(live().tls_ca_pem("not a certificate".into()), "tls_ca_pem: no certificate");
    let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n".to_owned();
    refused(live().tls_ca_pem(truncated), "tls_ca_pem");
    refused(live().tls_ca_path("/nonexistent/ca.pem".into()), "tls_ca_path: cannot read");
    refused(
        live().fallback_signaling_urls(vec!["http://b:1/ws".into()]),
        "fallback_signaling_urls",
    );
    refused(live().fallback_signaling_urls(vec!["ws://".into()]), "fallback_signaling_urls");
    refused(live().signaling_url("wss:///ws".into()), "signaling_url: no host");
}

#[tokio::test]
async fn a_node_trusting_the_test_ca_connects_over_wss_and_one_without_fails() {
    let server = tether_ffi::start_test_signaling_server_tls().await.unwrap();
    assert!(server.url().starts_with("wss://127.0.0.1:"), "{}", server.url());
    let ca = server.ca_pem().expect("a tls server has a ca");

    let trusting = server.node_builder("alice".into()).unwrap().tls_ca_pem(ca).build().unwrap();
    let result =
        bounded("going online over wss", trusting.handle().network_path_changed(wifi(1))).await;
    assert_eq!(result.unwrap().action, Some(ActionKind::Restore));
    // On a loaded machine the first TLS connect can outlast the preset's
    // connect bound; recovery then retries on its own.
    bounded("connected over wss", async {
        while trusting.state() != ConnectionState::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // The system's roots do not know the test CA: the handshake fails and
    // the restore says so, within the (responsive) connect timeout.
    let distrusting = server.node_builder("bob".into()).unwrap().build().unwrap();
    let result =
        bounded("a failing restore", distrusting.handle().network_path_changed(wifi(1))).await;
    let result = result.unwrap();
    assert!(!result.success, "{result:?}");
    let why = result.error_message.unwrap_or_default();
    assert!(why.contains("tls handshake"), "the error says why: {why}");
    assert_ne!(distrusting.state(), ConnectionState::Connected);

    bounded("shutdown", trusting.shutdown()).await.unwrap();
    bounded("shutdown", distrusting.shutdown()).await.unwrap();
    server.shutdown().await.unwrap();
}
