//! Runs a [`Scenario`] through the real [`Supervisor`] on a virtual clock,
//! with the simulated executor of scenarios/README.md:
//!
//! - no action runs at time 0 by itself: only events and their timers start
//!   work;
//! - each action takes `effects.duration_ms` unless cancelled first, and
//!   succeeds unless a `fail` rule names its kind and start number;
//! - at one instant, an action's completion is applied first, then the
//!   events in file order, then the timers that are due; an action's end is
//!   recorded before the start it leads to.
//!
//! Simulated signaling needs no model of its own: the Supervisor's belief
//! follows the same rules (a successful Restore or Reconnect connects,
//! Disconnect and Cleanup disconnect, a failed Probe or a `signaling_lost`
//! event disconnects).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::scenario::{Scenario, ScenarioInput};
use crate::{
    ActionCommand, ActionError, ActionId, ActionKind, ActionOutcome, ConnectionState, DriveError,
    FailureKind, Input, PathStatus, Phase, PolicyError, Resolution, Supervisor, Ticket,
};

/// Upper bound on simulation steps, so that no input can make a run spin.
const MAX_STEPS: u64 = 50_000_000;

/// What a run did, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Events, starts and ends, in the order they happened.
    pub records: Vec<Record>,
    /// The answer for each event (its ticket is its index in
    /// `Scenario::events`), with the virtual time it came.
    pub resolutions: Vec<(Duration, Resolution)>,
    /// The Supervisor's view when the run ended.
    pub final_state: FinalState,
}

/// One input, start or end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Record {
    /// A scenario event was fed (not printed by `tether replay`; kept so
    /// that tests can check what followed what within one instant).
    Event {
        /// Virtual time since the start of the run.
        at: Duration,
        /// The event.
        input: ScenarioInput,
    },
    /// An action started.
    Start {
        /// Virtual time since the start of the run.
        at: Duration,
        /// Its id.
        id: ActionId,
        /// What.
        kind: ActionKind,
        /// Its attempt number.
        attempt: u32,
        /// The app phase when it started.
        phase: Phase,
        /// The path when it started.
        path: PathStatus,
    },
    /// An action ended.
    End {
        /// Virtual time since the start of the run.
        at: Duration,
        /// Its id.
        id: ActionId,
        /// What.
        kind: ActionKind,
        /// How.
        outcome: ActionOutcome,
    },
}

impl Record {
    /// Whole milliseconds since the start of the run (rounded down).
    pub fn at_ms(&self) -> u64 {
        let at = match self {
            Record::Event { at, .. } | Record::Start { at, .. } | Record::End { at, .. } => at,
        };
        u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
    }

    /// The JSON line `tether replay` prints for this record (none for
    /// events).
    pub fn to_json(&self) -> Option<serde_json::Value> {
        match *self {
            Record::Event { .. } => None,
            Record::Start { kind, .. } => {
                Some(json!({ "at_ms": self.at_ms(), "start": kind.name() }))
            }
            Record::End { kind, outcome, .. } => Some(
                json!({ "at_ms": self.at_ms(), "end": kind.name(), "outcome": outcome.name() }),
            ),
        }
    }
}

/// The Supervisor's view at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalState {
    /// Connection state.
    pub state: ConnectionState,
    /// Path.
    pub path: PathStatus,
    /// App phase.
    pub phase: Phase,
}

impl FinalState {
    /// The `{"final":..}` line `tether replay` prints.
    pub fn to_json(&self) -> serde_json::Value {
        json!({ "final": {
            "state": self.state.name(),
            "path": self.path.name(),
            "phase": self.phase.name(),
        }})
    }
}

impl Trace {
    /// The JSON lines of `tether replay` (scenarios/README.md), in order, the final line last.
    pub fn json_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.records
            .iter()
            .filter_map(Record::to_json)
            .chain(std::iter::once(self.final_state.to_json()))
            .map(|value| value.to_string())
    }

    /// Every start, in order.
    pub fn starts(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| matches!(r, Record::Start { .. }))
    }

    /// Every end, in order.
    pub fn ends(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| matches!(r, Record::End { .. }))
    }
}

/// A run that went wrong inside (never because of the scenario's content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// The Supervisor rejected its driving (a bug in the runner or the core).
    #[error("supervisor rejected the simulated executor: {0}")]
    Drive(#[from] DriveError),
    /// The scenario's policy could not build a Supervisor (the parser
    /// checks it first, so only a hand-built scenario gets here).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The run did not settle within its step budget.
    #[error("the run did not settle within {MAX_STEPS} steps")]
    Runaway,
}

struct RunningEffect {
    id: ActionId,
    kind: ActionKind,
    ends_at: Duration,
    result: Result<(), FailureKind>,
}

/// Runs `scenario` from virtual time 0. `epoch` is the `Instant` that
/// stands for time 0; any instant works, nothing depends on its value (the
/// recovery crate never reads the clock itself).
///
/// # Errors
///
/// [`SimulationError`] only when the Supervisor misbehaves; every scenario
/// that parsed runs.
pub fn run(scenario: &Scenario, epoch: Instant) -> Result<Trace, SimulationError> {
    let mut supervisor = Supervisor::new(scenario.policy.clone(), scenario.start)?;
    let mut world = World {
        records: Vec::new(),
        resolutions: Vec::new(),
        running: None,
        starts: HashMap::new(),
    };
    let run_end = Duration::from_millis(scenario.run_ms);
    let mut events = scenario.events.iter().enumerate().peekable();
    let mut steps = 0u64;

    loop {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(SimulationError::Runaway);
        }
        let next_event = events.peek().map(|(_, e)| Duration::from_millis(e.at_ms));
        let next_end = world.running.as_ref().map(|r| r.ends_at);
        let next_timer = supervisor.poll_timeout().map(|at| at.saturating_duration_since(epoch));
        let Some(now_offset) = [next_event, next_end, next_timer].into_iter().flatten().min()
        else {
            break;
        };
        if now_offset > run_end {
            break;
        }
        let now = epoch + now_offset;

        if let Some(effect) = world.running.take_if(|r| r.ends_at == now_offset) {
            world.records.push(Record::End {
                at: now_offset,
                id: effect.id,
                kind: effect.kind,
                outcome: effect.result.into(),
            });
            supervisor.handle_input(
                now,
                Input::ActionCompleted {
                    id: effect.id,
                    result: effect
                        .result
                        .map_err(|kind| ActionError::new(kind, "failure scripted by the scenario")),
                },
            )?;
            world.drain(&mut supervisor, scenario, now_offset);
        }
        while let Some((index, event)) =
            events.next_if(|(_, e)| Duration::from_millis(e.at_ms) == now_offset)
        {
            let input = match event.input {
                ScenarioInput::Network(event) => {
                    Input::Event { event, ticket: Some(Ticket(index as u64)) }
                }
                ScenarioInput::SignalingLost => Input::SignalingLost,
                ScenarioInput::PeerLost => Input::PeerLost,
            };
            world.records.push(Record::Event { at: now_offset, input: event.input });
            supervisor.handle_input(now, input)?;
            world.drain(&mut supervisor, scenario, now_offset);
        }
        supervisor.handle_timeout(now);
        world.drain(&mut supervisor, scenario, now_offset);
    }

    Ok(Trace {
        records: world.records,
        resolutions: world.resolutions,
        final_state: FinalState {
            state: supervisor.state(),
            path: supervisor.path(),
            phase: supervisor.phase(),
        },
    })
}

/// The simulated executor.
struct World {
    records: Vec<Record>,
    resolutions: Vec<(Duration, Resolution)>,
    running: Option<RunningEffect>,
    starts: HashMap<ActionKind, u32>,
}

impl World {
    fn drain(&mut self, supervisor: &mut Supervisor, scenario: &Scenario, now: Duration) {
        while let Some(command) = supervisor.poll_action() {
            match command {
                ActionCommand::Cancel { id, kind } => {
                    if self.running.take_if(|r| r.id == id).is_some() {
                        self.records.push(Record::End {
                            at: now,
                            id,
                            kind,
                            outcome: ActionOutcome::Cancelled,
                        });
                    }
                }
                ActionCommand::Start { id, kind, attempt } => {
                    let nth = self.starts.entry(kind).or_insert(0);
                    *nth += 1;
                    self.records.push(Record::Start {
                        at: now,
                        id,
                        kind,
                        attempt,
                        phase: supervisor.phase(),
                        path: supervisor.path(),
                    });
                    self.running = Some(RunningEffect {
                        id,
                        kind,
                        ends_at: now + Duration::from_millis(scenario.effects.duration_ms),
                        result: scenario.effects.outcome(kind, *nth),
                    });
                }
            }
        }
        while let Some(resolution) = supervisor.poll_resolution() {
            self.resolutions.push((now, resolution));
        }
    }
}
