//! The delay relay on loopback: it adds the configured delay (measured),
//! keeps order and loses nothing under a burst. No root needed.
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
/// Bounds a broken run; a healthy probe takes ~20 ms.
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

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(what: &str, direct: Duration, relayed: Vec<Duration>) -> Duration {
    let mut sorted = relayed.clone();
    sorted.sort();
    let added = median(relayed).saturating_sub(direct);
    eprintln!(
        "{what}: one-way delay {ONE_WAY:?}; direct RTT p50 {direct:?}; relayed RTT min {:?} p50 {:?} p90 {:?} max {:?}; added p50 {added:?} (configured {:?})",
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() - 1],
        ONE_WAY * 2,
    );
    added
}

/// The relay can never be early; it may be late by the timer's millisecond
/// granularity and scheduling (generous bound for a loaded 2-core CI box).
fn assert_added_delay(added: Duration, fastest: Duration) {
    assert!(
        fastest >= ONE_WAY * 2,
        "a relayed round trip took {fastest:?}, less than 2 x {ONE_WAY:?}"
    );
    assert!(
        added <= ONE_WAY * 2 + Duration::from_millis(15),
        "added {added:?}, expected about {:?}",
        ONE_WAY * 2
    );
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

    let direct = median(udp_rtts(&client, echo, PROBES).await);
    let relayed = udp_rtts(&client, relay.local_addr(), PROBES).await;
    let fastest = relayed.iter().copied().min().expect("samples");
    let added = report("udp", direct, relayed);
    assert_added_delay(added, fastest);
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
    let echo = udp_echo().await;
    let relay =
        DelayRelay::udp(LOCALHOST, echo, Duration::from_millis(5)).await.expect("relay starts");
    let client = UdpSocket::bind(LOCALHOST).await.expect("bind client");
    let target = relay.local_addr();
    let received = async {
        let mut buf = [0u8; 64];
        let mut seen = Vec::new();
        while seen.len() < BURST as usize {
            match timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await {
                Ok(Ok((8, _))) => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&buf[..8]);
                    seen.push(u64::from_be_bytes(n));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        seen
    };
    let send = async {
        for i in 0..BURST {
            client.send_to(&i.to_be_bytes(), target).await.expect("send");
            if i % 50 == 49 {
                // Keep within the loopback socket buffers: this tests order,
                // not the kernel's drop policy.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let (seen, ()) = tokio::join!(received, send);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "datagrams reordered: {seen:?}");
    let stats: RelayStats = relay.stats();
    eprintln!("udp burst: {} of {BURST} echoed in order; relay {stats:?}", seen.len());
    assert_eq!(seen.len() as u64, BURST, "datagrams lost");
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

    let (_direct_stream, direct) = tcp_rtts(echo).await;
    let (mut stream, relayed) = tcp_rtts(relay.local_addr()).await;
    let fastest = relayed.iter().copied().min().expect("samples");
    let added = report("tcp", median(direct), relayed);
    assert_added_delay(added, fastest);

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
