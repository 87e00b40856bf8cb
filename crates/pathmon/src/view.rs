//! The monitor's copy of the kernel state that decides the path: links,
//! their addresses, and the default routes. Plain data, no I/O.
//!
//! The view is kept up to date by [`Change`]s (one per rtnetlink
//! notification) and rebuilt from a full dump when it may have diverged from
//! the kernel (see [`Applied::resync`]).

use std::net::IpAddr;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `address`.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// `"ipv4"` or `"ipv6"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel interface index.
    pub index: u32,
    /// Interface name (`wlan0`); empty when the kernel did not say.
    pub name: String,
    /// rtnetlink link kind (`veth`, `wireguard`, ...), when reported.
    pub kind: Option<String>,
    /// Administratively up and operationally running (`IFF_UP` and
    /// `IFF_RUNNING`): it can carry traffic.
    pub up: bool,
    /// A loopback interface; never part of a path.
    pub loopback: bool,
}

/// The scope of an address, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Global (`RT_SCOPE_UNIVERSE`): reachable beyond the link.
    Global,
    /// Site-local.
    Site,
    /// Link-local (`fe80::/10`, `169.254/16`).
    Link,
    /// Host-local (`127.0.0.1`, `::1`).
    Host,
    /// Any other scope.
    Other,
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Index of the interface holding the address.
    pub interface: u32,
    /// The local address.
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Address scope.
    pub scope: Scope,
    /// Not usable yet or any more: IPv6 duplicate address detection has not
    /// finished (tentative, not optimistic) or failed.
    pub tentative: bool,
}

impl Address {
    /// Whether this address can source traffic beyond the link.
    pub fn is_usable_global(&self) -> bool {
        self.scope == Scope::Global && !self.tentative
    }

    fn same_identity(&self, other: &Address) -> bool {
        self.interface == other.interface
            && self.ip == other.ip
            && self.prefix_len == other.prefix_len
    }
}

/// One next hop of a default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Outgoing interface index.
    pub interface: u32,
    /// Gateway, when the route has one.
    pub gateway: Option<IpAddr>,
    /// The kernel marked the next hop dead or its link down
    /// (`RTNH_F_DEAD`, `RTNH_F_LINKDOWN`).
    pub down: bool,
}

/// A default route (destination prefix length 0). Other routes do not decide
/// the path and are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Address family.
    pub family: Family,
    /// Routing table id (254 is `main`).
    pub table: u32,
    /// Route metric (`RTA_PRIORITY`); lower is preferred.
    pub metric: u32,
    /// Type of service selector (part of the route's identity).
    pub tos: u8,
    /// A unicast route (`RTN_UNICAST`); blackhole, unreachable and
    /// prohibit routes are not.
    pub unicast: bool,
    /// Next hops; more than one for a multipath route. Empty for a route
    /// that names no interface (e.g. a nexthop-object route, which the
    /// monitor does not resolve).
    pub next_hops: Vec<NextHop>,
}

impl DefaultRoute {
    fn same_key(&self, other: &DefaultRoute) -> bool {
        self.family == other.family
            && self.table == other.table
            && self.metric == other.metric
            && self.tos == other.tos
    }

    fn same_next_hops(&self, other: &DefaultRoute) -> bool {
        self.next_hops.len() == other.next_hops.len()
            && self
                .next_hops
                .iter()
                .zip(&other.next_hops)
                .all(|(a, b)| a.interface == b.interface && a.gateway == b.gateway)
    }

    fn uses_interface(&self, index: u32) -> bool {
        self.next_hops.iter().any(|hop| hop.interface == index)
    }
}

/// One change to the kernel state, as one rtnetlink notification reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A link appeared or changed (`RTM_NEWLINK`).
    LinkUpdated(Link),
    /// A link disappeared (`RTM_DELLINK`).
    LinkRemoved {
        /// Its index.
        index: u32,
    },
    /// An address appeared or changed (`RTM_NEWADDR`).
    AddressAdded(Address),
    /// An address disappeared (`RTM_DELADDR`).
    AddressRemoved(Address),
    /// A default route appeared or changed (`RTM_NEWROUTE`).
    RouteAdded {
        /// The route.
        route: DefaultRoute,
        /// Added next to a route with the same key (`NLM_F_APPEND`) rather
        /// than replacing it.
        append: bool,
    },
    /// A default route disappeared (`RTM_DELROUTE`).
    RouteRemoved(DefaultRoute),
}

impl Change {
    /// A short stable name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LinkUpdated(_) => "link_updated",
            Self::LinkRemoved { .. } => "link_removed",
            Self::AddressAdded(_) => "address_added",
            Self::AddressRemoved(_) => "address_removed",
            Self::RouteAdded { .. } => "route_added",
            Self::RouteRemoved(_) => "route_removed",
        }
    }
}

/// What applying a [`Change`] did to the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Applied {
    /// The kernel may have changed state it does not notify: IPv4 routes
    /// are flushed without `RTM_DELROUTE` when their link goes down or loses
    /// its last IPv4 address. The view mirrors the usual flush, and the
    /// monitor re-reads the kernel state to be exact.
    pub resync: bool,
}

/// The monitor's view: links, addresses and default routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetView {
    links: Vec<Link>,
    addresses: Vec<Address>,
    routes: Vec<DefaultRoute>,
}

impl NetView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view built from a full dump of the kernel state. Unlike
    /// [`apply`](Self::apply), routes with the same key all stay.
    pub fn from_dump(links: Vec<Link>, addresses: Vec<Address>, routes: Vec<DefaultRoute>) -> Self {
        let mut view = Self::new();
        for link in links {
            view.upsert_link(link);
        }
        for address in addresses {
            view.upsert_address(address);
        }
        view.routes = routes;
        view
    }

    /// The links, in the order they appeared.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The link with interface index `index`.
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The addresses, in the order they appeared.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// The default routes, in the order they appeared.
    pub fn routes(&self) -> &[DefaultRoute] {
        &self.routes
    }

    /// Whether interface `index` holds a usable global address of `family`.
    pub fn has_global_address(&self, index: u32, family: Family) -> bool {
        self.addresses
            .iter()
            .any(|a| a.interface == index && Family::of(a.ip) == family && a.is_usable_global())
    }

    /// Applies one change.
    pub fn apply(&mut self, change: Change) -> Applied {
        match change {
            Change::LinkUpdated(link) => {
                let index = link.index;
                let was_up = self.link(index).is_some_and(|l| l.up);
                let now_up = link.up;
                self.upsert_link(link);
                if was_up && !now_up {
                    // The kernel flushes the link's IPv4 routes silently.
                    self.drop_next_hops_via(index, None);
                    return Applied { resync: true };
                }
                Applied::default()
            }
            Change::LinkRemoved { index } => {
                self.links.retain(|l| l.index != index);
                self.addresses.retain(|a| a.interface != index);
                self.drop_next_hops_via(index, None);
                Applied { resync: true }
            }
            Change::AddressAdded(address) => {
                self.upsert_address(address);
                Applied::default()
            }
            Change::AddressRemoved(address) => {
                self.addresses.retain(|a| !a.same_identity(&address));
                if address.ip.is_ipv4() {
                    let index = address.interface;
                    let any_v4_left =
                        self.addresses.iter().any(|a| a.interface == index && a.ip.is_ipv4());
                    if !any_v4_left {
                        self.drop_next_hops_via(index, Some(Family::V4));
                    }
                    return Applied { resync: true };
                }
                Applied::default()
            }
            Change::RouteAdded { route, append } => {
                if append {
                    if let Some(existing) = self
                        .routes
                        .iter_mut()
                        .find(|r| r.same_key(&route) && r.same_next_hops(&route))
                    {
                        *existing = route;
                    } else {
                        self.routes.push(route);
                    }
                } else if let Some(existing) = self.routes.iter_mut().find(|r| r.same_key(&route)) {
                    *existing = route;
                } else {
                    self.routes.push(route);
                }
                Applied::default()
            }
            Change::RouteRemoved(route) => {
                let position = self
                    .routes
                    .iter()
                    .position(|r| r.same_key(&route) && r.same_next_hops(&route))
                    .or_else(|| {
                        // A partial description (e.g. `ip route del default`
                        // echoes what the kernel removed, but be lenient):
                        // same key and a shared interface.
                        self.routes.iter().position(|r| {
                            r.same_key(&route)
                                && route.next_hops.iter().any(|hop| r.uses_interface(hop.interface))
                        })
                    });
                if let Some(position) = position {
                    self.routes.remove(position);
                }
                Applied::default()
            }
        }
    }

    fn upsert_link(&mut self, mut link: Link) {
        if let Some(existing) = self.links.iter_mut().find(|l| l.index == link.index) {
            // RTM_NEWLINK may omit attributes it did not change.
            if link.name.is_empty() {
                link.name = std::mem::take(&mut existing.name);
            }
            if link.kind.is_none() {
                link.kind = existing.kind.take();
            }
            *existing = link;
        } else {
            self.links.push(link);
        }
    }

    fn upsert_address(&mut self, address: Address) {
        if let Some(existing) = self.addresses.iter_mut().find(|a| a.same_identity(&address)) {
            *existing = address;
        } else {
            self.addresses.push(address);
        }
    }

    /// Removes the next hops through `index` (of `family`, or any), and the
    /// routes left with none.
    fn drop_next_hops_via(&mut self, index: u32, family: Option<Family>) {
        self.routes.retain_mut(|route| {
            if family.is_some_and(|f| f != route.family) || !route.uses_interface(index) {
                return true;
            }
            route.next_hops.retain(|hop| hop.interface != index);
            !route.next_hops.is_empty()
        });
    }
}
