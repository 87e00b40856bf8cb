//! The lab end to end: build the topology, reach the cloud from the phone
//! over Wi-Fi, hand off to cellular, reach it again from the new address,
//! tear down. Needs root and network namespaces; without them each test
//! prints a loud SKIP and passes, unless `TETHER_REQUIRE_NETNS=1` is set,
//! which turns the skip into a failure. Time is only bounded from below
//! (an added delay is never skipped); upper bounds are hang guards.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tether_lab::{
    DelayRelay, HandoffMode, Lab, LabConfig, LabError, NetnsTask, Topology, Uplink, spawn_in_netns,
};
use tether_pathmon::{Availability, PathMonitor, PathMonitorConfig, TransportSet};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const ECHO_PORT: u16 = 7000;
const DEADLINE: Duration = Duration::from_secs(5);

/// Whether the namespace tests can run here: a loud SKIP without root or
/// `ip netns`, a failure instead when `TETHER_REQUIRE_NETNS=1` (CI).
async fn supported() -> bool {
    // The harness names the test's thread after the test.
    let test = std::thread::current().name().unwrap_or("a tether-lab test").to_owned();
    tether_lab::netns_available(&test).await
}

fn namespaces_exist(topology: &Topology) -> [bool; 7] {
    topology.namespaces().map(|ns| Path::new(&ns.path()).exists())
}

/// A UDP server in the cloud that answers every datagram with the address
/// it came from, a space, and the datagram.
fn start_echo(topology: &Topology) -> NetnsTask<()> {
    let bind = SocketAddr::new(topology.cloud_addr.into(), ECHO_PORT);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let task = spawn_in_netns(&topology.cloud, move || async move {
        let socket = UdpSocket::bind(bind).await.expect("bind echo in the cloud");
        let _ = ready_tx.send(());
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let mut answer = format!("{from} ").into_bytes();
            answer.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&answer, from).await;
        }
    })
    .expect("spawn echo");
    ready_rx.recv_timeout(DEADLINE).expect("echo server ready");
    task
}

/// From inside the phone: `samples` UDP round trips to the cloud's echo,
/// sorted, and the address the cloud saw us at.
async fn udp_rtts_to_cloud(topology: &Topology, samples: usize) -> (Vec<Duration>, String) {
    let cloud = SocketAddr::new(topology.cloud_addr.into(), ECHO_PORT);
    spawn_in_netns(&topology.phone, move || async move {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.expect("bind in the phone");
        let mut buf = [0u8; 64];
        let mut rtts = Vec::new();
        let mut seen = String::new();
        // Bounded: a lost datagram (ARP after a handoff) is retried, four
        // times at most. Each ping is numbered, and only its own answer
        // counts: a late answer to an earlier one is not a round trip.
        let mut attempts = 0;
        while rtts.len() < samples {
            attempts += 1;
            assert!(attempts <= samples + 4, "the cloud did not answer the phone");
            let ping = format!("ping-{attempts}");
            let start = std::time::Instant::now();
            socket.send_to(ping.as_bytes(), cloud).await.expect("send");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(len)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                let answer = String::from_utf8_lossy(&buf[..len]).into_owned();
                if let Some(from) = answer.strip_suffix(&format!(" {ping}")) {
                    rtts.push(start.elapsed());
                    seen = from.to_owned();
                    break;
                }
            }
        }
        rtts.sort();
        (rtts, seen)
    })
    .expect("spawn phone")
    .join()
    .await
    .expect("phone task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_smoke_wifi_then_cell_then_wifi() {
    if !supported().await {
        return;
    }
    let mut lab = Lab::setup(LabConfig::unique()).await.expect("lab builds");
    let topology = lab.topology().clone();
    assert_eq!(namespaces_exist(&topology), [true; 7]);
    assert_eq!(lab.uplink(), Some(Uplink::Wifi));

    // A path monitor inside the phone, on the phone's own thread (as the
    // node will run), reporting snapshots back here.
    let (snap_tx, mut snapshots) = tokio::sync::mpsc::unbounded_channel();
    let monitor = spawn_in_netns(&topology.phone, move || async move {
        let (_monitor, mut rx) =
            PathMonitor::start(PathMonitorConfig::default()).await.expect("monitor");
        while let Some(snapshot) = rx.recv().await {
            if snap_tx.send((std::time::Instant::now(), snapshot)).is_err() {
                break;
            }
        }
    })
    .expect("spawn monitor");
    let (_, initial) =
        timeout(DEADLINE, snapshots.recv()).await.expect("initial").expect("snapshot");
    assert_eq!(initial.availability, Availability::Available);
    assert_eq!(initial.transports, TransportSet::only(Uplink::Wifi.transport()));

    let _echo = start_echo(&topology);
    let (_, seen) = udp_rtts_to_cloud(&topology, 1).await;
    assert!(seen.starts_with(&format!("{}:", topology.wifi.phone)), "the cloud saw {seen}");

    let mut last_sequence = initial.sequence;
    for to in [Uplink::Cell, Uplink::Wifi] {
        let timing = lab.handoff(to).await.expect("handoff");
        assert_eq!(lab.uplink(), Some(to));
        let removed = timing.old_address_removed.expect("the old address went away");
        assert!(timing.started <= removed && removed <= timing.new_route_installed);
        // No order against `timing.finished` to check: the listener stamps a
        // change when it reads it, which may be after the script exited;
        // `handoff` fails by itself when a change is not seen in time.

        // The monitor in the phone says: Unavailable, then Available on the
        // new transport, and the Available snapshot comes after the route.
        let mut went_unavailable = false;
        let available_at = loop {
            let (at, s) = timeout(DEADLINE, snapshots.recv())
                .await
                .expect("snapshot in time")
                .expect("monitor runs");
            assert!(s.sequence > last_sequence, "sequence must increase");
            last_sequence = s.sequence;
            match s.availability {
                Availability::Unavailable => went_unavailable = true,
                Availability::Available if s.transports == TransportSet::only(to.transport()) => {
                    break at;
                }
                _ => {}
            }
        };
        assert!(went_unavailable, "break-before-make passes through Unavailable");
        assert!(available_at >= timing.started);
        // Two listeners read their own copies of the route notification, so
        // the difference may be slightly negative.
        let (sign, gap) = match available_at.checked_duration_since(timing.new_route_installed) {
            Some(after) => ("+", after),
            None => ("-", timing.new_route_installed - available_at),
        };
        eprintln!(
            "handoff to {}: script {:?}, outage {:?}, route -> Available snapshot {sign}{gap:?}",
            to.name(),
            timing.finished - timing.started,
            timing.outage().expect("outage"),
        );

        let (_, seen) = udp_rtts_to_cloud(&topology, 1).await;
        let want = topology.uplink(to).phone.to_string();
        assert!(seen.starts_with(&format!("{want}:")), "the cloud saw {seen}, expected {want}");
    }
    assert!(matches!(lab.handoff(Uplink::Wifi).await, Err(LabError::AlreadyOn(Uplink::Wifi))));

    drop(monitor);
    lab.teardown().await.expect("teardown");
    assert_eq!(namespaces_exist(&topology), [false; 7], "teardown leaves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_is_torn_down_when_a_test_panics() {
    if !supported().await {
        return;
    }
    let (topology_tx, topology_rx) = tokio::sync::oneshot::channel();
    let outcome = tokio::spawn(async move {
        let lab = Lab::setup(LabConfig::unique()).await.expect("lab builds");
        let _ = topology_tx.send(lab.topology().clone());
        eprintln!("(the panic below is deliberate: it checks that the lab guard cleans up)");
        panic!("deliberate panic with the lab alive");
    })
    .await;
    assert!(outcome.expect_err("the task panicked").is_panic());
    let topology = topology_rx.await.expect("the lab was built");
    assert_eq!(namespaces_exist(&topology), [false; 7], "the guard tore the lab down on panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_in_the_router_delays_phone_to_cloud_traffic() {
    if !supported().await {
        return;
    }
    let lab = Lab::setup(LabConfig::unique()).await.expect("lab builds");
    let topology = lab.topology().clone();
    let _echo = start_echo(&topology);
    let one_way = Duration::from_millis(15);
    // The router's own address on the cloud side (the phone's gateway is
    // its uplink's NAT box, in a namespace of its own).
    let relay_addr = SocketAddr::new(topology.router_cloud_addr.into(), 7100);
    let upstream = SocketAddr::new(topology.cloud_addr.into(), ECHO_PORT);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let _relay = spawn_in_netns(&topology.router, move || async move {
        let relay =
            DelayRelay::udp(relay_addr, upstream, one_way).await.expect("relay in the router");
        let _ = ready_tx.send(());
        std::future::pending::<()>().await;
        drop(relay);
    })
    .expect("spawn relay");
    ready_rx.recv_timeout(DEADLINE).expect("relay ready");

    let rtts = spawn_in_netns(&topology.phone, move || async move {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.expect("bind in the phone");
        let mut buf = [0u8; 64];
        let mut rtts = Vec::new();
        for _ in 0..10 {
            let start = std::time::Instant::now();
            socket.send_to(b"ping", relay_addr).await.expect("send");
            // A hang guard: every ping must come back, how fast is timing.
            timeout(DEADLINE, socket.recv(&mut buf)).await.expect("answer in time").expect("recv");
            rtts.push(start.elapsed());
        }
        rtts.sort();
        rtts
    })
    .expect("spawn phone")
    .join()
    .await
    .expect("phone task");
    eprintln!(
        "phone -> router relay (+{one_way:?} each way) -> cloud: RTT min {:?} p50 {:?}",
        rtts[0],
        rtts[rtts.len() / 2]
    );
    // Never early: even the fastest ping waited the added delay both ways.
    assert!(rtts[0] >= one_way * 2, "RTT {:?} below the added delay", rtts[0]);
    lab.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_delay_applies_to_all_traffic_across_a_handoff() {
    if !supported().await {
        return;
    }
    let rtt = Duration::from_millis(40);
    let mut lab =
        Lab::setup(LabConfig::unique().round_trip_delay(rtt)).await.expect("lab with delay builds");
    let topology = lab.topology().clone();
    let _echo = start_echo(&topology);

    // TCP too: the handshake crosses the router twice.
    let tcp_addr = SocketAddr::new(topology.cloud_addr.into(), ECHO_PORT + 1);
    let (listening_tx, listening_rx) = std::sync::mpsc::channel();
    let _tcp = spawn_in_netns(&topology.cloud, move || async move {
        let listener = tokio::net::TcpListener::bind(tcp_addr).await.expect("bind tcp");
        let _ = listening_tx.send(());
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
    .expect("spawn tcp listener");
    listening_rx.recv_timeout(DEADLINE).expect("tcp listener ready");

    for to in [None, Some(Uplink::Cell), Some(Uplink::Wifi)] {
        if let Some(to) = to {
            lab.handoff(to).await.expect("handoff");
        }
        let uplink = lab.uplink().expect("an uplink is up");
        let (udp_rtts, seen) = udp_rtts_to_cloud(&topology, 9).await;
        let connect = spawn_in_netns(&topology.phone, move || async move {
            let start = std::time::Instant::now();
            timeout(DEADLINE, tokio::net::TcpStream::connect(tcp_addr))
                .await
                .expect("connect in time")
                .expect("connect");
            start.elapsed()
        })
        .expect("spawn phone")
        .join()
        .await
        .expect("phone task");
        eprintln!(
            "+{rtt:?} RTT on {}: udp min {:?} p50 {:?}, tcp connect {connect:?}",
            uplink.name(),
            udp_rtts[0],
            udp_rtts[udp_rtts.len() / 2]
        );
        let want = topology.uplink(uplink).phone.to_string();
        assert!(seen.starts_with(&format!("{want}:")), "no NAT: the cloud saw {seen}");
        // Never early, for every packet: even the fastest round trip waited
        // the added delay. (Upper bounds are timeouts, hang guards only.)
        assert!(udp_rtts[0] >= rtt, "UDP RTT {:?} below the added {rtt:?}", udp_rtts[0]);
        assert!(connect >= rtt, "TCP connect {connect:?} below the added {rtt:?}");
    }
    let stats = lab.delay_stats().expect("the lab has a delay router");
    assert!(stats.packets >= 2 * 27 + 4, "every packet went through the router: {stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    lab.teardown().await.expect("teardown");
    assert_eq!(namespaces_exist(&topology), [false; 7], "teardown leaves nothing");
}

/// An outage and an overlap, as `lab.sh handoff --outage-ms/--overlap-ms`
/// make them: with an outage the old address goes before the new route
/// comes, with an overlap after it; either way the phone ends up reaching
/// the cloud from the new address only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_overlap_handoffs_order_the_changes() {
    if !supported().await {
        return;
    }
    let mut lab = Lab::setup(LabConfig::unique()).await.expect("lab builds");
    let topology = lab.topology().clone();
    let _echo = start_echo(&topology);
    let gap = Duration::from_millis(300);
    for (to, mode) in
        [(Uplink::Cell, HandoffMode::Outage(gap)), (Uplink::Wifi, HandoffMode::Overlap(gap))]
    {
        let timing = lab.handoff_with(to, mode).await.expect("handoff");
        assert_eq!(timing.mode, mode);
        assert_eq!(lab.uplink(), Some(to));
        let removed = timing.old_address_removed.expect("the old address went away");
        match mode {
            HandoffMode::Outage(_) => {
                assert!(removed < timing.new_route_installed, "{timing:?}");
                assert_eq!(timing.overlap(), None);
                assert_eq!(timing.completed(), timing.new_route_installed);
            }
            _ => {
                assert!(removed > timing.new_route_installed, "{timing:?}");
                assert_eq!(timing.outage(), Some(Duration::ZERO));
                assert_eq!(timing.completed(), removed);
            }
        }
        eprintln!(
            "{mode:?} to {}: outage {:?}, overlap {:?}",
            to.name(),
            timing.outage(),
            timing.overlap()
        );
        let (_, seen) = udp_rtts_to_cloud(&topology, 1).await;
        let want = topology.uplink(to).phone.to_string();
        assert!(seen.starts_with(&format!("{want}:")), "the cloud saw {seen}, expected {want}");
    }
    lab.teardown().await.expect("teardown");
}

/// Jitter never reorders a flow, and seeded loss drops packets (counted):
/// a burst of numbered datagrams from the phone comes back from the cloud
/// in order, with gaps, and every gap is a packet the router lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_keeps_flow_order_and_loss_is_counted() {
    if !supported().await {
        return;
    }
    const BURST: u32 = 300;
    let config = LabConfig::unique()
        .round_trip_delay(Duration::from_millis(20))
        .jitter(Duration::from_millis(20))
        .loss_percent(10.0)
        .seed(5);
    let lab = Lab::setup(config).await.expect("lab with jitter and loss builds");
    let topology = lab.topology().clone();
    // A cloud echo that returns each datagram as it is.
    let echo_addr = SocketAddr::new(topology.cloud_addr.into(), ECHO_PORT + 2);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let _echo = spawn_in_netns(&topology.cloud, move || async move {
        let socket = UdpSocket::bind(echo_addr).await.expect("bind echo");
        let _ = ready_tx.send(());
        let mut buf = [0u8; 64];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    })
    .expect("spawn echo");
    ready_rx.recv_timeout(DEADLINE).expect("echo ready");

    let received = spawn_in_netns(&topology.phone, move || async move {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.expect("bind in the phone");
        // Warm the path up first: a burst into hops whose neighbours (ARP)
        // are not resolved yet overflows their queues of unresolved
        // packets, and those losses are not the router's. Warm-up
        // datagrams can be lost too: one per attempt (bounded).
        const WARM_UP: u32 = u32::MAX - 1;
        let mut buf = [0u8; 64];
        let mut warm = false;
        for _ in 0..50 {
            socket.send_to(&WARM_UP.to_be_bytes(), echo_addr).await.expect("send warm-up");
            let answer =
                tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await;
            if matches!(answer, Ok(Ok(4))) {
                warm = true;
                break;
            }
        }
        assert!(warm, "no warm-up datagram came back in 50 attempts");
        for seq in 0..BURST {
            socket.send_to(&seq.to_be_bytes(), echo_addr).await.expect("send");
        }
        // One flow keeps its order, so once a marker (u32::MAX) is back,
        // every earlier datagram that survived is back too. Markers can be
        // lost as well: one goes out per attempt (bounded).
        let mut received = Vec::new();
        for _ in 0..50 {
            socket.send_to(&u32::MAX.to_be_bytes(), echo_addr).await.expect("send marker");
            let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
            while let Ok(Ok(len)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                let seq = u32::from_be_bytes(buf[..len].try_into().expect("4 bytes"));
                if seq == u32::MAX {
                    return received;
                }
                // (a late answer to a warm-up datagram is not the burst's)
                if seq != WARM_UP {
                    received.push(seq);
                }
            }
        }
        panic!("no marker came back in 50 attempts");
    })
    .expect("spawn phone")
    .join()
    .await
    .expect("phone task");

    assert!(received.windows(2).all(|w| w[0] < w[1]), "a flow was reordered: {received:?}");
    let missing = u64::from(BURST) - received.len() as u64;
    let stats = lab.delay_stats().expect("the lab has a delay router");
    eprintln!("{BURST} datagrams, {} back; router {stats:?}", received.len());
    assert!(missing > 0, "10 % loss each way, yet all {BURST} came back");
    assert!(!received.is_empty(), "nothing came back");
    // Each missing datagram was lost once (going or coming back); lost
    // markers count too.
    assert!(stats.lost >= missing, "{missing} missing but {stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    lab.teardown().await.expect("teardown");
}
