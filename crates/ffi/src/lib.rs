//! tether for Swift, Kotlin and Python, through UniFFI.
//!
//! The only crate of the workspace that knows UniFFI. It mirrors tether's
//! event model as foreign records and enums, wraps a node behind one
//! object API whatever runs its actions, checks every foreign input at the
//! boundary, and runs everything on a tokio runtime it owns, so foreign
//! callers need none.
//!
//! - [`TetherNodeBuilder`] -> [`TetherNode`]: build (live on signaling +
//!   WebRTC, or simulated for tests and demos),
//!   [`handle`](TetherNode::handle),
//!   [`subscribe_state`](TetherNode::subscribe_state),
//!   [`subscribe_peer_states`](TetherNode::subscribe_peer_states), messages
//!   ([`send`](TetherNode::send), [`post`](TetherNode::post),
//!   [`receive`](TetherNode::receive)), [`shutdown`](TetherNode::shutdown).
//! - [`NetworkEventHandle`]: the platform's four async methods, each
//!   returning a [`NetworkEventResult`], and `submit`.
//! - [`StateListener`]: implemented by the app (a foreign trait) for
//!   "Reconnecting…" UI, and [`PeerStateListener`] for "bob connected"; see
//!   [`listener`] for threading.
//! - [`TetherError`]: the one error every call can fail with.
//! - `start_test_signaling_server` / `start_test_signaling_server_tls`
//!   (only with the `test-server` feature):
//!   an embedded signaling server on loopback, for tests and demos of live
//!   nodes. The default library contains no server.
//!
//! Nothing here panics on foreign input: out-of-range values are
//! [`TetherError::InvalidArgument`] / [`TetherError::InvalidConfig`], and a
//! panic inside a tether task is caught and reported as
//! [`TetherError::Internal`].
//!
//! API boundary: the exported objects, records, enums and errors listed
//! above are what the generated Swift, Kotlin and Python code may rely on;
//! every call answers once, with a result or a [`TetherError`]. The default
//! build (the mobile library) exports no server and links none; feature
//! `test-server` adds the test server and, with it, tether's testbed.
//!
//! Bindings are generated in library mode from the built cdylib
//! (`crates/ffi/generate.sh`); UniFFI reads its metadata from the
//! library's symbols, so the library must not be stripped before that.

uniffi::setup_scaffolding!();

mod builder;
mod error;
mod event;
mod handle;
pub mod listener;
mod node;
mod peer;
mod policy;
mod result;
mod runtime;
mod state;
#[cfg(feature = "test-server")]
mod test_server;

pub use builder::{IceServer, TetherNodeBuilder};
pub use error::{ListenerError, TetherError};
pub use event::{
    AppLifecycleState, Availability, CleanupReason, NetworkEvent, NetworkSnapshot, ReconnectReason,
    Transport,
};
pub use handle::NetworkEventHandle;
pub use listener::{PeerStateListener, StateListener, StateSubscription};
pub use node::{ReceivedMessage, ShutdownReport, TetherNode};
pub use peer::{PeerConnectionState, PeerRoute, PeerStatus, RouteEnd};
pub use policy::{Policy, SimulatedEffects, SimulatedFailure};
pub use result::{EventError, NetworkEventResult, NoAction};
pub use state::{ActionKind, ConnectionState, FailureKind, ParkReason};
#[cfg(feature = "test-server")]
pub use test_server::{
    TestSignalingServer, start_test_signaling_server, start_test_signaling_server_tls,
};

/// Compile-time checks: every object that crosses the FFI is shared between
/// foreign threads and tether's runtime.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<TetherNodeBuilder>();
    send_sync::<TetherNode>();
    send_sync::<NetworkEventHandle>();
    send_sync::<StateSubscription>();
    #[cfg(feature = "test-server")]
    send_sync::<TestSignalingServer>();
    send_sync::<TetherError>();
    send_sync::<NetworkEventResult>();
};
