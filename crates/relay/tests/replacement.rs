//! Re-registration: a reconnecting (mobile) peer takes over its id at once,
//! the old socket is told and closed, a late close of the old socket never
//! unregisters the new one, and the server orders attempts of one client
//! session by generation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, next_event, peer};
use serde_json::json;
use tether_signal::protocol::{RelayPayload, close_code};
use tether_signal::{LossCause, SignalEvent};

#[tokio::test]
async fn re_registering_replaces_the_old_connection() {
    let harness = Harness::start().await;
    let (mut carol, _) = harness.raw_registered("carol", Some("room")).await;
    let (mut old, _) = harness.raw_registered("alice", Some("room")).await;
    assert_eq!(carol.next_json().await, json!({"type": "peer_joined", "peer_id": "alice"}));

    let (mut new, registered) = harness.raw_registered("alice", Some("room")).await;
    assert_eq!(registered["replaced"], true);
    assert_eq!(registered["peers"], json!(["carol"]));
    let (frames, code) = old.until_close().await;
    assert_eq!(frames[0]["code"], "replaced");
    assert_eq!(code, Some(close_code::REPLACED));
    // Carol learns alice re-joined (her cue to renegotiate), never that she left.
    assert_eq!(carol.next_json().await, json!({"type": "peer_joined", "peer_id": "alice"}));
    harness
        .wait_metrics("the old session to end", |metrics| metrics.session_ends_for("replaced") == 1)
        .await;
    carol.send_json(&json!({"type": "ice_restart", "to": "alice"})).await;
    assert_eq!(new.next_json().await, json!({"type": "ice_restart", "from": "carol"}));
    new.send_json(&json!({"type": "bye", "to": "carol"})).await;
    assert_eq!(carol.next_json().await, json!({"type": "bye", "from": "alice"}));
    assert_eq!(harness.server.metrics().peers_registered, 2);
}

#[tokio::test]
async fn a_client_replaced_by_another_instance_reports_the_loss() {
    let harness = Harness::start().await;
    let (phone, mut phone_events) = harness.client("alice").await;
    let (tablet, mut tablet_events) = harness.client("alice").await;
    match next_event(&mut phone_events).await {
        SignalEvent::Lost { cause, .. } => assert_eq!(cause, LossCause::Replaced),
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(!phone.is_connected());
    assert!(tablet.is_connected());
    // Messages for alice now reach the tablet.
    let (bob, _bob_events) = harness.client("bob").await;
    bob.send(&peer("alice"), RelayPayload::IceRestart).unwrap();
    assert_eq!(
        next_event(&mut tablet_events).await,
        SignalEvent::Relay { from: peer("bob"), payload: RelayPayload::IceRestart }
    );
}

#[tokio::test]
async fn an_older_attempt_of_the_same_session_cannot_displace_a_newer_one() {
    let harness = Harness::start().await;
    let register = |generation: u64| {
        json!({
            "type": "register", "version": 1, "peer_id": "alice",
            "token": harness.token("alice"), "session": "phone-1", "generation": generation,
        })
    };
    let mut newer = harness.raw().await;
    newer.send_json(&register(5)).await;
    assert_eq!(newer.next_json().await["type"], "registered");

    let mut older = harness.raw().await;
    older.send_json(&register(4)).await;
    let (frames, code) = older.until_close().await;
    assert_eq!(frames[0]["code"], "stale_generation");
    assert_eq!(code, Some(close_code::STALE_GENERATION));

    // Another session (a different device or a restarted app) still takes over.
    let mut other = harness.raw().await;
    let mut other_register = register(1);
    other_register["session"] = json!("tablet-7");
    other.send_json(&other_register).await;
    assert_eq!(other.next_json().await["replaced"], true);
    let (frames, code) = newer.until_close().await;
    assert_eq!(frames[0]["code"], "replaced");
    assert_eq!(code, Some(close_code::REPLACED));
}
