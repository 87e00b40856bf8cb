//! The scenario format (scenarios/README.md): a starting state, timed
//! platform events, scripted effect outcomes, and what must happen.
//!
//! Parsing is strict: unknown fields are rejected, and every error names
//! the field (`events[3].path.availability`) and the line and column where
//! it was found.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::{
    ActionKind, AppLifecycleState, Availability, CleanupReason, FailureKind, InitialState,
    NetworkEvent, NetworkSnapshot, PathStatus, Phase, PolicyConfig, ReconnectReason, Transport,
    TransportSet,
};

/// The largest time a scenario may name, in milliseconds (about 31 years):
/// keeps virtual-clock arithmetic far from overflow.
pub const MAX_MS: u64 = 1_000_000_000_000;

/// Default effect duration when a scenario gives none.
pub const DEFAULT_DURATION_MS: u64 = 30;

/// How long a run goes on after the last event when `run_ms` is absent.
pub const DEFAULT_TAIL_MS: u64 = 30_000;

/// A malformed scenario file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The JSON is malformed or a field is wrong. `field` is a path such as
    /// `events[3].path.availability` (empty for the document itself).
    #[error("{}{message}{}", field_prefix(.field), position_suffix(*.position))]
    Invalid {
        /// Where in the document.
        field: String,
        /// What is wrong.
        message: String,
        /// 1-based line and column of the input where the problem was found,
        /// when it is tied to one place.
        position: Option<(usize, usize)>,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() { String::new() } else { format!("{field}: ") }
}

fn position_suffix(position: Option<(usize, usize)>) -> String {
    match position {
        Some((line, column)) => format!(" (line {line}, column {column})"),
        None => String::new(),
    }
}

/// One parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name (the file stem when the file has none).
    pub name: String,
    /// One line: what the platform saw and why the answer is right.
    pub about: Option<String>,
    /// The state before the first event.
    pub start: InitialState,
    /// The policy, defaults overridden by the file.
    pub policy: PolicyConfig,
    /// How the simulated executor behaves.
    pub effects: Effects,
    /// The events, sorted by time (file order kept within one instant).
    pub events: Vec<TimedEvent>,
    /// When the run ends, in milliseconds.
    pub run_ms: u64,
    /// What must happen, if the file says.
    pub expect: Option<Expectation>,
}

/// One input of a scenario at a point in virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedEvent {
    /// Milliseconds since the start of the run.
    pub at_ms: u64,
    /// What happens.
    pub input: ScenarioInput,
}

/// What a scenario event feeds to the Supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioInput {
    /// A public platform event.
    Network(NetworkEvent),
    /// The signaling link died on its own.
    SignalingLost,
    /// A peer connection died on its own (tether's extension of the
    /// format: `{"at_ms": T, "peer_lost": true}`).
    PeerLost,
}

/// Scripted behaviour of the simulated executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    /// How long every action takes unless cancelled.
    pub duration_ms: u64,
    /// Which starts fail, and how.
    pub failures: Vec<FailRule>,
}

impl Default for Effects {
    fn default() -> Self {
        Self { duration_ms: DEFAULT_DURATION_MS, failures: Vec::new() }
    }
}

impl Effects {
    /// How the `nth` start (from 1) of `kind` ends when it runs its course.
    pub fn outcome(&self, kind: ActionKind, nth: u32) -> Result<(), FailureKind> {
        match self.failures.iter().find(|rule| rule.action == kind && rule.nth == nth) {
            Some(rule) => Err(rule.error),
            None => Ok(()),
        }
    }
}

/// The `nth` start of `action` fails with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailRule {
    /// The action kind.
    pub action: ActionKind,
    /// Which start of that kind, counted from 1.
    pub nth: u32,
    /// How it fails.
    pub error: FailureKind,
}

/// What a scenario requires of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expectation {
    /// The exact list of starts, in order, when given.
    pub starts: Option<Vec<ExpectedStart>>,
    /// Ends that must appear, in this order (others may come between).
    pub ends: Vec<ExpectedEnd>,
    /// Any subset of the final state.
    pub final_state: ExpectedFinal,
}

/// One expected start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedStart {
    /// The action.
    pub action: ActionKind,
    /// When, inclusive bounds in milliseconds (equal for an exact time).
    pub at_ms: MsWindow,
}

/// An inclusive window of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsWindow {
    /// Earliest.
    pub min: u64,
    /// Latest.
    pub max: u64,
}

impl MsWindow {
    /// Whether `ms` falls in the window.
    pub fn contains(self, ms: u64) -> bool {
        (self.min..=self.max).contains(&ms)
    }
}

impl std::fmt::Display for MsWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "[{}, {}]", self.min, self.max)
        }
    }
}

/// One expected end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedEnd {
    /// The action.
    pub action: ActionKind,
    /// `ok`, `failed` or `cancelled`.
    pub outcome: OutcomeName,
}

/// How an action ended, as scenario files name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    /// Succeeded.
    Ok,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl OutcomeName {
    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Any subset of the final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpectedFinal {
    /// `connected|recovering|offline|closed|parked`.
    pub state: Option<StateName>,
    /// `online|offline|unknown`.
    pub path: Option<PathStatus>,
    /// `foreground|background|unknown`.
    pub phase: Option<Phase>,
}

/// A connection state as scenario files name it (without its details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    /// `connected`.
    Connected,
    /// `recovering`.
    Recovering,
    /// `offline`.
    Offline,
    /// `closed`.
    Closed,
    /// `parked`.
    Parked,
}

impl StateName {
    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Recovering => "recovering",
            Self::Offline => "offline",
            Self::Closed => "closed",
            Self::Parked => "parked",
        }
    }
}

impl Scenario {
    /// Parses a scenario from JSON text. `fallback_name` names it when the
    /// file has no `name` (pass the file stem).
    ///
    /// # Errors
    ///
    /// [`ScenarioError::Invalid`] naming the field, line and column of the
    /// first problem.
    pub fn from_json(text: &str, fallback_name: &str) -> Result<Scenario, ScenarioError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let document: ScenarioDocument = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|err| {
                let field = err.path().to_string();
                let inner = err.into_inner();
                invalid(if field == "." { String::new() } else { field }, &inner)
            })?;
        deserializer.end().map_err(|err| invalid(String::new(), &err))?;
        let mut scenario = document.0;
        if scenario.name.is_empty() {
            scenario.name = fallback_name.to_owned();
        }
        Ok(scenario)
    }
}

fn invalid(field: String, err: &serde_json::Error) -> ScenarioError {
    // serde_json appends " at line L column C" to its message; keep the bare
    // message and report the position in our own words.
    let full = err.to_string();
    let message = match full.rfind(" at line ") {
        Some(at) => full[..at].to_owned(),
        None => full,
    };
    // A check over the whole document has no single position (line 0).
    let position = (err.line() > 0).then(|| (err.line(), err.column()));
    ScenarioError::Invalid { field, message, position }
}

// ---- the raw document, checked while it is deserialized so that every
// ---- error carries its path and position ----

/// The whole document; cross-field checks run in its `TryFrom`.
#[derive(Deserialize)]
#[serde(try_from = "RawScenario")]
struct ScenarioDocument(Scenario);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    name: String,
    about: Option<String>,
    #[serde(default)]
    start: RawStart,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    effects: RawEffects,
    #[serde(default)]
    events: Vec<ScenarioEventDoc>,
    run_ms: Option<u64>,
    expect: Option<RawExpect>,
}

impl TryFrom<RawScenario> for ScenarioDocument {
    type Error = String;

    fn try_from(raw: RawScenario) -> Result<Self, String> {
        let policy = raw.policy.into_policy()?;
        let mut events: Vec<TimedEvent> = raw.events.into_iter().map(|e| e.0).collect();
        // Stable: file order is kept within one instant.
        events.sort_by_key(|e| e.at_ms);
        let last = events.last().map_or(0, |e| e.at_ms);
        let run_ms = match raw.run_ms {
            Some(run_ms) if run_ms > MAX_MS => {
                return Err(format!("run_ms: {run_ms} is above the limit of {MAX_MS}"));
            }
            Some(run_ms) if run_ms < last => {
                return Err(format!("run_ms: {run_ms} ends before the last event at {last} ms"));
            }
            Some(run_ms) => run_ms,
            None => last + DEFAULT_TAIL_MS,
        };
        let expect = raw.expect.map(RawExpect::into_expectation);
        Ok(ScenarioDocument(Scenario {
            name: raw.name,
            about: raw.about,
            start: raw.start.into_initial(),
            policy,
            effects: raw.effects.into_effects()?,
            events,
            run_ms,
            expect,
        }))
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PhaseName {
    Foreground,
    Background,
    Unknown,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PathName {
    Online,
    Offline,
    Unknown,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum SignalingName {
    Connected,
    Disconnected,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum TransportName {
    Wifi,
    Cellular,
    Ethernet,
    Vpn,
    Other,
}

impl From<TransportName> for Transport {
    fn from(name: TransportName) -> Self {
        match name {
            TransportName::Wifi => Transport::Wifi,
            TransportName::Cellular => Transport::Cellular,
            TransportName::Ethernet => Transport::Ethernet,
            TransportName::Vpn => Transport::Vpn,
            TransportName::Other => Transport::Other,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum AvailabilityName {
    Available,
    Unavailable,
    Unknown,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum LifecycleName {
    Foreground,
    Background,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CleanupName {
    AppTerminating,
    UserLogout,
    StaleConnectionSuspected,
    ManualReset,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ReconnectName {
    NetworkPathChanged,
    LongBackground,
    ProbeFailed,
    ManualReconnect,
    StaleConnectionSuspected,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ActionName {
    Probe,
    Restore,
    Reconnect,
    Disconnect,
    Cleanup,
}

impl From<ActionName> for ActionKind {
    fn from(name: ActionName) -> Self {
        match name {
            ActionName::Probe => ActionKind::Probe,
            ActionName::Restore => ActionKind::Restore,
            ActionName::Reconnect => ActionKind::Reconnect,
            ActionName::Disconnect => ActionKind::Disconnect,
            ActionName::Cleanup => ActionKind::Cleanup,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ErrorName {
    Timeout,
    Unreachable,
    AuthRejected,
    ConfigRejected,
    Internal,
}

impl From<ErrorName> for FailureKind {
    fn from(name: ErrorName) -> Self {
        match name {
            ErrorName::Timeout => FailureKind::Timeout,
            ErrorName::Unreachable => FailureKind::Unreachable,
            ErrorName::AuthRejected => FailureKind::AuthRejected,
            ErrorName::ConfigRejected => FailureKind::ConfigRejected,
            ErrorName::Internal => FailureKind::Internal,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStart {
    phase: Option<PhaseName>,
    path: Option<PathName>,
    transports: Option<Vec<TransportName>>,
    sequence: Option<u64>,
    signaling: Option<SignalingName>,
}

impl RawStart {
    fn into_initial(self) -> InitialState {
        let path = self.path.unwrap_or(PathName::Online);
        let transports = match self.transports {
            Some(list) => list.into_iter().map(Transport::from).collect(),
            None if path == PathName::Online => TransportSet::only(Transport::Wifi),
            None => TransportSet::EMPTY,
        };
        let signaling = self.signaling.unwrap_or(if path == PathName::Online {
            SignalingName::Connected
        } else {
            SignalingName::Disconnected
        });
        InitialState {
            phase: match self.phase.unwrap_or(PhaseName::Foreground) {
                PhaseName::Foreground => Phase::Foreground,
                PhaseName::Background => Phase::Background,
                PhaseName::Unknown => Phase::Unknown,
            },
            availability: match path {
                PathName::Online => Availability::Available,
                PathName::Offline => Availability::Unavailable,
                PathName::Unknown => Availability::Unknown,
            },
            transports,
            sequence: self.sequence.unwrap_or(0),
            signaling_connected: signaling == SignalingName::Connected,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    offline_grace_ms: Option<u64>,
    long_background_ms: Option<u64>,
    backoff_base_ms: Option<u64>,
    backoff_cap_ms: Option<u64>,
    jitter: Option<f64>,
    seed: Option<u64>,
    restore_failures_before_reconnect: Option<u32>,
    settle_window_ms: Option<u64>,
}

impl RawPolicy {
    fn into_policy(self) -> Result<PolicyConfig, String> {
        let defaults = PolicyConfig::default();
        let ms = |field: &str, value: Option<u64>, default: Duration| match value {
            Some(v) if v > MAX_MS => {
                Err(format!("policy.{field}: {v} is above the limit of {MAX_MS}"))
            }
            Some(v) => Ok(Duration::from_millis(v)),
            None => Ok(default),
        };
        let settle_window = match self.settle_window_ms {
            Some(0) => return Err("policy.settle_window_ms: must be greater than zero".into()),
            Some(v) => Some(ms("settle_window_ms", Some(v), Duration::ZERO)?),
            None => None,
        };
        let policy = PolicyConfig {
            offline_grace: ms("offline_grace_ms", self.offline_grace_ms, defaults.offline_grace)?,
            long_background: ms(
                "long_background_ms",
                self.long_background_ms,
                defaults.long_background,
            )?,
            backoff_base: ms("backoff_base_ms", self.backoff_base_ms, defaults.backoff_base)?,
            backoff_cap: ms("backoff_cap_ms", self.backoff_cap_ms, defaults.backoff_cap)?,
            jitter: self.jitter.unwrap_or(defaults.jitter),
            seed: self.seed.unwrap_or(defaults.seed),
            restore_failures_before_reconnect: self
                .restore_failures_before_reconnect
                .unwrap_or(defaults.restore_failures_before_reconnect),
            settle_window,
        };
        policy.validate().map_err(|crate::PolicyError { field, reason }| {
            let field = match field {
                "offline_grace" | "long_background" | "backoff_base" | "backoff_cap"
                | "settle_window" => format!("{field}_ms"),
                other => other.to_owned(),
            };
            format!("policy.{field}: {reason}")
        })?;
        Ok(policy)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEffects {
    duration_ms: Option<u64>,
    #[serde(default)]
    fail: Vec<FailRuleDoc>,
}

impl RawEffects {
    fn into_effects(self) -> Result<Effects, String> {
        let duration_ms = self.duration_ms.unwrap_or(DEFAULT_DURATION_MS);
        if duration_ms > MAX_MS {
            return Err(format!(
                "effects.duration_ms: {duration_ms} is above the limit of {MAX_MS}"
            ));
        }
        Ok(Effects { duration_ms, failures: self.fail.into_iter().map(|r| r.0).collect() })
    }
}

#[derive(Deserialize)]
#[serde(try_from = "RawFailRule")]
struct FailRuleDoc(FailRule);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailRule {
    action: ActionName,
    nth: u32,
    error: ErrorName,
}

impl TryFrom<RawFailRule> for FailRuleDoc {
    type Error = String;

    fn try_from(raw: RawFailRule) -> Result<Self, String> {
        if raw.nth == 0 {
            return Err("nth: counts starts from 1, so 0 never matches".into());
        }
        Ok(FailRuleDoc(FailRule {
            action: raw.action.into(),
            nth: raw.nth,
            error: raw.error.into(),
        }))
    }
}

/// One event; exactly one of its kinds must be given.
#[derive(Deserialize)]
#[serde(try_from = "RawEvent")]
struct ScenarioEventDoc(TimedEvent);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at_ms: u64,
    path: Option<RawSnapshot>,
    lifecycle: Option<LifecycleName>,
    background_duration_ms: Option<u64>,
    cleanup: Option<CleanupName>,
    force_reconnect: Option<ReconnectName>,
    signaling_lost: Option<bool>,
    peer_lost: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    sequence: u64,
    availability: AvailabilityName,
    #[serde(default)]
    transports: Vec<TransportName>,
    #[serde(default)]
    expensive: bool,
    #[serde(default)]
    constrained: bool,
    /// tether's extension: the route identity (`NetworkSnapshot::path_id`).
    #[serde(default)]
    path_id: u64,
}

impl TryFrom<RawEvent> for ScenarioEventDoc {
    type Error = String;

    fn try_from(raw: RawEvent) -> Result<Self, String> {
        if raw.at_ms > MAX_MS {
            return Err(format!("at_ms: {} is above the limit of {MAX_MS}", raw.at_ms));
        }
        let given: Vec<&str> = [
            ("path", raw.path.is_some()),
            ("lifecycle", raw.lifecycle.is_some()),
            ("cleanup", raw.cleanup.is_some()),
            ("force_reconnect", raw.force_reconnect.is_some()),
            ("signaling_lost", raw.signaling_lost.is_some()),
            ("peer_lost", raw.peer_lost.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if given.len() != 1 {
            let found = if given.is_empty() { "none".to_owned() } else { given.join(", ") };
            return Err(format!(
                "an event needs exactly one of path, lifecycle, cleanup, force_reconnect, \
                 signaling_lost, peer_lost (found {found})"
            ));
        }
        if raw.background_duration_ms.is_some()
            && !matches!(raw.lifecycle, Some(LifecycleName::Foreground))
        {
            return Err("background_duration_ms: only a lifecycle foreground event has one".into());
        }
        let input = if let Some(s) = raw.path {
            ScenarioInput::Network(NetworkEvent::NetworkPathChanged {
                snapshot: NetworkSnapshot::new(
                    s.sequence,
                    match s.availability {
                        AvailabilityName::Available => Availability::Available,
                        AvailabilityName::Unavailable => Availability::Unavailable,
                        AvailabilityName::Unknown => Availability::Unknown,
                    },
                    s.transports.into_iter().map(Transport::from).collect(),
                )
                .with_expensive(s.expensive)
                .with_constrained(s.constrained)
                .with_path_id(s.path_id),
            })
        } else if let Some(lifecycle) = raw.lifecycle {
            let state = match lifecycle {
                LifecycleName::Background => AppLifecycleState::Background,
                LifecycleName::Foreground => AppLifecycleState::Foreground {
                    background_duration_ms: raw.background_duration_ms.unwrap_or(0),
                },
            };
            ScenarioInput::Network(NetworkEvent::AppLifecycleChanged { state })
        } else if let Some(reason) = raw.cleanup {
            let reason = match reason {
                CleanupName::AppTerminating => CleanupReason::AppTerminating,
                CleanupName::UserLogout => CleanupReason::UserLogout,
                CleanupName::StaleConnectionSuspected => CleanupReason::StaleConnectionSuspected,
                CleanupName::ManualReset => CleanupReason::ManualReset,
            };
            ScenarioInput::Network(NetworkEvent::CleanupConnections { reason })
        } else if let Some(reason) = raw.force_reconnect {
            let reason = match reason {
                ReconnectName::NetworkPathChanged => ReconnectReason::NetworkPathChanged,
                ReconnectName::LongBackground => ReconnectReason::LongBackground,
                ReconnectName::ProbeFailed => ReconnectReason::ProbeFailed,
                ReconnectName::ManualReconnect => ReconnectReason::ManualReconnect,
                ReconnectName::StaleConnectionSuspected => {
                    ReconnectReason::StaleConnectionSuspected
                }
            };
            ScenarioInput::Network(NetworkEvent::ForceReconnect { reason })
        } else if let Some(lost) = raw.signaling_lost {
            if !lost {
                return Err("signaling_lost: must be true when given".into());
            }
            ScenarioInput::SignalingLost
        } else if raw.peer_lost == Some(true) {
            ScenarioInput::PeerLost
        } else {
            return Err("peer_lost: must be true when given".into());
        };
        Ok(ScenarioEventDoc(TimedEvent { at_ms: raw.at_ms, input }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    starts: Option<Vec<RawExpectedStart>>,
    #[serde(default)]
    ends: Vec<RawExpectedEnd>,
    #[serde(default, rename = "final")]
    final_state: RawExpectedFinal,
}

impl RawExpect {
    fn into_expectation(self) -> Expectation {
        Expectation {
            starts: self.starts.map(|list| {
                list.into_iter()
                    .map(|s| ExpectedStart { action: s.action.into(), at_ms: s.at_ms })
                    .collect()
            }),
            ends: self
                .ends
                .into_iter()
                .map(|e| ExpectedEnd { action: e.action.into(), outcome: e.outcome })
                .collect(),
            final_state: ExpectedFinal {
                state: self.final_state.state,
                path: self.final_state.path.map(|p| match p {
                    PathName::Online => PathStatus::Online,
                    PathName::Offline => PathStatus::Offline,
                    PathName::Unknown => PathStatus::Unknown,
                }),
                phase: self.final_state.phase.map(|p| match p {
                    PhaseName::Foreground => Phase::Foreground,
                    PhaseName::Background => Phase::Background,
                    PhaseName::Unknown => Phase::Unknown,
                }),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectedStart {
    action: ActionName,
    at_ms: MsWindow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectedEnd {
    action: ActionName,
    outcome: OutcomeName,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpectedFinal {
    state: Option<StateName>,
    path: Option<PathName>,
    phase: Option<PhaseName>,
}

impl<'de> Deserialize<'de> for MsWindow {
    /// A number of milliseconds, or `[min, max]` with `min <= max`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WindowVisitor;
        impl<'de> de::Visitor<'de> for WindowVisitor {
            type Value = MsWindow;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of milliseconds or [min, max]")
            }

            fn visit_u64<E: de::Error>(self, ms: u64) -> Result<MsWindow, E> {
                Ok(MsWindow { min: ms, max: ms })
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MsWindow, A::Error> {
                let min: u64 =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let max: u64 =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                if min > max {
                    return Err(de::Error::custom(format!(
                        "window [{min}, {max}] has min above max"
                    )));
                }
                Ok(MsWindow { min, max })
            }
        }
        deserializer.deserialize_any(WindowVisitor)
    }
}
