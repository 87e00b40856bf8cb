//! tether signaling: wire protocol, WebSocket client and relay server.
//!
//! - [`protocol`]: message types and the JSON frame codec (`docs/PROTOCOL.md`).
//! - [`auth`]: HMAC-signed and static tokens.
//! - [`server`]: the relay server, embeddable ([`SignalServer`]).
//! - [`client`]: the client the recovery executor drives ([`SignalClient`]).
//! - [`loadtest`]: the `tether bench signal` load generator.
//!
//! Architecture invariants:
//! - The server stamps `from` on every relayed message; a session can only
//!   speak as the peer id its token proved.
//! - Nothing in the server panics on input, and every per-connection buffer
//!   is bounded (frame size, outbound queue, write time).
//! - The client never decides to reconnect: it reports spontaneous losses
//!   ([`SignalEvent::Lost`]) and the Supervisor decides. A deliberate close
//!   (`disconnect`, or replacement by the client's own newer connection) is
//!   never reported as a loss.
//! - A connection attempt commits only if no newer attempt committed and no
//!   `disconnect` happened since it started ([`Generation`]); the server
//!   enforces the same order, so a late attempt can never become current.
//!
//! ```no_run
//! use std::time::Duration;
//! use tether_signal::auth::{Authenticator, HmacSecret, mint_token_for};
//! use tether_signal::protocol::{PeerId, RelayPayload};
//! use tether_signal::{ClientConfig, ServerConfig, SignalClient, SignalEvent, SignalServer};
//!
//! # async fn example() -> Result<(), tether_signal::SignalError> {
//! let secret = HmacSecret::new(b"a secret of at least 16 bytes".to_vec())?;
//! let server = SignalServer::bind(ServerConfig::new(Authenticator::with_secret(secret.clone())))
//!     .await?
//!     .spawn();
//!
//! let alice = PeerId::new("alice")?;
//! let token = mint_token_for(&secret, &alice, Duration::from_secs(3600));
//! let (client, mut events) =
//!     SignalClient::new(ClientConfig::new(server.websocket_url(), alice, token))?;
//! client.connect_once().await?;
//! client.send(&PeerId::new("bob")?, RelayPayload::IceRestart)?;
//! while let Some(event) = events.recv().await {
//!     if let SignalEvent::Lost { cause, .. } = event {
//!         println!("signaling lost: {cause}");
//!         client.rebuild(Duration::from_secs(1)).await?;
//!     }
//! }
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
mod error;
pub mod loadtest;
mod metrics;
pub mod protocol;
pub mod server;

pub use client::{
    ClientConfig, Connected, Generation, LossCause, Rebuilt, SignalClient, SignalEvent,
    SignalEvents,
};
pub use error::{SignalError, SignalErrorKind};
pub use metrics::MetricsSnapshot;
pub use server::{ExtraRoutes, RunningServer, ServerConfig, ServerLimits, SignalServer};

/// The client and server types cross task and thread boundaries.
#[allow(dead_code)]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SignalClient>();
    check::<SignalError>();
    check::<SignalEvent>();
    check::<RunningServer>();
    check::<ServerConfig>();
}
