//! tether's signaling relay server.
//!
//! - [`SignalServer`]: the relay (hyper HTTP/1.1 + WebSocket sessions, the
//!   peer registry, `/healthz`, `/metrics`), embeddable: bind, then
//!   [`spawn`](SignalServer::spawn) or [`serve`](SignalServer::serve).
//! - [`auth`]: HMAC-signed tokens (format, minting, verification) and
//!   static token files.
//! - [`MetricsSnapshot`]: the server's counters, as `/metrics` renders them.
//!
//! API boundary: this crate promises a server that speaks
//! `docs/PROTOCOL.md` (the types come from tether-signal's `protocol`), the
//! token format of its "Tokens" section, and the metric names listed there.
//! Every failure to set it up is a [`RelayError`]. Clients do not need this
//! crate; tests, `tether serve`, `tether demo` and the bindings' test
//! server do.
//!
//! Architecture invariants:
//! - The server stamps `from` on every relayed message; a session can only
//!   speak as the peer id its token proved.
//! - Nothing in the server panics on input, and every per-connection buffer
//!   is bounded (frame size, outbound queue, write time).
//! - Attempts of one client session are ordered by `generation`: an older
//!   `register` never displaces a newer one within the generation fence,
//!   and an older token never displaces a fresher one.
//! - A hostile client is limited by its own budgets (unregistered caps,
//!   rate limits, bad frames); relays and presence never cross a room.
//!
//! ```no_run
//! use std::time::Duration;
//! use tether_relay::auth::{Authenticator, HmacSecret, mint_token_for};
//! use tether_relay::{ServerConfig, SignalServer};
//! use tether_signal::protocol::PeerId;
//! use tether_signal::{ClientConfig, SignalClient};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = HmacSecret::new(b"a secret of at least 16 bytes".to_vec())?;
//! let server = SignalServer::bind(ServerConfig::new(Authenticator::with_secret(secret.clone())))
//!     .await?
//!     .spawn();
//!
//! let alice = PeerId::new("alice")?;
//! let token = mint_token_for(&secret, &alice, Duration::from_secs(3600));
//! let (client, _events) =
//!     SignalClient::new(ClientConfig::new(server.websocket_url(), alice, token))?;
//! client.connect_once().await?;
//! println!("{}", server.metrics().render_prometheus());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod cluster;
mod error;
mod metrics;
mod server;
mod tls;
pub mod turn;

pub use error::RelayError;
pub use metrics::MetricsSnapshot;
pub use server::{
    ExtraRoutes, RateLimit, RunningServer, ServerConfig, ServerLimits, SignalServer,
    raise_open_file_limit,
};
pub use tls::ServerTls;

/// The server's handles cross task and thread boundaries.
#[allow(dead_code)]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RelayError>();
    check::<RunningServer>();
    check::<ServerConfig>();
}
