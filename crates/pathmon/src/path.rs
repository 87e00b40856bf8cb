//! From a [`NetView`] to the path a platform would report: a pure function.
//!
//! # Mapping
//!
//! - A default route (IPv4 or IPv6, in the configured table, unicast) is
//!   *usable* through a next hop whose interface is up (`IFF_UP` and
//!   `IFF_RUNNING`), not loopback, not marked dead or link-down, and holds a
//!   usable global address of the route's family.
//! - [`Availability::Available`] when some default route is usable, else
//!   [`Availability::Unavailable`].
//! - The transports are those of the interfaces the kernel would use: per
//!   family, the usable default routes with the lowest metric (a backup
//!   uplink with a higher metric is not part of the path, as on a phone
//!   where cellular stays up behind Wi-Fi); the union over IPv4 and IPv6.
//! - `is_expensive` when a transport is cellular. `is_constrained` is always
//!   false: Linux has no Low Data Mode signal.
//!
//! The derivation never yields [`Availability::Unknown`]. A link that is up
//! with an address but no default route is what every uplink looks like for
//! the few microseconds between the address and the route being installed
//! (DHCP, SLAAC, the lab's handoff), and reporting Unknown there would make
//! the Supervisor start a `Probe` of the old, dead socket in the middle of a
//! handoff and hold the `Restore` behind it (docs/POLICY.md: an Unknown path probes; a restore waits for a probe).
//! Linux has no captive-portal or "requires connection" signal in netlink;
//! an application that has one (NetworkManager's connectivity check) can
//! report Unknown itself.

use tether_recovery::{Availability, NetworkSnapshot, Transport, TransportSet};

use crate::classify::Classifier;
use crate::view::{Family, NetView};

/// The path derived from a [`NetView`]: what a snapshot carries, minus its
/// sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Whether the path can carry traffic.
    pub availability: Availability,
    /// The transports of the interfaces in use.
    pub transports: TransportSet,
    /// Metered (a cellular transport is in use).
    pub is_expensive: bool,
    /// Names of the interfaces in use, sorted (for logs; not part of the
    /// comparison that decides whether a snapshot is emitted).
    pub interfaces: Vec<String>,
    /// The route's identity: a stable hash of the interfaces in use and
    /// their usable global addresses (0 when unavailable). A new address on
    /// the same transport (a Wi-Fi roam, a renumbering) changes it, which
    /// the Supervisor treats as a route change.
    pub path_id: u64,
}

impl Path {
    /// The path with no usable route.
    pub fn unavailable() -> Self {
        Self {
            availability: Availability::Unavailable,
            transports: TransportSet::EMPTY,
            is_expensive: false,
            interfaces: Vec::new(),
            path_id: 0,
        }
    }

    /// Whether `self` and `other` differ in availability, transports, the
    /// expensive flag or the route identity: the changes that warrant a new
    /// snapshot.
    pub fn differs_materially(&self, other: &Path) -> bool {
        self.availability != other.availability
            || self.transports != other.transports
            || self.is_expensive != other.is_expensive
            || self.path_id != other.path_id
    }

    /// The snapshot of this path with sequence number `sequence`.
    pub fn snapshot(&self, sequence: u64) -> NetworkSnapshot {
        NetworkSnapshot::new(sequence, self.availability, self.transports)
            .with_expensive(self.is_expensive)
            .with_path_id(self.path_id)
    }
}

/// Derives the path from `view`, considering default routes in routing
/// table `table` (254 is `main`) and classifying interfaces with
/// `classifier`. See the [module documentation](self) for the mapping.
pub fn derive(view: &NetView, classifier: &Classifier, table: u32) -> Path {
    let mut interfaces: Vec<u32> = Vec::new();
    for family in [Family::V4, Family::V6] {
        let mut best: Option<u32> = None;
        let mut chosen: Vec<u32> = Vec::new();
        for route in view.routes() {
            if route.family != family || route.table != table || !route.unicast {
                continue;
            }
            let usable: Vec<u32> = route
                .next_hops
                .iter()
                .filter(|hop| !hop.down)
                .map(|hop| hop.interface)
                .filter(|&index| {
                    view.link(index).is_some_and(|l| l.up && !l.loopback)
                        && view.has_global_address(index, family)
                })
                .collect();
            if usable.is_empty() {
                continue;
            }
            match best {
                Some(metric) if route.metric > metric => {}
                Some(metric) if route.metric == metric => chosen.extend(usable),
                _ => {
                    best = Some(route.metric);
                    chosen = usable;
                }
            }
        }
        interfaces.extend(chosen);
    }
    interfaces.sort_unstable();
    interfaces.dedup();
    if interfaces.is_empty() {
        return Path::unavailable();
    }
    let mut transports = TransportSet::EMPTY;
    let mut names = Vec::with_capacity(interfaces.len());
    let mut identity = RouteIdentity::default();
    for &index in &interfaces {
        if let Some(link) = view.link(index) {
            transports.insert(classifier.classify(&link.name, link.kind.as_deref()));
            names.push(link.name.clone());
            identity.add(link.name.as_bytes());
            let mut addresses: Vec<_> = view
                .addresses()
                .iter()
                .filter(|a| a.interface == index && a.is_usable_global())
                .map(|a| a.ip)
                .collect();
            addresses.sort_unstable();
            for address in addresses {
                identity.add(address.to_string().as_bytes());
            }
        }
    }
    names.sort_unstable();
    Path {
        availability: Availability::Available,
        transports,
        is_expensive: transports.contains(Transport::Cellular),
        interfaces: names,
        path_id: identity.finish(),
    }
}

/// FNV-1a over the route's parts: stable across runs (unlike std's
/// randomly keyed hasher), and never 0 for an available path.
#[derive(Debug)]
struct RouteIdentity(u64);

impl Default for RouteIdentity {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl RouteIdentity {
    fn add(&mut self, part: &[u8]) {
        for &byte in part.iter().chain(&[0xff]) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(self) -> u64 {
        self.0.max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::view::{Address, Change, DefaultRoute, Link, NextHop, Scope};

    const MAIN: u32 = 254;
    const WIFI: u32 = 2;
    const CELL: u32 = 3;

    fn link(index: u32, name: &str, up: bool) -> Change {
        Change::LinkUpdated(Link {
            index,
            name: name.to_owned(),
            kind: Some("veth".to_owned()),
            up,
            loopback: false,
        })
    }

    fn v4(interface: u32, last: u8) -> Address {
        Address {
            interface,
            ip: IpAddr::V4(Ipv4Addr::new(10, 77, interface as u8, last)),
            prefix_len: 24,
            scope: Scope::Global,
            tentative: false,
        }
    }

    fn default_v4(interface: u32, metric: u32) -> DefaultRoute {
        DefaultRoute {
            family: Family::V4,
            table: MAIN,
            metric,
            tos: 0,
            unicast: true,
            next_hops: vec![NextHop {
                interface,
                gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 77, interface as u8, 1))),
                down: false,
            }],
        }
    }

    fn added(route: DefaultRoute) -> Change {
        Change::RouteAdded { route, append: false }
    }

    /// Applies `changes` in order and returns the path after each.
    fn run(changes: impl IntoIterator<Item = Change>) -> (NetView, Vec<Path>) {
        let classifier = Classifier::default();
        let mut view = NetView::new();
        let mut paths = Vec::new();
        for change in changes {
            let _ = view.apply(change);
            paths.push(derive(&view, &classifier, MAIN));
        }
        (view, paths)
    }

    fn wifi_up() -> Vec<Change> {
        vec![
            link(WIFI, "wifi0", true),
            Change::AddressAdded(v4(WIFI, 2)),
            added(default_v4(WIFI, 0)),
        ]
    }

    #[test]
    fn empty_view_is_unavailable() {
        let path = derive(&NetView::new(), &Classifier::default(), MAIN);
        assert_eq!(path, Path::unavailable());
    }

    #[test]
    fn address_then_default_route_is_available_over_wifi() {
        let (_, paths) = run(wifi_up());
        let availability: Vec<_> = paths.iter().map(|p| p.availability).collect();
        assert_eq!(
            availability,
            [Availability::Unavailable, Availability::Unavailable, Availability::Available],
            "address without route is Unavailable, not Unknown"
        );
        let last = &paths[2];
        assert_eq!(last.transports, TransportSet::only(Transport::Wifi));
        assert!(!last.is_expensive);
        assert_eq!(last.interfaces, ["wifi0"]);
    }

    #[test]
    fn a_new_address_on_the_same_transport_is_a_new_route() {
        let mut changes = wifi_up();
        // Roam: the old address goes, a new one on the same Wi-Fi link comes.
        changes.push(Change::AddressAdded(v4(WIFI, 77)));
        changes.push(Change::AddressRemoved(v4(WIFI, 2)));
        let (_, paths) = run(changes);
        let before = &paths[2];
        let after = paths.last().cloned().unwrap_or_else(Path::unavailable);
        assert_eq!(after.transports, before.transports);
        assert_ne!(before.path_id, 0);
        assert_ne!(after.path_id, before.path_id, "same transport, new address: new route");
        assert!(after.differs_materially(before));
        assert!(!after.snapshot(5).same_route(&before.snapshot(4)));
        // Deriving twice gives the same identity.
        let (_, again) = run(wifi_up());
        assert_eq!(again[2].path_id, before.path_id);
    }

    #[test]
    fn cellular_is_expensive() {
        let (_, paths) = run([
            link(CELL, "cell0", true),
            Change::AddressAdded(v4(CELL, 2)),
            added(default_v4(CELL, 0)),
        ]);
        let last = paths.last().cloned().unwrap_or_else(Path::unavailable);
        assert_eq!(last.transports, TransportSet::only(Transport::Cellular));
        assert!(last.is_expensive);
        assert_eq!(last.snapshot(9).sequence, 9);
        assert!(last.snapshot(9).is_expensive);
    }

    #[test]
    fn route_needs_an_up_link_with_a_global_address_of_its_family() {
        // Link down.
        let (_, paths) = run([
            link(WIFI, "wifi0", false),
            Change::AddressAdded(v4(WIFI, 2)),
            added(default_v4(WIFI, 0)),
        ]);
        assert_eq!(paths[2].availability, Availability::Unavailable);

        // Only a link-local IPv4 address.
        let mut local = v4(WIFI, 2);
        local.scope = Scope::Link;
        let (_, paths) = run([
            link(WIFI, "wifi0", true),
            Change::AddressAdded(local),
            added(default_v4(WIFI, 0)),
        ]);
        assert_eq!(paths[2].availability, Availability::Unavailable);

        // An IPv6 global address does not make an IPv4 default usable.
        let v6 = Address {
            interface: WIFI,
            ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            prefix_len: 64,
            scope: Scope::Global,
            tentative: false,
        };
        let (_, paths) =
            run([link(WIFI, "wifi0", true), Change::AddressAdded(v6), added(default_v4(WIFI, 0))]);
        assert_eq!(paths[2].availability, Availability::Unavailable);

        // A route through an unknown interface.
        let (_, paths) = run([added(default_v4(42, 0))]);
        assert_eq!(paths[0].availability, Availability::Unavailable);
    }

    #[test]
    fn ipv6_default_with_tentative_address_waits_for_dad() {
        let mut address = Address {
            interface: WIFI,
            ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
            prefix_len: 64,
            scope: Scope::Global,
            tentative: true,
        };
        let route = DefaultRoute {
            family: Family::V6,
            table: MAIN,
            metric: 1024,
            tos: 0,
            unicast: true,
            next_hops: vec![NextHop {
                interface: WIFI,
                gateway: Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1))),
                down: false,
            }],
        };
        let tentative = Change::AddressAdded(address.clone());
        address.tentative = false;
        let (_, paths) = run([
            link(WIFI, "wlan0", true),
            tentative,
            added(route),
            Change::AddressAdded(address),
        ]);
        assert_eq!(paths[2].availability, Availability::Unavailable);
        assert_eq!(paths[3].availability, Availability::Available);
        assert_eq!(paths[3].transports, TransportSet::only(Transport::Wifi));
    }

    #[test]
    fn removing_the_address_makes_the_path_unavailable_even_without_a_route_notification() {
        let mut changes = wifi_up();
        changes.push(Change::AddressRemoved(v4(WIFI, 2)));
        let (view, paths) = run(changes);
        assert_eq!(paths[3].availability, Availability::Unavailable);
        // The view mirrors the kernel's silent IPv4 flush ...
        assert!(view.routes().is_empty());
        // ... so a new address alone does not revive the old route.
        let mut view = view;
        let _ = view.apply(Change::AddressAdded(v4(WIFI, 3)));
        assert_eq!(
            derive(&view, &Classifier::default(), MAIN).availability,
            Availability::Unavailable
        );
    }

    #[test]
    fn handoff_changes_the_transport_and_passes_through_unavailable() {
        let mut changes = wifi_up();
        changes.extend([
            link(CELL, "cell0", false),
            // handoff to cell, as lab.sh does it
            Change::AddressRemoved(v4(WIFI, 2)),
            link(WIFI, "wifi0", false),
            link(CELL, "cell0", true),
            Change::AddressAdded(v4(CELL, 2)),
            added(default_v4(CELL, 0)),
        ]);
        let (_, paths) = run(changes);
        let summary: Vec<_> = paths.iter().map(|p| (p.availability, p.transports)).collect();
        let wifi = TransportSet::only(Transport::Wifi);
        let cell = TransportSet::only(Transport::Cellular);
        let none = TransportSet::EMPTY;
        assert_eq!(
            summary,
            [
                (Availability::Unavailable, none),
                (Availability::Unavailable, none),
                (Availability::Available, wifi),
                (Availability::Available, wifi),
                (Availability::Unavailable, none),
                (Availability::Unavailable, none),
                (Availability::Unavailable, none),
                (Availability::Unavailable, none),
                (Availability::Available, cell),
            ]
        );
    }

    #[test]
    fn lowest_metric_decides_the_transport_and_a_backup_is_not_in_the_path() {
        let (mut view, paths) = run([
            link(WIFI, "wlan0", true),
            link(CELL, "rmnet0", true),
            Change::AddressAdded(v4(WIFI, 2)),
            Change::AddressAdded(v4(CELL, 2)),
            added(default_v4(CELL, 200)),
            added(default_v4(WIFI, 100)),
        ]);
        assert_eq!(paths[4].transports, TransportSet::only(Transport::Cellular));
        assert_eq!(paths[5].transports, TransportSet::only(Transport::Wifi));
        assert!(!paths[5].is_expensive);
        // Wi-Fi drops: cellular takes over.
        let _ = view.apply(link(WIFI, "wlan0", false));
        let path = derive(&view, &Classifier::default(), MAIN);
        assert_eq!(path.transports, TransportSet::only(Transport::Cellular));
        assert!(path.is_expensive);
    }

    #[test]
    fn equal_metrics_and_both_families_are_a_union() {
        let v6_cell = Address {
            interface: CELL,
            ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)),
            prefix_len: 64,
            scope: Scope::Global,
            tentative: false,
        };
        let v6_route = DefaultRoute {
            family: Family::V6,
            table: MAIN,
            metric: 1024,
            tos: 0,
            unicast: true,
            next_hops: vec![NextHop { interface: CELL, gateway: None, down: false }],
        };
        let (_, paths) = run([
            link(WIFI, "wlan0", true),
            link(CELL, "wwan0", true),
            Change::AddressAdded(v4(WIFI, 2)),
            Change::AddressAdded(v6_cell),
            added(default_v4(WIFI, 0)),
            added(v6_route),
        ]);
        let last = &paths[5];
        let both: TransportSet = [Transport::Wifi, Transport::Cellular].into_iter().collect();
        assert_eq!(last.transports, both);
        assert!(last.is_expensive);
        assert_eq!(last.interfaces, ["wlan0", "wwan0"]);
    }

    #[test]
    fn other_tables_blackholes_dead_hops_and_loopback_do_not_count() {
        let mut other_table = default_v4(WIFI, 0);
        other_table.table = 51820;
        let mut blackhole = default_v4(WIFI, 0);
        blackhole.unicast = false;
        let mut dead = default_v4(WIFI, 0);
        dead.next_hops[0].down = true;
        for route in [other_table, blackhole, dead] {
            let (_, paths) =
                run([link(WIFI, "wifi0", true), Change::AddressAdded(v4(WIFI, 2)), added(route)]);
            assert_eq!(paths[2].availability, Availability::Unavailable);
        }
        let lo = Change::LinkUpdated(Link {
            index: 1,
            name: "lo".to_owned(),
            kind: None,
            up: true,
            loopback: true,
        });
        let (_, paths) = run([lo, Change::AddressAdded(v4(1, 1)), added(default_v4(1, 0))]);
        assert_eq!(paths[2].availability, Availability::Unavailable);
    }

    #[test]
    fn multipath_route_uses_its_live_hops() {
        let mut route = default_v4(WIFI, 0);
        route.next_hops.push(NextHop { interface: CELL, gateway: None, down: false });
        let (mut view, paths) = run([
            link(WIFI, "wifi0", true),
            link(CELL, "cell0", true),
            Change::AddressAdded(v4(WIFI, 2)),
            Change::AddressAdded(v4(CELL, 2)),
            added(route),
        ]);
        let both: TransportSet = [Transport::Wifi, Transport::Cellular].into_iter().collect();
        assert_eq!(paths[4].transports, both);
        let _ = view.apply(Change::LinkRemoved { index: CELL });
        let path = derive(&view, &Classifier::default(), MAIN);
        assert_eq!(path.transports, TransportSet::only(Transport::Wifi));
        assert_eq!(view.routes().len(), 1);
        assert_eq!(view.routes()[0].next_hops.len(), 1);
    }

    #[test]
    fn route_replace_and_append_and_removal() {
        let mut view = NetView::new();
        let _ = view.apply(added(default_v4(WIFI, 0)));
        // Same key, replace: one route, now through cell.
        let _ = view.apply(added(default_v4(CELL, 0)));
        assert_eq!(view.routes().len(), 1);
        assert_eq!(view.routes()[0].next_hops[0].interface, CELL);
        // Append keeps both.
        let _ = view.apply(Change::RouteAdded { route: default_v4(WIFI, 0), append: true });
        assert_eq!(view.routes().len(), 2);
        // Removal picks the exact one.
        let _ = view.apply(Change::RouteRemoved(default_v4(CELL, 0)));
        assert_eq!(view.routes().len(), 1);
        assert_eq!(view.routes()[0].next_hops[0].interface, WIFI);
        // Removing an unknown route changes nothing.
        let _ = view.apply(Change::RouteRemoved(default_v4(CELL, 7)));
        assert_eq!(view.routes().len(), 1);
    }

    #[test]
    fn silent_kernel_flushes_ask_for_a_resync() {
        let mut view = NetView::new();
        for change in wifi_up() {
            assert!(!view.apply(change).resync);
        }
        assert!(view.apply(Change::AddressRemoved(v4(WIFI, 2))).resync);
        assert!(view.apply(link(WIFI, "wifi0", false)).resync);
        assert!(view.apply(Change::LinkRemoved { index: WIFI }).resync);
        assert!(view.links().is_empty());
    }

    #[test]
    fn partial_link_update_keeps_the_name() {
        let mut view = NetView::new();
        let _ = view.apply(link(WIFI, "wifi0", true));
        let _ = view.apply(Change::LinkUpdated(Link {
            index: WIFI,
            name: String::new(),
            kind: None,
            up: false,
            loopback: false,
        }));
        let link = view.link(WIFI).cloned();
        assert_eq!(link.as_ref().map(|l| l.name.as_str()), Some("wifi0"));
        assert_eq!(link.as_ref().and_then(|l| l.kind.as_deref()), Some("veth"));
        assert_eq!(link.map(|l| l.up), Some(false));
    }

    #[test]
    fn differs_materially_ignores_interface_names() {
        let a = Path {
            availability: Availability::Available,
            transports: TransportSet::only(Transport::Wifi),
            is_expensive: false,
            interfaces: vec!["wlan0".to_owned()],
            path_id: 5,
        };
        let renamed = Path { interfaces: vec!["wlan1".to_owned()], ..a.clone() };
        let metered = Path { is_expensive: true, ..a.clone() };
        assert!(!a.differs_materially(&renamed));
        assert!(a.differs_materially(&metered));
        assert!(a.differs_materially(&Path::unavailable()));
    }
}
