//! The monitor against a real kernel: a private network namespace with veth
//! uplinks, changed with `ip`. Needs root and `ip netns`; without them the
//! test prints a loud SKIP and passes, unless `TETHER_REQUIRE_NETNS=1` is
//! set, which makes it fail.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tether_pathmon::{
    Availability, Change, NetworkSnapshot, PathMonitor, PathMonitorConfig, SnapshotReceiver,
    Transport, TransportSet,
};
use tokio::time::timeout;

/// Generous: a change shows up within microseconds; this only bounds a
/// broken run.
const DEADLINE: Duration = Duration::from_secs(5);

/// A network namespace that is deleted on drop, even when the test fails.
struct TestNetns {
    name: String,
}

impl TestNetns {
    /// A fresh namespace, or the reason it cannot be made.
    fn create() -> Result<Self, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if !nix::unistd::geteuid().is_root() {
            return Err("not running as root".to_owned());
        }
        let name = format!(
            "tether-pathmon-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { name })
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `ip -n NS ARGS`, failing the test on error.
    fn ip(&self, args: &str) {
        let mut argv = vec!["-n", self.name.as_str()];
        argv.extend(args.split_whitespace());
        let out = Command::new("ip").args(&argv).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Without root or `ip netns`: a loud SKIP, written straight to stderr past
/// the test harness's capture so that a skipped run is visible in a plain
/// `cargo test`. With `TETHER_REQUIRE_NETNS=1` (CI), where a skip would
/// pass without testing anything, a failure instead. (tether-lab's
/// `netns_available` does the same for the lab; this crate is below it.)
fn skip(reason: &str) {
    use std::io::Write;
    assert!(
        std::env::var("TETHER_REQUIRE_NETNS").as_deref() != Ok("1"),
        "the pathmon netns test needs a network namespace and TETHER_REQUIRE_NETNS=1 is set, \
         but: {reason}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\n==================================================================\n\
         SKIP: tether-pathmon netns test did not run: {reason}\n      \
         (needs root and `ip netns add`; nothing was tested here;\n      \
         set TETHER_REQUIRE_NETNS=1 to make this a failure)\n\
         =================================================================="
    );
}

/// Receives snapshots until one satisfies `want`, collecting all of them.
async fn until(
    rx: &mut SnapshotReceiver,
    seen: &mut Vec<NetworkSnapshot>,
    what: &str,
    want: impl Fn(&NetworkSnapshot) -> bool,
) -> NetworkSnapshot {
    let found = timeout(DEADLINE, async {
        while let Some(snapshot) = rx.recv().await {
            seen.push(snapshot);
            if want(&snapshot) {
                return Some(snapshot);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => panic!("monitor stopped while waiting for {what}; saw {seen:#?}"),
        Err(_) => panic!("no snapshot with {what} within {DEADLINE:?}; saw {seen:#?}"),
    }
}

fn available_over(snapshot: &NetworkSnapshot, transports: TransportSet) -> bool {
    snapshot.availability == Availability::Available && snapshot.transports == transports
}

#[tokio::test]
async fn monitor_follows_addresses_routes_and_links_in_a_namespace() {
    let netns = match TestNetns::create() {
        Ok(netns) => netns,
        Err(reason) => return skip(&reason),
    };
    let wifi = TransportSet::only(Transport::Wifi);
    let cell = TransportSet::only(Transport::Cellular);

    // Two veth uplinks whose peers stay in the namespace (up, so the
    // uplinks get a carrier).
    netns.ip("link set lo up");
    netns.ip("link add wifi0 type veth peer name wifi0-peer");
    netns.ip("link add cell0 type veth peer name cell0-peer");
    netns.ip("link set wifi0-peer up");
    netns.ip("link set cell0-peer up");

    let config = PathMonitorConfig::default().netns(netns.path()).first_sequence(100);
    let (monitor, mut rx) = timeout(DEADLINE, PathMonitor::start(config))
        .await
        .expect("the monitor starts in time")
        .expect("monitor starts");
    let mut seen = Vec::new();

    // Initial snapshot: nothing has a default route.
    let initial = until(&mut rx, &mut seen, "the initial snapshot", |_| true).await;
    assert_eq!(initial.sequence, 100);
    assert_eq!(initial.availability, Availability::Unavailable);
    assert_eq!(monitor.current(), initial);

    // Wi-Fi joins: address, then default route.
    netns.ip("link set wifi0 up");
    netns.ip("addr add 10.1.1.2/24 dev wifi0");
    netns.ip("route add default via 10.1.1.1 dev wifi0");
    let s = until(&mut rx, &mut seen, "available over wifi", |s| available_over(s, wifi)).await;
    assert!(!s.is_expensive);

    // The address disappears (no RTM_DELROUTE comes for the flushed route).
    let mut changes = monitor.changes();
    netns.ip("addr del 10.1.1.2/24 dev wifi0");
    until(&mut rx, &mut seen, "unavailable", |s| s.availability == Availability::Unavailable).await;
    let removal = timeout(DEADLINE, async {
        loop {
            match changes.recv().await {
                Ok(observed) => {
                    if let Change::AddressRemoved(a) = observed.change {
                        return a;
                    }
                }
                Err(e) => panic!("change feed: {e}"),
            }
        }
    })
    .await
    .expect("the address removal is observed");
    assert_eq!(removal.ip.to_string(), "10.1.1.2");

    // Back on Wi-Fi with a new address (the kernel flushed the old default
    // route, so it has to be added again).
    netns.ip("addr add 10.1.1.3/24 dev wifi0");
    netns.ip("route add default via 10.1.1.1 dev wifi0");
    until(&mut rx, &mut seen, "available over wifi again", |s| available_over(s, wifi)).await;
    let after_readd = seen.len();

    // Switch uplinks: cellular comes up and takes the default route.
    netns.ip("link set cell0 up");
    netns.ip("addr add 10.1.2.2/24 dev cell0");
    netns.ip("route replace default via 10.1.2.1 dev cell0");
    let s = until(&mut rx, &mut seen, "available over cellular", |s| available_over(s, cell)).await;
    assert!(s.is_expensive, "cellular is expensive");
    assert!(
        seen[after_readd..].iter().all(|s| s.availability == Availability::Available),
        "a route replace goes straight from wifi to cellular: {seen:#?}"
    );

    // IPv6 over Wi-Fi next to IPv4 over cellular: the union.
    netns.ip("-6 addr add 2001:db8:1::2/64 dev wifi0 nodad");
    netns.ip("-6 route add default via 2001:db8:1::1 dev wifi0");
    let both: TransportSet = [Transport::Wifi, Transport::Cellular].into_iter().collect();
    until(&mut rx, &mut seen, "wifi + cellular", |s| available_over(s, both)).await;

    // Cellular link goes down: the IPv4 route is flushed silently; IPv6 over
    // Wi-Fi remains.
    netns.ip("link set cell0 down");
    let s = until(&mut rx, &mut seen, "wifi only (ipv6)", |s| available_over(s, wifi)).await;
    assert!(!s.is_expensive);

    // Wi-Fi disappears altogether.
    netns.ip("link del wifi0");
    until(&mut rx, &mut seen, "unavailable at the end", |s| {
        s.availability == Availability::Unavailable
    })
    .await;

    // Strictly increasing, and every snapshot differs materially from the
    // one before (nothing emitted twice).
    for pair in seen.windows(2) {
        assert!(pair[0].sequence < pair[1].sequence, "sequences must increase: {seen:#?}");
        assert!(
            pair[0].availability != pair[1].availability
                || pair[0].transports != pair[1].transports
                || pair[0].is_expensive != pair[1].is_expensive,
            "duplicate snapshot: {seen:#?}"
        );
    }
    assert_eq!(monitor.current(), *seen.last().expect("snapshots"));
    assert!(monitor.is_running());
    timeout(DEADLINE, monitor.stop()).await.expect("the monitor stops");
    let end = timeout(DEADLINE, rx.recv()).await.expect("the receiver ends after stop");
    assert_eq!(end, None, "the receiver ends after stop");
    eprintln!("pathmon netns test saw {} snapshots: {seen:?}", seen.len());
}

#[tokio::test]
async fn monitor_reports_a_missing_namespace() {
    let config = PathMonitorConfig::default().netns("/run/netns/tether-pathmon-does-not-exist");
    let err = PathMonitor::start(config).await.expect_err("no such namespace");
    let message = err.to_string();
    assert!(message.starts_with("cannot enter network namespace"), "{message}");
}
