//! `tether serve` terminating TLS itself: `wss://` sessions and HTTPS for
//! every route, certificates from PEM files, and clear errors for bad ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/test_ca.rs"]
mod test_ca;

use common::{Harness, next_event, peer};
use test_ca::TestCa;
use tether_relay::{RelayError, ServerTls};
use tether_signal::protocol::RelayPayload;
use tether_signal::{SignalClient, SignalEvent, TlsTrust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn tls_harness(ca: &TestCa) -> Harness {
    let cert = ca.server_cert(&["localhost", "127.0.0.1"]);
    let tls = ServerTls::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes(), "cert", "key")
        .unwrap();
    Harness::start_with(|config| config.tls = Some(tls)).await
}

/// `GET path` over HTTPS, trusting `ca`; returns status and body.
async fn https_get(harness: &Harness, ca: &TestCa, path: &str) -> (u16, String) {
    let trust = TlsTrust::private_only().with_ca_pem(ca.pem().as_bytes()).unwrap();
    let tcp = TcpStream::connect(harness.addr()).await.unwrap();
    let mut tls = trust.connect(tcp, "localhost").await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS close_notify or a plain EOF both end the response here.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an http response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[tokio::test]
async fn wss_sessions_register_and_relay() {
    let ca = TestCa::new();
    let harness = tls_harness(&ca).await;
    let url = harness.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");

    let trust = TlsTrust::private_only().with_ca_pem(ca.pem().as_bytes()).unwrap();
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let mut config = harness.client_config(name, &url);
        config.tls = trust.clone();
        let (client, mut events) = SignalClient::new(config).unwrap();
        let connected = client.connect_once().await.unwrap();
        assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
        clients.push((client, events));
    }
    clients[0].0.send(&peer("bob"), RelayPayload::IceRestart).unwrap();
    match next_event(&mut clients[1].1).await {
        SignalEvent::Relay { from, payload } => {
            assert_eq!((from, payload), (peer("alice"), RelayPayload::IceRestart));
        }
        other => panic!("expected alice's relay, got {other:?}"),
    }
}

#[tokio::test]
async fn health_and_metrics_are_served_over_https() {
    let ca = TestCa::new();
    let harness = tls_harness(&ca).await;
    assert_eq!(https_get(&harness, &ca, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = https_get(&harness, &ca, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("tether_signal_"), "{body}");
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_no_answer() {
    let ca = TestCa::new();
    let harness = tls_harness(&ca).await;
    let mut tcp = TcpStream::connect(harness.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    assert!(
        !String::from_utf8_lossy(&response).contains("ok"),
        "a plain request must not be served on a tls port"
    );
    // And the server still serves TLS clients afterwards.
    assert_eq!(https_get(&harness, &ca, "/healthz").await.0, 200);
}

#[test]
fn unusable_certificates_and_keys_are_refused_with_a_reason() {
    let ca = TestCa::new();
    let cert = ca.server_cert(&["localhost"]);
    let other = ca.server_cert(&["localhost"]);
    let refused = |result: Result<ServerTls, RelayError>, needle: &str| {
        let error = result.unwrap_err();
        assert!(matches!(error, RelayError::Tls(_)), "{error}");
        assert!(error.to_string().contains(needle), "expected {needle:?} in {error}");
    };
    refused(
        ServerTls::from_pem(cert.cert_pem.as_bytes(), other.key_pem.as_bytes(), "c.pem", "k.pem"),
        "do not fit together",
    );
    refused(
        ServerTls::from_pem(b"", cert.key_pem.as_bytes(), "c.pem", "k.pem"),
        "no certificate in c.pem",
    );
    refused(
        ServerTls::from_pem(cert.cert_pem.as_bytes(), b"", "c.pem", "k.pem"),
        "no usable private key in k.pem",
    );
    refused(
        ServerTls::from_pem_files("/nonexistent/c.pem", "/nonexistent/k.pem"),
        "cannot read /nonexistent/c.pem",
    );
}
