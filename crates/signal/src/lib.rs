//! tether signaling: the wire protocol and the WebSocket client.
//!
//! - [`protocol`]: message types, names and the JSON frame codec
//!   (`docs/PROTOCOL.md`).
//! - [`client`]: the client the recovery executor drives ([`SignalClient`]).
//!
//! API boundary: this crate promises the protocol types and codec of
//! `docs/PROTOCOL.md` version 1 and a client that never reconnects on its
//! own; every client failure is a [`SignalError`] with a stable
//! [`SignalErrorKind`]. Tokens are opaque strings here. It contains no
//! server: the relay, token minting and verification live in tether-relay,
//! so an application (or the mobile library) that only connects does not
//! compile an HTTP server or any crypto.
//!
//! Architecture invariants:
//! - The client never decides to reconnect: it reports spontaneous losses
//!   ([`SignalEvent::Lost`]) and the Supervisor decides. A deliberate close
//!   (`disconnect`, or replacement by the client's own newer connection) is
//!   never reported as a loss.
//! - A connection attempt commits only if no newer attempt committed and no
//!   `disconnect` happened since it started ([`LinkGeneration`]); the server
//!   enforces the same order, so a late attempt can never become current.
//!
//! ```no_run
//! use std::time::Duration;
//! use tether_signal::protocol::{PeerId, RelayPayload};
//! use tether_signal::{ClientConfig, SignalClient, SignalEvent};
//!
//! # async fn example(token: String) -> Result<(), Box<dyn std::error::Error>> {
//! let alice = PeerId::new("alice")?;
//! let (client, mut events) =
//!     SignalClient::new(ClientConfig::new("ws://127.0.0.1:8080/ws", alice, token))?;
//! client.connect_once().await?;
//! client.send(&PeerId::new("bob")?, RelayPayload::IceRestart)?;
//! while let Some(event) = events.recv().await {
//!     if let SignalEvent::Lost { cause, .. } = event {
//!         println!("signaling lost: {cause}");
//!         client.rebuild(Duration::from_secs(1)).await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod client;
mod error;
pub mod protocol;

pub use client::{
    ClientConfig, Connected, LinkGeneration, LossCause, Rebuilt, SignalClient, SignalEvent,
    SignalEvents, TlsTrust,
};
pub use error::{SignalError, SignalErrorKind};

/// The client types cross task and thread boundaries.
#[allow(dead_code)]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SignalClient>();
    check::<SignalError>();
    check::<SignalEvent>();
}
