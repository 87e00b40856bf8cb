//! [`TetherNodeBuilder`]: how an app sets a node up.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::info;

use crate::node::Backend;
use crate::runtime::runtime;
use crate::{Policy, SimulatedEffects, TetherError, TetherNode};

/// Sets up a [`TetherNode`]. Every setter returns the builder, so calls
/// chain; nothing is checked until `build`, which names
/// the first field that is missing or out of range.
///
/// A live node needs `signaling_url`, `peer_id` and `token`; a simulated
/// node (for tests and demos without a server) needs only `simulated`.
#[derive(Debug, uniffi::Object)]
pub struct TetherNodeBuilder {
    config: Mutex<BuilderConfig>,
}

/// A STUN or TURN server for WebRTC.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IceServer {
    /// `stun:host:port` / `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN user name (empty for STUN).
    #[uniffi(default = "")]
    pub username: String,
    /// TURN credential (empty for STUN).
    #[uniffi(default = "")]
    pub credential: String,
}

#[derive(Debug, Clone, Default)]
struct BuilderConfig {
    /// A preset live configuration (the test signaling server's): fields
    /// set on the builder override it.
    base: Option<tether::RtcNodeConfig>,
    name: Option<String>,
    signaling_url: Option<String>,
    peer_id: Option<String>,
    token: Option<String>,
    room: Option<String>,
    auto_connect: Option<bool>,
    ice_servers: Option<Vec<IceServer>>,
    relay_only: Option<bool>,
    tls_ca_pem: Option<String>,
    tls_ca_path: Option<String>,
    fallback_signaling_urls: Option<Vec<String>>,
    send_deadline_ms: Option<i64>,
    policy: Policy,
    result_timeout_ms: Option<i64>,
    shutdown_timeout_ms: Option<i64>,
    simulated: Option<SimulatedEffects>,
}

impl TetherNodeBuilder {
    fn with(self: Arc<Self>, set: impl FnOnce(&mut BuilderConfig)) -> Arc<Self> {
        set(&mut self.lock());
        self
    }

    /// A builder preset with `base` (see [`BuilderConfig::base`]); only the
    /// test server makes presets.
    #[cfg(feature = "test-server")]
    pub(crate) fn with_base(base: tether::RtcNodeConfig) -> Arc<Self> {
        let config = BuilderConfig { base: Some(base), ..BuilderConfig::default() };
        Arc::new(Self { config: Mutex::new(config) })
    }

    fn lock(&self) -> MutexGuard<'_, BuilderConfig> {
        // Setters only assign fields; a poisoned lock holds a usable config.
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for TetherNodeBuilder {
    fn default() -> Self {
        Self { config: Mutex::new(BuilderConfig::default()) }
    }
}

#[uniffi::export]
impl TetherNodeBuilder {
    /// An empty builder: policy v1, a 5 s result timeout.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A name for logs; defaults to the peer id.
    pub fn name(self: Arc<Self>, name: String) -> Arc<Self> {
        self.with(|c| c.name = Some(name))
    }

    /// The signaling server, `ws://` or `wss://`.
    pub fn signaling_url(self: Arc<Self>, url: String) -> Arc<Self> {
        self.with(|c| c.signaling_url = Some(url))
    }

    /// This node's peer id on the signaling server.
    pub fn peer_id(self: Arc<Self>, peer_id: String) -> Arc<Self> {
        self.with(|c| c.peer_id = Some(peer_id))
    }

    /// The credential the signaling server checks.
    pub fn token(self: Arc<Self>, token: String) -> Arc<Self> {
        self.with(|c| c.token = Some(token))
    }

    /// A presence room on the signaling server: the node learns who joins
    /// and leaves.
    pub fn room(self: Arc<Self>, room: String) -> Arc<Self> {
        self.with(|c| c.room = Some(room))
    }

    /// Whether to connect to every peer of the room on its own (default
    /// true).
    pub fn auto_connect(self: Arc<Self>, auto_connect: bool) -> Arc<Self> {
        self.with(|c| c.auto_connect = Some(auto_connect))
    }

    /// STUN/TURN servers. None (the default) gathers host candidates only,
    /// which reach peers on the same network.
    pub fn ice_servers(self: Arc<Self>, servers: Vec<IceServer>) -> Arc<Self> {
        self.with(|c| c.ice_servers = Some(servers))
    }

    /// Relay-only ICE (WebRTC's ICE transport policy `relay`): every packet
    /// goes through a TURN server from `ice_servers` (or one the signaling
    /// server hands out). For networks where direct paths cannot work or
    /// must not be used (hiding addresses). Default false: direct paths
    /// when they work. webrtc-rs relays over UDP only (`turn:` URLs).
    pub fn relay_only(self: Arc<Self>, relay_only: bool) -> Arc<Self> {
        self.with(|c| c.relay_only = Some(relay_only))
    }

    /// Also trusts the certificate authorities in `pem` (one or more PEM
    /// `CERTIFICATE` blocks) for a `wss://` signaling server, besides the
    /// system's roots: for private deployments and tests. Checked at
    /// `build`: text without a certificate is an `InvalidConfig`.
    pub fn tls_ca_pem(self: Arc<Self>, pem: String) -> Arc<Self> {
        self.with(|c| c.tls_ca_pem = Some(pem))
    }

    /// Also trusts the certificate authorities of a PEM file, or of every
    /// `*.pem` and `*.crt` file in a directory, for a `wss://` signaling
    /// server. Read at `build`: an unreadable path or a file without a
    /// certificate is an `InvalidConfig`.
    pub fn tls_ca_path(self: Arc<Self>, path: String) -> Arc<Self> {
        self.with(|c| c.tls_ca_path = Some(path))
    }

    /// More signaling servers of the same deployment (`ws://` or `wss://`,
    /// each checked like `signaling_url`), tried in turn when the one in
    /// use cannot be reached. A server that dies is a signaling loss like
    /// any other: recovery lands on the next one. Default none.
    pub fn fallback_signaling_urls(self: Arc<Self>, urls: Vec<String>) -> Arc<Self> {
        self.with(|c| c.fallback_signaling_urls = Some(urls))
    }

    /// How long `send` waits for room and for the peer's acknowledgement.
    /// Default 10 000; must be positive.
    pub fn send_deadline_ms(self: Arc<Self>, deadline_ms: i64) -> Arc<Self> {
        self.with(|c| c.send_deadline_ms = Some(deadline_ms))
    }

    /// Overrides of the decision policy.
    pub fn policy(self: Arc<Self>, policy: Policy) -> Arc<Self> {
        self.with(|c| c.policy = policy)
    }

    /// How long an event method waits for its result before it fails with
    /// [`TetherError::ResultTimeout`] (the work goes on). Default 5000;
    /// must be positive.
    pub fn result_timeout_ms(self: Arc<Self>, timeout_ms: i64) -> Arc<Self> {
        self.with(|c| c.result_timeout_ms = Some(timeout_ms))
    }

    /// The bound on the final cleanup at shutdown. Default 3000; must not
    /// be negative.
    pub fn shutdown_timeout_ms(self: Arc<Self>, timeout_ms: i64) -> Arc<Self> {
        self.with(|c| c.shutdown_timeout_ms = Some(timeout_ms))
    }

    /// Build a simulated node: the real decision engine and node runtime,
    /// with actions that play `effects` instead of touching the network.
    /// For tests, demos and UI work without a server.
    pub fn simulated(self: Arc<Self>, effects: SimulatedEffects) -> Arc<Self> {
        self.with(|c| c.simulated = Some(effects))
    }

    /// Starts the node. The builder can be used again.
    ///
    /// # Errors
    ///
    /// [`TetherError::InvalidConfig`] naming the first missing or
    /// out-of-range field; [`TetherError::Internal`] when the runtime
    /// cannot start. A live node does not connect here: the first Available
    /// snapshot (or a forced reconnect) makes it restore, which connects.
    pub fn build(&self) -> Result<Arc<TetherNode>, TetherError> {
        let config = self.lock().clone();
        let node_config = config.node_config()?;
        let runtime = runtime()?;
        let (name, backend) = match &config.simulated {
            Some(effects) => {
                let executor = Arc::new(tether::ScriptedExecutor::new(effects.to_effects()?));
                // The node keeps the link's reporter: simulated losses are
                // reported through it, as a real link's watchers would.
                let (link, link_events) = tether::LinkReporter::channel();
                let name = node_config.name.clone();
                let _runtime = runtime.enter();
                let node = tether::Node::spawn(node_config, executor, link_events)?;
                (name, Backend::Simulated { node, link })
            }
            None => {
                let live = config.live_config(node_config)?;
                let name = live.node.name.clone();
                let _runtime = runtime.enter();
                (name, Backend::Live(Box::new(tether::RtcNode::start(live)?)))
            }
        };
        let kind = match backend {
            Backend::Live(_) => "live",
            Backend::Simulated { .. } => "simulated",
        };
        info!(name: "ffi.node.built", node = %name, backend = kind);
        Ok(Arc::new(TetherNode::new(name, backend)))
    }
}

impl BuilderConfig {
    /// What every backend shares, checked.
    fn node_config(&self) -> Result<tether::NodeConfig, TetherError> {
        let defaults = tether::NodeConfig::default();
        let result_timeout = match self.result_timeout_ms {
            None => defaults.result_timeout,
            Some(ms) => positive_ms("result_timeout_ms", ms)?,
        };
        let shutdown_timeout = match self.shutdown_timeout_ms {
            None => defaults.shutdown_timeout,
            Some(ms) => u64::try_from(ms).map(Duration::from_millis).map_err(|_| {
                TetherError::InvalidConfig(format!(
                    "shutdown_timeout_ms must not be negative (got {ms})"
                ))
            })?,
        };
        let name = self
            .name
            .clone()
            .or_else(|| self.peer_id.clone())
            .unwrap_or_else(|| defaults.name.clone());
        Ok(tether::NodeConfig {
            name,
            policy: self.policy.to_config()?,
            result_timeout,
            shutdown_timeout,
            ..defaults
        })
    }

    /// The live node's configuration, checked.
    fn live_config(&self, node: tether::NodeConfig) -> Result<tether::RtcNodeConfig, TetherError> {
        let base = self.base.as_ref();
        let missing = |field: &str| {
            TetherError::InvalidConfig(format!(
                "{field} is required for a live node (or use simulated() for one without a server)"
            ))
        };
        let required = |field: &str, set: &Option<String>, preset: Option<&String>| {
            set.as_ref()
                .or(preset)
                .filter(|value| !value.is_empty())
                .cloned()
                .ok_or_else(|| missing(field))
        };
        let url = required("signaling_url", &self.signaling_url, base.map(|b| &b.signaling_url))?;
        // Parsed here, once: the node carries the checked id from now on.
        let peer_id = match (self.peer_id.as_deref(), base) {
            (Some(""), _) | (None, None) => return Err(missing("peer_id")),
            (Some(id), _) => tether::PeerId::new(id)
                .map_err(|err| TetherError::InvalidConfig(format!("peer_id: {err}")))?,
            (None, Some(base)) => base.peer_id.clone(),
        };
        let token = required("token", &self.token, base.map(|b| &b.token))?;
        check_signaling_url("signaling_url", &url)?;
        let mut live = match base {
            Some(base) => base.clone(),
            None => tether::RtcNodeConfig::new(peer_id.clone(), url.clone(), token.clone()),
        };
        live.peer_id = peer_id;
        live.signaling_url = url;
        live.token = token;
        if let Some(room) = &self.room {
            live.room = Some(room.clone()).filter(|room| !room.is_empty());
        }
        if let Some(auto_connect) = self.auto_connect {
            live.auto_connect = auto_connect;
        }
        if let Some(servers) = &self.ice_servers {
            live.rtc.ice_servers = servers
                .iter()
                .map(|server| tether_rtc::IceServer {
                    urls: server.urls.clone(),
                    username: server.username.clone(),
                    credential: server.credential.clone(),
                })
                .collect();
        }
        if let Some(relay_only) = self.relay_only {
            live.rtc.ice_transport_policy = if relay_only {
                tether_rtc::IceTransportPolicy::Relay
            } else {
                tether_rtc::IceTransportPolicy::All
            };
        }
        if let Some(urls) = &self.fallback_signaling_urls {
            for url in urls {
                check_signaling_url("fallback_signaling_urls", url)?;
            }
            live.fallback_signaling_urls = urls.clone();
        }
        if let Some(pem) = &self.tls_ca_pem {
            live.tls = live
                .tls
                .with_ca_pem(pem.as_bytes())
                .map_err(|err| trust_error("tls_ca_pem", &err))?;
        }
        if let Some(path) = &self.tls_ca_path {
            live.tls =
                live.tls.with_ca_path(path).map_err(|err| trust_error("tls_ca_path", &err))?;
        }
        if let Some(ms) = self.send_deadline_ms {
            live.messaging.send_deadline = positive_ms("send_deadline_ms", ms)?;
        }
        live.node = tether::NodeConfig {
            name: self.name.clone().unwrap_or_else(|| live.peer_id.to_string()),
            ..node
        };
        Ok(live)
    }
}

/// Refuses a signaling URL (`field` names it) that is not `ws://host…` or
/// `wss://host…`; the signaling client parses it fully when it connects.
fn check_signaling_url(field: &str, url: &str) -> Result<(), TetherError> {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => Err(TetherError::InvalidConfig(format!("{field}: no host in {url:?}"))),
        None => Err(TetherError::InvalidConfig(format!(
            "{field} must start with ws:// or wss:// (got {url:?})"
        ))),
    }
}

/// A refused CA setting (`field`) as [`TetherError::InvalidConfig`]: the
/// signaling client's reason, without its own "invalid configuration"
/// prefix (the foreign error adds one).
fn trust_error(field: &str, err: &dyn std::fmt::Display) -> TetherError {
    let reason = err.to_string();
    let reason = reason.strip_prefix("invalid configuration: ").unwrap_or(&reason);
    TetherError::InvalidConfig(format!("{field}: {reason}"))
}

/// `ms` as a positive duration, or an error naming `field`.
fn positive_ms(field: &str, ms: i64) -> Result<Duration, TetherError> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| TetherError::InvalidConfig(format!("{field} must be positive (got {ms})")))
}
