//! tether WebRTC peers on webrtc-rs: data channels, ICE restart.
//!
//! A [`PeerSet`] keeps one reliable, ordered data channel per remote peer, negotiated over an
//! abstract signaling channel: outbound [`OutboundSignal`]s go to an `mpsc` sender the node
//! relays, inbound ones come back through [`PeerSet::handle_signal`]. What happens is reported on
//! [`RtcEvents`]. The node layers reliable messaging (sequence numbers, acks, replay) above this.
//!
//! Codemap:
//! - [`peer_set`](PeerSet): the clonable handle; single-flight `connect`, `close_all`.
//! - `peer`: one task per remote peer that owns its peer connections and executes the
//!   negotiation machine's actions on webrtc-rs (`executor`, `connection`, `channel`, `view`).
//! - [`negotiation`]: roles (the smaller id offers), the SDP attributes (`sdp`), and the
//!   sans-IO per-peer machine (`machine`, with its rules in `connect`, `offerer`, `answerer`,
//!   `pacing`; `input`/`action` in and out, `timer`, `budget`) that decides every negotiation
//!   step.
//! - `signal`, `event`, `config`, `local_address`, `error`: the types at the edges.
//!
//! Peers are named by [`PeerId`], the signaling protocol's validated id (re-exported from
//! tether-signal, of which this crate uses nothing else): an id is checked once, where it enters
//! the node, and never again here.
//!
//! Architecture invariants:
//! - Only this crate knows webrtc-rs: no webrtc type appears in the public API.
//! - All negotiation for a peer happens in that peer's task, one message at a time; public calls
//!   only wait for replies, so dropping a call never leaves anything half-built.
//! - The negotiation machine never awaits and never reads a clock; the peer task never decides.
//! - Every waiting call is answered exactly once: a result, or an error at its bound.
#![forbid(unsafe_code)]

mod config;
mod error;
mod escalation;
mod event;
mod local_address;
pub mod negotiation;
mod peer;
mod peer_set;
mod route;
mod signal;

pub use config::{IceServer, IceTransportPolicy, RtcConfig};
pub use error::RtcError;
pub use escalation::Escalation;
pub use event::{ConnectionId, PeerState, RtcEvent, RtcEvents};
pub use local_address::{InterfaceFilter, LocalAddresses, LocalInterface};
pub use negotiation::Role;
pub use peer::PeerStatus;
pub use peer_set::{CloseReport, PeerSet, Residual};
pub use route::{CandidateKind, CandidateProtocol, IceRoute, RouteEnd};
pub use signal::{OutboundSignal, SignalPayload};
pub use tether_signal::protocol::PeerId;

/// The handle and its events cross task boundaries; keep them `Send`.
#[allow(dead_code)]
fn public_types_are_send() {
    fn is_send<T: Send + Sync>() {}
    is_send::<PeerSet>();
    is_send::<RtcEvent>();
    is_send::<RtcError>();
    is_send::<RtcConfig>();
    fn is_send_only<T: Send>() {}
    is_send_only::<RtcEvents>();
}
