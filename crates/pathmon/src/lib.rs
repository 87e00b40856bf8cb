//! A Linux path monitor for tether: rtnetlink link, address and route
//! changes become [`NetworkSnapshot`]s, as Apple's `NWPathMonitor` or
//! Android's `ConnectivityManager` report them on phones.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_pathmon::PathMonitorError> {
//! use tether_pathmon::{PathMonitor, PathMonitorConfig};
//!
//! let (monitor, mut snapshots) = PathMonitor::start(PathMonitorConfig::default()).await?;
//! while let Some(snapshot) = snapshots.recv().await {
//!     // hand it to tether: handle.network_path_changed(snapshot)
//!     println!("{snapshot:?}");
//! }
//! # drop(monitor);
//! # Ok(())
//! # }
//! ```
//!
//! Layers, from the bottom: [`view`] is the monitor's copy of the kernel
//! state, changed by [`Change`]s; [`path`] derives the path from it (a pure
//! function, see its documentation for the mapping); [`classify`] maps
//! interfaces to transports; [`PathMonitor`] owns the netlink socket and
//! emits snapshots.
//!
//! Tracing events: `pathmon.snapshot` (debug; `sequence`, `availability`,
//! `transports`, `expensive`, `interfaces`, `initial`), `pathmon.change`
//! (trace), `pathmon.resync` (trace), `pathmon.overrun`,
//! `pathmon.resync.failed`, `pathmon.stopped` (warn), `pathmon.stop` (debug).
#![forbid(unsafe_code)]

pub mod classify;
mod error;
mod monitor;
mod netlink;
pub mod path;
pub mod view;

pub use classify::{Classifier, InterfaceMatch, Rule};
pub use error::PathMonitorError;
pub use monitor::{MAIN_TABLE, ObservedChange, PathMonitor, PathMonitorConfig, SnapshotReceiver};
pub use path::{Path, derive};
pub use view::{Change, NetView};

/// The snapshot types, re-exported from `tether-recovery`.
pub use tether_recovery::{Availability, NetworkSnapshot, Transport, TransportSet};
