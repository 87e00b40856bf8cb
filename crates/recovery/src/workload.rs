//! Benchmark workloads for the Supervisor, shared by the crate's divan
//! bench and `tether bench decide`, so both measure the same thing.
//!
//! - [`MixedWorkload`]: a sustained, realistic mix of inputs — mostly
//!   duplicate and metered-only snapshots (what `NWPathMonitor` really
//!   emits), route changes, short offline flaps, lifecycle changes, stale
//!   snapshots, signaling losses, the odd forced reconnect and cleanup,
//!   plus the executor's completions and the timers they arm. Every event
//!   carries a ticket, as a node's events do.
//! - [`Storm`]: 10 000 path and lifecycle events arriving while one action
//!   runs; they must fold into exactly one follow-up.

use std::time::{Duration, Instant};

use crate::backoff::JitterRng;
use crate::{
    ActionCommand, ActionError, ActionId, AppLifecycleState, Availability, CleanupReason,
    FailureKind, InitialState, Input, NetworkEvent, NetworkSnapshot, Phase, PolicyConfig,
    ReconnectReason, Supervisor, Ticket, Transport, TransportSet,
};

/// One pre-generated input of a workload.
#[derive(Debug, Clone)]
pub struct TimedInput {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What arrives.
    pub input: Input,
}

/// A realistic sustained mix of inputs.
#[derive(Debug, Clone)]
pub struct MixedWorkload {
    inputs: Vec<TimedInput>,
    seed: u64,
}

/// What driving a workload did, so a benchmark can check it did real work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriveStats {
    /// Inputs fed: events, completions and timer firings.
    pub inputs: u64,
    /// Actions started.
    pub starts: u64,
    /// Tickets answered.
    pub resolutions: u64,
}

fn snapshot(
    sequence: u64,
    availability: Availability,
    transports: TransportSet,
) -> NetworkSnapshot {
    NetworkSnapshot::new(sequence, availability, transports)
}

impl MixedWorkload {
    /// `events` platform events generated from `seed`, 5 ms apart in
    /// virtual time.
    pub fn generate(events: usize, seed: u64) -> Self {
        let mut rng = JitterRng::new(seed);
        let wifi = TransportSet::only(Transport::Wifi);
        let cellular = TransportSet::only(Transport::Cellular);
        let mut sequence = 1u64;
        let mut transports = wifi;
        let mut expensive = false;
        let mut background = false;
        let mut inputs = Vec::with_capacity(events);
        for i in 0..events {
            let at = Duration::from_millis(5 * i as u64);
            let roll = rng.below(1000);
            let event = match roll {
                // Duplicate snapshots: the bulk of what a path monitor emits.
                0..=349 => {
                    sequence += 1;
                    Some(snapshot(sequence, Availability::Available, transports))
                }
                // Metered flag flips.
                350..=449 => {
                    sequence += 1;
                    expensive = !expensive;
                    Some(NetworkSnapshot {
                        is_expensive: expensive,
                        ..snapshot(sequence, Availability::Available, transports)
                    })
                }
                // Route changes (Wi-Fi <-> cellular).
                450..=529 => {
                    sequence += 1;
                    transports = if transports == wifi { cellular } else { wifi };
                    Some(snapshot(sequence, Availability::Available, transports))
                }
                // Short offline flaps; the Available that ends them comes
                // with the next route change or duplicate.
                530..=569 => {
                    sequence += 1;
                    Some(snapshot(sequence, Availability::Unavailable, TransportSet::EMPTY))
                }
                570..=589 => {
                    sequence += 1;
                    Some(snapshot(sequence, Availability::Unknown, transports))
                }
                // Stale snapshots from a lagging source.
                590..=689 => Some(snapshot(
                    sequence.saturating_sub(1 + rng.below(3)),
                    Availability::Available,
                    cellular,
                )),
                _ => None,
            };
            let event = match event {
                Some(snapshot) => Input::Event {
                    event: NetworkEvent::NetworkPathChanged { snapshot },
                    ticket: Some(Ticket(i as u64)),
                },
                None => match roll {
                    690..=889 => {
                        background = !background;
                        let state = if background {
                            AppLifecycleState::Background
                        } else {
                            AppLifecycleState::Foreground {
                                background_duration_ms: if rng.below(10) == 0 {
                                    45_000
                                } else {
                                    3_000
                                },
                            }
                        };
                        Input::Event {
                            event: NetworkEvent::AppLifecycleChanged { state },
                            ticket: Some(Ticket(i as u64)),
                        }
                    }
                    890..=979 => Input::SignalingLost,
                    980..=994 => Input::Event {
                        event: NetworkEvent::ForceReconnect {
                            reason: ReconnectReason::ManualReconnect,
                        },
                        ticket: Some(Ticket(i as u64)),
                    },
                    _ => Input::Event {
                        event: NetworkEvent::CleanupConnections {
                            reason: CleanupReason::ManualReset,
                        },
                        ticket: Some(Ticket(i as u64)),
                    },
                },
            };
            inputs.push(TimedInput { at, input: event });
        }
        Self { inputs, seed }
    }

    /// The pre-generated events.
    pub fn inputs(&self) -> &[TimedInput] {
        &self.inputs
    }

    /// A fresh Supervisor in the state the workload expects: foreground,
    /// online on Wi-Fi, signaling up.
    pub fn supervisor(&self) -> Supervisor {
        let initial = InitialState {
            phase: Phase::Foreground,
            availability: Availability::Available,
            transports: TransportSet::only(Transport::Wifi),
            sequence: 1,
            signaling_connected: true,
        };
        let policy = PolicyConfig { seed: self.seed, ..PolicyConfig::default() };
        // Invariant: the default policy is valid (checked by policy tests).
        Supervisor::new(policy, initial).unwrap_or_else(|_| unreachable!("default policy is valid"))
    }

    /// Feeds the whole workload to `supervisor`, acting as a simulated
    /// executor: actions take 30 ms and one in ten fails.
    pub fn drive(&self, supervisor: &mut Supervisor, epoch: Instant) -> DriveStats {
        const ACTION_TIME: Duration = Duration::from_millis(30);
        let mut rng = JitterRng::new(self.seed ^ 0x5EED);
        let mut stats = DriveStats::default();
        let mut running: Option<(ActionId, Instant)> = None;
        for timed in &self.inputs {
            let now = epoch + timed.at;
            if let Some((id, _)) = running.take_if(|(_, ends)| *ends <= now) {
                let result = if rng.below(10) == 0 {
                    Err(ActionError::new(FailureKind::Unreachable, "simulated"))
                } else {
                    Ok(())
                };
                let _ = supervisor.handle_input(now, Input::ActionCompleted { id, result });
                stats.inputs += 1;
                drain(supervisor, now + ACTION_TIME, &mut running, &mut stats);
            }
            if supervisor.poll_timeout().is_some_and(|at| at <= now) {
                supervisor.handle_timeout(now);
                stats.inputs += 1;
                drain(supervisor, now + ACTION_TIME, &mut running, &mut stats);
            }
            let _ = supervisor.handle_input(now, timed.input.clone());
            stats.inputs += 1;
            drain(supervisor, now + ACTION_TIME, &mut running, &mut stats);
        }
        stats
    }
}

fn drain(
    supervisor: &mut Supervisor,
    ends_at: Instant,
    running: &mut Option<(ActionId, Instant)>,
    stats: &mut DriveStats,
) {
    while let Some(command) = supervisor.poll_action() {
        match command {
            ActionCommand::Start { id, .. } => {
                stats.starts += 1;
                *running = Some((id, ends_at));
            }
            ActionCommand::Cancel { .. } => *running = None,
        }
    }
    while supervisor.poll_resolution().is_some() {
        stats.resolutions += 1;
    }
}

/// A storm of path and lifecycle events that arrives while a Restore runs.
#[derive(Debug, Clone)]
pub struct Storm {
    events: Vec<NetworkEvent>,
}

/// A storm that did not fold into exactly one follow-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the storm led to {starts} action start(s) while one ran and {follow_ups} follow-up(s) after; expected 0 and 1"
)]
pub struct StormError {
    /// Starts (or preemptions) during the storm.
    pub starts: usize,
    /// Starts after the running action ended.
    pub follow_ups: usize,
}

impl Storm {
    /// `events` path/lifecycle events: route flaps, duplicates, short
    /// offline flaps, unknown paths, background/foreground toggles; it ends
    /// online and in the foreground.
    pub fn generate(events: usize, seed: u64) -> Self {
        let mut rng = JitterRng::new(seed);
        let choices = [
            TransportSet::only(Transport::Wifi),
            TransportSet::only(Transport::Cellular),
            [Transport::Wifi, Transport::Cellular].into_iter().collect(),
        ];
        let mut list = Vec::with_capacity(events);
        let mut background = false;
        for i in 0..events {
            let sequence = 2 + i as u64;
            let last = i + 1 == events;
            let event = match rng.below(10) {
                _ if last => NetworkEvent::NetworkPathChanged {
                    snapshot: snapshot(sequence, Availability::Available, choices[1]),
                },
                0..=5 => NetworkEvent::NetworkPathChanged {
                    snapshot: snapshot(
                        sequence,
                        Availability::Available,
                        choices[rng.below(3) as usize],
                    ),
                },
                6 => NetworkEvent::NetworkPathChanged {
                    snapshot: snapshot(sequence, Availability::Unavailable, TransportSet::EMPTY),
                },
                7 => NetworkEvent::NetworkPathChanged {
                    snapshot: snapshot(sequence, Availability::Unknown, choices[0]),
                },
                _ => {
                    background = !background;
                    NetworkEvent::AppLifecycleChanged {
                        state: if background {
                            AppLifecycleState::Background
                        } else {
                            AppLifecycleState::Foreground { background_duration_ms: 1_000 }
                        },
                    }
                }
            };
            list.push(event);
        }
        if background {
            list.push(NetworkEvent::AppLifecycleChanged {
                state: AppLifecycleState::Foreground { background_duration_ms: 1_000 },
            });
        }
        Self { events: list }
    }

    /// The events.
    pub fn events(&self) -> &[NetworkEvent] {
        &self.events
    }

    /// A Supervisor with a Restore running (cold start on Wi-Fi), and that
    /// Restore's id.
    pub fn prepare(epoch: Instant) -> (Supervisor, ActionId) {
        let initial = InitialState {
            phase: Phase::Foreground,
            availability: Availability::Unavailable,
            ..InitialState::default()
        };
        // Invariant: the default policy is valid (checked by policy tests).
        let mut supervisor = Supervisor::new(PolicyConfig::default(), initial)
            .unwrap_or_else(|_| unreachable!("default policy is valid"));
        let first = NetworkEvent::NetworkPathChanged {
            snapshot: snapshot(1, Availability::Available, TransportSet::only(Transport::Wifi)),
        };
        let _ = supervisor.handle_input(epoch, Input::Event { event: first, ticket: None });
        let mut id = ActionId(0);
        while let Some(command) = supervisor.poll_action() {
            if let ActionCommand::Start { id: started, .. } = command {
                id = started;
            }
        }
        (supervisor, id)
    }

    /// Feeds the storm at `now` (all at one instant: the worst case), the
    /// part a benchmark times. Returns how many commands it produced (0
    /// when the storm was absorbed).
    pub fn absorb(&self, supervisor: &mut Supervisor, now: Instant) -> usize {
        let mut commands = 0;
        for (i, &event) in self.events.iter().enumerate() {
            let _ = supervisor
                .handle_input(now, Input::Event { event, ticket: Some(Ticket(i as u64)) });
            while supervisor.poll_action().is_some() {
                commands += 1;
            }
        }
        while supervisor.poll_resolution().is_some() {}
        commands
    }

    /// Ends the running action and checks that exactly one follow-up starts.
    ///
    /// # Errors
    ///
    /// [`StormError`] when the storm started anything itself or the end led
    /// to anything but one follow-up.
    pub fn finish(
        supervisor: &mut Supervisor,
        running: ActionId,
        storm_commands: usize,
        now: Instant,
    ) -> Result<(), StormError> {
        let _ =
            supervisor.handle_input(now, Input::ActionCompleted { id: running, result: Ok(()) });
        let mut follow_ups = 0;
        while let Some(command) = supervisor.poll_action() {
            if matches!(command, ActionCommand::Start { .. }) {
                follow_ups += 1;
            }
        }
        while supervisor.poll_resolution().is_some() {}
        if storm_commands == 0 && follow_ups == 1 {
            Ok(())
        } else {
            Err(StormError { starts: storm_commands, follow_ups })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_workload_does_real_work() {
        let workload = MixedWorkload::generate(20_000, 9);
        let mut supervisor = workload.supervisor();
        let stats = workload.drive(&mut supervisor, Instant::now());
        assert!(stats.inputs >= 20_000);
        // A realistic mix recovers now and then, but folds most of it.
        assert!(stats.starts > 100 && stats.starts < 10_000, "{stats:?}");
        assert!(stats.resolutions > 15_000, "{stats:?}");
    }

    #[test]
    fn storm_folds_into_one_follow_up() {
        let epoch = Instant::now();
        let storm = Storm::generate(10_000, 3);
        let (mut supervisor, running) = Storm::prepare(epoch);
        let commands = storm.absorb(&mut supervisor, epoch);
        Storm::finish(&mut supervisor, running, commands, epoch + Duration::from_millis(30))
            .unwrap();
    }
}
