//! A loopback testbed: an embedded signaling server and [`RtcNode`]s on
//! 127.0.0.1, plus numbered traffic that counts what was lost, duplicated
//! or reordered. Used by tether's own tests and by `tether demo`; useful for
//! an application's integration tests too.
//!
//! Only with the `testbed` feature (it embeds tether-relay, a server an app
//! does not otherwise need).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tether_relay::auth::{Authenticator, HmacSecret, mint_token_for};
use tether_relay::{RunningServer, ServerConfig, SignalServer};
use tether_rtc::RtcConfig;
use tether_signal::protocol::PeerId;

use super::{Message, RtcNode, RtcNodeConfig, RtcNodeError, SignalingTiming};
use crate::{Availability, NetworkSnapshot, Transport, TransportSet};

/// An embedded signaling server on loopback that mints tokens for its nodes.
#[derive(Debug)]
pub struct LoopbackTestbed {
    server: RunningServer,
    secret: HmacSecret,
    room: String,
}

impl LoopbackTestbed {
    /// Starts the server on an ephemeral port.
    ///
    /// # Errors
    ///
    /// [`RtcNodeError::Config`] when the server cannot bind.
    pub async fn start() -> Result<LoopbackTestbed, RtcNodeError> {
        LoopbackTestbed::start_with(|_| {}).await
    }

    /// As [`start`](Self::start), with the server's configuration adjusted
    /// by `adjust` first (e.g. TURN servers to hand out).
    ///
    /// # Errors
    ///
    /// [`RtcNodeError::Config`] when the server cannot bind.
    pub async fn start_with(
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Result<LoopbackTestbed, RtcNodeError> {
        let config_error = |err: &dyn std::fmt::Display| RtcNodeError::Config(err.to_string());
        let secret = HmacSecret::ephemeral();
        let mut config = ServerConfig::new(Authenticator::with_secret(secret.clone()));
        config.listen = ([127, 0, 0, 1], 0).into();
        adjust(&mut config);
        let server = SignalServer::bind(config).await.map_err(|e| config_error(&e))?.spawn();
        Ok(LoopbackTestbed { server, secret, room: "testbed".into() })
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub fn url(&self) -> String {
        self.server.websocket_url()
    }

    /// A token for `peer` valid for an hour.
    pub fn token(&self, peer: &PeerId) -> String {
        self.token_valid_for(peer, Duration::from_secs(3600))
    }

    /// A token for `peer` that expires after `ttl` (whole seconds: tokens
    /// carry their expiry in Unix seconds).
    pub fn token_valid_for(&self, peer: &PeerId, ttl: Duration) -> String {
        mint_token_for(&self.secret, peer, ttl)
    }

    /// A node config for `peer` in this testbed's room, with loopback
    /// WebRTC and [`SignalingTiming::responsive`] signaling.
    pub fn config(&self, peer: &PeerId) -> RtcNodeConfig {
        let mut config = RtcNodeConfig::new(peer.clone(), self.url(), self.token(peer));
        config.room = Some(self.room.clone());
        config.rtc = RtcConfig::loopback();
        config.signaling = SignalingTiming::responsive();
        config
    }

    /// Starts a node with `config` and brings it online (an Available Wi-Fi
    /// snapshot), returning once the resulting Restore ended.
    ///
    /// # Errors
    ///
    /// The node's start errors, or a failed first Restore.
    pub async fn online(&self, config: RtcNodeConfig) -> Result<RtcNode, RtcNodeError> {
        let node = RtcNode::start(config)?;
        let snapshot =
            NetworkSnapshot::new(1, Availability::Available, TransportSet::only(Transport::Wifi));
        node.handle().network_path_changed(snapshot).await?;
        Ok(node)
    }

    /// The server's metrics (connections, relayed messages, rejections).
    pub fn metrics(&self) -> tether_relay::MetricsSnapshot {
        self.server.metrics()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Numbered messages between peers, and the books to check them: every
/// message is `FROM:SEQ`, sequence numbers start at 1 per sender and
/// receiver pair.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    next: HashMap<Pair, u64>,
    /// Per (sender, receiver): every sequence number received, with counts.
    received: HashMap<Pair, BTreeMap<u64, u32>>,
    /// Per (sender, receiver): the last sequence number received, for order.
    last: HashMap<Pair, u64>,
    out_of_order: u64,
    malformed: u64,
}

/// A sender and a receiver.
type Pair = (PeerId, PeerId);

fn pair(from: &PeerId, to: &PeerId) -> Pair {
    (from.clone(), to.clone())
}

/// The books at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSummary {
    /// Messages accepted for sending.
    pub sent: u64,
    /// Distinct messages received.
    pub delivered: u64,
    /// Sent, never received.
    pub lost: u64,
    /// Received more than once (extra copies).
    pub duplicated: u64,
    /// Received after a later one from the same sender.
    pub out_of_order: u64,
}

impl Traffic {
    /// The next message from `from` to `to`; call [`sent`](Self::sent)
    /// once it was accepted.
    pub fn next_message(&self, from: &PeerId, to: &PeerId) -> Bytes {
        let seq = self.sent_so_far(from, to) + 1;
        Bytes::from(format!("{from}:{seq}"))
    }

    /// Records that the last [`next_message`](Self::next_message) from
    /// `from` to `to` was accepted.
    pub fn sent(&mut self, from: &PeerId, to: &PeerId) {
        *self.next.entry(pair(from, to)).or_default() += 1;
    }

    /// How many messages from `from` to `to` were accepted so far (the
    /// sequence number of the last one).
    pub fn sent_so_far(&self, from: &PeerId, to: &PeerId) -> u64 {
        self.next.get(&pair(from, to)).copied().unwrap_or(0)
    }

    /// The highest sequence number `to` received from `from` (0 if none).
    pub fn highest_received(&self, from: &PeerId, to: &PeerId) -> u64 {
        self.last.get(&pair(from, to)).copied().unwrap_or(0)
    }

    /// Records `message` as received by `to`.
    pub fn received(&mut self, to: &PeerId, message: &Message) {
        let text = String::from_utf8_lossy(&message.payload);
        let parsed = text
            .rsplit_once(':')
            .and_then(|(from, seq)| seq.parse::<u64>().ok().filter(|_| message.from == from));
        let Some(seq) = parsed else {
            self.malformed += 1;
            return;
        };
        let key = pair(&message.from, to);
        *self.received.entry(key.clone()).or_default().entry(seq).or_default() += 1;
        let last = self.last.entry(key).or_default();
        if seq < *last {
            self.out_of_order += 1;
        }
        *last = (*last).max(seq);
    }

    /// The books now.
    pub fn summary(&self) -> TrafficSummary {
        let sent: u64 = self.next.values().sum();
        let mut delivered = 0;
        let mut duplicated = 0;
        for (key, &count) in &self.next {
            let seen = self.received.get(key);
            let distinct = seen.map_or(0, |s| s.range(1..=count).count() as u64);
            delivered += distinct;
            duplicated +=
                seen.map_or(0, |s| s.values().map(|&n| u64::from(n.saturating_sub(1))).sum());
        }
        TrafficSummary {
            sent,
            delivered,
            lost: sent - delivered,
            duplicated,
            out_of_order: self.out_of_order + self.malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &PeerId, text: &str) -> Message {
        Message { from: from.clone(), payload: Bytes::from(text.to_owned()) }
    }

    #[test]
    fn the_books_count_losses_duplicates_and_reordering() {
        let (a, b) = (PeerId::new("a").unwrap(), PeerId::new("b").unwrap());
        let mut traffic = Traffic::default();
        for _ in 0..4 {
            assert_eq!(traffic.next_message(&a, &b).len(), 3);
            traffic.sent(&a, &b);
        }
        traffic.received(&b, &message(&a, "a:1"));
        traffic.received(&b, &message(&a, "a:3"));
        traffic.received(&b, &message(&a, "a:2"));
        traffic.received(&b, &message(&a, "a:3"));
        traffic.received(&b, &message(&a, "garbage"));
        let summary = traffic.summary();
        assert_eq!(summary.sent, 4);
        assert_eq!(summary.delivered, 3);
        assert_eq!(summary.lost, 1);
        assert_eq!(summary.duplicated, 1);
        assert_eq!(summary.out_of_order, 2, "one reordered, one malformed");
    }
}
