//! The delay relay on loopback: it delays by at least the configured delay
//! (never early; how late is the benchmarks' business), keeps order and
//! loses nothing under a burst. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tether_lab::{DelayRelay, RelayStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

const LOCALHOST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const ONE_WAY: Duration = Duration::from_millis(10);
const PROBES: usize = 40;
/// A hang guard for a broken run, not a timing target: a healthy probe
/// takes ~20 ms.
const DEADLINE: Duration = Duration::from_secs(5);

/// A UDP echo server on loopback.
async fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind(LOCALHOST).await.expect("bind echo");
    let addr = socket.local_addr().expect("echo addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    addr
}

/// A TCP echo server on loopback.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind(LOCALHOST).await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// What a run measured, for the log only: timing is the benchmarks' job,
/// a loaded CI machine makes any upper bound here a coin toss.
fn report(what: &str, relayed: &[Duration]) {
    let mut sorted = relayed.to_vec();
    sorted.sort();
    eprintln!(
        "{what}: one-way delay {ONE_WAY:?}; relayed RTT min {:?} p50 {:?} max {:?} (at least {:?})",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        ONE_WAY * 2,
    );
}

/// The relay delays every datagram or chunk by at least its configured
/// delay each way: it may be late, it must never be early. (That each probe
/// came back at all, within [`DEADLINE`], was checked as it was read.)
fn assert_never_early(relayed: &[Duration]) {
    assert_eq!(relayed.len(), PROBES, "a probe went missing");
    for (probe, rtt) in relayed.iter().enumerate() {
        assert!(
            *rtt >= ONE_WAY * 2,
            "probe {probe}: a relayed round trip took {rtt:?}, less than 2 x {ONE_WAY:?}"
        );
    }
}

async fn udp_rtts(socket: &UdpSocket, to: SocketAddr, count: usize) -> Vec<Duration> {
    let mut buf = [0u8; 64];
    let mut rtts = Vec::with_capacity(count);
    for i in 0..count as u64 {
        let start = Instant::now();
        socket.send_to(&i.to_be_bytes(), to).await.expect("send probe");
        loop {
            let (len, _) = timeout(DEADLINE, socket.recv_from(&mut buf))
                .await
                .expect("probe answered in time")
                .expect("recv probe");
            if len == 8 && buf[..8] == i.to_be_bytes() {
                break;
            }
        }
        rtts.push(start.elapsed());
    }
    rtts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_relay_adds_the_configured_delay() {
    let echo = udp_echo().await;
    let relay = DelayRelay::udp(LOCALHOST, echo, ONE_WAY).await.expect("relay starts");
    let client = UdpSocket::bind(LOCALHOST).await.expect("bind client");

    let relayed = udp_rtts(&client, relay.local_addr(), PROBES).await;
    report("udp", &relayed);
    assert_never_early(&relayed);
    // The relay counts a datagram once its send returned, which can be just
    // after the client already read the echo: wait for the books, bounded.
    let expected = 2 * PROBES as u64;
    let deadline = Instant::now() + DEADLINE;
    let mut stats = relay.stats();
    while stats.packets < expected && Instant::now() < deadline {
        tokio::task::yield_now().await;
        stats = relay.stats();
    }
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.packets, expected);
    assert_eq!(stats.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_relay_keeps_order_in_a_burst() {
    const BURST: u64 = 1000;
    // Datagrams in flight at most. The sender is paced by the echoes, not
    // by the clock: it runs this far ahead of what came back, which keeps
    // the loopback socket buffers from overflowing on any machine (this
    // tests order, not the kernel's drop policy).
    const WINDOW: u64 = 100;
    let echo = udp_echo().await;
    let relay =
        DelayRelay::udp(LOCALHOST, echo, Duration::from_millis(5)).await.expect("relay starts");
    let client = UdpSocket::bind(LOCALHOST).await.expect("bind client");
    let target = relay.local_addr();
    let mut buf = [0u8; 64];
    let mut seen: Vec<u64> = Vec::new();
    let mut sent = 0;
    while (seen.len() as u64) < BURST {
        while sent < BURST && sent < seen.len() as u64 + WINDOW {
            client.send_to(&sent.to_be_bytes(), target).await.expect("send");
            sent += 1;
        }
        // A lost datagram leaves the rest of the window unanswered: fail
        // with the books rather than wait forever.
        let (len, _) = timeout(DEADLINE, client.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "datagrams lost: no echo within {DEADLINE:?}; {} of {sent} sent came back; \
                     relay {:?}",
                    seen.len(),
                    relay.stats()
                )
            })
            .expect("recv");
        assert_eq!(len, 8, "a datagram came back changed");
        let mut n = [0u8; 8];
        n.copy_from_slice(&buf[..8]);
        seen.push(u64::from_be_bytes(n));
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "datagrams reordered or duplicated: {seen:?}");
    assert_eq!(seen.first().copied(), Some(0));
    assert_eq!(seen.last().copied(), Some(BURST - 1));
    let stats: RelayStats = relay.stats();
    eprintln!("udp burst: {} of {BURST} echoed in order; relay {stats:?}", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_relay_adds_the_configured_delay_and_keeps_the_stream_intact() {
    let echo = tcp_echo().await;
    let relay = DelayRelay::tcp(LOCALHOST, echo, ONE_WAY).await.expect("relay starts");

    async fn tcp_rtts(to: SocketAddr) -> (TcpStream, Vec<Duration>) {
        let mut stream = TcpStream::connect(to).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut rtts = Vec::with_capacity(PROBES);
        let mut buf = [0u8; 8];
        for i in 0..PROBES as u64 {
            let start = Instant::now();
            stream.write_all(&i.to_be_bytes()).await.expect("write");
            timeout(DEADLINE, stream.read_exact(&mut buf)).await.expect("in time").expect("read");
            assert_eq!(buf, i.to_be_bytes());
            rtts.push(start.elapsed());
        }
        (stream, rtts)
    }

    let (mut stream, relayed) = tcp_rtts(relay.local_addr()).await;
    report("tcp", &relayed);
    assert_never_early(&relayed);

    // 1 MiB through the relay comes back byte for byte, then the end of
    // stream passes through (delayed) both ways.
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(&payload).await.expect("write payload");
        w.shutdown().await.expect("shutdown");
    };
    let read = async {
        let mut back = Vec::with_capacity(payload.len());
        timeout(DEADLINE, r.read_to_end(&mut back))
            .await
            .expect("echo ends in time")
            .expect("read");
        back
    };
    let ((), back) = tokio::join!(write, read);
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "stream corrupted");
    assert_eq!(relay.stats().sessions, 1);
}

#[tokio::test]
async fn tcp_relay_counts_an_unreachable_upstream() {
    // Bind then drop: nothing listens on this port any more.
    let closed = TcpListener::bind(LOCALHOST).await.expect("bind").local_addr().expect("addr");
    let relay = DelayRelay::tcp(LOCALHOST, closed, Duration::ZERO).await.expect("relay starts");
    let mut stream = TcpStream::connect(relay.local_addr()).await.expect("relay accepts");
    let mut buf = [0u8; 1];
    let read = timeout(DEADLINE, stream.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the relay closes the client side");
    assert_eq!(relay.stats().upstream_failures, 1);
}
