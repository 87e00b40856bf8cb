//! `tether serve --tls-cert/--tls-key` and `tether chat --signal wss://
//! --ca`, as a user runs them: two chats exchange messages over `wss://`,
//! with their tokens fetched from the server's `https://` demo endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::first_line_within;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::Value;

/// Bound on each awaited step (start, connect, delivery); healthy runs take
/// a few seconds on loopback.
const STEP: Duration = Duration::from_secs(30);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a CA and a server certificate for localhost into `dir`; returns
/// the paths of (ca, cert, key). CAs need distinct names.
fn write_certificates(dir: &Path, ca_name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca_key = KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let paths = ["ca.pem", "cert.pem", "key.pem"].map(|name| dir.join(name));
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    let [ca, cert, key] = paths.map(|path| path.to_str().unwrap().to_owned());
    (ca, cert, key)
}

/// A `tether chat --json` child: its stdin, and its stdout's JSON lines.
struct Chat {
    _child: Killed,
    stdin: ChildStdin,
    events: mpsc::Receiver<Value>,
}

impl Chat {
    fn start(url: &str, ca: &str, me: &str, to: &str) -> Chat {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["chat", "--json", "--signal", url, "--ca", ca, "--peer-id", me, "--to", to])
            .args(["--room", "tls-test"])
            .env_remove("TETHER_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (event_tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
                if event_tx.send(event).is_err() {
                    break;
                }
            }
        });
        Chat { _child: Killed(child), stdin, events }
    }

    /// Waits for an event `wanted` accepts; fails naming `what` after `STEP`.
    fn wait_for(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(event) if wanted(&event) => return event,
                Ok(event) => seen.push(event),
                Err(_) => break,
            }
        }
        panic!("no {what} within {STEP:?}; saw {seen:?}");
    }

    fn say(&mut self, text: &str) {
        writeln!(self.stdin, "{text}").unwrap();
        self.stdin.flush().unwrap();
    }
}

/// `tether serve --demo` with TLS on a free loopback port; returns the
/// process (killed on drop) and its port.
fn serve_tls(cert: &str, key: &str) -> (Killed, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--listen", "127.0.0.1:0", "--demo", "--tls-cert", cert, "--tls-key", key])
        .env_remove("TETHER_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let server = Killed(server);
    let line = first_line_within(stderr, "address line from tether serve", STEP);
    let port = line
        .trim()
        .strip_prefix("tether: signaling on wss://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/ws"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (server, port)
}

#[test]
fn two_chats_talk_over_wss_with_tokens_from_the_https_demo_endpoint() {
    let dir = std::env::temp_dir().join(format!("tether-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = write_certificates(&dir, "tether cli test ca");

    let (server, port) = serve_tls(&cert, &key);
    // The certificate names localhost, so clients must dial that name.
    let url = format!("wss://localhost:{port}/ws");

    let mut alice = Chat::start(&url, &ca, "alice", "bob");
    let mut bob = Chat::start(&url, &ca, "bob", "alice");
    for chat in [&alice, &bob] {
        chat.wait_for("peer connected", |event| {
            event["event"] == "peer" && event["connected"] == true
        });
        // The ICE route follows: on loopback without TURN, a direct host path.
        chat.wait_for("the route", |event| {
            event["event"] == "route"
                && event["path"] == "direct"
                && event["local"]["type"] == "host"
                && event["relay_escalated"] == false
        });
    }
    alice.say("hello over tls");
    bob.wait_for("alice's message", |event| {
        event["event"] == "received" && event["text"] == "hello over tls"
    });
    bob.say("hello back");
    alice.wait_for("bob's message", |event| {
        event["event"] == "received" && event["text"] == "hello back"
    });
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_chat_without_the_ca_is_refused_by_certificate() {
    let dir = std::env::temp_dir().join(format!("tether-cli-tls-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_ca, cert, key) = write_certificates(&dir, "tether cli test ca");
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (other_ca, _, _) = write_certificates(&other_dir, "another test ca");

    let (_server, port) = serve_tls(&cert, &key);

    let output = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["chat", "--json", "--signal", &format!("wss://localhost:{port}/ws")])
            .args(["--ca", &other_ca, "--peer-id", "carol", "--to", "dave"])
            .env_remove("TETHER_SECRET"),
        STEP,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tls handshake")
            && stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
