//! rtnetlink plumbing: the socket (optionally opened inside another network
//! namespace), full dumps, and the translation of messages into [`Change`]s.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path as FsPath;

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_core::{NLM_F_APPEND, NetlinkMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteType,
};
use rtnetlink::proto::Connection;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, MulticastGroup, RouteMessageBuilder};
use tokio::sync::oneshot;

use crate::error::PathMonitorError;
use crate::view::{Address, Change, DefaultRoute, Family, Link, NetView, NextHop, Scope};

/// The multicast groups the monitor listens to.
const GROUPS: [MulticastGroup; 5] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
];

/// Socket receive buffer: large enough that a burst of notifications (a
/// VPN flapping, many interfaces) rarely overruns; an overrun costs a resync.
const RECEIVE_BUFFER_BYTES: usize = 1 << 20;

pub(crate) type Notifications =
    UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// A subscribed rtnetlink connection: the connection future (to be spawned),
/// a request handle, and the notification stream.
pub(crate) struct Subscription {
    pub(crate) connection: Connection<RouteNetlinkMessage>,
    pub(crate) handle: Handle,
    pub(crate) notifications: Notifications,
}

/// Opens a subscribed socket in the caller's network namespace, or in the
/// namespace at `netns` (a `/run/netns/NAME` or `/proc/PID/ns/net` path).
///
/// A socket belongs to the namespace of the thread that created it, so for
/// another namespace a short-lived OS thread enters it (never a pooled
/// thread, which would stay there) and creates the socket, registered with
/// the caller's tokio runtime.
pub(crate) async fn subscribe(netns: Option<&FsPath>) -> Result<Subscription, PathMonitorError> {
    let Some(netns) = netns else {
        return open_subscription().map_err(PathMonitorError::Socket);
    };
    let file = File::open(netns)
        .map_err(|source| PathMonitorError::Namespace { path: netns.to_path_buf(), source })?;
    let runtime = tokio::runtime::Handle::current();
    let path = netns.to_path_buf();
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("pathmon-netns".to_owned())
        .spawn(move || {
            let result = setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|errno| PathMonitorError::Namespace {
                    path,
                    source: io::Error::from(errno),
                })
                .and_then(|()| {
                    let _runtime = runtime.enter();
                    open_subscription().map_err(PathMonitorError::Socket)
                });
            // The receiver only goes away when `start` was cancelled; the
            // socket is then dropped here.
            let _ = tx.send(result);
        })
        .map_err(PathMonitorError::Thread)?;
    rx.await.map_err(|_| PathMonitorError::Thread(io::Error::other("namespace thread died")))?
}

fn open_subscription() -> io::Result<Subscription> {
    let (mut connection, handle, notifications) = rtnetlink::new_multicast_connection(&GROUPS)?;
    let socket = connection.socket_mut().socket_mut();
    if let Err(error) = socket.set_rx_buf_sz(RECEIVE_BUFFER_BYTES) {
        tracing::debug!(event = "pathmon.socket.rcvbuf", %error, "could not enlarge the receive buffer");
    }
    Ok(Subscription { connection, handle, notifications })
}

/// Reads the links, addresses and default routes from the kernel.
pub(crate) async fn dump(handle: &Handle) -> Result<NetView, PathMonitorError> {
    let links: Vec<Link> = handle
        .link()
        .get()
        .execute()
        .map_ok(|m| link_from(&m))
        .try_collect()
        .await
        .map_err(|e| PathMonitorError::Dump { what: "links", message: e.to_string() })?;
    let addresses: Vec<Address> = handle
        .address()
        .get()
        .execute()
        .try_filter_map(|m| async move { Ok(address_from(&m)) })
        .try_collect()
        .await
        .map_err(|e| PathMonitorError::Dump { what: "addresses", message: e.to_string() })?;
    let mut routes: Vec<DefaultRoute> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_filter_map(|m| async move { Ok(default_route_from(&m)) })
        .try_collect()
        .await
        .map_err(|e| PathMonitorError::Dump { what: "ipv4 routes", message: e.to_string() })?;
    let v6: Vec<DefaultRoute> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_filter_map(|m| async move { Ok(default_route_from(&m)) })
        .try_collect()
        .await
        .map_err(|e| PathMonitorError::Dump { what: "ipv6 routes", message: e.to_string() })?;
    routes.extend(v6);
    Ok(NetView::from_dump(links, addresses, routes))
}

/// What one notification means for the monitor.
#[derive(Debug)]
pub(crate) enum Notification {
    /// A change to the view.
    Change(Change),
    /// The socket's buffer overran: notifications were lost.
    Overrun,
    /// Nothing the monitor tracks (a non-default route, a neighbour, ...).
    Ignored,
}

/// Translates one rtnetlink notification.
pub(crate) fn notification(message: &NetlinkMessage<RouteNetlinkMessage>) -> Notification {
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage as M;
    let inner = match &message.payload {
        NetlinkPayload::InnerMessage(inner) => inner,
        NetlinkPayload::Overrun(_) => return Notification::Overrun,
        _ => return Notification::Ignored,
    };
    let change = match inner {
        M::NewLink(m) => Some(Change::LinkUpdated(link_from(m))),
        M::DelLink(m) => Some(Change::LinkRemoved { index: m.header.index }),
        M::NewAddress(m) => address_from(m).map(Change::AddressAdded),
        M::DelAddress(m) => address_from(m).map(Change::AddressRemoved),
        M::NewRoute(m) => default_route_from(m).map(|route| Change::RouteAdded {
            route,
            append: message.header.flags & NLM_F_APPEND != 0,
        }),
        M::DelRoute(m) => default_route_from(m).map(Change::RouteRemoved),
        _ => None,
    };
    change.map_or(Notification::Ignored, Notification::Change)
}

/// The [`Link`] a link message describes.
pub(crate) fn link_from(message: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut kind = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(k) = info {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let flags = message.header.flags;
    Link {
        index: message.header.index,
        name,
        kind,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        loopback: flags.contains(LinkFlags::Loopback),
    }
}

/// The [`Address`] an address message describes; `None` for families other
/// than IPv4 and IPv6 or a message without an address.
pub(crate) fn address_from(message: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = Some(*f),
            _ => {}
        }
    }
    // IFA_LOCAL is the local address; IFA_ADDRESS is the peer on
    // point-to-point links and the only one IPv6 usually sends.
    let ip = local.or(address)?;
    let header = &message.header;
    let tentative = match flags {
        Some(f) => {
            (f.contains(AddressFlags::Tentative) && !f.contains(AddressFlags::Optimistic))
                || f.contains(AddressFlags::Dadfailed)
        }
        None => {
            let f = header.flags;
            (f.contains(AddressHeaderFlags::Tentative)
                && !f.contains(AddressHeaderFlags::Optimistic))
                || f.contains(AddressHeaderFlags::Dadfailed)
        }
    };
    let scope = match header.scope {
        AddressScope::Universe => Scope::Global,
        AddressScope::Site => Scope::Site,
        AddressScope::Link => Scope::Link,
        AddressScope::Host => Scope::Host,
        _ => Scope::Other,
    };
    Some(Address { interface: header.index, ip, prefix_len: header.prefix_len, scope, tentative })
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The [`DefaultRoute`] a route message describes; `None` for any other
/// route (a destination prefix longer than 0, another family).
pub(crate) fn default_route_from(message: &RouteMessage) -> Option<DefaultRoute> {
    let header = &message.header;
    let family = match header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    if header.destination_prefix_length != 0 {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut metric = 0;
    let mut oif = None;
    let mut gateway = None;
    let mut multipath = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    let route_down = header.flags.intersects(RouteFlags::Dead | RouteFlags::Linkdown);
    let next_hops = match multipath {
        Some(hops) => hops
            .iter()
            .map(|hop| NextHop {
                interface: hop.interface_index,
                gateway: hop.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => route_ip(g),
                    _ => None,
                }),
                down: hop.flags.intersects(RouteNextHopFlags::Dead | RouteNextHopFlags::Linkdown),
            })
            .collect(),
        None => oif
            .map(|interface| NextHop { interface, gateway, down: route_down })
            .into_iter()
            .collect(),
    };
    Some(DefaultRoute {
        family,
        table,
        metric,
        tos: header.tos,
        unicast: header.kind == RouteType::Unicast,
        next_hops,
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_core::{NetlinkHeader, NetlinkPayload};
    use rtnetlink::packet_route::link::InfoKind;
    use rtnetlink::packet_route::route::{RouteHeader, RouteNextHop};

    use super::*;

    fn wrap(inner: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner))
    }

    fn link_message(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]));
        m
    }

    #[test]
    fn link_up_needs_up_and_running() {
        let up = link_from(&link_message(2, "wifi0", LinkFlags::Up | LinkFlags::Running));
        assert_eq!(up.name, "wifi0");
        assert_eq!(up.kind.as_deref(), Some("veth"));
        assert!(up.up);
        assert!(!up.loopback);
        let no_carrier = link_from(&link_message(2, "wifi0", LinkFlags::Up));
        assert!(!no_carrier.up);
        let lo = link_from(&link_message(
            1,
            "lo",
            LinkFlags::Up | LinkFlags::Running | LinkFlags::Loopback,
        ));
        assert!(lo.loopback);
    }

    #[test]
    fn address_prefers_local_and_reads_dad_state() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.index = 3;
        m.header.prefix_len = 24;
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))));
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        let a = address_from(&m).expect("an address");
        assert_eq!(a.ip, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            (a.interface, a.prefix_len, a.scope, a.tentative),
            (3, 24, Scope::Global, false)
        );

        let mut v6 = AddressMessage::default();
        v6.header.family = AddressFamily::Inet6;
        v6.header.scope = AddressScope::Link;
        v6.attributes.push(AddressAttribute::Address(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        v6.attributes.push(AddressAttribute::Flags(AddressFlags::Tentative));
        let a = address_from(&v6).expect("an address");
        assert_eq!((a.scope, a.tentative), (Scope::Link, true));
        v6.attributes.pop();
        v6.attributes
            .push(AddressAttribute::Flags(AddressFlags::Tentative | AddressFlags::Optimistic));
        assert!(!address_from(&v6).expect("an address").tentative);

        assert!(address_from(&AddressMessage::default()).is_none());
    }

    fn route_message(prefix: u8) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Oif(2));
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 77, 1, 1))));
        m
    }

    #[test]
    fn only_default_routes_are_kept() {
        assert!(default_route_from(&route_message(24)).is_none());
        let r = default_route_from(&route_message(0)).expect("a default route");
        assert_eq!((r.family, r.table, r.metric, r.unicast), (Family::V4, 254, 0, true));
        assert_eq!(
            r.next_hops,
            [NextHop {
                interface: 2,
                gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 77, 1, 1))),
                down: false
            }]
        );
    }

    #[test]
    fn route_attributes_override_the_header_and_multipath_is_read() {
        let mut m = route_message(0);
        m.attributes.push(RouteAttribute::Table(1000));
        m.attributes.push(RouteAttribute::Priority(600));
        let mut hop = RouteNextHop::default();
        hop.interface_index = 7;
        hop.flags = RouteNextHopFlags::Linkdown;
        m.attributes.push(RouteAttribute::MultiPath(vec![hop]));
        let r = default_route_from(&m).expect("a default route");
        assert_eq!((r.table, r.metric), (1000, 600));
        assert_eq!(r.next_hops, [NextHop { interface: 7, gateway: None, down: true }]);
    }

    #[test]
    fn notifications_translate_and_flag_append_and_overrun() {
        let n = notification(&wrap(RouteNetlinkMessage::NewRoute(route_message(0)), NLM_F_APPEND));
        assert!(matches!(n, Notification::Change(Change::RouteAdded { append: true, .. })));
        let n = notification(&wrap(RouteNetlinkMessage::DelRoute(route_message(0)), 0));
        assert!(matches!(n, Notification::Change(Change::RouteRemoved(_))));
        let n = notification(&wrap(RouteNetlinkMessage::NewRoute(route_message(16)), 0));
        assert!(matches!(n, Notification::Ignored));
        let mut del = LinkMessage::default();
        del.header.index = 4;
        let n = notification(&wrap(RouteNetlinkMessage::DelLink(del), 0));
        assert!(matches!(n, Notification::Change(Change::LinkRemoved { index: 4 })));
        let overrun =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Overrun(Vec::new()));
        assert!(matches!(notification(&overrun), Notification::Overrun));
    }
}
