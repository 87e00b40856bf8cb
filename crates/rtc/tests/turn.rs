//! Real WebRTC peers and a real TURN server (coturn, started on a free loopback port): the route
//! a peer connection selected, and relay escalation when direct ICE failed.
//!
//! Needs `turnserver` (Debian's `coturn`) on PATH. Without it the tests are skipped with a
//! message, unless `TETHER_REQUIRE_TURN=1` (CI) makes that a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod lab;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lab::{Lab, cid, fast_config, id};
use tether_rtc::{CandidateKind, Escalation, IceServer, PeerState, RtcConfig, RtcError};

const PROMPT: Duration = Duration::from_secs(20);

/// coturn with one long-term user (`tether`), killed on drop.
struct Coturn {
    child: Child,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    /// Starts coturn on a free loopback port, or returns `None` (after saying so) when it is not
    /// installed and not required.
    fn start() -> Option<Coturn> {
        let installed = Command::new("turnserver")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            let required = std::env::var("TETHER_REQUIRE_TURN").is_ok_and(|value| value == "1");
            assert!(!required, "TETHER_REQUIRE_TURN=1 but `turnserver` (coturn) is not on PATH");
            eprintln!("SKIPPED: `turnserver` (Debian's coturn) is not installed");
            return None;
        }
        // A port the OS had free a moment ago; coturn binds it next.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir =
            std::env::temp_dir().join(format!("tether-rtc-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log", "--log-file=stdout"])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--allow-loopback-peers"])
            .arg(format!("--listening-port={port}"))
            .args(["--lt-cred-mech", "--user=tether:turn-password", "--realm=tether.test"])
            .arg(format!("--pidfile={}", dir.join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let coturn = Coturn { child, port };
        coturn.wait_ready();
        Some(coturn)
    }

    /// Sends STUN binding requests until one is answered, or fails after [`PROMPT`].
    fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // Binding request: type 0x0001, length 0, magic cookie, transaction id.
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(b"tether-ready");
        let deadline = std::time::Instant::now() + PROMPT;
        let mut answer = [0u8; 512];
        while std::time::Instant::now() < deadline {
            let _ = socket.send_to(&request, ("127.0.0.1", self.port));
            if let Ok((len, _)) = socket.recv_from(&mut answer)
                && len >= 20
                && answer[..2] == [0x01, 0x01]
            {
                return;
            }
        }
        panic!("coturn on 127.0.0.1:{} did not answer STUN within {PROMPT:?}", self.port);
    }

    /// Loopback peer sets with ICE policy `all` and this TURN server.
    fn config(&self) -> RtcConfig {
        RtcConfig {
            ice_servers: vec![IceServer {
                urls: vec![format!("turn:127.0.0.1:{}?transport=udp", self.port)],
                username: "tether".into(),
                credential: "turn-password".into(),
            }],
            ..fast_config()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_direct_ice_escalates_the_peer_to_a_relay_only_replacement() {
    let Some(coturn) = Coturn::start() else { return };
    let lab = Lab::with_config(&["alice", "bob"], coturn.config());
    let (alice, bob) = (lab.set("alice"), id("bob"));

    // Policy `all`, TURN configured: on loopback the direct host path wins.
    lab.connect("alice", "bob").await;
    let route = alice.selected_route(&bob).await.expect("a route once connected");
    assert_eq!(route.local.kind, CandidateKind::Host, "{route}");
    assert!(!route.is_relayed(), "{route}");
    lab.send_and_expect("alice", "bob", "direct").await;

    // No candidate reaches the other side any more: the restart (fresh sockets, policy `all`)
    // has nothing to check, and ICE does not come back.
    lab.relay.drop_only_candidates(&["host", "srflx", "prflx", "relay"]);
    let error = alice.restart_ice(&bob).await.unwrap_err();
    assert!(matches!(error, RtcError::RestartTimeout { .. }), "{error}");
    // The restarted ICE agent is still checking (nothing to check): not connected.
    let state = alice.status(&bob).and_then(|status| status.state);
    assert!(
        matches!(state, Some(PeerState::Connecting | PeerState::Disconnected | PeerState::Failed)),
        "ICE is down after the failed restart: {state:?}"
    );

    // What the node does then: escalate, and replace.
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::Escalated);
    assert!(alice.status(&bob).unwrap().relay_escalated);
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::AlreadyRelayOnly);
    // The peers can still not learn each other's host addresses: direct paths stay blocked.
    lab.relay.drop_only_candidates(&["host"]);
    alice.replace(&bob).await.expect("the relay-only replacement connects");
    lab.node("bob").log.wait_channel_open("alice", 2).await;
    assert_eq!(alice.status(&bob).unwrap().connection_id, cid(2));
    let route = alice.selected_route(&bob).await.expect("a route once connected");
    eprintln!("after escalation: {route}");
    assert_eq!(route.local.kind, CandidateKind::Relay, "alice gathers relay candidates only");
    assert!(route.is_relayed(), "{route}");
    lab.send_and_expect("alice", "bob", "through the relay").await;
    lab.send_and_expect("bob", "alice", "back through the relay").await;
    assert!(
        lab.relay.seen().iter().any(|m| m.from == "alice"
            && matches!(&m.payload, tether_rtc::SignalPayload::Candidate { candidate, .. }
                if candidate.contains(" typ relay"))),
        "alice offered relay candidates"
    );

    // Closing the peer forgets the escalation: a fresh start tries direct paths again.
    alice.close(&bob).await.unwrap();
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::Escalated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_turn_server_there_is_no_escalation() {
    let lab = Lab::new(&["alice", "bob"]);
    let (alice, bob) = (lab.set("alice"), id("bob"));
    lab.connect("alice", "bob").await;
    assert_eq!(alice.escalate_to_relay(&bob), Escalation::NoTurnServer);
    assert!(!alice.status(&bob).unwrap().relay_escalated);
    let route = alice.selected_route(&bob).await.expect("a route once connected");
    assert_eq!(route.local.kind, CandidateKind::Host, "{route}");
}
