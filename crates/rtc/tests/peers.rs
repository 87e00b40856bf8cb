//! Real WebRTC peers on loopback, wired through an in-test signaling relay.
//!
//! Roles: "alice" < "bob" < "carol", so alice offers to both, bob offers to carol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lab;

use std::collections::HashSet;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use lab::{Lab, cid, fast_config, id};
use tether_rtc::{InterfaceFilter, LocalAddresses, PeerState, Role, RtcError, SignalPayload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_exchange_messages_both_ways() {
    let lab = Lab::new(&["alice", "bob"]);
    let (alice, bob) = (lab.set("alice"), lab.set("bob"));
    assert_eq!(alice.role_towards(&id("bob")), Ok(Role::Offerer));
    assert_eq!(bob.role_towards(&id("alice")), Ok(Role::Answerer));

    alice.connect(&id("bob")).await.expect("alice connects to bob");
    // The answerer's connect finds (or joins) the same connection.
    bob.connect(&id("alice")).await.expect("bob connects to alice");
    lab.node("bob").log.wait_channel_open("alice", 1).await;

    for i in 0..5 {
        lab.send_and_expect("alice", "bob", &format!("a->b {i}")).await;
        lab.send_and_expect("bob", "alice", &format!("b->a {i}")).await;
    }
    // Ordered: a burst arrives in the order sent.
    for i in 0..50 {
        alice.send(&id("bob"), Bytes::from(format!("burst {i}"))).await.unwrap();
    }
    let received = lab.node("bob").log.wait_messages_from("alice", 55).await;
    let burst: Vec<String> =
        received[5..].iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("burst {i}")).collect();
    assert_eq!(burst, expected);

    lab.node("alice").log.wait_state("bob", 1, PeerState::Connected).await;
    lab.wait_status("alice", "bob", "alice sees bob connected", |s| {
        s.state == Some(PeerState::Connected) && s.channel_open
    })
    .await;
    assert!(alice.is_connected(&id("bob")));
    assert_eq!(alice.connected_peers(), vec![id("bob")]);
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(1));
    assert_eq!(bob.status(&id("alice")).unwrap().connection_id, cid(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_share_one_peer_connection() {
    let lab = Lab::new(&["alice", "bob"]);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let alice = lab.set("alice").clone();
        calls.spawn(async move { alice.connect(&id("bob")).await });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap().expect("every concurrent connect succeeds");
    }
    assert_eq!(lab.set("alice").status(&id("bob")).unwrap().connection_id, cid(1));
    assert_eq!(lab.set("bob").status(&id("alice")).unwrap().connection_id, cid(1));
    assert_eq!(lab.relay.count("alice", "bob", "offer"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_from_the_answerer_share_one_peer_connection() {
    let lab = Lab::new(&["alice", "bob"]);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let bob = lab.set("bob").clone();
        calls.spawn(async move { bob.connect(&id("alice")).await });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap().expect("every concurrent connect succeeds");
    }
    assert_eq!(lab.set("bob").status(&id("alice")).unwrap().connection_id, cid(1));
    assert_eq!(lab.set("alice").status(&id("bob")).unwrap().connection_id, cid(1));
    assert_eq!(lab.relay.count("bob", "alice", "ice_restart"), 1);
    assert_eq!(lab.relay.count("alice", "bob", "offer"), 1);
    lab.send_and_expect("bob", "alice", "hello offerer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connect_strands_no_one() {
    let lab = Lab::new(&["alice", "bob"]);
    let alice = lab.set("alice");

    // The first caller starts the attempt, is polled once, and goes away.
    {
        let bob = id("bob");
        let mut creator = pin!(alice.connect(&bob));
        tokio::select! {
            biased;
            result = &mut creator => panic!("connect cannot finish on its first poll: {result:?}"),
            () = std::future::ready(()) => {}
        }
    }
    // A caller that joins after the creator left still gets its answer.
    let joiner = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.connect(&id("bob")).await })
    };
    tokio::time::timeout(lab::WAIT, joiner)
        .await
        .expect("the joining caller is answered")
        .unwrap()
        .expect("the joining caller connects");
    // And a later call is answered at once, on the same peer connection.
    alice.connect(&id("bob")).await.expect("a later connect works");
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(1));
    lab.send_and_expect("alice", "bob", "still here").await;

    // Dropping every caller of a fresh attempt does not wedge the peer either.
    let lab = Lab::new(&["alice", "bob"]);
    let alice = lab.set("alice");
    let attempt = tokio::time::timeout(Duration::from_millis(1), alice.connect(&id("bob"))).await;
    assert!(attempt.is_err(), "1 ms is too short to connect");
    alice.connect(&id("bob")).await.expect("a later connect works");
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_during_connect_answers_the_caller_and_closes_what_was_built() {
    let lab = Lab::new(&["alice", "bob"]);
    let alice = lab.set("alice");
    let connecting = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.connect(&id("bob")).await })
    };
    wait_relayed(&lab, "alice", "offer", 1).await;
    alice.close(&id("bob")).await.expect("close within its bound");
    let result = tokio::time::timeout(lab::WAIT, connecting).await.unwrap().unwrap();
    assert_eq!(result, Err(RtcError::PeerClosed { peer: id("bob") }));
    assert_eq!(alice.status(&id("bob")), None, "the peer is forgotten");
    // What alice built is closed, and bob, told so, closed his side too.
    lab.node("alice").log.wait_state("bob", 1, PeerState::Closed).await;
    lab.node("bob").log.wait_state("alice", 1, PeerState::Closed).await;
    // A fresh connect works, on a new peer connection (ids are never reused).
    alice.connect(&id("bob")).await.unwrap();
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(2));
    lab.send_and_expect("alice", "bob", "fresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_keeps_the_data_channel() {
    let lab = Lab::new(&["ivy", "joe"]);
    let ivy = lab.set("ivy");
    ivy.connect(&id("joe")).await.unwrap();
    lab.node("joe").log.wait_channel_open("ivy", 1).await;
    lab.send_and_expect("ivy", "joe", "before").await;
    lab.send_and_expect("joe", "ivy", "before").await;
    let ports_before = candidate_ports(&lab, "ivy");
    let offers_before = lab.relay.count("ivy", "joe", "offer");

    ivy.restart_ice(&id("joe")).await.expect("ice restart completes");

    assert_eq!(lab.relay.count("ivy", "joe", "offer"), offers_before + 1);
    lab.send_and_expect("ivy", "joe", "after").await;
    lab.send_and_expect("joe", "ivy", "after").await;
    assert_eq!(ivy.status(&id("joe")).unwrap().connection_id, cid(1), "same peer connection");
    // Fresh sockets on restart: the restarted ICE agent gathers on new ports.
    wait_until(&lab, "ivy's restart candidates on new ports", |lab| {
        !candidate_ports(lab, "ivy").is_subset(&ports_before)
    })
    .await;

    // Concurrent restarts share one restart offer.
    let offers_before = lab.relay.count("ivy", "joe", "offer");
    let joe = id("joe");
    let (first, second) = tokio::join!(ivy.restart_ice(&joe), ivy.restart_ice(&joe));
    first.unwrap();
    second.unwrap();
    assert_eq!(lab.relay.count("ivy", "joe", "offer"), offers_before + 1);
    lab.send_and_expect("joe", "ivy", "after two restarts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answerer_can_ask_for_an_ice_restart() {
    let lab = Lab::new(&["alice", "bob"]);
    let bob = lab.set("bob");
    lab.connect("bob", "alice").await;
    lab.send_and_expect("bob", "alice", "before").await;

    bob.restart_ice(&id("alice")).await.expect("the answerer's restart completes");

    assert_eq!(lab.relay.count("bob", "alice", "offer"), 0, "the answerer never offers");
    assert!(lab.relay.count("bob", "alice", "ice_restart") >= 2);
    assert_eq!(lab.relay.count("alice", "bob", "offer"), 2);
    lab.send_and_expect("bob", "alice", "after").await;
    lab.send_and_expect("alice", "bob", "after").await;
    assert_eq!(bob.status(&id("alice")).unwrap().connection_id, cid(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_an_unknown_peer_is_a_clear_error() {
    let lab = Lab::new(&["alice", "bob"]);
    let error = lab.set("alice").restart_ice(&id("bob")).await.unwrap_err();
    assert_eq!(error, RtcError::NoPeerConnection { peer: id("bob") });
    let error = lab.set("alice").connect(&id("alice")).await.unwrap_err();
    assert!(matches!(error, RtcError::InvalidPeerId { .. }), "{error}");
    let error = lab.set("alice").send(&id("bob"), Bytes::new()).await.unwrap_err();
    assert_eq!(error, RtcError::ChannelNotOpen { peer: id("bob") });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_closes_everything_once() {
    let lab = Lab::new(&["alice", "bob", "carol"]);
    let alice = lab.set("alice");
    let (bob, carol) = (id("bob"), id("carol"));
    let (to_bob, to_carol) = tokio::join!(alice.connect(&bob), alice.connect(&carol));
    to_bob.unwrap();
    to_carol.unwrap();
    lab.send_and_expect("alice", "carol", "hi carol").await;

    let (r1, r2, r3, r4) =
        tokio::join!(alice.close_all(), alice.close_all(), alice.close_all(), alice.close_all());
    assert_eq!(r1.closed, vec![id("bob"), id("carol")]);
    assert!(r1.is_clean(), "{r1:?}");
    for other in [&r2, &r3, &r4] {
        assert_eq!(*other, r1, "concurrent callers share one run");
    }

    assert!(alice.connected_peers().is_empty());
    assert!(!alice.is_connected(&id("bob")));
    let error = alice.send(&id("bob"), Bytes::from_static(b"late")).await.unwrap_err();
    assert_eq!(error, RtcError::ChannelNotOpen { peer: id("bob") });
    // The others heard `bye` and closed their side.
    for remote in ["bob", "carol"] {
        lab.node(remote).log.wait_state("alice", 1, PeerState::Closed).await;
        let error =
            lab.set(remote).send(&id("alice"), Bytes::from_static(b"late")).await.unwrap_err();
        assert_eq!(error, RtcError::ChannelNotOpen { peer: id("alice") });
    }
    // A run after the first one starts afresh and finds nothing left.
    assert_eq!(alice.close_all().await, tether_rtc::CloseReport::default());
    // The set stays usable.
    alice.connect(&id("bob")).await.expect("connect after close_all");
    lab.send_and_expect("alice", "bob", "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_recovers_after_one_side_tore_down_silently() {
    let lab = Lab::new(&["alice", "bob"]);
    let alice = lab.set("alice");
    alice.connect(&id("bob")).await.unwrap();
    lab.send_and_expect("alice", "bob", "before").await;

    // Bob drops his peer connection without alice hearing about it.
    lab.relay.drop_kind("bye");
    lab.set("bob").close(&id("alice")).await.unwrap();
    wait_relayed(&lab, "bob", "bye", 1).await;
    lab.relay.deliver_kind("bye");
    // Alice never heard the bye: she still holds her first peer connection,
    // not retired (a bye would close it) and not replaced. (webrtc-rs never
    // reports Closed for a remote teardown; only a local close does.)
    let status = alice.status(&id("bob")).expect("alice still has bob");
    assert_eq!(status.connection_id, cid(1), "{status:?}");
    assert_ne!(status.state, Some(PeerState::Closed), "alice closed it: {status:?}");

    // An ICE restart cannot revive it: bob does not have that session any more, says so, and
    // alice's caller learns it without waiting for a timeout.
    let error = alice.restart_ice(&id("bob")).await.unwrap_err();
    assert_eq!(error, RtcError::ClosedByRemote { peer: id("bob") });

    alice.replace(&id("bob")).await.expect("replace builds a working channel");
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(2));
    lab.send_and_expect("alice", "bob", "after").await;
    lab.send_and_expect("bob", "alice", "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_cannot_finish_times_out_and_replace_recovers() {
    let mut config = fast_config();
    config.restart_timeout = Duration::from_millis(600);
    let lab = lab::Lab::with_config(&["alice", "bob"], config);
    let bob = lab.set("bob");
    lab.connect("bob", "alice").await;
    lab.send_and_expect("alice", "bob", "before").await;

    // Signaling goes dark: the answerer's restart request never arrives.
    lab.relay.set_blackhole(true);
    let started = tokio::time::Instant::now();
    let error = bob.restart_ice(&id("alice")).await.unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(
        matches!(error, RtcError::RestartTimeout { after, .. } if after == Duration::from_millis(600)),
        "{error}"
    );
    // Bounded by restart_timeout (the error names it), not by some longer
    // timer; how much later than the bound it came is the scheduler's.
    assert!(started.elapsed() >= Duration::from_millis(600), "gave up before restart_timeout");

    // Signaling is back; the answerer replaces the peer connection.
    lab.relay.set_blackhole(false);
    bob.replace(&id("alice")).await.expect("replace from the answerer");
    lab.node("alice").log.wait_channel_open("bob", 2).await;
    assert_eq!(bob.status(&id("alice")).unwrap().connection_id, cid(2));
    lab.send_and_expect("alice", "bob", "after").await;
    lab.send_and_expect("bob", "alice", "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_restart_answer_does_not_block_the_next_restart() {
    let mut config = fast_config();
    // Longer than the 1 s re-send interval (§13.3), shorter than the 4 s answer wait.
    config.restart_timeout = Duration::from_millis(1500);
    let lab = lab::Lab::with_config(&["alice", "bob"], config);
    let alice = lab.set("alice");
    alice.connect(&id("bob")).await.unwrap();

    // The answer to the first restart offer is lost (say, with the signaling link).
    lab.relay.drop_kind("answer");
    let error = alice.restart_ice(&id("bob")).await.unwrap_err();
    assert!(matches!(error, RtcError::RestartTimeout { .. }), "{error}");
    lab.relay.deliver_kind("answer");

    // The next restart sends the unanswered offer again at once (at most one offer outstanding,
    // NEGOTIATION.md §6.3) instead of queueing behind it (which would wait out the 4 s answer
    // timeout and fail the 1.5 s restart bound); the answerer answers the duplicate again.
    alice.restart_ice(&id("bob")).await.expect("the second restart completes");
    lab.send_and_expect("alice", "bob", "after").await;
    lab.send_and_expect("bob", "alice", "after").await;
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_pending_restarts_answers_waiting_callers() {
    let lab = Lab::new(&["alice", "bob"]);
    let bob = lab.set("bob");
    lab.connect("bob", "alice").await;
    lab.relay.set_blackhole(true);
    let requests = lab.relay.count("bob", "alice", "ice_restart");
    let restart = {
        let bob = bob.clone();
        tokio::spawn(async move { bob.restart_ice(&id("alice")).await })
    };
    wait_relayed(&lab, "bob", "ice_restart", requests + 1).await;
    bob.clear_pending_restarts();
    let result = tokio::time::timeout(Duration::from_secs(1), restart)
        .await
        .expect("the waiting caller is answered at once, not at the restart timeout")
        .unwrap();
    assert_eq!(result, Err(RtcError::RestartCancelled { peer: id("alice") }));
    // The connection itself is untouched.
    lab.relay.set_blackhole(false);
    lab.send_and_expect("bob", "alice", "still connected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_and_stale_signals_are_ignored() {
    let lab = Lab::new(&["alice", "bob"]);
    let (alice, bob) = (lab.set("alice"), lab.set("bob"));
    alice.connect(&id("bob")).await.unwrap();
    lab.send_and_expect("alice", "bob", "before").await;

    // An offer to the offerer, an answer to the answerer, a restart request to the answerer.
    let offer = last_payload(&lab, "alice", "offer");
    alice.handle_signal(&id("bob"), offer.clone()).unwrap();
    bob.handle_signal(&id("alice"), SignalPayload::Answer { sdp: "v=0".into() }).unwrap();
    bob.handle_signal(&id("alice"), SignalPayload::IceRestartRequest).unwrap();
    // A duplicate offer is answered again; a stale answer and garbage are dropped.
    bob.handle_signal(&id("alice"), offer).unwrap();
    let answer = last_payload(&lab, "bob", "answer");
    alice.handle_signal(&id("bob"), answer).unwrap();
    alice.handle_signal(&id("bob"), SignalPayload::Answer { sdp: "garbage".into() }).unwrap();
    bob.handle_signal(&id("alice"), SignalPayload::Offer { sdp: "garbage".into() }).unwrap();
    bob.handle_signal(
        &id("alice"),
        SignalPayload::Candidate {
            candidate: "candidate:nonsense".into(),
            sdp_mid: None,
            sdp_mline_index: None,
        },
    )
    .unwrap();
    bob.handle_signal(&id("alice"), SignalPayload::end_of_candidates()).unwrap();

    lab.send_and_expect("alice", "bob", "after").await;
    lab.send_and_expect("bob", "alice", "after").await;
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(1));
    assert_eq!(bob.status(&id("alice")).unwrap().connection_id, cid(1));
    assert!(alice.is_connected(&id("bob")) && bob.is_connected(&id("alice")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_a_superseded_offer_is_dropped() {
    let lab = Lab::new(&["alice", "bob"]);
    let alice = lab.set("alice");
    // Bob's answers are held back while alice offers twice (the second replaces the first).
    lab.relay.drop_kind("answer");
    let first = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.connect(&id("bob")).await })
    };
    wait_relayed(&lab, "bob", "answer", 1).await;
    let replaced = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.replace(&id("bob")).await })
    };
    wait_relayed(&lab, "bob", "answer", 2).await;
    lab.relay.deliver_kind("answer");
    // Deliver the stale answer (to offer 1) first, then the current one.
    let answers: Vec<SignalPayload> = lab
        .relay
        .seen()
        .into_iter()
        .filter(|m| m.from == "bob" && m.payload.kind() == "answer")
        .map(|m| m.payload)
        .collect();
    alice.handle_signal(&id("bob"), answers[0].clone()).unwrap();
    alice.handle_signal(&id("bob"), answers[1].clone()).unwrap();

    replaced.await.unwrap().expect("the current offer connects");
    let first = first.await.unwrap();
    assert!(first.is_ok(), "the first caller joins the replacement: {first:?}");
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(2));
    lab.send_and_expect("alice", "bob", "on connection 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_filter_decides_what_is_bound_before_and_after_a_restart() {
    let mut config = fast_config();
    config.local_addresses =
        LocalAddresses::Filtered(InterfaceFilter::new(|interface| interface.ip.is_loopback()));
    let lab = Lab::with_config(&["alice", "bob"], config);
    let alice = lab.set("alice");
    alice.connect(&id("bob")).await.unwrap();
    lab.send_and_expect("alice", "bob", "filtered").await;
    let before = candidate_ports(&lab, "alice");
    alice.restart_ice(&id("bob")).await.unwrap();
    lab.send_and_expect("bob", "alice", "filtered, restarted").await;

    let addresses: Vec<String> = lab
        .relay
        .seen()
        .into_iter()
        .filter_map(|m| match m.payload {
            SignalPayload::Candidate { candidate, .. } => {
                candidate.split_whitespace().nth(4).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    assert!(!addresses.is_empty());
    assert!(
        addresses.iter().all(|a| a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())),
        "only what the filter accepts is offered: {addresses:?}"
    );
    // The restart re-resolved the filter and bound fresh sockets.
    wait_until(&lab, "candidates on new ports after the restart", |lab| {
        !candidate_ports(lab, "alice").is_subset(&before)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_older_than_the_first_offer_is_ignored() {
    let lab = Lab::new(&["alice", "bob"]);
    let alice = lab.set("alice");
    lab.relay.drop_kind("answer");
    let connecting = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.connect(&id("bob")).await })
    };
    wait_relayed(&lab, "bob", "answer", 1).await;
    // A `bye` bob sent before he saw this offer (about an earlier session) arrives only now,
    // ahead of his answer.
    alice.handle_signal(&id("bob"), SignalPayload::Bye).unwrap();
    lab.relay.deliver_kind("answer");
    alice.handle_signal(&id("bob"), last_payload(&lab, "bob", "answer")).unwrap();

    let result = tokio::time::timeout(lab::WAIT, connecting).await.unwrap().unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(
        alice.status(&id("bob")).unwrap().connection_id,
        cid(1),
        "the stale bye closed nothing"
    );
    lab.send_and_expect("alice", "bob", "hello").await;
}

/// Waits until the relay has seen `count` messages of `kind` from `from`.
async fn wait_relayed(lab: &Lab, from: &str, kind: &str, count: usize) {
    wait_until(lab, &format!("{count} {kind} from {from}"), |lab| {
        let seen = lab.relay.seen();
        seen.iter().filter(|m| m.from == from && m.payload.kind() == kind).count() >= count
    })
    .await;
}

/// Polls what the relay has seen (every 5 ms) until `done`; fails the test after `lab::WAIT`.
async fn wait_until(lab: &Lab, what: &str, done: impl Fn(&Lab) -> bool) {
    let deadline = tokio::time::Instant::now() + lab::WAIT;
    while !done(lab) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn last_payload(lab: &Lab, from: &str, kind: &str) -> SignalPayload {
    lab.relay
        .seen()
        .into_iter()
        .rev()
        .find(|m| m.from == from && m.payload.kind() == kind)
        .map(|m| m.payload)
        .unwrap_or_else(|| panic!("no {kind} from {from}"))
}

/// The ports of every host candidate `from` has trickled so far.
fn candidate_ports(lab: &Lab, from: &str) -> HashSet<u16> {
    lab.relay
        .seen()
        .into_iter()
        .filter(|m| m.from == from)
        .filter_map(|m| match m.payload {
            SignalPayload::Candidate { candidate, .. } => {
                candidate.split_whitespace().nth(5)?.parse().ok()
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_first_offer_is_sent_again_when_the_answerer_asks() {
    lab::init_tracing();
    let lab = lab::Lab::with_config(&["alice", "bob"], lab::fast_config());
    let alice = lab.set("alice");
    let bob = lab.set("bob");
    // Alice offers while bob is not reachable (the signaling server drops
    // relays to peers that are not registered yet).
    lab.relay.drop_kind("offer");
    let connecting = tokio::spawn({
        let alice = alice.clone();
        async move { alice.connect(&id("bob")).await }
    });
    wait_relayed(&lab, "alice", "offer", 1).await;
    lab.relay.deliver_kind("offer");
    // Bob registers and asks for a negotiation: the offer comes again, well
    // before alice's connect timeout.
    bob.connect(&id("alice")).await.expect("bob connects once the offer is sent again");
    // Alice's connect would fail at its connect timeout had the offer not
    // been sent again: it succeeds instead.
    connecting.await.unwrap().unwrap();
    lab.send_and_expect("alice", "bob", "hello").await;
    assert_eq!(alice.status(&id("bob")).unwrap().connection_id, cid(1), "the same peer connection");
}
