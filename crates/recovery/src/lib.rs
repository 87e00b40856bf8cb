//! Sans-IO recovery decision engine of tether.
//!
//! tether-recovery turns what a phone's platform reports (network path
//! snapshots, app lifecycle, cleanup and reconnect commands) into the one
//! right recovery action, in the style of quinn-proto: the [`Supervisor`] is
//! a deterministic state machine fed with `handle_input(now, ..)` and
//! drained with `poll_action()` / `poll_resolution()` / `poll_timeout()`.
//! It never reads a clock, never sleeps, never does I/O.
//!
//! The crate also holds the scenario format shared by tests and
//! `tether replay` ([`scenario`]), and a virtual-clock runner with a
//! simulated executor ([`simulation`]).
#![forbid(unsafe_code)]

mod action;
mod backoff;
mod event;
mod policy;
mod resolution;
mod state;
mod supervisor;
mod timer;

pub mod expectation;
pub mod scenario;
pub mod simulation;
pub mod workload;

pub use action::{
    ActionCommand, ActionError, ActionId, ActionKind, ActionOutcome, ActionRef, FailureKind,
};
pub use event::{
    AppLifecycleState, Availability, CleanupReason, NetworkEvent, NetworkSnapshot, ReconnectReason,
    Transport, TransportSet,
};
pub use policy::{PolicyConfig, PolicyError};
pub use resolution::{NoAction, Resolution, Ticket, Verdict};
pub use state::{ConnectionState, ParkReason, PathStatus, Phase};
pub use supervisor::{DriveError, InitialState, Input, Supervisor};
pub use timer::Timer;
