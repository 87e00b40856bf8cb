//! How an [`RtcNode`](super::RtcNode) is set up.

use std::time::Duration;

use tether_rtc::RtcConfig;
use tether_signal::TlsTrust;
use tether_signal::protocol::PeerId;

use crate::NodeConfig;
use crate::reliable::StreamConfig;

/// Everything an [`RtcNode`](super::RtcNode) needs. Build with
/// [`RtcNodeConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RtcNodeConfig {
    /// Who this node is (its signaling peer id).
    pub peer_id: PeerId,
    /// `ws://host:port/ws` or `wss://host[:port]/ws` of the signaling server.
    pub signaling_url: String,
    /// More signaling servers of the same deployment, tried in turn when the
    /// one in use cannot be reached (see tether-signal's
    /// `ClientConfig::fallback_urls`). A server that dies is a signaling
    /// loss like any other; the Supervisor's restore then lands on the next.
    pub fallback_signaling_urls: Vec<String>,
    /// Whom a `wss://` signaling server must be signed by: the system's
    /// roots by default, plus any private CA added with
    /// [`TlsTrust::with_ca_path`] or [`TlsTrust::with_ca_pem`].
    pub tls: TlsTrust,
    /// The credential for `peer_id`.
    pub token: String,
    /// A presence room: with one, the node learns who joins and leaves, and
    /// (with `auto_connect`) connects to them.
    pub room: Option<String>,
    /// Connect to every peer of the room, and forget peers that leave it.
    pub auto_connect: bool,
    /// The recovery runtime: policy, initial state, result and shutdown
    /// bounds.
    pub node: NodeConfig,
    /// WebRTC settings.
    pub rtc: RtcConfig,
    /// Signaling timing.
    pub signaling: SignalingTiming,
    /// How actions run.
    pub recovery: RecoveryTiming,
    /// Reliable messaging.
    pub messaging: MessagingConfig,
}

impl RtcNodeConfig {
    /// A node `peer_id` on `signaling_url` with `token`; everything else
    /// default.
    pub fn new(
        peer_id: PeerId,
        signaling_url: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            node: NodeConfig { name: peer_id.to_string(), ..NodeConfig::default() },
            peer_id,
            signaling_url: signaling_url.into(),
            tls: TlsTrust::system(),
            fallback_signaling_urls: Vec::new(),
            token: token.into(),
            room: None,
            auto_connect: true,
            rtc: RtcConfig::default(),
            signaling: SignalingTiming::default(),
            recovery: RecoveryTiming::default(),
            messaging: MessagingConfig::default(),
        }
    }

    /// The seed design's recovery, for comparisons: a fixed 400 ms settle
    /// window before deciding, and Restore probes the old socket (1 s) before
    /// it opens a new one.
    pub fn seed_style(mut self) -> Self {
        self.node.policy = tether_recovery::PolicyConfig::seed_style();
        self.recovery.restore = RestoreStrategy::ProbeThenReconnect;
        self.recovery.probe_timeout = Duration::from_secs(1);
        self
    }
}

/// Signaling link timing (docs/PROTOCOL.md).
///
/// Two named presets: [`production`](Self::production) (the default) for
/// real networks, and [`responsive`](Self::responsive) for demos, labs and
/// tests, where a dead link should be noticed within seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalingTiming {
    /// Bound on TCP connect + WebSocket handshake + register.
    pub connect_timeout: Duration,
    /// Background ping interval.
    pub ping_interval: Duration,
    /// Silence after which the link is declared dead.
    pub dead_after: Duration,
    /// How long a Restore lets the old socket's probe run alone before it
    /// races a fresh connection against it. 0: race at once (the route may
    /// have changed; waiting for the old socket is what made the seed slow).
    pub rebuild_head_start: Duration,
}

impl SignalingTiming {
    /// For real networks (the default): connect within 5 s, ping every 5 s,
    /// dead after 10 s of silence, race a fresh socket at once. Pings stay
    /// rare enough for a phone's radio and battery, and a slow cellular
    /// round trip is not mistaken for a dead link.
    pub fn production() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(10),
            rebuild_head_start: Duration::ZERO,
        }
    }

    /// For demos, labs and tests on fast links (loopback, a LAN, the
    /// namespace lab): connect within 3 s, ping every 500 ms, dead after 2 s
    /// of silence, race a fresh socket at once. A silent loss is noticed in
    /// about 2 s instead of 10, at the cost of twice-a-second pings and of
    /// declaring a link dead on a 2 s stall.
    pub fn responsive() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_millis(500),
            dead_after: Duration::from_secs(2),
            rebuild_head_start: Duration::ZERO,
        }
    }
}

impl Default for SignalingTiming {
    /// [`SignalingTiming::production`].
    fn default() -> Self {
        Self::production()
    }
}

/// How Restore makes signaling healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStrategy {
    /// Race a fresh connection against a probe of the old socket; keep the
    /// first healthy one.
    RaceFreshConnection,
    /// The seed design: probe the old socket, and only when the probe fails
    /// (after `probe_timeout`) open a new one.
    ProbeThenReconnect,
}

/// How the executor runs actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryTiming {
    /// Bound on a Probe (and on the old socket's probe during Restore).
    pub probe_timeout: Duration,
    /// How Restore makes signaling healthy.
    pub restore: RestoreStrategy,
}

impl Default for RecoveryTiming {
    fn default() -> Self {
        Self {
            probe_timeout: Duration::from_secs(1),
            restore: RestoreStrategy::RaceFreshConnection,
        }
    }
}

/// Reliable messaging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagingConfig {
    /// Replay buffer and ack timing, per peer.
    pub stream: StreamConfig,
    /// How long [`RtcNode::send`](super::RtcNode::send) waits for room and
    /// for the peer's acknowledgement before it reports an error.
    pub send_deadline: Duration,
    /// Largest message accepted (a data-channel message must stay under the
    /// SCTP limit webrtc-rs uses; 64 KiB minus the frame header).
    pub max_message_bytes: usize,
    /// Messages received but not yet taken by the application before the
    /// node stops reading from the network (back-pressure).
    pub receive_backlog: usize,
    /// Carry frames through the signaling server, sealed end to end, while a peer's data path
    /// is being replaced (docs/MESSAGING.md rule 10). Only with a peer that sends its key share
    /// and a server that relays `detour`.
    pub detour: bool,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            send_deadline: Duration::from_secs(10),
            max_message_bytes: 65_536 - 16,
            receive_backlog: 4096,
            detour: true,
        }
    }
}
