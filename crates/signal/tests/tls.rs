//! `wss://`: the client's TLS handshake and trust decisions, against a real
//! TLS terminator (rustls) in front of a real server, as in a deployment
//! behind a TLS proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../relay/tests/common/mod.rs"]
mod common;
#[path = "../../relay/tests/common/test_ca.rs"]
mod test_ca;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Harness, next_event, peer};
use test_ca::TestCa;
use tether_signal::protocol::RelayPayload;
use tether_signal::{SignalClient, SignalError, SignalErrorKind, SignalEvent, TlsTrust};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Terminates TLS on a free loopback port and forwards the plain bytes to
/// `upstream`. Stops with the test's runtime.
async fn tls_terminator(upstream: SocketAddr, config: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake is what some tests are about: just drop it.
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let Ok(mut plain) = TcpStream::connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_wss_client_trusting_the_ca_registers_and_relays() {
    let harness = Harness::start().await;
    let ca = TestCa::new();
    let port = tls_terminator(harness.addr(), ca.server_config(&["localhost"])).await;

    let mut config = harness.client_config("alice", &format!("wss://localhost:{port}/ws"));
    config.tls = TlsTrust::private_only().with_ca_pem(ca.pem().as_bytes()).unwrap();
    let (alice, mut alice_events) = SignalClient::new(config).unwrap();
    let connected = alice.connect_once().await.unwrap();
    assert_eq!(next_event(&mut alice_events).await, SignalEvent::Connected(connected));

    let (bob, mut bob_events) = harness.client("bob").await;
    alice.send(&peer("bob"), RelayPayload::Bye).unwrap();
    match next_event(&mut bob_events).await {
        SignalEvent::Relay { from, payload } => {
            assert_eq!(from, peer("alice"));
            assert_eq!(payload, RelayPayload::Bye);
        }
        other => panic!("expected alice's relay over wss, got {other:?}"),
    }
    bob.send(&peer("alice"), RelayPayload::IceRestart).unwrap();
    match next_event(&mut alice_events).await {
        SignalEvent::Relay { from, payload } => {
            assert_eq!(from, peer("bob"));
            assert_eq!(payload, RelayPayload::IceRestart);
        }
        other => panic!("expected bob's relay to arrive over wss, got {other:?}"),
    }
}

/// Asserts a connect failed in the TLS handshake, as an unreachable server
/// (a network change, e.g. leaving a captive portal, may cure it).
fn assert_tls_refused(error: SignalError, needle: &str) {
    let text = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(matches!(error, SignalError::Tls { .. }), "expected a tls error, got {text}");
    assert_eq!(error.kind(), SignalErrorKind::Unreachable);
    assert!(text.contains(needle), "expected {needle:?} in {text}");
}

#[tokio::test]
async fn a_server_signed_by_an_unknown_ca_is_refused() {
    let harness = Harness::start().await;
    let ca = TestCa::new();
    let port = tls_terminator(harness.addr(), ca.server_config(&["localhost"])).await;
    let other_ca = TestCa::new();

    let mut config = harness.client_config("alice", &format!("wss://localhost:{port}/ws"));
    config.tls = TlsTrust::system().with_ca_pem(other_ca.pem().as_bytes()).unwrap();
    let (client, _events) = SignalClient::new(config).unwrap();
    let error = client.connect_once().await.unwrap_err();
    assert_tls_refused(error, "UnknownIssuer");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let harness = Harness::start().await;
    let ca = TestCa::new();
    let port = tls_terminator(harness.addr(), ca.server_config(&["signal.example"])).await;

    let mut config = harness.client_config("alice", &format!("wss://localhost:{port}/ws"));
    config.tls = TlsTrust::private_only().with_ca_pem(ca.pem().as_bytes()).unwrap();
    let (client, _events) = SignalClient::new(config).unwrap();
    let error = client.connect_once().await.unwrap_err();
    assert_tls_refused(error, "NotValidForName");
}

#[tokio::test]
async fn a_ca_is_read_from_a_file_or_a_directory() {
    let harness = Harness::start().await;
    let ca = TestCa::new();
    let port = tls_terminator(harness.addr(), ca.server_config(&["localhost", "127.0.0.1"])).await;
    let dir = std::env::temp_dir().join(format!("tether-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ca.pem");
    std::fs::write(&file, ca.pem()).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a certificate").unwrap();

    for (name, trust) in [
        ("alice", TlsTrust::private_only().with_ca_path(&file).unwrap()),
        ("bob", TlsTrust::private_only().with_ca_path(&dir).unwrap()),
    ] {
        // An IP address works as the name too, when the certificate lists it.
        let mut config = harness.client_config(name, &format!("wss://127.0.0.1:{port}/ws"));
        config.tls = trust;
        let (client, mut events) = SignalClient::new(config).unwrap();
        let connected = client.connect_once().await.unwrap();
        assert_eq!(next_event(&mut events).await, SignalEvent::Connected(connected));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_ca_input_is_refused_when_it_is_given() {
    let refused = |result: Result<TlsTrust, SignalError>, needle: &str| {
        let error = result.unwrap_err();
        assert!(matches!(error, SignalError::InvalidConfig(_)), "{error}");
        assert!(error.to_string().contains(needle), "expected {needle:?} in {error}");
    };
    refused(TlsTrust::system().with_ca_pem(b"hello"), "no certificate");
    refused(
        TlsTrust::system()
            .with_ca_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
        "bad pem",
    );
    refused(TlsTrust::system().with_ca_path("/nonexistent/ca.pem"), "cannot read ca");
    let empty = std::env::temp_dir().join(format!("tether-tls-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    refused(TlsTrust::system().with_ca_path(&empty), "holds no .pem or .crt");
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn urls_with_other_schemes_are_refused() {
    let harness_free = tether_signal::ClientConfig::new("https://example.com/ws", peer("a"), "t");
    let error = SignalClient::new(harness_free).map(|_| ()).unwrap_err();
    assert!(error.to_string().contains("ws:// or wss://"), "{error}");
}
