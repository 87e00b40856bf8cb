//! Configuration of a [`crate::PeerSet`] and its translation into webrtc-rs settings.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use webrtc::peer_connection::{
    RTCConfiguration, RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy, SettingEngine,
    SettingEngineBuilder,
};

use crate::local_address::LocalAddresses;

/// How long ICE keeps checking one candidate pair before giving it up (webrtc-rs's default:
/// 7 checks at 200 ms).
const PAIR_CHECK_BUDGET: Duration = Duration::from_millis(1400);

/// A STUN or TURN server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` / `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN credential (empty for STUN).
    pub credential: String,
}

/// Which candidates ICE may pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceTransportPolicy {
    /// Host, server-reflexive and relayed candidates: direct paths when they work.
    #[default]
    All,
    /// Relayed (TURN) candidates only: every packet goes through a TURN server. For
    /// networks where direct paths cannot work (symmetric NAT on both ends) or must not be
    /// used (hiding addresses). Needs a TURN server in [`RtcConfig::ice_servers`]; webrtc-rs
    /// 0.21 allocates over UDP only (`turn:` URLs; no `turns:`, no TCP allocations).
    Relay,
}

/// How peers are built, and how long each operation may take.
#[derive(Clone, Debug)]
pub struct RtcConfig {
    /// STUN/TURN servers. Empty (the default) gathers host candidates only: loopback and LAN.
    pub ice_servers: Vec<IceServer>,
    /// Which candidates ICE may pair (all by default).
    pub ice_transport_policy: IceTransportPolicy,
    /// Which local addresses to bind (and so which host candidates to offer).
    pub local_addresses: LocalAddresses,
    /// Replace the UDP sockets and drop the previous local candidates on every ICE restart
    /// (webrtc-rs `SettingEngine::discard_local_candidates_during_ice_restart`). On (the
    /// default) a restart after a handoff gathers on the current addresses only; off, it keeps
    /// checking over sockets bound to the address that disappeared.
    pub fresh_sockets_on_ice_restart: bool,
    /// Bound on [`crate::PeerSet::connect`] / [`crate::PeerSet::replace`]: from the first call
    /// until the data channel is open. Also bounds waiting for an answer to an offer.
    pub connect_timeout: Duration,
    /// Bound on [`crate::PeerSet::restart_ice`]: from the request until ICE is connected again.
    pub restart_timeout: Duration,
    /// Bound on [`crate::PeerSet::close`] and [`crate::PeerSet::close_all`].
    pub close_timeout: Duration,
    /// ICE: no traffic for this long makes the connection `disconnected`.
    pub ice_disconnected_timeout: Duration,
    /// ICE: this long `disconnected` makes it `failed`.
    pub ice_failed_timeout: Duration,
    /// ICE: keepalive interval on an idle connection.
    pub ice_keepalive_interval: Duration,
    /// ICE: pacing of connectivity checks while ICE is checking (connected, webrtc-rs ticks at
    /// its 200 ms default whatever this says). webrtc-rs defaults to 200 ms, and since its
    /// driver also moves DTLS and SCTP along on that tick, the slower pace costs several hundred
    /// milliseconds per (re)connect. 25 ms, half RFC 8445's `Ta`: while a peer's data is held
    /// during an ICE restart nothing else wakes the driver, and the restart completes on the
    /// next tick (`tether lab handoff --rtt-ms 100`: restore 657 ms at 50 ms, 633 ms at 25 ms).
    /// A candidate pair still gets about 1.4 s of checks before it is given up (the webrtc-rs
    /// budget), in twice as many binding requests: a phone has a handful of pairs.
    pub ice_check_interval: Duration,
    /// ICE (controlling side): how long a working host, server-reflexive or peer-reflexive pair
    /// must wait before it may be nominated. webrtc-rs waits 0 / 500 ms / 1 s to give better
    /// pairs a chance; on a restart after a handoff the peer's first check often arrives before
    /// its trickled candidate (so the pair is peer-reflexive), and the 1 s wait then dominates
    /// recovery. Default 0: nominate the first working direct pair.
    pub ice_direct_nomination_delay: Duration,
    /// ICE (controlling side): the same for relayed pairs, so that a direct pair about to succeed
    /// is preferred over a TURN relay.
    pub ice_relay_nomination_delay: Duration,
    /// Label of the data channel the offerer creates.
    pub data_channel_label: String,
    /// Capacity of the event queue carrying data-channel traffic ([`crate::RtcEvents`]). When it
    /// is full, reading from the data channel pauses, and SCTP flow control slows the sender.
    pub message_queue_capacity: usize,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            local_addresses: LocalAddresses::DefaultRoute,
            fresh_sockets_on_ice_restart: true,
            connect_timeout: Duration::from_secs(10),
            restart_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            ice_disconnected_timeout: Duration::from_secs(3),
            ice_failed_timeout: Duration::from_secs(10),
            ice_keepalive_interval: Duration::from_secs(1),
            ice_check_interval: Duration::from_millis(25),
            ice_direct_nomination_delay: Duration::ZERO,
            ice_relay_nomination_delay: Duration::from_millis(500),
            data_channel_label: "tether".to_owned(),
            message_queue_capacity: 1024,
        }
    }
}

impl RtcConfig {
    /// Peers on `127.0.0.1` only, with short bounds: for tests and single-host demos.
    #[must_use]
    pub fn loopback() -> Self {
        Self {
            local_addresses: LocalAddresses::Fixed(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            connect_timeout: Duration::from_secs(5),
            restart_timeout: Duration::from_secs(3),
            close_timeout: Duration::from_secs(1),
            ice_disconnected_timeout: Duration::from_secs(2),
            ice_failed_timeout: Duration::from_secs(4),
            ice_keepalive_interval: Duration::from_millis(500),
            ..Self::default()
        }
    }

    /// webrtc-rs's per-connection settings.
    ///
    /// - UDP over IPv4 only, and no mDNS (no multicast socket, plain IP host candidates).
    /// - Loopback candidates are asked for whenever a loopback address may be bound. In
    ///   webrtc 0.21.1 the setting engine's `include_loopback_candidate` is stored but never read:
    ///   what actually decides is the bind address (a configured `127.0.0.1` is bound and offered;
    ///   the wildcard skips loopback). It is set anyway so the intent survives a release that
    ///   starts honouring it.
    /// - `discard_local_candidates_during_ice_restart` follows
    ///   [`RtcConfig::fresh_sockets_on_ice_restart`]; webrtc-rs uses the same switch to rebind
    ///   its sockets (re-resolving the bind addresses) when a restart is applied.
    pub(crate) fn setting_engine(&self) -> SettingEngine {
        SettingEngineBuilder::new()
            .with_network_types(vec![NetworkType::Udp4])
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(self.local_addresses.may_bind_loopback())
            .with_discard_local_candidates_during_ice_restart(self.fresh_sockets_on_ice_restart)
            .with_ice_connection_attempts(
                Some(self.ice_check_interval),
                Some(self.ice_checks_per_pair()),
            )
            .with_host_acceptance_min_wait(Some(self.ice_direct_nomination_delay))
            .with_srflx_acceptance_min_wait(Some(self.ice_direct_nomination_delay))
            .with_prflx_acceptance_min_wait(Some(self.ice_direct_nomination_delay))
            .with_relay_acceptance_min_wait(Some(self.ice_relay_nomination_delay))
            .with_ice_timeouts(
                Some(self.ice_disconnected_timeout),
                Some(self.ice_failed_timeout),
                Some(self.ice_keepalive_interval),
            )
            .build()
    }

    /// Checks per candidate pair: about [`PAIR_CHECK_BUDGET`] at [`RtcConfig::ice_check_interval`].
    fn ice_checks_per_pair(&self) -> u16 {
        let interval = self.ice_check_interval.as_millis().max(1);
        let checks = PAIR_CHECK_BUDGET.as_millis().div_ceil(interval);
        u16::try_from(checks).unwrap_or(u16::MAX).max(1)
    }

    /// webrtc-rs's configuration: the configured ICE servers, then `granted` (those the
    /// signaling server handed out), with ICE transport `policy`.
    pub(crate) fn rtc_configuration(
        &self,
        granted: &[IceServer],
        policy: IceTransportPolicy,
    ) -> RTCConfiguration {
        let servers = self
            .ice_servers
            .iter()
            .chain(granted)
            .map(|server| RTCIceServer {
                urls: server.urls.clone(),
                username: server.username.clone(),
                credential: server.credential.clone(),
            })
            .collect();
        let policy = match policy {
            IceTransportPolicy::All => RTCIceTransportPolicy::All,
            IceTransportPolicy::Relay => RTCIceTransportPolicy::Relay,
        };
        RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(policy)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_keeps_its_check_budget_whatever_the_pace() {
        let mut config = RtcConfig::default();
        assert_eq!(config.ice_checks_per_pair(), 56);
        config.ice_check_interval = Duration::from_millis(200);
        assert_eq!(config.ice_checks_per_pair(), 7);
        config.ice_check_interval = Duration::ZERO;
        assert_eq!(config.ice_checks_per_pair(), 1400);
        config.ice_check_interval = Duration::from_secs(10);
        assert_eq!(config.ice_checks_per_pair(), 1);
    }
}
