//! Server counters and their Prometheus text rendering (`GET /metrics`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tether_signal::protocol::ErrorCode;

use crate::cluster::ClusterStats;

/// Why a server-side WebSocket session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The client closed the socket or the stream ended.
    Closed,
    /// A newer registration of the same peer id took over.
    Replaced,
    /// Its outbound queue overflowed.
    SlowConsumer,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// No valid `register` in time.
    RegisterTimeout,
    /// The `register` was refused (auth, version, names, stale generation).
    RegisterRefused,
    /// Too many bad frames, or a frame over the hard size cap.
    Abuse,
    /// Kept sending over its rate limit (close 4009).
    RateLimited,
    /// Its token expired, or a fresher token holds the peer id (close 4010).
    TokenExpired,
    /// Closed unregistered to make room for a newer connection (close 1013).
    Evicted,
    /// Broke RFC 6455 framing or sent invalid UTF-8 (close 1002 / 1007).
    ProtocolError,
    /// The server shut down.
    Shutdown,
    /// A transport error.
    Error,
}

impl SessionEnd {
    const ALL: [SessionEnd; 13] = [
        SessionEnd::Closed,
        SessionEnd::Replaced,
        SessionEnd::SlowConsumer,
        SessionEnd::IdleTimeout,
        SessionEnd::RegisterTimeout,
        SessionEnd::RegisterRefused,
        SessionEnd::Abuse,
        SessionEnd::RateLimited,
        SessionEnd::TokenExpired,
        SessionEnd::Evicted,
        SessionEnd::ProtocolError,
        SessionEnd::Shutdown,
        SessionEnd::Error,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::Replaced => "replaced",
            SessionEnd::SlowConsumer => "slow_consumer",
            SessionEnd::IdleTimeout => "idle_timeout",
            SessionEnd::RegisterTimeout => "register_timeout",
            SessionEnd::RegisterRefused => "register_refused",
            SessionEnd::Abuse => "abuse",
            SessionEnd::RateLimited => "rate_limited",
            SessionEnd::TokenExpired => "token_expired",
            SessionEnd::Evicted => "evicted",
            SessionEnd::ProtocolError => "protocol_error",
            SessionEnd::Shutdown => "shutdown",
            SessionEnd::Error => "error",
        }
    }

    fn index(self) -> usize {
        SessionEnd::ALL.iter().position(|end| *end == self).unwrap_or(0)
    }
}

/// Why a connection was turned away before it could send anything (no
/// error frame is possible yet), in metric label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` reached: closed right after accept.
    MaxConnections,
    /// Its source address already holds `max_unregistered_per_source`
    /// unregistered connections: closed right after accept.
    UnregisteredPerSource,
    /// An older unregistered connection was closed to admit it
    /// (`max_unregistered` reached); counts the evicted one.
    UnregisteredEvicted,
    /// The WebSocket upgrade's `Origin` is not allowed (403).
    Origin,
    /// `accept` failed (typically EMFILE, out of descriptors).
    AcceptError,
}

impl Refused {
    const ALL: [Refused; 5] = [
        Refused::MaxConnections,
        Refused::UnregisteredPerSource,
        Refused::UnregisteredEvicted,
        Refused::Origin,
        Refused::AcceptError,
    ];

    fn name(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::UnregisteredPerSource => "unregistered_per_source",
            Refused::UnregisteredEvicted => "unregistered_evicted",
            Refused::Origin => "origin",
            Refused::AcceptError => "accept_error",
        }
    }

    fn index(self) -> usize {
        Refused::ALL.iter().position(|refused| *refused == self).unwrap_or(0)
    }
}

/// The relayed message types, in metric label order.
const RELAY_TYPES: [&str; 6] = ["offer", "answer", "candidate", "ice_restart", "bye", "detour"];

fn relay_index(type_name: &str) -> usize {
    RELAY_TYPES.iter().position(|name| *name == type_name).unwrap_or(0)
}

fn code_index(code: ErrorCode) -> Option<usize> {
    ErrorCode::ALL.iter().position(|known| *known == code)
}

/// Lock-free counters shared by every session of one server.
#[derive(Debug, Default)]
pub(crate) struct ServerMetrics {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    peers_registered: AtomicU64,
    registrations_total: AtomicU64,
    register_ice_restarts: AtomicU64,
    relayed: [AtomicU64; RELAY_TYPES.len()],
    rejections: [AtomicU64; ErrorCode::ALL.len()],
    session_ends: [AtomicU64; SessionEnd::ALL.len()],
    refused: [AtomicU64; Refused::ALL.len()],
}

impl ServerMetrics {
    pub(crate) fn session_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self, end: SessionEnd) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        self.session_ends[end.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub(crate) fn set_peers_registered(&self, count: usize) {
        self.peers_registered.store(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn registered(&self) {
        self.registrations_total.fetch_add(1, Ordering::Relaxed);
    }

    /// `count` peers named in a `register`'s `ice_restart` (each then relayed, or refused, as a
    /// relay message).
    pub(crate) fn register_ice_restarts(&self, count: usize) {
        self.register_ice_restarts.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn relayed(&self, type_name: &str) {
        self.relayed[relay_index(type_name)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, reason: Refused) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, code: ErrorCode) {
        if let Some(index) = code_index(code) {
            self.rejections[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy of every counter (each read is atomic; the
    /// set is not a snapshot of one instant).
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_open: load(&self.connections_open),
            connections_total: load(&self.connections_total),
            peers_registered: load(&self.peers_registered),
            registrations_total: load(&self.registrations_total),
            register_ice_restarts: load(&self.register_ice_restarts),
            relayed_total: self.relayed.iter().map(load).sum(),
            relayed_by_type: RELAY_TYPES
                .iter()
                .zip(&self.relayed)
                .map(|(name, counter)| (*name, load(counter)))
                .collect(),
            rejections: ErrorCode::ALL
                .iter()
                .zip(&self.rejections)
                .map(|(code, counter)| (*code, load(counter)))
                .collect(),
            session_ends: SessionEnd::ALL
                .iter()
                .zip(&self.session_ends)
                .map(|(end, counter)| (end.name(), load(counter)))
                .collect(),
            connections_refused: Refused::ALL
                .iter()
                .zip(&self.refused)
                .map(|(reason, counter)| (reason.name(), load(counter)))
                .collect(),
            cluster: None,
        }
    }
}

/// A copy of the server's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// WebSocket sessions currently open.
    pub connections_open: u64,
    /// WebSocket sessions opened since start.
    pub connections_total: u64,
    /// Peer ids currently registered.
    pub peers_registered: u64,
    /// Successful `register`s since start.
    pub registrations_total: u64,
    /// Peers named in registrations' `ice_restart` since start: requests the server made for
    /// clients (each also counts as a relayed `ice_restart` when delivered).
    pub register_ice_restarts: u64,
    /// Relayed messages since start, all types.
    pub relayed_total: u64,
    /// Relayed messages by `type`.
    pub relayed_by_type: Vec<(&'static str, u64)>,
    /// Error frames sent, by code.
    pub rejections: Vec<(ErrorCode, u64)>,
    /// Ended sessions by reason (`closed`, `replaced`, `slow_consumer`, ...).
    pub session_ends: Vec<(&'static str, u64)>,
    /// Connections turned away before a WebSocket session, by reason
    /// (`max_connections`, `unregistered_per_source`, `unregistered_evicted`,
    /// `origin`, `accept_error`).
    pub connections_refused: Vec<(&'static str, u64)>,
    /// The broker's view, in cluster mode (`None` on a single server).
    pub cluster: Option<ClusterStats>,
}

impl MetricsSnapshot {
    /// The number of error frames sent with `code`.
    pub fn rejections_for(&self, code: ErrorCode) -> u64 {
        self.rejections.iter().find(|(known, _)| *known == code).map_or(0, |(_, count)| *count)
    }

    /// The number of sessions that ended for `reason` (a label value).
    pub fn session_ends_for(&self, reason: &str) -> u64 {
        self.session_ends.iter().find(|(name, _)| *name == reason).map_or(0, |(_, count)| *count)
    }

    /// The number of connections turned away for `reason` (a label value).
    pub fn refused_for(&self, reason: &str) -> u64 {
        self.connections_refused
            .iter()
            .find(|(name, _)| *name == reason)
            .map_or(0, |(_, count)| *count)
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |value: u64| vec![(String::new(), value)];
        metric(
            "tether_signal_connections_open",
            "gauge",
            "WebSocket sessions currently open.",
            &plain(self.connections_open),
        );
        metric(
            "tether_signal_connections_total",
            "counter",
            "WebSocket sessions opened since start.",
            &plain(self.connections_total),
        );
        metric(
            "tether_signal_peers_registered",
            "gauge",
            "Peer ids currently registered.",
            &plain(self.peers_registered),
        );
        metric(
            "tether_signal_registrations_total",
            "counter",
            "Successful registrations since start.",
            &plain(self.registrations_total),
        );
        metric(
            "tether_signal_register_ice_restarts_total",
            "counter",
            "ICE restarts asked for in register (each also relayed as ice_restart).",
            &plain(self.register_ice_restarts),
        );
        let relayed: Vec<_> = self
            .relayed_by_type
            .iter()
            .map(|(name, value)| (format!("{{type=\"{name}\"}}"), *value))
            .collect();
        metric(
            "tether_signal_relayed_messages_total",
            "counter",
            "Messages relayed between peers, by type.",
            &relayed,
        );
        let rejections: Vec<_> = self
            .rejections
            .iter()
            .map(|(code, value)| (format!("{{reason=\"{code}\"}}"), *value))
            .collect();
        metric(
            "tether_signal_rejections_total",
            "counter",
            "Error frames sent to clients, by error code.",
            &rejections,
        );
        let ends: Vec<_> = self
            .session_ends
            .iter()
            .map(|(name, value)| (format!("{{reason=\"{name}\"}}"), *value))
            .collect();
        metric(
            "tether_signal_sessions_ended_total",
            "counter",
            "WebSocket sessions ended, by reason.",
            &ends,
        );
        let refused: Vec<_> = self
            .connections_refused
            .iter()
            .map(|(name, value)| (format!("{{reason=\"{name}\"}}"), *value))
            .collect();
        metric(
            "tether_signal_connections_refused_total",
            "counter",
            "Connections turned away before a WebSocket session, by reason.",
            &refused,
        );
        if let Some(cluster) = &self.cluster {
            metric(
                "tether_signal_cluster_connected",
                "gauge",
                "1 while connected to a NATS server (cluster mode).",
                &plain(u64::from(cluster.connected)),
            );
            metric(
                "tether_signal_cluster_reconnects_total",
                "counter",
                "Reconnections to the NATS broker since start.",
                &plain(cluster.reconnects),
            );
            metric(
                "tether_signal_cluster_published_total",
                "counter",
                "Frames published to peers held by other instances.",
                &plain(cluster.published),
            );
            metric(
                "tether_signal_cluster_delivered_total",
                "counter",
                "Frames received from other instances for local peers.",
                &plain(cluster.delivered),
            );
            metric(
                "tether_signal_cluster_malformed_total",
                "counter",
                "Messages from the bus dropped as malformed.",
                &plain(cluster.malformed),
            );
            let superseded = vec![
                ("{direction=\"sent\"}".to_owned(), cluster.superseded_sent),
                ("{direction=\"received\"}".to_owned(), cluster.superseded_received),
            ];
            metric(
                "tether_signal_cluster_superseded_total",
                "counter",
                "Supersede notices between instances (a peer moved), by direction.",
                &superseded,
            );
            metric(
                "tether_signal_cluster_presence_refresh_failures_total",
                "counter",
                "Presence refreshes that failed (broker unreachable).",
                &plain(cluster.presence_refresh_failures),
            );
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let metrics = ServerMetrics::default();
        metrics.session_opened();
        metrics.relayed("candidate");
        metrics.relayed("candidate");
        metrics.rejected(ErrorCode::PeerUnknown);
        let text = metrics.snapshot().render_prometheus();
        assert!(text.contains("tether_signal_connections_open 1\n"), "{text}");
        assert!(
            text.contains("tether_signal_relayed_messages_total{type=\"candidate\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tether_signal_rejections_total{reason=\"peer_unknown\"} 1\n"),
            "{text}"
        );
        metrics.session_ended(SessionEnd::SlowConsumer);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.connections_open, 0);
        assert_eq!(snapshot.session_ends_for("slow_consumer"), 1);
        assert!(!snapshot.render_prometheus().contains("cluster"), "single server: no broker view");
    }

    #[test]
    fn the_broker_view_renders_in_cluster_mode() {
        let mut snapshot = ServerMetrics::default().snapshot();
        snapshot.cluster = Some(ClusterStats {
            connected: true,
            published: 3,
            reconnects: 2,
            malformed: 1,
            ..ClusterStats::default()
        });
        let text = snapshot.render_prometheus();
        for line in [
            "tether_signal_cluster_connected 1\n",
            "tether_signal_cluster_published_total 3\n",
            "tether_signal_cluster_delivered_total 0\n",
            "tether_signal_cluster_reconnects_total 2\n",
            "tether_signal_cluster_malformed_total 1\n",
            "tether_signal_cluster_superseded_total{direction=\"sent\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
