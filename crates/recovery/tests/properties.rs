//! Property tests over random event sequences (issue 2, item 5). Each
//! property is an invariant of docs/POLICY.md that a wrong Supervisor breaks.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;
use tether_recovery::scenario::{Effects, FailRule, Scenario, ScenarioInput, TimedEvent};
use tether_recovery::simulation::{self, Record, Trace};
use tether_recovery::{
    ActionKind, AppLifecycleState, Availability, CleanupReason, FailureKind, InitialState,
    NetworkEvent, NetworkSnapshot, PathStatus, Phase, PolicyConfig, ReconnectReason, Transport,
    TransportSet,
};

/// A generated event before sequences are assigned.
#[derive(Debug, Clone)]
enum Step {
    Path { availability: Availability, transports: u8, expensive: bool, stale: bool, path_id: u8 },
    Background,
    Foreground { long: bool },
    Cleanup(CleanupReason),
    Force(ReconnectReason),
    SignalingLost,
    PeerLost,
}

fn step() -> impl Strategy<Value = Step> {
    let availability = prop_oneof![
        Just(Availability::Available),
        Just(Availability::Unavailable),
        Just(Availability::Unknown)
    ];
    prop_oneof![
        8 => (availability, 0u8..4, any::<bool>(), prop::bool::weighted(0.1), 0u8..3).prop_map(
            |(availability, transports, expensive, stale, path_id)| Step::Path { availability, transports, expensive, stale, path_id }
        ),
        2 => Just(Step::Background),
        2 => any::<bool>().prop_map(|long| Step::Foreground { long }),
        1 => prop::sample::select(CleanupReason::ALL.to_vec()).prop_map(Step::Cleanup),
        1 => prop::sample::select(ReconnectReason::ALL.to_vec()).prop_map(Step::Force),
        2 => Just(Step::SignalingLost),
        1 => Just(Step::PeerLost),
    ]
}

/// Gaps that hit the interesting windows: same instant, inside an action,
/// around the 400 ms grace, and long pauses.
fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..5, 3 => 0u64..120, 3 => 300u64..500, 1 => 1_000u64..60_000]
}

fn transports(mask: u8) -> TransportSet {
    match mask {
        0 => TransportSet::only(Transport::Wifi),
        1 => TransportSet::only(Transport::Cellular),
        2 => [Transport::Wifi, Transport::Cellular].into_iter().collect(),
        _ => TransportSet::only(Transport::Ethernet),
    }
}

fn fail_rule() -> impl Strategy<Value = FailRule> {
    (
        prop::sample::select(ActionKind::ALL.to_vec()),
        1u32..=3,
        prop::sample::select(vec![
            FailureKind::Timeout,
            FailureKind::Unreachable,
            FailureKind::AuthRejected,
            FailureKind::ConfigRejected,
        ]),
    )
        .prop_map(|(action, nth, error)| FailRule { action, nth, error })
}

fn initial() -> impl Strategy<Value = InitialState> {
    (
        prop::sample::select(vec![Phase::Foreground, Phase::Background, Phase::Unknown]),
        prop::sample::select(vec![
            Availability::Available,
            Availability::Unavailable,
            Availability::Unknown,
        ]),
        any::<bool>(),
    )
        .prop_map(|(phase, availability, signaling)| InitialState {
            phase,
            availability,
            transports: if availability == Availability::Available {
                TransportSet::only(Transport::Wifi)
            } else {
                TransportSet::EMPTY
            },
            sequence: 10,
            signaling_connected: signaling && availability != Availability::Unavailable,
        })
}

/// Builds a scenario from generated parts: sequences increase (stale steps
/// reuse an old one), and a settling tail (foreground, online, manual
/// reconnect) ends it so that everything that can run does.
fn build(
    start: InitialState,
    steps: &[(u64, Step)],
    duration_ms: u64,
    failures: Vec<FailRule>,
    seed: u64,
) -> Scenario {
    let mut at = 0;
    let mut sequence = start.sequence;
    let mut events = Vec::new();
    for (gap, step) in steps {
        at += gap;
        let input = match *step {
            Step::Path { availability, transports: mask, expensive, stale, path_id } => {
                let seq = if stale {
                    sequence - (at % 3).min(sequence)
                } else {
                    sequence += 1;
                    sequence
                };
                let transports = if availability == Availability::Unavailable {
                    TransportSet::EMPTY
                } else {
                    transports(mask)
                };
                let snapshot = NetworkSnapshot::new(seq, availability, transports)
                    .with_expensive(expensive)
                    .with_path_id(u64::from(path_id));
                ScenarioInput::Network(NetworkEvent::NetworkPathChanged { snapshot })
            }
            Step::Background => {
                network(NetworkEvent::AppLifecycleChanged { state: AppLifecycleState::Background })
            }
            Step::Foreground { long } => network(NetworkEvent::AppLifecycleChanged {
                state: AppLifecycleState::Foreground {
                    background_duration_ms: if long { 45_000 } else { 2_000 },
                },
            }),
            Step::Cleanup(reason) => network(NetworkEvent::CleanupConnections { reason }),
            Step::Force(reason) => network(NetworkEvent::ForceReconnect { reason }),
            Step::SignalingLost => ScenarioInput::SignalingLost,
            Step::PeerLost => ScenarioInput::PeerLost,
        };
        events.push(TimedEvent { at_ms: at, input });
    }
    at += 1_000;
    let tail = [
        NetworkEvent::AppLifecycleChanged {
            state: AppLifecycleState::Foreground { background_duration_ms: 1_000 },
        },
        NetworkEvent::NetworkPathChanged {
            snapshot: NetworkSnapshot::available(sequence + 1, TransportSet::only(Transport::Vpn)),
        },
        NetworkEvent::ForceReconnect { reason: ReconnectReason::ManualReconnect },
    ];
    for event in tail {
        events.push(TimedEvent { at_ms: at, input: network(event) });
    }
    Scenario {
        name: "generated".into(),
        about: None,
        start,
        policy: PolicyConfig { seed, ..PolicyConfig::default() },
        effects: Effects { duration_ms, failures },
        events,
        run_ms: at + 120_000,
        expect: None,
    }
}

fn network(event: NetworkEvent) -> ScenarioInput {
    ScenarioInput::Network(event)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        initial(),
        prop::collection::vec((gap(), step()), 0..60),
        prop_oneof![Just(0u64), 1u64..250],
        prop::collection::vec(fail_rule(), 0..5),
        any::<u64>(),
    )
        .prop_map(|(start, steps, duration, failures, seed)| {
            build(start, &steps, duration, failures, seed)
        })
}

fn run(scenario: &Scenario) -> Trace {
    simulation::run(scenario, Instant::now()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    /// At most one action runs at a time, and every started action ends
    /// (ok, failed or cancelled) by the end of the run.
    #[test]
    fn one_action_at_a_time_and_every_action_ends(scenario in scenario()) {
        let trace = run(&scenario);
        let mut running = None;
        for record in &trace.records {
            match *record {
                Record::Start { id, kind, at, .. } => {
                    prop_assert!(running.is_none(), "{kind} {id} started at {at:?} while {running:?} ran");
                    running = Some(id);
                }
                Record::End { id, .. } => {
                    prop_assert_eq!(running, Some(id), "an end for an action that was not running");
                    running = None;
                }
                Record::Event { .. } => {}
            }
        }
        prop_assert!(running.is_none(), "{running:?} never ended");
    }

    /// No recovery action (first try or retry) starts while the path is
    /// offline (or an offline candidate) or the app is in the background.
    #[test]
    fn no_recovery_while_offline_or_in_background(scenario in scenario()) {
        let trace = run(&scenario);
        for record in trace.starts() {
            if let Record::Start { kind, phase, path, at, .. } = *record
                && kind.is_recovery()
            {
                prop_assert!(phase != Phase::Background, "{kind} started in background at {at:?}");
                prop_assert!(path != PathStatus::Offline, "{kind} started offline at {at:?}");
            }
        }
    }

    /// After a cleanup with user_logout or app_terminating, no recovery
    /// action starts until force_reconnect manual_reconnect.
    #[test]
    fn logout_parks_until_manual_reconnect(scenario in scenario()) {
        let trace = run(&scenario);
        let mut parked = false;
        for record in &trace.records {
            match *record {
                Record::Event { input: ScenarioInput::Network(event), .. } => match event {
                    NetworkEvent::CleanupConnections { reason } if reason.parks() => parked = true,
                    NetworkEvent::ForceReconnect { reason: ReconnectReason::ManualReconnect } => parked = false,
                    _ => {}
                },
                Record::Start { kind, at, .. } if kind.is_recovery() => {
                    prop_assert!(!parked, "{kind} started at {at:?} while parked by a logout");
                }
                _ => {}
            }
        }
    }

    /// Same seed and input, same output; and every event gets exactly one
    /// answer once the run has settled.
    #[test]
    fn deterministic_and_every_event_answered_once(scenario in scenario()) {
        let first = run(&scenario);
        let second = run(&scenario);
        prop_assert_eq!(&first, &second);
        let mut answers: HashMap<u64, usize> = HashMap::new();
        for (_, resolution) in &first.resolutions {
            *answers.entry(resolution.ticket.0).or_default() += 1;
        }
        for (index, event) in scenario.events.iter().enumerate() {
            if matches!(event.input, ScenarioInput::Network(_)) {
                let count = answers.get(&(index as u64)).copied().unwrap_or(0);
                prop_assert_eq!(count, 1, "event #{} ({:?}) answered {} times", index, event, count);
            }
        }
    }

    /// Stale snapshots never change what is decided.
    #[test]
    fn stale_snapshots_change_nothing(
        scenario in scenario(),
        stale in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, 0u8..4, 0u64..1000), 1..20),
    ) {
        let baseline = run(&scenario);
        let mut noisy = scenario.clone();
        for (position, availability, mask, back) in stale {
            let at = position.index(noisy.events.len() + 1);
            // The highest sequence accepted before `at`.
            let accepted = noisy.events[..at]
                .iter()
                .filter_map(|e| match e.input {
                    ScenarioInput::Network(NetworkEvent::NetworkPathChanged { snapshot }) => Some(snapshot.sequence),
                    _ => None,
                })
                .chain([noisy.start.sequence])
                .max()
                .unwrap_or(0);
            let at_ms = if at == 0 { 0 } else { noisy.events[at - 1].at_ms };
            let availability = [Availability::Available, Availability::Unavailable, Availability::Unknown][availability as usize];
            let snapshot = NetworkSnapshot::new(accepted.saturating_sub(back), availability, transports(mask))
                .with_expensive(mask == 3)
                .with_path_id(u64::from(mask));
            noisy.events.insert(at, TimedEvent {
                at_ms,
                input: ScenarioInput::Network(NetworkEvent::NetworkPathChanged { snapshot }),
            });
        }
        let with_stale = run(&noisy);
        let decisions = |trace: &Trace| -> Vec<Record> {
            trace.records.iter().filter(|r| !matches!(r, Record::Event { .. })).copied().collect()
        };
        prop_assert_eq!(decisions(&baseline), decisions(&with_stale));
        prop_assert_eq!(baseline.final_state, with_stale.final_state);
    }

    /// N identical snapshots produce at most one action (no failures, so no
    /// retries muddy the count).
    #[test]
    fn identical_snapshots_produce_at_most_one_action(
        start in initial(),
        availability in prop_oneof![Just(Availability::Available), Just(Availability::Unavailable), Just(Availability::Unknown)],
        mask in 0u8..4,
        gaps in prop::collection::vec(gap(), 1..200),
        duration in 0u64..300,
    ) {
        let steps: Vec<(u64, Step)> = gaps
            .into_iter()
            .map(|gap| (gap, Step::Path { availability, transports: mask, expensive: false, stale: false, path_id: 1 }))
            .collect();
        let mut scenario = build(start, &steps, duration, Vec::new(), 1);
        // Drop the settling tail: only the identical snapshots count here.
        scenario.events.truncate(steps.len());
        let trace = run(&scenario);
        let starts = trace.starts().count();
        prop_assert!(starts <= 1, "{} identical snapshots led to {} actions", steps.len(), starts);
    }
}
