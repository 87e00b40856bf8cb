//! The handoff lab: network namespaces that stand in for a phone with two
//! uplinks (each behind its own gateway), a router, a cloud, and the far
//! peer's home behind its own gateway (see `lab/README.md`), driven from
//! Rust.
//!
//! - [`Lab`] builds the topology by running `lab/lab.sh` (embedded, the one
//!   description of it), performs handoffs timed by a netlink listener in
//!   the phone ([`HandoffTiming`]), and tears everything down when dropped,
//!   also while a panic unwinds.
//! - [`spawn_in_netns`] runs a future on its own thread inside a namespace,
//!   so that the sockets it opens (a node in the phone, a server in the
//!   cloud) live there.
//! - [`DelayRouter`] adds a one-way delay, optionally with jitter and
//!   seeded random loss, to every packet the lab's router forwards (a TUN
//!   device and a delay line; [`LabConfig::round_trip_delay`],
//!   [`LabConfig::jitter`] and [`LabConfig::loss_percent`] set it up), and
//!   [`DelayRelay`] a fixed delay to one UDP or TCP flow through a proxy,
//!   both in userspace, since the kernel has no `netem`.
//! - [`Lab::handoff_with`] hands off with an outage between the uplinks or
//!   an overlap of them ([`HandoffMode`]).
//! - [`LabConfig::nat`] puts NAT ([`Nat::Cone`] or [`Nat::Symmetric`],
//!   nftables) in the gateways of the phone's uplinks and of the far
//!   peer's home; [`LabConfig::turn`] runs coturn in the cloud
//!   ([`TurnServer`]); [`Lab::nat_counters`] tells a relayed path from a
//!   direct one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_lab::LabError> {
//! use tether_lab::{Lab, LabConfig, Uplink, spawn_in_netns};
//!
//! let mut lab = Lab::setup(LabConfig::unique()).await?;
//! let cloud = lab.topology().cloud.clone();
//! let server = spawn_in_netns(&cloud, || async {
//!     // bind the signaling server here: it lives in the cloud namespace
//! })?;
//! let timing = lab.handoff(Uplink::Cell).await?;
//! println!("no uplink for {:?}", timing.outage());
//! drop(server);
//! lab.teardown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Tracing events: `lab.setup`, `lab.teardown`, `lab.turn.ready` (info), `lab.teardown.failed`
//! (error), `lab.handoff`, `lab.script`, `lab.relay.*` (debug).
#![forbid(unsafe_code)]

mod error;
mod lab;
mod nat;
mod netns;
pub mod relay;
mod script;
mod topology;
mod turn;

pub use error::LabError;
pub use lab::{
    HandoffMode, HandoffTiming, Lab, LabConfig, REQUIRE_NETNS_VAR, check_support, netns_available,
    require_root, teardown, tool_available,
};
pub use nat::{Nat, NatCounters};
pub use netns::{NetnsTask, run_in_netns, spawn_in_netns};
pub use relay::{
    DelayRelay, DelayRelayConfig, DelayRouter, DelayRouterConfig, RelayProtocol, RelayStats,
    RelayStatsHandle,
};
pub use script::LAB_SCRIPT;
pub use topology::{Netns, Topology, Uplink, UplinkAddresses};
pub use turn::{TURN_PORT, TURN_REALM, TurnServer};
