//! Feeds arbitrary bytes to a running relay server over loopback TCP: as an
//! HTTP request, or (when the first byte is odd) after a valid WebSocket
//! upgrade, so both the HTTP parser and the WebSocket framing meet them.
//! A panic anywhere in the server aborts the process (libFuzzer's panic
//! hook), and every so often the server must still answer `/healthz`.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tether_relay::auth::{Authenticator, HmacSecret};
use tether_relay::{ServerConfig, SignalServer};

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// The server, on a runtime of its own that lives as long as the process.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let secret = HmacSecret::new(b"fuzzing-secret-0123456789abcdef".to_vec())
                    .expect("long enough");
                let mut config = ServerConfig::new(Authenticator::with_secret(secret));
                config.limits.register_timeout = Duration::from_millis(200);
                config.limits.close_timeout = Duration::from_millis(100);
                let server = SignalServer::bind(config).await.expect("bind loopback");
                sender.send(server.local_addr()).expect("the fuzzer waits");
                server.serve(std::future::pending()).await.expect("serve");
            });
        });
        receiver.recv().expect("the server starts")
    })
}

fn exchange(addr: SocketAddr, bytes: &[&[u8]]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    for chunk in bytes {
        let _ = stream.write_all(chunk);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fuzz_target!(|input: &[u8]| {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let addr = server();
    match input.split_first() {
        Some((first, rest)) if first % 2 == 1 => {
            exchange(addr, &[UPGRADE, rest]);
        }
        _ => {
            exchange(addr, &[input]);
        }
    }
    if RUNS.fetch_add(1, Ordering::Relaxed) % 64 == 0 {
        let answer = exchange(addr, &[b"GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n"]);
        assert!(answer.starts_with(b"HTTP/1.1 200"), "the server stopped answering");
    }
});
