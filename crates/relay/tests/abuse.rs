//! The abuse suite: what a hostile client does to the server over real
//! loopback sockets, each attack bounded, each asserting that the attacker
//! is the one limited and that legitimate peers keep registering and
//! relaying.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::{Harness, PROMPT, RawSocket, peer, secret};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tether_relay::auth::{Authenticator, TokenClaims};
use tether_relay::{RateLimit, ServerConfig, SignalServer};
use tether_signal::protocol::{ErrorCode, RoomId, close_code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

fn register(name: &str, token: &str) -> Value {
    json!({"type": "register", "version": 1, "peer_id": name, "token": token})
}

/// Registers `name` with `token` (and `room`) on a fresh raw socket to `url`.
async fn registered_with(url: &str, name: &str, token: &str, room: Option<&str>) -> RawSocket {
    let mut socket = RawSocket::connect(url).await;
    let mut message = register(name, token);
    if let Some(room) = room {
        message["room"] = json!(room);
    }
    socket.send_json(&message).await;
    let answer = socket.next_json().await;
    assert_eq!(answer["type"], "registered", "{answer}");
    socket
}

/// Asserts that two fresh peers can still register and relay.
async fn legitimate_pair_still_relays(url: &str, tag: &str) {
    let token = |name: &str| {
        TokenClaims::new(peer(name), SystemTime::now() + Duration::from_secs(600)).mint(&secret())
    };
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    let mut alice = registered_with(url, &a, &token(&a), None).await;
    let mut bob = registered_with(url, &b, &token(&b), None).await;
    alice.send_json(&json!({"type": "bye", "to": b})).await;
    assert_eq!(bob.next_json().await, json!({"type": "bye", "from": a}));
}

// ---------------------------------------------------------------------------
// 1. Descriptor exhaustion by unregistered sockets
// ---------------------------------------------------------------------------
/// Attackers need source addresses of their own (127.0.0.2 and up), which
/// Linux loopback has, and the child server is read through /proc.
#[cfg(target_os = "linux")]
mod unregistered {
    use super::*;

    /// Environment variable that turns `child_server_at_1024_descriptors` into
    /// the server process of `a_server_at_1024_descriptors_serves_through_1100_hostile_sockets`.
    const CHILD_ENV: &str = "TETHER_RELAY_ABUSE_CHILD_SERVER";

    /// Not a test on its own: run by the tests below as a child process, it
    /// lowers its own open-file limit to 1 024, serves, prints its address and
    /// stops when its stdin closes. In the `starved` mode it then lowers the
    /// limit to 128 behind the server's back (so accepting runs out of
    /// descriptors) and logs warnings to stderr.
    #[test]
    fn child_server_at_1024_descriptors() {
        let Some(mode) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let starved = mode == "starved";
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        rlimit::setrlimit(rlimit::Resource::NOFILE, 1024.min(hard), hard).unwrap();
        if starved {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config = ServerConfig::new(Authenticator::with_secret(secret()));
            config.limits.register_timeout = Duration::from_secs(if starved { 1 } else { 10 });
            let server = SignalServer::bind(config).await.unwrap();
            if starved {
                rlimit::setrlimit(rlimit::Resource::NOFILE, 128, hard).unwrap();
            }
            println!("TETHER_CHILD_ADDR {}", server.local_addr());
            println!("TETHER_CHILD_UNREGISTERED_CAP {}", server.limits().max_unregistered);
            let stdin_closed = async {
                let mut stdin = tokio::io::stdin();
                let mut buffer = [0u8; 64];
                while !matches!(stdin.read(&mut buffer).await, Ok(0) | Err(_)) {}
            };
            server.serve(stdin_closed).await.unwrap();
        });
    }

    /// One hostile socket, reopened whenever the server closes it: it connects
    /// from `source` and either starts a WebSocket upgrade it never follows with
    /// a `register`, or sends nothing at all.
    async fn churn_hostile_socket(
        source: IpAddr,
        server: SocketAddr,
        upgrade: bool,
        stop: Arc<AtomicBool>,
        opened: Arc<AtomicU64>,
    ) {
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        while !stop.load(Ordering::Relaxed) {
            let socket = TcpSocket::new_v4().unwrap();
            if socket.bind(SocketAddr::new(source, 0)).is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let Ok(Ok(mut stream)) = timeout(PROMPT, socket.connect(server)).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            if upgrade && stream.write_all(request.as_bytes()).await.is_err() {
                continue;
            }
            // Hold it until the server closes it (or the attack ends).
            let mut sink = [0u8; 1024];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let read = timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
                if let Ok(Ok(0) | Err(_)) = read {
                    break;
                }
            }
            // Pace reconnects a little: the attacker shares the test's CPU.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A running attack: its stop flag, its tasks, and how many hostile
    /// connections it has opened so far.
    struct Attack {
        stop: Arc<AtomicBool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        opened: Arc<AtomicU64>,
    }

    impl Attack {
        async fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            for task in self.tasks {
                let _ = task.await;
            }
        }
    }

    /// Starts `count` churning hostile sockets spread over `sources`.
    fn start_attack(server: SocketAddr, sources: &[IpAddr], count: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let tasks = (0..count)
            .map(|index| {
                let source = sources[index % sources.len()];
                let upgrade = index % 2 == 0;
                let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
                tokio::spawn(churn_hostile_socket(source, server, upgrade, stop, opened))
            })
            .collect();
        Attack { stop, tasks, opened }
    }

    /// A process's resident set size in KiB (Linux), for the bounded-memory check.
    fn resident_kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Registers a fresh legitimate peer `tries` times; each must succeed
    /// within PROMPT.
    async fn legitimate_registrations(url: &str, tries: usize) {
        for attempt in 0..tries {
            let name = format!("legit-{attempt}");
            let token = TokenClaims::new(peer(&name), SystemTime::now() + Duration::from_secs(600))
                .mint(&secret());
            let registered = timeout(PROMPT, registered_with(url, &name, &token, None)).await;
            assert!(
                registered.is_ok(),
                "legitimate registration {attempt} did not complete within {PROMPT:?}"
            );
        }
    }

    /// Starts the child server in `mode`; returns it, its address and its
    /// unregistered cap.
    fn spawn_child_server(mode: &str) -> (std::process::Child, SocketAddr, usize) {
        use std::io::BufRead;
        // This process holds the attacker's sockets.
        let _ = tether_relay::raise_open_file_limit();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "unregistered::child_server_at_1024_descriptors",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        let mut cap = None;
        while addr.is_none() || cap.is_none() {
            let line = lines.next().expect("child server exited before announcing itself").unwrap();
            // The test harness may print its own words before ours on a line.
            if let Some((_, text)) = line.split_once("TETHER_CHILD_ADDR ") {
                addr = Some(text.trim().parse::<SocketAddr>().unwrap());
            }
            if let Some((_, text)) = line.split_once("TETHER_CHILD_UNREGISTERED_CAP ") {
                cap = Some(text.parse::<usize>().unwrap());
            }
        }
        (child, addr.unwrap(), cap.unwrap())
    }

    /// Stops the child server (its stdin closes) and waits for it.
    fn stop_child_server(mut child: std::process::Child) {
        drop(child.stdin.take());
        let _ = child.wait();
    }

    #[test]
    fn a_server_at_1024_descriptors_serves_through_1100_hostile_sockets() {
        let (child, addr, cap) = spawn_child_server("1024");
        let child_pid = child.id();
        assert!(cap < 1024, "the unregistered cap fits the descriptor limit: {cap}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(async {
            // 20 sources, 55 sockets each: under the per-source cap, so the
            // global cap (and its eviction of the oldest) is what holds.
            let sources: Vec<IpAddr> = (2..22).map(|last| IpAddr::from([127, 0, 0, last])).collect();
            let rss_before = resident_kib(child_pid);
            let attack = start_attack(addr, &sources, 1100);
            let url = format!("ws://{addr}/ws");
            // Let the attack fill the server first (bounded).
            let deadline = Instant::now() + PROMPT;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let metrics = metrics_page(addr).await;
                if metric(
                    &metrics,
                    "tether_signal_connections_refused_total{reason=\"unregistered_evicted\"}",
                ) > 0
                    || Instant::now() >= deadline
                {
                    break;
                }
            }
            eprintln!("attack under way");
            legitimate_registrations(&url, 7).await;
            eprintln!("7 registrations done");
            timeout(PROMPT, legitimate_pair_still_relays(&url, "during"))
                .await
                .expect("pair during the attack");
            // Keep churning until 20 000 hostile connections were opened,
            // sampling the server's memory (bounded by a deadline).
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut rss_peak = rss_before.unwrap_or(0);
            while attack.opened.load(Ordering::Relaxed) < 20_000 && Instant::now() < deadline {
                tick.tick().await;
                rss_peak = rss_peak.max(resident_kib(child_pid).unwrap_or(0));
            }
            let opened = attack.opened.load(Ordering::Relaxed);
            let metrics = metrics_page(addr).await;
            attack.stop().await;
            eprintln!(
                "{opened} hostile connections; server RSS {rss_before:?} KiB before, {rss_peak} KiB \
                 at peak; server counters:\n{}",
                metrics
                    .lines()
                    .filter(|line| line.starts_with("tether_signal_connections"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert!(opened >= 20_000, "the attack opened only {opened} connections");
            if rss_before.is_some() {
                assert!(rss_peak < 256 * 1024, "server RSS grew to {rss_peak} KiB");
            }
            timeout(PROMPT, legitimate_pair_still_relays(&url, "after"))
                .await
                .expect("pair after the attack");
            metrics
        });
        stop_child_server(child);
        assert!(
            metric(
                &result,
                "tether_signal_connections_refused_total{reason=\"unregistered_evicted\"}"
            ) > 0,
            "the attack reached the unregistered cap:\n{result}"
        );
    }

    #[test]
    fn running_out_of_descriptors_is_logged_rarely_and_recovered_from() {
        use std::io::BufRead;
        let (mut child, addr, _) = spawn_child_server("starved");
        let warnings = Arc::new(AtomicU64::new(0));
        let stderr = child.stderr.take().unwrap();
        let counted = Arc::clone(&warnings);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("failures=") {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let metrics = runtime.block_on(async {
            let sources: Vec<IpAddr> = (2..6).map(|last| IpAddr::from([127, 0, 0, last])).collect();
            let attack = start_attack(addr, &sources, 240);
            // The server (limit 128 descriptors) runs out: wait for its warning.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while warnings.load(Ordering::Relaxed) == 0 {
                assert!(Instant::now() < deadline, "the server never ran out of descriptors");
                tick.tick().await;
            }
            // Keep it starved a while longer (300 more hostile connections).
            let more = attack.opened.load(Ordering::Relaxed) + 300;
            let deadline = Instant::now() + Duration::from_secs(8);
            while attack.opened.load(Ordering::Relaxed) < more && Instant::now() < deadline {
                tick.tick().await;
            }
            attack.stop().await;
            // Once the attackers are gone the server recovers on its own.
            let url = format!("ws://{addr}/ws");
            timeout(PROMPT * 3, legitimate_pair_still_relays(&url, "recovered"))
                .await
                .expect("the server did not recover");
            metrics_page(addr).await
        });
        let elapsed = started.elapsed();
        stop_child_server(child);
        let _ = reader.join();
        let failures =
            metric(&metrics, "tether_signal_connections_refused_total{reason=\"accept_error\"}");
        let warned = warnings.load(Ordering::Relaxed);
        // One warning per 10 s at most (plus the first), however many failures.
        let allowed = 1 + elapsed.as_secs() / 10;
        eprintln!("{failures} failed accepts, {warned} warnings in {elapsed:?}");
        assert!(failures >= 10, "only {failures} failed accepts: the server was not starved");
        assert!(failures > warned, "{failures} failed accepts, {warned} warnings");
        assert!(
            warned <= allowed,
            "{warned} warnings in {elapsed:?} for {failures} failed accepts"
        );
    }

    /// The server's `/metrics` page, retried while the server is too busy to
    /// answer (bounded by PROMPT).
    async fn metrics_page(addr: SocketAddr) -> String {
        let deadline = Instant::now() + PROMPT;
        loop {
            let fetched = timeout(PROMPT, async {
                let mut stream = TcpStream::connect(addr).await?;
                let request =
                    format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                stream.write_all(request.as_bytes()).await?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response).await?;
                std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
            })
            .await;
            if let Ok(Ok(response)) = fetched
                && response.starts_with("HTTP/1.1 200")
                && let Some((_, page)) = response.split_once("\r\n\r\n")
            {
                return page.to_owned();
            }
            assert!(Instant::now() < deadline, "/metrics did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of the sample `series` in a Prometheus text page.
    fn metric(page: &str, series: &str) -> u64 {
        page.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_source_cannot_hold_more_than_its_share_of_unregistered_sockets() {
        let harness = Harness::start_with(|config| {
            config.limits.max_unregistered_per_source = 32;
            config.limits.register_timeout = Duration::from_secs(10);
        })
        .await;
        let attacker = IpAddr::from([127, 0, 0, 2]);
        let attack = start_attack(harness.addr(), &[attacker], 300);
        harness
            .wait_metrics("the per-source cap to refuse the attacker", |metrics| {
                metrics.refused_for("unregistered_per_source") > 100
            })
            .await;
        // The legitimate client comes from 127.0.0.1.
        legitimate_registrations(&harness.url(), 7).await;
        legitimate_pair_still_relays(&harness.url(), "during").await;
        attack.stop().await;
        assert_eq!(harness.server.metrics().refused_for("unregistered_evicted"), 0);
    }
}

// ---------------------------------------------------------------------------
// 2. Floods: the sender is limited, not its victim
// ---------------------------------------------------------------------------

/// Reads a socket's frames slowly (one every 5 ms) until it closes;
/// returns the close code.
async fn read_slowly(socket: RawSocket) -> Option<u16> {
    let mut stream = socket.socket;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        match stream.next().await {
            Some(Ok(Message::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_closes_the_flooder_not_its_victim() {
    let harness = Harness::start_with(|config| {
        config.limits.max_frame_bytes = 64 * 1024;
        config.limits.hard_frame_bytes = 64 * 1024;
        config.limits.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let (victim, _) = harness.raw_registered("victim", None).await;
    let victim_task = tokio::spawn(read_slowly(victim));
    let (flooder, _) = harness.raw_registered("flooder", None).await;
    let (mut out, mut input) = flooder.socket.split();
    let offer = json!({"type": "offer", "to": "victim", "sdp": "x".repeat(30 * 1024)}).to_string();
    let closed = tokio::spawn(async move {
        let mut rate_limited = 0;
        while let Some(Ok(message)) = input.next().await {
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["code"] == "rate_limited" {
                        rate_limited += 1;
                    }
                }
                Message::Close(frame) => {
                    return (rate_limited, frame.map(|frame| u16::from(frame.code)));
                }
                _ => {}
            }
        }
        (rate_limited, None)
    });
    // Unthrottled, 3 000 offers of 30 KiB overflow any reader of 200 frames/s.
    for _ in 0..3_000 {
        if out.send(Message::text(offer.clone())).await.is_err() {
            break;
        }
    }
    let (rate_limited, code) = timeout(PROMPT, closed).await.unwrap().unwrap();
    assert_eq!(code, Some(close_code::RATE_LIMITED));
    assert!(rate_limited > 0, "the flooder was told before it was closed");
    harness.wait_metrics("a rate_limited end", |m| m.session_ends_for("rate_limited") == 1).await;
    assert_eq!(harness.server.metrics().session_ends_for("slow_consumer"), 0);
    // The victim is still registered and reachable.
    let (mut carol, _) = harness.raw_registered("carol", None).await;
    carol.send_json(&json!({"type": "bye", "to": "victim", "id": 1})).await;
    harness
        .wait_metrics("carol's bye to reach the victim", |m| {
            m.relayed_by_type.iter().any(|(t, n)| *t == "bye" && *n == 1)
        })
        .await;
    assert!(!victim_task.is_finished(), "the victim's session is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_reads_late_still_sees_4004() {
    let harness = Harness::start_with(|config| {
        config.limits.outbound_queue = 4;
        config.limits.relay_rate = RateLimit::new(100_000, 100_000);
        config.limits.max_frame_bytes = 64 * 1024;
        config.limits.hard_frame_bytes = 64 * 1024;
    })
    .await;
    let (mut stuck, _) = harness.raw_registered("stuck", None).await;
    let (alice, _) = harness.raw_registered("alice", None).await;
    let (mut out, _input) = alice.socket.split();
    let offer = json!({"type": "offer", "to": "stuck", "sdp": "x".repeat(60 * 1024)}).to_string();
    let mut dropped = false;
    for _ in 0..2_000 {
        out.send(Message::text(offer.clone())).await.unwrap();
        if harness.server.metrics().rejections_for(ErrorCode::PeerUnavailable) > 0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stuck peer was never dropped");
    // Only now does it read: everything the socket held, then the close.
    let (_, code) = stuck.until_close().await;
    assert_eq!(code, Some(close_code::SLOW_CONSUMER));
}

#[tokio::test]
async fn sends_to_unknown_peers_and_ping_floods_are_rate_limited() {
    let harness = Harness::start_with(|config| {
        config.limits.relay_rate = RateLimit::new(10, 20);
        config.limits.ping_rate = RateLimit::new(2, 5);
        config.limits.max_rate_violations = 5;
    })
    .await;
    for (name, message) in [
        ("prober", json!({"type": "bye", "to": "nobody"})),
        ("pinger", json!({"type": "ping", "nonce": "n"})),
    ] {
        let (mut socket, _) = harness.raw_registered(name, None).await;
        for _ in 0..200 {
            socket.send_json(&message).await;
        }
        let (frames, code) = socket.until_close().await;
        assert_eq!(code, Some(close_code::RATE_LIMITED), "{name}: {frames:?}");
        assert!(frames.iter().any(|frame| frame["code"] == "rate_limited"), "{name}");
    }
    // WebSocket pings count as pings too.
    let (mut socket, _) = harness.raw_registered("ws-pinger", None).await;
    for _ in 0..200 {
        socket.socket.send(Message::Ping(vec![1].into())).await.unwrap();
    }
    let (_, code) = socket.until_close().await;
    assert_eq!(code, Some(close_code::RATE_LIMITED));
    harness.wait_metrics("3 rate_limited ends", |m| m.session_ends_for("rate_limited") == 3).await;
    legitimate_pair_still_relays(&harness.url(), "after").await;
}

// ---------------------------------------------------------------------------
// 3. Rooms are a boundary
// ---------------------------------------------------------------------------

#[tokio::test]
async fn relays_stay_inside_the_room_and_reveal_nobody_outside_it() {
    let harness = Harness::start().await;
    let (mut alice, _) = harness.raw_registered("alice", Some("x")).await;
    let (mut bob, _) = harness.raw_registered("bob", Some("y")).await;
    alice.send_json(&json!({"type": "bye", "to": "bob", "id": 1})).await;
    let online_elsewhere = alice.next_json().await;
    alice.send_json(&json!({"type": "bye", "to": "nobody", "id": 2})).await;
    let offline = alice.next_json().await;
    assert_eq!(online_elsewhere["code"], "peer_unknown");
    assert_eq!(offline["code"], "peer_unknown");
    assert_eq!(
        online_elsewhere["message"].as_str().unwrap().replace("bob", "X"),
        offline["message"].as_str().unwrap().replace("nobody", "X"),
        "the answers differ only in the name asked about"
    );
    // A room member does reach alice; bob got nothing from her.
    let (mut carol, _) = harness.raw_registered("carol", Some("x")).await;
    assert_eq!(alice.next_json().await, json!({"type": "peer_joined", "peer_id": "carol"}));
    carol.send_json(&json!({"type": "bye", "to": "alice"})).await;
    assert_eq!(alice.next_json().await, json!({"type": "bye", "from": "carol"}));
    bob.send_json(&json!({"type": "ping", "nonce": "only-this"})).await;
    assert_eq!(bob.next_json().await, json!({"type": "pong", "nonce": "only-this"}));
}

#[tokio::test]
async fn a_room_bound_token_only_registers_in_its_room() {
    let harness = Harness::start().await;
    let expires = SystemTime::now() + Duration::from_secs(600);
    let token =
        TokenClaims::new(peer("mallory"), expires).room(RoomId::new("y").unwrap()).mint(&secret());
    let mut socket = harness.raw().await;
    let mut message = register("mallory", &token);
    message["room"] = json!("x");
    socket.send_json(&message).await;
    let (frames, code) = socket.until_close().await;
    assert_eq!(code, Some(close_code::AUTH_FAILED));
    assert_eq!(frames[0]["message"], "token issued for another room");
    // Without a room it is refused too; in its own room it registers.
    let mut socket = harness.raw().await;
    socket.send_json(&register("mallory", &token)).await;
    assert_eq!(socket.until_close().await.1, Some(close_code::AUTH_FAILED));
    registered_with(&harness.url(), "mallory", &token, Some("y")).await;
}

#[tokio::test]
async fn a_strict_server_admits_rooms_only_with_room_bound_tokens() {
    let harness = Harness::start_with(|config| {
        config.auth = Authenticator::with_secret(secret()).require_room_claims();
    })
    .await;
    // An unscoped token cannot watch a room's presence...
    let mut socket = harness.raw().await;
    let mut message = register("eve", &harness.token("eve"));
    message["room"] = json!("x");
    socket.send_json(&message).await;
    let (frames, code) = socket.until_close().await;
    assert_eq!(code, Some(close_code::AUTH_FAILED));
    assert_eq!(frames[0]["message"], "token grants no room");
    // ...but still registers outside rooms; a room-bound one gets in.
    registered_with(&harness.url(), "eve", &harness.token("eve"), None).await;
    let expires = SystemTime::now() + Duration::from_secs(600);
    let bound =
        TokenClaims::new(peer("ann"), expires).room(RoomId::new("x").unwrap()).mint(&secret());
    registered_with(&harness.url(), "ann", &bound, Some("x")).await;
}

// ---------------------------------------------------------------------------
// 4. Tokens: expiry, demo tokens, freshness, generation pinning
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_session_is_closed_when_its_token_expires() {
    let harness = Harness::start().await;
    // Unix-second expiry: between one and two seconds from now.
    let expires = SystemTime::now() + Duration::from_secs(2);
    let token = TokenClaims::new(peer("alice"), expires).mint(&secret());
    let mut alice = registered_with(&harness.url(), "alice", &token, None).await;
    let (frames, code) = alice.until_close().await;
    assert_eq!(code, Some(close_code::TOKEN_REFRESH));
    assert_eq!(frames.last().unwrap()["code"], "token_expired");
    harness.wait_metrics("a token_expired end", |m| m.session_ends_for("token_expired") == 1).await;
}

#[tokio::test]
async fn a_token_expiring_beyond_the_clock_s_range_registers_without_a_panic() {
    let harness = Harness::start().await;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::Mac as _;
    // Signed by hand: `exp` is u64::MAX, beyond SystemTime and Instant.
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"alice","exp":{}}}"#, u64::MAX));
    let signed = format!("v1.{claims}");
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(b"integration-test-secret-0123456789").unwrap();
    mac.update(signed.as_bytes());
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    let mut alice = registered_with(&harness.url(), "alice", &token, None).await;
    alice.send_json(&json!({"type": "ping", "nonce": "still-here"})).await;
    assert_eq!(alice.next_json().await, json!({"type": "pong", "nonce": "still-here"}));
}

#[tokio::test]
async fn demo_tokens_are_refused_unless_the_server_is_in_demo_mode() {
    let expires = SystemTime::now() + Duration::from_secs(600);
    let demo = TokenClaims::new(peer("alice"), expires).demo().mint(&secret());
    let production = Harness::start().await;
    let mut socket = production.raw().await;
    socket.send_json(&register("alice", &demo)).await;
    let (frames, code) = socket.until_close().await;
    assert_eq!(code, Some(close_code::AUTH_FAILED));
    assert_eq!(frames[0]["message"], "demo token refused by a server not in demo mode");

    let demo_server = Harness::start_with(|config| {
        config.auth = Authenticator::with_secret(secret()).accept_demo_tokens();
    })
    .await;
    registered_with(&demo_server.url(), "alice", &demo, None).await;
}

#[tokio::test]
async fn an_older_token_cannot_replace_a_fresher_registration() {
    let harness = Harness::start().await;
    let now = SystemTime::now();
    let fresh = TokenClaims::new(peer("alice"), now + Duration::from_secs(600)).mint(&secret());
    let stolen = TokenClaims::new(peer("alice"), now + Duration::from_secs(300)).mint(&secret());
    let mut owner = registered_with(&harness.url(), "alice", &fresh, None).await;
    let mut thief = harness.raw().await;
    thief.send_json(&register("alice", &stolen)).await;
    let (frames, code) = thief.until_close().await;
    assert_eq!(code, Some(close_code::TOKEN_REFRESH));
    assert_eq!(frames[0]["code"], "token_outdated");
    // The owner is still the one registered.
    let (mut bob, _) = harness.raw_registered("bob", None).await;
    bob.send_json(&json!({"type": "bye", "to": "alice"})).await;
    assert_eq!(owner.next_json().await, json!({"type": "bye", "from": "bob"}));
}

#[tokio::test]
async fn a_pinned_generation_cannot_lock_the_owner_out() {
    let harness = Harness::start_with(|config| {
        config.limits.generation_fence = Duration::from_millis(300);
    })
    .await;
    let token = harness.token("alice");
    let attempt = |generation: u64| {
        json!({
            "type": "register", "version": 1, "peer_id": "alice", "token": token,
            "session": "phone-1", "generation": generation,
        })
    };
    let mut pinner = harness.raw().await;
    pinner.send_json(&attempt(u64::MAX)).await;
    assert_eq!(pinner.next_json().await["type"], "registered");
    // The owner's reconnects (generation 2, 3, ...) get in once the fence
    // has passed, bounded by PROMPT.
    let deadline = Instant::now() + PROMPT;
    let mut generation = 2;
    let answer = loop {
        let mut owner = harness.raw().await;
        owner.send_json(&attempt(generation)).await;
        let answer = owner.next_json().await;
        if answer["type"] == "registered" {
            break answer;
        }
        assert_eq!(answer["code"], "stale_generation", "{answer}");
        assert!(Instant::now() < deadline, "the owner stayed locked out");
        generation += 1;
        // Back off like a reconnecting client.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["replaced"], true);
    let (frames, code) = pinner.until_close().await;
    assert_eq!(frames[0]["code"], "replaced");
    assert_eq!(code, Some(close_code::REPLACED));
}

// ---------------------------------------------------------------------------
// 5. RFC 6455 violations and error ids
// ---------------------------------------------------------------------------

/// A WebSocket spoken byte by byte, for frames no library would send.
struct WireSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl WireSocket {
    async fn connect(addr: SocketAddr) -> WireSocket {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut socket = WireSocket { stream, buffer: Vec::new() };
        let head = loop {
            if let Some(end) = socket.buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&socket.buffer[..end]).into_owned();
                socket.buffer.drain(..end + 4);
                break head;
            }
            socket.fill().await.expect("handshake response");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        socket
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        let read =
            timeout(PROMPT, self.stream.read(&mut chunk)).await.expect("server silent").ok()?;
        if read == 0 {
            return None;
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Some(())
    }

    /// Sends one frame with the given first byte (FIN, RSV, opcode),
    /// masked unless `masked` is false.
    async fn send_frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=65535 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [1u8, 2, 3, 4];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Reads server frames until the close frame: the text frames before it
    /// and the close code (`None`: the connection ended without one).
    async fn until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            while self.buffer.len() < 2 {
                if self.fill().await.is_none() {
                    return (texts, None);
                }
            }
            let opcode = self.buffer[0] & 0x0f;
            let (len, header) = match self.buffer[1] & 0x7f {
                126 if self.buffer.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])), 4)
                }
                126 => {
                    if self.fill().await.is_none() {
                        return (texts, None);
                    }
                    continue;
                }
                127 => panic!("the server sent a huge frame"),
                len => (usize::from(len), 2),
            };
            while self.buffer.len() < header + len {
                if self.fill().await.is_none() {
                    return (texts, None);
                }
            }
            let payload: Vec<u8> = self.buffer.drain(..header + len).skip(header).collect();
            match opcode {
                0x1 => texts.push(serde_json::from_slice(&payload).unwrap()),
                0x8 => {
                    return (
                        texts,
                        payload.get(..2).map(|code| u16::from_be_bytes([code[0], code[1]])),
                    );
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_with_their_rfc6455_code_and_an_error() {
    let harness = Harness::start().await;
    let text = br#"{"type":"ping"}"#;
    let cases: [(&str, u8, &[u8], bool, u16); 5] = [
        ("reserved bit", 0x80 | 0x40 | 0x1, text, true, close_code::PROTOCOL_ERROR),
        ("unmasked frame", 0x81, text, false, close_code::PROTOCOL_ERROR),
        ("oversized control frame", 0x89, &[0u8; 200], true, close_code::PROTOCOL_ERROR),
        ("orphan continuation", 0x80, text, true, close_code::PROTOCOL_ERROR),
        ("invalid utf-8", 0x81, &[b'"', 0xff, 0xfe, b'"'], true, close_code::INVALID_PAYLOAD),
    ];
    for (what, first, payload, masked, expected) in cases {
        let mut socket = WireSocket::connect(harness.addr()).await;
        socket.send_frame(first, payload, masked).await;
        let (frames, code) = socket.until_close().await;
        assert_eq!(code, Some(expected), "{what}: {frames:?}");
        assert_eq!(
            frames.last().map(|frame| frame["code"].clone()),
            Some(json!("protocol_error")),
            "{what}"
        );
    }
    harness
        .wait_metrics("5 protocol_error ends", |m| m.session_ends_for("protocol_error") == 5)
        .await;
    legitimate_pair_still_relays(&harness.url(), "after").await;
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_gets_its_1009_before_the_socket_closes() {
    let harness = Harness::start().await; // hard cap 16 KiB
    let mut socket = WireSocket::connect(harness.addr()).await;
    // A 1 MiB text frame: the server refuses it at the header while the
    // rest of it is still arriving.
    let payload = vec![b' '; 1024 * 1024];
    let write = socket.send_frame(0x81, &payload, true);
    timeout(PROMPT, write).await.expect("the server kept reading");
    let (frames, code) = socket.until_close().await;
    assert_eq!(code, Some(close_code::MESSAGE_TOO_BIG), "{frames:?}");
    assert_eq!(frames.last().unwrap()["code"], "frame_too_large");
}

#[tokio::test]
async fn errors_about_a_message_echo_its_id() {
    let harness = Harness::start().await;
    let (mut alice, _) = harness.raw_registered("alice", None).await;
    for (message, code) in [
        (json!({"type": "offer", "to": "bob", "id": 7}), "invalid_message"),
        (json!({"type": "offer", "to": "no spaces", "sdp": "v=0", "id": 8}), "invalid_peer_id"),
        (json!({"type": "nonsense", "id": 9}), "unknown_type"),
    ] {
        let id = message["id"].clone();
        alice.send_json(&message).await;
        let error = alice.next_json().await;
        assert_eq!(error["code"], code, "{error}");
        assert_eq!(error["id"], id, "{error}");
    }
    assert_eq!(harness.server.metrics().rejections_for(ErrorCode::InvalidMessage), 1);
}

// ---------------------------------------------------------------------------
// 6. Origin allowlist
// ---------------------------------------------------------------------------

async fn upgrade_status(addr: SocketAddr, origin: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let origin = origin.map(|origin| format!("Origin: {origin}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 12];
    timeout(PROMPT, stream.read_exact(&mut head)).await.unwrap().unwrap();
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn upgrades_from_origins_outside_the_allowlist_are_refused() {
    let harness = Harness::start_with(|config| {
        config.allowed_origins = Some(vec!["https://app.example".into()]);
    })
    .await;
    assert_eq!(upgrade_status(harness.addr(), Some("https://evil.example")).await, "HTTP/1.1 403");
    assert_eq!(upgrade_status(harness.addr(), Some("https://app.example")).await, "HTTP/1.1 101");
    assert_eq!(upgrade_status(harness.addr(), None).await, "HTTP/1.1 101", "non-browser clients");
    assert_eq!(harness.server.metrics().refused_for("origin"), 1);
}
