//! Tokens run out. A node whose token expired is closed by the server with
//! 4010 and refused on its next registration: it parks, and a renewed token
//! brings it back. A token renewed before expiry carries the node across
//! the server's 4010 without parking at all.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use tether::live::testbed::{LoopbackTestbed, Traffic};
use tether::{ConnectionState, ParkReason, PeerId, RtcNode};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

const PROMPT: Duration = Duration::from_secs(20);
/// Tokens carry whole seconds; this one runs out while the test watches.
const SHORT_LIVED: Duration = Duration::from_secs(2);

fn id(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

/// A node of `bed` online with a token valid for `ttl`.
async fn online_node(bed: &LoopbackTestbed, peer: &PeerId, ttl: Duration) -> RtcNode {
    let mut config = bed.config(peer);
    config.token = bed.token_valid_for(peer, ttl);
    bed.online(config).await.unwrap()
}

/// Waits (bounded) until the state satisfies `wanted`; returns it.
async fn reach(
    states: &mut watch::Receiver<ConnectionState>,
    what: &str,
    wanted: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    let reached = timeout(PROMPT, states.wait_for(|s| wanted(s))).await.map(|s| *s.unwrap());
    reached.unwrap_or_else(|_| panic!("the node never got {what}: {:?}", *states.borrow()))
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_parks_the_node_and_a_renewed_one_restores_it() {
    init_tracing();
    let bed = LoopbackTestbed::start().await.unwrap();
    let (a, b) = (id("alice"), id("bob"));
    let alice = online_node(&bed, &a, SHORT_LIVED).await;
    let bob = online_node(&bed, &b, PROMPT * 30).await;
    let mut states = alice.state();
    reach(&mut states, "connected", |s| *s == ConnectionState::Connected).await;
    let registered = bed.metrics().registrations_total;

    let parked = |s: &ConnectionState| matches!(s, ConnectionState::Parked { .. });
    let state = reach(&mut states, "parked after its token expired", parked).await;
    assert_eq!(state, ConnectionState::Parked { reason: ParkReason::AuthRejected });
    assert!(alice.renew_token("").is_err(), "an empty token is refused");

    alice.renew_token(bed.token(&a)).unwrap();
    reach(&mut states, "connected with the renewed token", |s| *s == ConnectionState::Connected)
        .await;
    assert!(bed.metrics().registrations_total > registered);

    // And it is a working node again: messages reach bob and come back.
    let mut bob_inbox = bob.messages().unwrap();
    let mut alice_inbox = alice.messages().unwrap();
    timeout(PROMPT, alice.connect_peer(&b)).await.unwrap().unwrap();
    let mut traffic = Traffic::default();
    for _ in 0..3 {
        let message = traffic.next_message(&a, &b);
        timeout(PROMPT, alice.send(&b, message)).await.unwrap().unwrap();
        traffic.sent(&a, &b);
        let message = traffic.next_message(&b, &a);
        timeout(PROMPT, bob.send(&a, message)).await.unwrap().unwrap();
        traffic.sent(&b, &a);
    }
    let deadline = Instant::now() + PROMPT;
    while traffic.summary().lost > 0 {
        assert!(Instant::now() < deadline, "messages did not arrive: {:?}", traffic.summary());
        tokio::select! {
            Some(message) = alice_inbox.recv() => traffic.received(&a, &message),
            Some(message) = bob_inbox.recv() => traffic.received(&b, &message),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    assert_eq!(traffic.summary().duplicated, 0);
    alice.shutdown().await;
    bob.shutdown().await;
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_renewed_before_expiry_carries_the_node_across_the_servers_close() {
    init_tracing();
    let bed = LoopbackTestbed::start().await.unwrap();
    let a = id("alice");
    let alice = online_node(&bed, &a, SHORT_LIVED).await;
    let mut states = alice.state();
    reach(&mut states, "connected", |s| *s == ConnectionState::Connected).await;
    let registered = bed.metrics().registrations_total;
    alice.renew_token(bed.token(&a)).unwrap();

    // The server closes the session when the first token runs out; the node
    // registers again with the renewed one and never parks on the way.
    let deadline = Instant::now() + PROMPT;
    let mut seen = Vec::new();
    while bed.metrics().registrations_total == registered
        || *states.borrow() != ConnectionState::Connected
    {
        assert!(Instant::now() < deadline, "no re-registration; states seen: {seen:?}");
        if let Ok(Ok(())) = timeout(Duration::from_millis(50), states.changed()).await {
            let state = *states.borrow_and_update();
            assert!(
                !matches!(state, ConnectionState::Parked { .. }),
                "the node parked although its token was renewed: {seen:?} then {state}"
            );
            seen.push(state);
        }
    }
    alice.shutdown().await;
    bed.shutdown().await;
}
