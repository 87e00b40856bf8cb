//! Scenario and property tests of the negotiation machine, on the simulation of
//! `simulation.rs`: two machines, a virtual clock, no WebRTC.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::action::Action;
use super::input::{Input, PcEvent};
use super::machine::Machine;
use super::simulation::{Intent, Side, Sim, config};
use super::{Role, sdp};
use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

const MS: fn(u64) -> Duration = Duration::from_millis;
const S: fn(u64) -> Duration = Duration::from_secs;

fn assert_clean(sim: &Sim) {
    assert!(sim.violations.is_empty(), "violations: {:?}", sim.violations);
    for side in [Side::A, Side::B] {
        assert_eq!(sim.unanswered(side), 0, "{side:?} has callers never answered");
    }
}

#[test]
fn both_sides_connecting_at_once_converge_on_one_connection() {
    let mut sim = Sim::new();
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.intent(Side::B, MS(0), Intent::Connect);
    sim.run_until(S(5));
    assert!(sim.converged());
    assert_clean(&sim);
    assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(1)));
    // The answerer's `ice_restart` crossed the offer: it is re-sent, never a second offer.
    assert!(sim.sent(Side::A, "offer") <= 2);
    assert_eq!(sim.results(Side::A), vec![Some(Ok(()))]);
    assert_eq!(sim.results(Side::B), vec![Some(Ok(()))]);
}

#[test]
fn a_connect_that_times_out_reports_the_peer_lost_and_retries() {
    // Bug a: the answerer never answers the first offer and never asks for one; nobody else
    // reconnects. The offerer must not stay silent after its connect timeout (P5).
    let mut sim = Sim::new();
    sim.reconnect_on_loss = false;
    sim.drop_next.push((Side::A, "offer"));
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.run_until(S(30));
    assert!(sim.converged(), "the retry connects");
    assert_clean(&sim);
    assert_eq!(sim.side(Side::A).lost_reports, 1);
    let timed_out = matches!(sim.results(Side::A)[0], Some(Err(RtcError::ConnectTimeout { .. })));
    assert!(timed_out, "{:?}", sim.results(Side::A));
    assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(2)));
}

#[test]
fn retries_back_off_and_stop_while_the_peer_is_away() {
    let mut sim = Sim::new();
    sim.reconnect_on_loss = false;
    // Every offer is lost for a while.
    for _ in 0..3 {
        sim.drop_next.push((Side::A, "offer"));
    }
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.run_until(S(25));
    // 10 s timeout, retry after 0.25 s, 10 s timeout, retry after 0.5 s: three offers so far.
    assert_eq!(sim.side(Side::A).lost_reports, 2);
    assert_eq!(sim.sent(Side::A, "offer"), 3);
    sim.input(Side::A, Input::Presence(super::input::Presence::Left));
    sim.run_until(S(120));
    assert!(!sim.converged(), "no retry while the peer is away");
    assert_eq!(sim.sent(Side::A, "offer"), 3);
    sim.intent(Side::A, MS(0), Intent::PeerJoined);
    sim.run_until(S(125));
    assert!(sim.converged(), "peer_joined retries at once");
    assert_clean(&sim);
}

#[test]
fn a_restart_answered_by_a_new_dtls_identity_replaces_the_connection() {
    // Bug b: the answerer answers the ICE restart from a brand-new pc (P7).
    let mut sim = Sim::new();
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.run_until(S(2));
    assert!(sim.converged());
    let b_pc = sim.side(Side::B).machine.connection_id().unwrap_or(ConnectionId::new(0));
    if let Some(pc) = sim.side_mut(Side::B).pcs.get_mut(&b_pc) {
        pc.lie_identity = Some("FP:somebody-else".to_owned());
    }
    sim.intent(Side::A, MS(0), Intent::RestartIce);
    sim.run_until(S(5));
    assert!(sim.converged(), "a replacement connects");
    assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(2)));
    assert!(sim.results(Side::A).iter().all(|result| result == &Some(Ok(()))));
    assert_clean(&sim);
}

#[test]
fn both_sides_renegotiating_at_once_make_one_restart() {
    let mut sim = Sim::new();
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.run_until(S(2));
    let offers = sim.sent(Side::A, "offer");
    sim.intent(Side::A, MS(0), Intent::RestartIce);
    sim.intent(Side::B, MS(0), Intent::RestartIce);
    sim.intent(Side::B, MS(0), Intent::PeerJoined);
    sim.intent(Side::A, MS(0), Intent::PeerJoined);
    sim.run_until(S(6));
    assert!(sim.converged());
    assert_clean(&sim);
    // One restart offer, at most re-sent once for the crossing request (P2, P4).
    assert!(sim.sent(Side::A, "offer") - offers <= 2, "{}", sim.sent(Side::A, "offer"));
    assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(1)));
}

#[test]
fn a_restart_asked_for_during_the_first_offer_is_satisfied_by_it() {
    let mut sim = Sim::new();
    sim.latencies = vec![MS(50)];
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.intent(Side::A, MS(1), Intent::RestartIce);
    sim.run_until(S(3));
    assert!(sim.converged());
    assert_eq!(sim.sent(Side::A, "offer"), 1, "P3: no second offer");
    assert_eq!(sim.results(Side::A), vec![Some(Ok(())), Some(Ok(()))]);
    assert_clean(&sim);
}

/// The answerer's `register` carried its `ice_restart`: the restart call that follows sends no
/// second one, and is answered by the offer it asked for whether that offer's restart is still
/// running when the call comes or done already.
#[test]
fn a_restart_asked_for_in_register_is_not_asked_again() {
    for call_after in [MS(0), MS(40), S(2)] {
        let mut sim = Sim::new();
        sim.latencies = vec![MS(50)];
        sim.intent(Side::A, MS(0), Intent::Connect);
        sim.run_until(S(2));
        let offers = sim.sent(Side::A, "offer");
        sim.intent(Side::B, MS(0), Intent::AskRestartInRegister);
        sim.intent(Side::B, call_after, Intent::RestartIceAsked);
        sim.run_until(S(2) + call_after + S(2));
        assert!(sim.converged(), "{call_after:?}: {:#?}", sim.log);
        assert_eq!(sim.sent(Side::B, "ice_restart"), 0, "{call_after:?}");
        assert_eq!(sim.sent(Side::A, "offer") - offers, 1, "{call_after:?}: one restart offer");
        assert_eq!(sim.results(Side::B).last(), Some(&Some(Ok(()))), "{call_after:?}");
        assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(1)));
        assert_clean(&sim);
    }
}

#[test]
fn peer_joined_resends_a_lost_first_offer() {
    let mut sim = Sim::new();
    sim.drop_next.push((Side::A, "offer"));
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.intent(Side::A, MS(500), Intent::PeerJoined);
    sim.run_until(S(2));
    assert!(sim.converged(), "P4: the outstanding offer is re-sent, not waited out");
    assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(1)));
    assert_clean(&sim);
}

#[test]
fn duplicated_offers_are_answered_and_the_second_answer_dropped() {
    let mut sim = Sim::new();
    sim.duplicate_offers = true;
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.run_until(S(2));
    sim.intent(Side::A, MS(0), Intent::RestartIce);
    sim.run_until(S(4));
    assert!(sim.converged());
    assert_clean(&sim);
}

fn answerer() -> Machine {
    let peer = crate::PeerId::new("a").unwrap_or_else(|error| panic!("{error}"));
    Machine::new(peer, Role::Answerer, config(), 0)
}

fn offer_text(session: u64, seq: u64) -> String {
    let sdp =
        format!("v=0\r\no=- {session} 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\n");
    sdp::tag_offer(&sdp, seq, false)
}

fn drain(machine: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| machine.poll_action()).collect()
}

#[test]
fn channels_announced_in_band_are_never_taken() {
    // The channel of §3 is negotiated out of band: whatever a remote announces with DCEP, even
    // under tether's label, is dropped.
    let mut machine = answerer();
    let now = Instant::now();
    machine.handle_input(now, Input::Signal(SignalPayload::Offer { sdp: offer_text(7, 1) }));
    let id = machine.connection_id().unwrap_or(ConnectionId::new(0));
    let built = drain(&mut machine);
    assert!(
        built.contains(&Action::CreatePc { id }),
        "the answerer builds its own channel: {built:?}"
    );
    let announce = |label: &str| Input::Pc {
        id,
        event: PcEvent::ChannelAnnounced { label: label.to_owned() },
    };
    machine.handle_input(now, announce("chat"));
    assert_eq!(drain(&mut machine), vec![Action::IgnoreChannel { id }]);
    machine.handle_input(now, announce("tether"));
    assert_eq!(drain(&mut machine), vec![Action::IgnoreChannel { id }]);
}

#[test]
fn a_new_session_replaces_the_connection_and_a_bye_loses_it() {
    // The node tells a replacement (its negotiation builds the next peer connection itself)
    // from a loss (nothing follows unless someone reconnects) by `replaced`.
    let mut machine = answerer();
    let now = Instant::now();
    let offer = |session| Input::Signal(SignalPayload::Offer { sdp: offer_text(session, 1) });
    let retirements = |actions: Vec<Action>| -> Vec<(u64, PeerState, bool)> {
        let retired = actions.into_iter().filter_map(|action| match action {
            Action::Retire { id, state, replaced } => Some((id.get(), state, replaced)),
            _ => None,
        });
        retired.collect()
    };
    machine.handle_input(now, offer(7));
    let first = drain(&mut machine);
    assert!(retirements(first).is_empty());
    let id = machine.connection_id().unwrap_or(ConnectionId::new(0));
    machine.handle_input(now, Input::Done { id, outcome: super::input::Outcome::Created });
    let _ = drain(&mut machine);

    machine.handle_input(now, offer(8));
    let replaced = drain(&mut machine);
    assert!(replaced.contains(&Action::CreatePc { id: ConnectionId::new(2) }), "{replaced:?}");
    assert_eq!(retirements(replaced), vec![(1, PeerState::Closed, true)]);
    let id = ConnectionId::new(2);
    machine.handle_input(now, Input::Done { id, outcome: super::input::Outcome::Created });
    let _ = drain(&mut machine);

    machine.handle_input(now, Input::Signal(SignalPayload::Bye));
    assert_eq!(retirements(drain(&mut machine)), vec![(2, PeerState::Closed, false)]);
}

#[test]
fn a_flood_of_offers_is_deferred_and_counted() {
    let mut machine = answerer();
    let t0 = Instant::now();
    for session in 1..=10 {
        let offer = SignalPayload::Offer { sdp: offer_text(session, 1) };
        machine.handle_input(t0, Input::Signal(offer));
        // The executor answers at once: each new session builds a pc.
        let _ = drain(&mut machine);
    }
    // Four tokens: four sessions taken, the newest of the rest deferred.
    assert_eq!(machine.connection_id(), Some(ConnectionId::new(4)));
    assert_eq!(machine.deferred_total(), 6);
    assert_eq!(machine.poll_timeout(), Some(t0 + super::budget::REFILL));
    machine.handle_timeout(t0 + super::budget::REFILL);
    let actions = drain(&mut machine);
    assert!(actions.contains(&Action::CreatePc { id: ConnectionId::new(5) }));
    // Only the newest deferred offer was kept.
    assert!(machine.poll_timeout().is_none_or(|at| at > t0 + S(60)));
}

#[derive(Debug, Clone)]
struct Step {
    after_ms: u64,
    side: Side,
    intent: Intent,
}

fn step() -> impl Strategy<Value = Step> {
    let intent = prop_oneof![
        4 => Just(Intent::Connect),
        2 => Just(Intent::RestartIce),
        1 => Just(Intent::Replace),
        2 => Just(Intent::PeerJoined),
        1 => Just(Intent::SignalingDown),
    ];
    (0u64..3000, prop_oneof![Just(Side::A), Just(Side::B)], intent)
        .prop_map(|(after_ms, side, intent)| Step { after_ms, side, intent })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any interleaving of local intents on both sides, any signaling latencies (so reordered
    /// offers), duplicated offers: the pair converges on one connection both sides agree on,
    /// never applies two answers to one offer, and answers every caller. With or without an
    /// application that reconnects on a loss: no state is a silent dead end.
    #[test]
    fn any_interleaving_converges(
        first in prop_oneof![Just(Side::A), Just(Side::B)],
        steps in proptest::collection::vec(step(), 0..12),
        latencies in proptest::collection::vec(1u64..400, 1..8),
        duplicate_offers in any::<bool>(),
        application_reconnects in any::<bool>(),
    ) {
        let mut sim = Sim::new();
        // Without the application's help, the machines' own retries must get there (P5).
        sim.reconnect_on_loss = application_reconnects;
        sim.latencies = latencies.into_iter().map(MS).collect();
        sim.duplicate_offers = duplicate_offers;
        sim.intent(first, MS(0), Intent::Connect);
        let mut at = 0;
        for step in &steps {
            at += step.after_ms;
            sim.intent(step.side, MS(at), step.intent);
            if step.intent == Intent::SignalingDown {
                sim.intent(step.side, MS(at + 700), Intent::SignalingUp);
            }
        }
        sim.run_until(MS(at) + S(90));
        prop_assert!(sim.violations.is_empty(), "violations: {:?}", sim.violations);
        let tail: Vec<&String> = sim.log.iter().rev().take(40).rev().collect();
        prop_assert!(sim.converged(), "not converged: a {:?} b {:?}; last events:\n{:#?}",
            sim.side(Side::A).machine.connection_id(), sim.side(Side::B).machine.connection_id(),
            tail);
        for side in [Side::A, Side::B] {
            prop_assert_eq!(sim.unanswered(side), 0);
            // Every hold of an ICE restart ends with it: data never waits on a working pair.
            prop_assert!(!sim.holding(side), "{side:?} still holds data; last events:\n{tail:#?}");
        }
    }
}

#[test]
fn a_late_copy_of_a_superseded_session_is_stale_and_its_restart_rejected() {
    let mut machine = answerer();
    let now = Instant::now();
    let offer = |sdp: String| Input::Signal(SignalPayload::Offer { sdp });
    // The executor's part: build, answer.
    let execute = |machine: &mut Machine| {
        while let Some(action) = machine.poll_action() {
            let outcome = match action {
                Action::CreatePc { .. } => super::input::Outcome::Created,
                Action::AnswerOffer { .. } => super::input::Outcome::AnswerCreated {
                    sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=application 9 x\r\n".to_owned(),
                },
                _ => continue,
            };
            let id = machine.connection_id().unwrap_or(ConnectionId::new(0));
            machine.handle_input(now, Input::Done { id, outcome });
        }
    };
    machine.handle_input(now, offer(offer_text(7, 1)));
    execute(&mut machine);
    machine.handle_input(now, offer(offer_text(8, 2)));
    execute(&mut machine);
    assert_eq!(machine.connection_id(), Some(ConnectionId::new(2)));
    // A late copy of session 7's offer: never a third pc, no answer.
    machine.handle_input(now, offer(offer_text(7, 1)));
    assert_eq!(drain(&mut machine), vec![]);
    // A restart of session 7 is rejected, so the offerer learns.
    let plain = "v=0\r\no=- 7 3 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 x\r\n";
    machine.handle_input(now, offer(sdp::tag_offer(plain, 3, true)));
    let actions = drain(&mut machine);
    let rejected = actions.iter().any(|action| {
        matches!(action, Action::Send(SignalPayload::Answer { sdp }) if sdp.contains("unknown-session"))
    });
    assert!(rejected, "{actions:?}");
}

#[test]
fn the_offerer_holds_offers_beyond_its_budget() {
    let peer = crate::PeerId::new("b").unwrap_or_else(|error| panic!("{error}"));
    let mut machine = Machine::new(peer, Role::Offerer, config(), 0);
    let t0 = Instant::now();
    let mut offers = 0;
    let run = |machine: &mut Machine, now: Instant, offers: &mut usize| {
        while let Some(action) = machine.poll_action() {
            let id = machine.connection_id().unwrap_or(ConnectionId::new(0));
            let outcome = match action {
                Action::CreatePc { .. } => super::input::Outcome::Created,
                Action::CreateOffer { .. } => {
                    *offers += 1;
                    let sdp =
                        format!("v=0\r\no=- 5 {offers} IN IP4 0.0.0.0\r\nm=application 9 x\r\n");
                    super::input::Outcome::OfferCreated { sdp }
                }
                _ => continue,
            };
            machine.handle_input(now, Input::Done { id, outcome });
        }
    };
    machine.handle_input(t0, Input::Connect(1));
    run(&mut machine, t0, &mut offers);
    // Each answer applied, then a restart request: offers 2..=4 go, the fifth is held.
    for waiter in 2..=5 {
        let outstanding = match &machine.current.as_ref().map(|pc| pc.offer.clone()) {
            Some(super::machine::OfferState::Outstanding { offer, .. }) => offer.clone(),
            other => panic!("no outstanding offer: {other:?}"),
        };
        let answer = sdp::tag_answer(
            "v=0\r\no=- 99 1 IN IP4 0.0.0.0\r\nm=application 9 x\r\n",
            &outstanding,
        );
        machine.handle_input(t0, Input::Signal(SignalPayload::Answer { sdp: answer }));
        let id = machine.connection_id().unwrap_or(ConnectionId::new(0));
        let applied = super::input::Outcome::AnswerApplied;
        machine.handle_input(t0, Input::Done { id, outcome: applied });
        machine.handle_input(t0, Input::RestartIce { waiter, asked_at: None });
        run(&mut machine, t0, &mut offers);
        machine.handle_input(t0, Input::ClearPendingRestart);
        let _ = drain(&mut machine);
    }
    assert_eq!(offers, 4, "four tokens");
    assert_eq!(machine.timeout_reason(), Some("send_budget"));
    machine.handle_timeout(t0 + super::budget::REFILL);
    run(&mut machine, t0 + super::budget::REFILL, &mut offers);
    assert_eq!(offers, 5, "the held offer goes when a token is back");
}

#[test]
fn a_session_the_answerer_gave_up_on_is_taken_again_when_re_sent() {
    // The answer to the first offer is lost; the answerer replaces its pc (bye + ice_restart).
    // The offerer still holds that session (its first offer unanswered, so it ignores the bye)
    // and re-sends the offer: the answerer builds a pc for it again at once.
    let mut sim = Sim::new();
    sim.drop_next.push((Side::B, "answer"));
    sim.intent(Side::A, MS(0), Intent::Connect);
    sim.intent(Side::B, MS(500), Intent::Replace);
    sim.run_until(S(3));
    assert!(sim.converged(), "converged well before the 10 s answer wait");
    assert_eq!(sim.side(Side::A).machine.connection_id(), Some(ConnectionId::new(1)));
    assert_clean(&sim);
}

/// Found by `any_interleaving_converges`: an ICE restart, then a
/// replacement on the same side, a peer_joined, and a replacement from the
/// other side while offers are duplicated.
#[test]
fn restart_then_replacements_from_both_sides_converge() {
    let mut sim = Sim::new();
    sim.reconnect_on_loss = false;
    sim.latencies = vec![MS(377)];
    sim.duplicate_offers = true;
    sim.intent(Side::A, MS(0), Intent::Connect);
    let steps = [
        (1153, Side::A, Intent::RestartIce),
        (1536, Side::A, Intent::Replace),
        (100, Side::A, Intent::PeerJoined),
        (283, Side::B, Intent::Replace),
    ];
    let mut at = 0;
    for (after_ms, side, intent) in steps {
        at += after_ms;
        sim.intent(side, MS(at), intent);
    }
    sim.run_until(MS(at) + S(90));
    assert!(sim.violations.is_empty(), "violations: {:?}", sim.violations);
    assert!(
        sim.converged(),
        "not converged: a {:?} b {:?}; events:\n{:#?}",
        sim.side(Side::A).machine.connection_id(),
        sim.side(Side::B).machine.connection_id(),
        sim.log
    );
}
