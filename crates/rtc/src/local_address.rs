//! Which local addresses peer connections bind, and so which host candidates they offer.
//!
//! webrtc-rs resolves the bind addresses again on every ICE restart that replaces the sockets
//! (see [`crate::RtcConfig::fresh_sockets_on_ice_restart`]). Every policy here is evaluated at
//! that moment, so after a network handoff the restarted ICE generation gathers on the addresses
//! the device has *now*: the old address, gone from the interface list, is no longer bound.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// The local address policy.
#[derive(Clone, Debug, Default)]
pub enum LocalAddresses {
    /// The IPv4 address the default route leaves from at bind time: the uplink the device
    /// prefers now (Wi-Fi over cellular on a phone), and after a handoff the new one. When both
    /// uplinks are up (make-before-break) the restarted ICE generation can then only pick a pair
    /// on the new uplink, not one on the old uplink about to go away. Every interface, as
    /// [`Self::AllInterfaces`], when there is no default route. The production default.
    #[default]
    DefaultRoute,
    /// Every IPv4 interface address present at bind time, except loopback and link-local
    /// (webrtc-rs expands the wildcard `0.0.0.0` itself).
    AllInterfaces,
    /// Exactly these addresses, loopback included. `RtcConfig::loopback` uses `127.0.0.1`.
    Fixed(Vec<IpAddr>),
    /// The IPv4 interface addresses the filter accepts at bind time. Loopback and link-local
    /// interfaces are offered to the filter too; it decides.
    Filtered(InterfaceFilter),
}

impl LocalAddresses {
    /// Whether this policy can bind a loopback address.
    pub(crate) fn may_bind_loopback(&self) -> bool {
        match self {
            Self::DefaultRoute | Self::AllInterfaces => false,
            Self::Fixed(ips) => ips.iter().any(IpAddr::is_loopback),
            Self::Filtered(_) => true,
        }
    }

    /// What to hand webrtc-rs as UDP bind addresses.
    pub(crate) fn bind_targets(&self) -> Vec<BindTarget> {
        match self {
            Self::DefaultRoute => vec![BindTarget::DefaultRoute],
            Self::AllInterfaces => vec![BindTarget::Address(WILDCARD)],
            Self::Fixed(ips) => {
                ips.iter().map(|ip| BindTarget::Address(SocketAddr::new(*ip, 0))).collect()
            }
            Self::Filtered(filter) => vec![BindTarget::Filtered(filter.clone())],
        }
    }
}

/// One local interface address, as offered to an [`InterfaceFilter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInterface {
    /// The OS name of the interface, e.g. `eth0` or `veth-wifi`.
    pub name: String,
    /// One IPv4 address of that interface.
    pub ip: IpAddr,
}

/// A predicate choosing the local interface addresses to bind.
#[derive(Clone)]
pub struct InterfaceFilter(Arc<dyn Fn(&LocalInterface) -> bool + Send + Sync>);

impl InterfaceFilter {
    /// A filter from any predicate.
    pub fn new(accept: impl Fn(&LocalInterface) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(accept))
    }

    /// Accepts the interfaces with one of these names.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        Self::new(move |interface| names.contains(&interface.name))
    }

    /// Whether the filter accepts this interface address.
    #[must_use]
    pub fn accepts(&self, interface: &LocalInterface) -> bool {
        (self.0)(interface)
    }

    /// The IPv4 addresses of the interfaces present now that the filter accepts.
    fn matching_addresses(&self) -> io::Result<Vec<SocketAddr>> {
        let mut addresses = Vec::new();
        for interface in rtc::shared::ifaces::ifaces()? {
            let Some(addr) = interface.addr else { continue };
            let ip = addr.ip();
            if !ip.is_ipv4() || ip.is_unspecified() {
                continue;
            }
            let local = LocalInterface { name: interface.name, ip };
            let socket = SocketAddr::new(ip, 0);
            if self.accepts(&local) && !addresses.contains(&socket) {
                addresses.push(socket);
            }
        }
        Ok(addresses)
    }
}

impl fmt::Debug for InterfaceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InterfaceFilter(..)")
    }
}

/// Every IPv4 interface (webrtc-rs expands it).
const WILDCARD: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Where the route lookup of [`default_route_address`] points: TEST-NET-1 (RFC 5737), which no
/// network routes on its own, so the lookup follows the default route. Nothing is sent to it.
const ROUTE_PROBE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);

/// The source address the OS picks for the default route now: connecting a UDP socket runs the
/// route lookup and sends nothing. `None` without a default route (offline) or when it leaves
/// from loopback.
pub(crate) fn default_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind(WILDCARD).ok()?;
    socket.connect(ROUTE_PROBE).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// One configured bind address, resolved by webrtc-rs each time it binds.
#[derive(Clone, Debug)]
pub(crate) enum BindTarget {
    Address(SocketAddr),
    Filtered(InterfaceFilter),
    DefaultRoute,
}

impl ToSocketAddrs for BindTarget {
    type Iter = std::vec::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        match self {
            Self::Address(address) => Ok(vec![*address].into_iter()),
            Self::DefaultRoute => {
                let address = default_route_address().map_or(WILDCARD, |ip| SocketAddr::new(ip, 0));
                Ok(vec![address].into_iter())
            }
            Self::Filtered(filter) => {
                let addresses = filter.matching_addresses()?;
                if addresses.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "no local interface address matches the interface filter",
                    ));
                }
                Ok(addresses.into_iter())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_filter_finds_loopback_here() {
        let filter = InterfaceFilter::names(["lo"]);
        let resolved: Vec<SocketAddr> = BindTarget::Filtered(filter)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        assert!(resolved.iter().all(|address| address.ip().is_loopback()), "{resolved:?}");
        assert!(!resolved.is_empty(), "every Linux host has lo at 127.0.0.1");
    }

    #[test]
    fn a_filter_matching_nothing_is_an_error_not_a_wildcard() {
        let filter = InterfaceFilter::new(|_| false);
        let error = BindTarget::Filtered(filter).to_socket_addrs().err();
        assert_eq!(error.map(|error| error.kind()), Some(io::ErrorKind::AddrNotAvailable));
    }

    #[test]
    fn the_default_route_binds_the_address_it_leaves_from_or_every_interface() {
        let resolved: Vec<SocketAddr> =
            BindTarget::DefaultRoute.to_socket_addrs().map(Iterator::collect).unwrap_or_default();
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        match default_route_address() {
            Some(ip) => {
                assert_eq!(resolved[0], SocketAddr::new(ip, 0));
                // The OS can bind it: it is one of this host's addresses.
                assert!(std::net::UdpSocket::bind(resolved[0]).is_ok(), "{resolved:?}");
            }
            None => assert_eq!(resolved[0], WILDCARD),
        }
    }

    #[test]
    fn loopback_is_only_bound_when_asked_for() {
        assert!(!LocalAddresses::DefaultRoute.may_bind_loopback());
        assert!(!LocalAddresses::AllInterfaces.may_bind_loopback());
        assert!(LocalAddresses::Fixed(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]).may_bind_loopback());
    }
}
