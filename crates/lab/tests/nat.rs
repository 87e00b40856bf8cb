//! NAT in the lab, checked the way STUN sees it: one socket talks to two
//! destinations in the cloud, and each tells it the address and port it
//! came from. Cone NAT shows one public mapping for both (and keeps the
//! port); symmetric NAT a different one per destination. Also: the private
//! subnets are unreachable from outside under NAT, and coturn runs in the
//! cloud and goes with the lab. Needs root, `ip netns` and `nft` (and
//! `turnserver` for the TURN test); skips loudly without them, and fails
//! instead when `TETHER_REQUIRE_NETNS=1` (or `TETHER_REQUIRE_TURN=1`) is
//! set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tether_lab::{Lab, LabConfig, Nat, Netns, NetnsTask, run_in_netns, spawn_in_netns};
use tokio::net::UdpSocket;

const PORTS: [u16; 2] = [7201, 7202];
const DEADLINE: Duration = Duration::from_secs(5);

async fn supported() -> bool {
    let test = std::thread::current().name().unwrap_or("a NAT test").to_owned();
    tether_lab::netns_available(&test).await
        && tether_lab::tool_available("nft", tether_lab::REQUIRE_NETNS_VAR)
}

/// UDP servers on `ip`:[`PORTS`] in `netns`, each answering a datagram
/// with the address it came from.
fn start_reflectors(netns: &Netns, ip: Ipv4Addr) -> NetnsTask<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let task = spawn_in_netns(netns, move || async move {
        let mut sockets = Vec::new();
        for port in PORTS {
            sockets.push(UdpSocket::bind((ip, port)).await.expect("bind a reflector"));
        }
        let _ = ready_tx.send(());
        let mut serving = tokio::task::JoinSet::new();
        for socket in sockets {
            serving.spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                    let _ = socket.send_to(from.to_string().as_bytes(), from).await;
                }
            });
        }
        while serving.join_next().await.is_some() {}
    })
    .expect("spawn reflectors");
    ready_rx.recv_timeout(DEADLINE).expect("reflectors ready");
    task
}

/// From one socket in `netns`: the address each of `targets` saw it at
/// (`None` when one did not answer within a second, three tries).
async fn mapped_addresses(netns: &Netns, targets: Vec<SocketAddr>) -> Vec<Option<SocketAddr>> {
    run_in_netns(netns, move || async move {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 40_000)).await.expect("bind");
        let mut seen = Vec::new();
        for target in targets {
            let mut answer = None;
            for _ in 0..3 {
                socket.send_to(b"where am I", target).await.expect("send");
                let mut buf = [0u8; 64];
                let reply =
                    tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await;
                if let Ok(Ok((len, from))) = reply
                    && from == target
                {
                    answer = std::str::from_utf8(&buf[..len]).ok().and_then(|s| s.parse().ok());
                    break;
                }
            }
            seen.push(answer);
        }
        seen
    })
    .await
    .expect("probe task")
}

fn targets(ip: Ipv4Addr) -> Vec<SocketAddr> {
    PORTS.iter().map(|&port| SocketAddr::new(ip.into(), port)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cone_nat_maps_one_socket_to_one_public_port() {
    if !supported().await {
        return;
    }
    let lab = Lab::setup(LabConfig::unique().nat(Nat::Cone)).await.expect("lab builds");
    let topology = lab.topology().clone();
    let _reflectors = start_reflectors(&topology.cloud, topology.cloud_addr);
    for (netns, public) in
        [(&topology.phone, topology.wifi.public), (&topology.home, topology.home_public_addr)]
    {
        let seen = mapped_addresses(netns, targets(topology.cloud_addr)).await;
        let want = Some(SocketAddr::new(public.into(), 40_000));
        assert_eq!(seen, vec![want, want], "{}: one mapping, port kept", netns.name());
    }
    lab.teardown().await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nat_maps_every_destination_anew() {
    if !supported().await {
        return;
    }
    let lab = Lab::setup(LabConfig::unique().nat(Nat::Symmetric)).await.expect("lab builds");
    let topology = lab.topology().clone();
    let _reflectors = start_reflectors(&topology.cloud, topology.cloud_addr);
    for (netns, public) in
        [(&topology.phone, topology.wifi.public), (&topology.home, topology.home_public_addr)]
    {
        let seen = mapped_addresses(netns, targets(topology.cloud_addr)).await;
        let [Some(first), Some(second)] = seen[..] else {
            panic!("{}: a destination did not answer: {seen:?}", netns.name())
        };
        assert_eq!(first.ip(), public, "{}: {seen:?}", netns.name());
        assert_eq!(second.ip(), public, "{}: {seen:?}", netns.name());
        assert_ne!(
            first.port(),
            second.port(),
            "{}: one mapping for two destinations",
            netns.name()
        );
    }
    lab.teardown().await.expect("teardown");
}

/// Under NAT nothing outside reaches the private subnets, while without it
/// the far peer reaches the phone's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_reachable_only_without_nat() {
    if !supported().await {
        return;
    }
    for nat in [Nat::None, Nat::Cone] {
        let lab = Lab::setup(LabConfig::unique().nat(nat)).await.expect("lab builds");
        let topology = lab.topology().clone();
        let _reflectors = start_reflectors(&topology.phone, topology.wifi.phone);
        let seen = mapped_addresses(&topology.home, targets(topology.wifi.phone)).await;
        match nat {
            Nat::None => {
                let want = Some(SocketAddr::new(topology.home_addr.into(), 40_000));
                assert_eq!(seen, vec![want, want], "no NAT: the phone sees home's own address");
            }
            _ => assert_eq!(seen, vec![None, None], "{nat}: the phone's private address answered"),
        }
        lab.teardown().await.expect("teardown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_server_answers_through_the_nat_and_goes_with_the_lab() {
    if !supported().await || !tether_lab::tool_available("turnserver", "TETHER_REQUIRE_TURN") {
        return;
    }
    let lab = Lab::setup(LabConfig::unique().nat(Nat::Symmetric).turn(true))
        .await
        .expect("lab builds with coturn");
    let turn = lab.turn().expect("coturn runs");
    assert_eq!(turn.addr(), SocketAddr::new(lab.topology().cloud_addr.into(), 3478));
    assert_eq!(turn.stun_url(), format!("stun:{}:3478", lab.topology().cloud_addr));
    assert_eq!(turn.allocations(), 0);
    let pid = turn.pid().expect("running");
    // A STUN binding request from the phone, through its NAT, is answered
    // with the phone's public address.
    let answer = run_in_netns(&lab.topology().phone.clone(), {
        let server = turn.addr();
        move || async move {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap();
            let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
            request.extend_from_slice(b"tether-nat-1");
            socket.send_to(&request, server).await.unwrap();
            let mut buf = [0u8; 512];
            let len = tokio::time::timeout(DEADLINE, socket.recv(&mut buf)).await.unwrap().unwrap();
            buf[..len].to_vec()
        }
    })
    .await
    .unwrap();
    assert_eq!(answer[..2], [0x01, 0x01], "a binding success response");
    // XOR-MAPPED-ADDRESS (0x0020): family, port, address, XORed with the
    // magic cookie.
    let public = lab.topology().wifi.public.octets();
    let cookie = [0x21, 0x12, 0xA4, 0x42];
    let xored: Vec<u8> = public.iter().zip(cookie).map(|(a, c)| a ^ c).collect();
    assert!(answer.windows(4).any(|w| w == xored), "the phone's public address in {answer:x?}");
    lab.teardown().await.expect("teardown");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "coturn ({pid}) outlived the lab");
}
