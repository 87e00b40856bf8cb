//! A real TURN server for tests: coturn (Debian's `turnserver`) on a free
//! loopback port, UDP only, killed on drop. Shared by the rtc and node tests
//! (the node's include this file by path).
//!
//! Without `turnserver` on PATH, [`Coturn::start`] returns `None` after
//! saying the test is skipped, unless `TETHER_REQUIRE_TURN=1` (CI) makes
//! that a failure.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long coturn may take to answer its first STUN request.
const READY_BOUND: Duration = Duration::from_secs(20);

/// How coturn checks credentials.
pub(crate) enum TurnAuth<'a> {
    /// One long-term user (`--lt-cred-mech`).
    LongTerm { user: &'a str, password: &'a str },
    /// The REST API scheme (`--use-auth-secret`): usernames and credentials
    /// minted from this secret.
    SharedSecret(&'a str),
}

/// A running coturn.
pub(crate) struct Coturn {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub(crate) port: u16,
    log: PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    /// Starts coturn with `auth` and waits until it answers STUN, or
    /// returns `None` (after saying so) when it is not installed and not
    /// required.
    pub(crate) fn start(auth: TurnAuth<'_>) -> Option<Coturn> {
        let installed = Command::new("turnserver")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            let required = std::env::var("TETHER_REQUIRE_TURN").is_ok_and(|value| value == "1");
            assert!(
                !required,
                "TETHER_REQUIRE_TURN=1 but `turnserver` (Debian's coturn) is not on PATH"
            );
            eprintln!("SKIPPED: `turnserver` (Debian's coturn) is not installed");
            return None;
        }
        // A port the OS had free a moment ago; coturn binds it next.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tether-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth_args = match auth {
            TurnAuth::LongTerm { user, password } => {
                vec!["--lt-cred-mech".to_owned(), format!("--user={user}:{password}")]
            }
            TurnAuth::SharedSecret(secret) => {
                vec!["--use-auth-secret".to_owned(), format!("--static-auth-secret={secret}")]
            }
        };
        let log = dir.join("turnserver.log");
        let child = Command::new("turnserver")
            .args(["-n", "--verbose", "--no-cli", "--no-tls", "--no-dtls"])
            .args(["--simple-log", "--log-file=stdout"])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--allow-loopback-peers"])
            .arg(format!("--listening-port={port}"))
            .args(auth_args)
            .arg("--realm=tether.test")
            .arg(format!("--pidfile={}", dir.join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let coturn = Coturn { child, port, log };
        coturn.wait_ready();
        Some(coturn)
    }

    /// `turn:127.0.0.1:PORT?transport=udp`.
    pub(crate) fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// How many relay allocations coturn granted, from its log.
    pub(crate) fn allocations(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|line| line.contains("ALLOCATE processed, success")).count()
    }

    /// Sends STUN binding requests until one is answered, or fails after
    /// [`READY_BOUND`].
    fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // Binding request: type 0x0001, length 0, magic cookie, transaction id.
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(b"tether-ready");
        let deadline = Instant::now() + READY_BOUND;
        let mut answer = [0u8; 512];
        while Instant::now() < deadline {
            let _ = socket.send_to(&request, ("127.0.0.1", self.port));
            if let Ok((len, _)) = socket.recv_from(&mut answer)
                && len >= 20
                && answer[..2] == [0x01, 0x01]
            {
                return;
            }
        }
        panic!("coturn on 127.0.0.1:{} did not answer STUN within {READY_BOUND:?}", self.port);
    }
}
