//! Which way a peer connection's packets go: the ICE candidate pair it selected, read from
//! webrtc-rs's ICE transport. Tells a direct path (host, reflexive) from one through a TURN
//! relay.

use std::fmt;
use std::sync::Arc;

use rtc::peer_connection::transport::RTCIceCandidatePair;
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidate, RTCIceCandidateType, RTCIceProtocol,
};

/// What kind of address an ICE candidate is (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CandidateKind {
    /// An address of a local interface.
    Host,
    /// The address a STUN server saw (outside a NAT).
    ServerReflexive,
    /// An address learned from a peer's connectivity check.
    PeerReflexive,
    /// An address allocated on a TURN server: packets are relayed.
    Relay,
}

impl CandidateKind {
    /// The SDP name: `host`, `srflx`, `prflx` or `relay`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ServerReflexive => "srflx",
            Self::PeerReflexive => "prflx",
            Self::Relay => "relay",
        }
    }
}

/// The transport of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CandidateProtocol {
    /// UDP (every candidate webrtc-rs 0.21 gathers).
    Udp,
    /// TCP.
    Tcp,
}

impl CandidateProtocol {
    /// `udp` or `tcp`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// One end of a selected candidate pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteEnd {
    /// What kind of candidate.
    pub kind: CandidateKind,
    /// Its transport.
    pub protocol: CandidateProtocol,
    /// Its IP address (or an mDNS name, for a remote host candidate that hides its address).
    pub address: String,
    /// Its port.
    pub port: u16,
}

impl fmt::Display for RouteEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, protocol) = (self.kind.as_str(), self.protocol.as_str());
        if self.address.contains(':') {
            write!(f, "{kind} {protocol} [{}]:{}", self.address, self.port)
        } else {
            write!(f, "{kind} {protocol} {}:{}", self.address, self.port)
        }
    }
}

/// The candidate pair ICE selected for a peer connection: where its packets leave and where
/// they go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IceRoute {
    /// This node's end.
    pub local: RouteEnd,
    /// The peer's end.
    pub remote: RouteEnd,
}

impl IceRoute {
    /// Whether a TURN server carries the packets (either end is a relay candidate).
    #[must_use]
    pub fn is_relayed(&self) -> bool {
        self.local.kind == CandidateKind::Relay || self.remote.kind == CandidateKind::Relay
    }
}

impl fmt::Display for IceRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.local, self.remote)
    }
}

/// The pair `pc`'s ICE transport selected, or `None` before ICE selected one (or when a
/// candidate is of a kind this crate does not know).
pub(crate) async fn selected_route(pc: &Arc<dyn PeerConnection>) -> Option<IceRoute> {
    let pair = selected_pair(pc).await?;
    Some(IceRoute { local: route_end(pair.local())?, remote: route_end(pair.remote())? })
}

/// Whether `pc`'s selected pair leaves from a local address the device has no more, so that
/// nothing sent on it can arrive. A host candidate leaves from its own address, a reflexive one
/// from its base (its related address). For a relayed candidate (whose base webrtc-rs does not
/// report) and for a pc with no selected pair, the answer is `unknown`. `present` is the
/// device's addresses now.
pub(crate) async fn leaves_from_gone_address(
    pc: &Arc<dyn PeerConnection>,
    present: &[std::net::IpAddr],
    unknown: bool,
) -> bool {
    let Some(pair) = selected_pair(pc).await else { return unknown };
    let local = pair.local();
    let base = match local.typ {
        RTCIceCandidateType::Host => &local.address,
        RTCIceCandidateType::Srflx | RTCIceCandidateType::Prflx => &local.related_address,
        _ => return unknown,
    };
    base.parse::<std::net::IpAddr>().map_or(unknown, |ip| !present.contains(&ip))
}

/// The pair `pc`'s ICE transport selected, if any yet.
async fn selected_pair(pc: &Arc<dyn PeerConnection>) -> Option<RTCIceCandidatePair> {
    let sctp = pc.sctp().await?;
    sctp.transport().ice_transport().get_selected_candidate_pair().await.ok().flatten()
}

fn route_end(candidate: &RTCIceCandidate) -> Option<RouteEnd> {
    let kind = match candidate.typ {
        RTCIceCandidateType::Host => CandidateKind::Host,
        RTCIceCandidateType::Srflx => CandidateKind::ServerReflexive,
        RTCIceCandidateType::Prflx => CandidateKind::PeerReflexive,
        RTCIceCandidateType::Relay => CandidateKind::Relay,
        _ => return None,
    };
    let protocol = match candidate.protocol {
        RTCIceProtocol::Udp => CandidateProtocol::Udp,
        RTCIceProtocol::Tcp => CandidateProtocol::Tcp,
        _ => return None,
    };
    Some(RouteEnd { kind, protocol, address: candidate.address.clone(), port: candidate.port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(kind: CandidateKind, address: &str) -> RouteEnd {
        RouteEnd { kind, protocol: CandidateProtocol::Udp, address: address.into(), port: 3478 }
    }

    #[test]
    fn a_route_is_relayed_when_either_end_is_a_relay_candidate() {
        let direct = IceRoute {
            local: end(CandidateKind::Host, "10.0.0.2"),
            remote: end(CandidateKind::PeerReflexive, "::1"),
        };
        assert!(!direct.is_relayed());
        assert_eq!(direct.to_string(), "host udp 10.0.0.2:3478 -> prflx udp [::1]:3478");
        let relayed = IceRoute { remote: end(CandidateKind::Relay, "192.0.2.7"), ..direct };
        assert!(relayed.is_relayed());
    }
}
