//! Shared harness for the signaling integration tests: an embedded server
//! with short timeouts, token minting, raw WebSocket sockets, a TCP proxy
//! that can black-hole or hold connections, and bounded waits.
//!
//! One harness for both sides: tether-relay's tests (the server) use it as
//! `mod common`, and tether-signal's client tests include this same file by
//! path (`crates/signal/tests/*.rs`), so the two suites cannot drift apart.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_relay::auth::{Authenticator, HmacSecret, mint_token_for};
use tether_relay::{RunningServer, ServerConfig, SignalServer};
use tether_signal::protocol::PeerId;
use tether_signal::{ClientConfig, SignalClient, SignalEvent, SignalEvents};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for anything that should happen "promptly" on loopback.
pub const PROMPT: Duration = Duration::from_secs(5);

pub fn peer(name: &str) -> PeerId {
    PeerId::new(name).unwrap()
}

pub fn secret() -> HmacSecret {
    HmacSecret::new(b"integration-test-secret-0123456789".to_vec()).unwrap()
}

pub struct Harness {
    pub server: RunningServer,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Starts a server with test-friendly limits, adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Harness {
        let mut config = ServerConfig::new(Authenticator::with_secret(secret()));
        config.limits.max_frame_bytes = 4096;
        config.limits.hard_frame_bytes = 16 * 1024;
        config.limits.max_bad_frames = 5;
        config.limits.register_timeout = Duration::from_secs(2);
        config.limits.idle_timeout = Duration::from_secs(20);
        config.limits.ping_interval = Duration::from_secs(10);
        adjust(&mut config);
        let server = SignalServer::bind(config).await.unwrap().spawn();
        Harness { server }
    }

    pub fn url(&self) -> String {
        self.server.websocket_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn token(&self, name: &str) -> String {
        mint_token_for(&secret(), &peer(name), Duration::from_secs(600))
    }

    /// A client config with short, test-friendly timings.
    pub fn client_config(&self, name: &str, url: &str) -> ClientConfig {
        let mut config = ClientConfig::new(url, peer(name), self.token(name));
        config.connect_timeout = Duration::from_secs(3);
        config.ping_interval = Duration::from_millis(100);
        config.dead_after = Duration::from_millis(600);
        config.rebuild_head_start = Duration::from_millis(50);
        config.close_timeout = Duration::from_millis(500);
        config
    }

    /// A client connected directly to the server.
    pub async fn client(&self, name: &str) -> (SignalClient, SignalEvents) {
        let (client, mut events) =
            SignalClient::new(self.client_config(name, &self.url())).unwrap();
        client.connect_once().await.unwrap();
        match next_event(&mut events).await {
            SignalEvent::Connected(_) => {}
            other => panic!("expected Connected, got {other:?}"),
        }
        (client, events)
    }

    pub async fn raw(&self) -> RawSocket {
        RawSocket::connect(&self.url()).await
    }

    /// A raw socket registered as `name` (optionally in `room`).
    pub async fn raw_registered(&self, name: &str, room: Option<&str>) -> (RawSocket, Value) {
        let mut socket = self.raw().await;
        let mut register = serde_json::json!({
            "type": "register", "version": 1, "peer_id": name, "token": self.token(name),
        });
        if let Some(room) = room {
            register["room"] = Value::from(room);
        }
        socket.send_json(&register).await;
        let registered = socket.next_json().await;
        assert_eq!(registered["type"], "registered", "{registered}");
        (socket, registered)
    }

    /// Polls the server's metrics until `condition` holds, bounded by PROMPT.
    pub async fn wait_metrics(
        &self,
        what: &str,
        condition: impl Fn(&tether_relay::MetricsSnapshot) -> bool,
    ) {
        let deadline = Instant::now() + PROMPT;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        loop {
            if condition(&self.server.metrics()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.server.metrics()
            );
            tick.tick().await;
        }
    }
}

/// The next client event, or a test failure after PROMPT.
pub async fn next_event(events: &mut SignalEvents) -> SignalEvent {
    timeout(PROMPT, events.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("event stream ended")
}

/// A WebSocket spoken by hand, for protocol-level tests.
pub struct RawSocket {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawSocket {
    pub async fn connect(url: &str) -> RawSocket {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        RawSocket { socket }
    }

    /// Connects with `register` in the upgrade request's `tether-register` header; returns
    /// the socket and that header of the server's response, if any.
    pub async fn connect_registering(url: &str, register: &Value) -> (RawSocket, Option<String>) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        let value = register.to_string().parse().unwrap();
        request.headers_mut().insert(tether_signal::protocol::REGISTER_HEADER, value);
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        let answer = response
            .headers()
            .get(tether_signal::protocol::REGISTER_HEADER)
            .map(|value| value.to_str().unwrap().to_owned());
        (RawSocket { socket }, answer)
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.socket.send(Message::binary(bytes.to_vec())).await.unwrap();
    }

    /// The next TEXT frame as JSON (skipping pings), bounded by PROMPT.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = timeout(PROMPT, self.socket.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("socket ended")
                .expect("socket failed");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame; returns its code. Text frames
    /// before it are returned too.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            let next =
                timeout(PROMPT, self.socket.next()).await.expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Text(text))) => {
                    texts.push(serde_json::from_str(text.as_str()).unwrap())
                }
                Some(Ok(Message::Close(frame))) => {
                    return (texts, frame.map(|frame| u16::from(frame.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (texts, None),
            }
        }
    }
}

pub fn close_code(code: CloseCode) -> u16 {
    u16::from(code)
}

/// A minimal HTTP/1.1 GET; returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    timeout(PROMPT, stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// One proxied connection's controls.
struct ProxiedConnection {
    blackholed: Arc<AtomicBool>,
}

/// A TCP proxy in front of the server that can silently black-hole existing
/// connections (half-open link: bytes vanish, sockets stay open) and hold
/// new connections until released (a slow handshake).
pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<ProxiedConnection>>>,
    holds: Arc<Mutex<VecDeque<Hold>>>,
    accepted: watch::Receiver<usize>,
}

/// How the next accepted connection is held back.
enum Hold {
    /// Nothing is forwarded until the gate opens (a hung handshake).
    Everything(oneshot::Receiver<()>),
    /// The server's 101 response passes; everything after it from the
    /// server waits for the gate (e.g. `registered`, even when it came in the
    /// same chunk as the response).
    AfterHandshake(oneshot::Receiver<()>),
}

/// Releases a held connection when `release` is called (or when dropped).
pub struct Gate(Option<oneshot::Sender<()>>);

impl Gate {
    pub fn release(mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<ProxiedConnection>>> = Arc::default();
        let holds: Arc<Mutex<VecDeque<Hold>>> = Arc::default();
        let (accepted_tx, accepted) = watch::channel(0usize);
        let task_connections = Arc::clone(&connections);
        let task_holds = Arc::clone(&holds);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let blackholed = Arc::new(AtomicBool::new(false));
                task_connections
                    .lock()
                    .unwrap()
                    .push(ProxiedConnection { blackholed: Arc::clone(&blackholed) });
                let hold = task_holds.lock().unwrap().pop_front();
                accepted_tx.send_modify(|count| *count += 1);
                tokio::spawn(async move {
                    let mut downstream_gate = None;
                    match hold {
                        // A dropped gate (test over) also releases.
                        Some(Hold::Everything(gate)) => {
                            let _ = gate.await;
                        }
                        Some(Hold::AfterHandshake(gate)) => downstream_gate = Some(gate),
                        None => {}
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, Arc::clone(&blackholed), None));
                    tokio::spawn(pump(server_read, client_write, blackholed, downstream_gate));
                });
            }
        });
        Proxy { addr, connections, holds, accepted }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// From now on, every connection open so far silently drops all bytes
    /// in both directions; new connections are not affected.
    pub fn blackhole_existing(&self) {
        for connection in self.connections.lock().unwrap().iter() {
            connection.blackholed.store(true, Ordering::SeqCst);
        }
    }

    /// The next accepted connection waits for the returned gate.
    pub fn hold_next(&self) -> Gate {
        let (sender, receiver) = oneshot::channel();
        self.holds.lock().unwrap().push_back(Hold::Everything(receiver));
        Gate(Some(sender))
    }

    /// The next accepted connection completes its WebSocket handshake, but
    /// what the server sends after that waits for the returned gate.
    pub fn hold_next_after_handshake(&self) -> Gate {
        let (sender, receiver) = oneshot::channel();
        self.holds.lock().unwrap().push_back(Hold::AfterHandshake(receiver));
        Gate(Some(sender))
    }

    /// Waits until `count` connections have been accepted (bounded).
    pub async fn wait_accepted(&self, count: usize) {
        let mut accepted = self.accepted.clone();
        timeout(PROMPT, accepted.wait_for(|accepted| *accepted >= count))
            .await
            .expect("timed out waiting for a proxied connection")
            .unwrap();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackholed: Arc<AtomicBool>,
    gate_after_head: Option<oneshot::Receiver<()>>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    if let Some(gate) = gate_after_head {
        // Forward the HTTP response head, keep what follows it until the gate opens.
        let mut head = Vec::new();
        let end = loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            head.extend_from_slice(&buffer[..read]);
            if let Some(at) = head.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
        };
        if to.write_all(&head[..end]).await.is_err() {
            return;
        }
        let _ = gate.await;
        if to.write_all(&head[end..]).await.is_err() {
            return;
        }
    }
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if blackholed.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    if !blackholed.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
    }
}
