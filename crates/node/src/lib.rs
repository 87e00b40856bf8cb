//! The tether node: drives the recovery [`Supervisor`](tether_recovery::Supervisor)
//! from tokio.
//!
//! A [`Node`] owns one driver task. Platform adapters and FFI reach it
//! through a [`NetworkEventHandle`]; an application's actors through a
//! [`NodeRef`]; both go to the same mailbox and the same Supervisor. The
//! Supervisor's actions run through a [`RecoveryExecutor`] (the real
//! signaling + WebRTC one, or the [`ScriptedExecutor`] that plays scenario
//! effects), one at a time; their outcomes go back in as inputs, and every
//! caller gets exactly one answer: [`Handled`] or an [`EventError`]
//! saying why not.
//!
//! Time comes from `tokio::time::Instant`, so `#[tokio::test(start_paused
//! = true)]` drives a node end to end on virtual time.
//!
//! API boundary: this crate promises the node runtime (handle, mailbox,
//! executor contract, state stream), [`RtcNode`] on a signaling client and
//! WebRTC, and reliable messaging; it never contains a server unless asked
//! to. Cargo feature `testbed` (off by default) adds `live::testbed`: an
//! embedded relay (tether-relay) with nodes on loopback, for tests and
//! demos.
#![forbid(unsafe_code)]

mod config;
mod driver;
mod error;
mod event_result;
mod executor;
mod handle;
mod mailbox;
mod node;
mod report;
mod scripted;

pub mod live;
pub mod reliable;

pub use config::NodeConfig;
pub use driver::ShutdownReport;
pub use error::NodeError;
pub use event_result::{EventError, Handled, HandledBy};
pub use executor::{
    ActionContext, ActionResult, LinkEvent, LinkEvents, LinkReporter, RecoveryExecutor,
};
pub use handle::NetworkEventHandle;
pub use live::{
    ConnectionId, Message, Messages, PeerId, PeerLinkState, PeerStates, RtcNode, RtcNodeConfig,
    SendError,
};
pub use mailbox::NodeRef;
pub use node::Node;
pub use report::ActionReport;
pub use scripted::ScriptedExecutor;

/// The event model and policy, re-exported so that applications need only
/// this crate.
pub use tether_recovery::{
    ActionError, ActionId, ActionKind, ActionOutcome, AppLifecycleState, Availability,
    CleanupReason, ConnectionState, FailureKind, InitialState, NetworkEvent, NetworkSnapshot,
    NoAction, ParkReason, PathStatus, Phase, PolicyConfig, ReconnectReason, Transport,
    TransportSet,
};
