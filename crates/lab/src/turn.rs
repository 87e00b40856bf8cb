//! A TURN server (coturn's `turnserver`, Debian's `coturn`) in the lab's
//! cloud namespace, with the shared-secret scheme (`use-auth-secret`): the
//! lab only knows the secret, and whoever mints credentials from it (the
//! TURN REST-API scheme) can allocate.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::LabError;
use crate::netns::run_in_netns;
use crate::topology::Netns;

/// The TURN (and STUN) port in the cloud.
pub const TURN_PORT: u16 = 3478;

/// The realm coturn announces.
pub const TURN_REALM: &str = "tether.lab";

/// How long coturn may take to answer its first STUN binding request.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A running coturn in the cloud namespace, listening and relaying on the
/// cloud's address, UDP only, no TLS. Killed when dropped (and, like every
/// process in the lab's namespaces, by the lab's teardown).
#[derive(Debug)]
pub struct TurnServer {
    child: Child,
    addr: SocketAddr,
    secret: String,
    dir: PathBuf,
}

impl TurnServer {
    /// Starts `turnserver` inside `netns` on `ip`:[`TURN_PORT`] with a fresh
    /// random shared secret, and waits until it answers a STUN binding
    /// request. `scratch` names its directory under the system's temporary
    /// one (log, pid file, user database).
    ///
    /// # Errors
    ///
    /// [`LabError::Turn`] when `turnserver` is not installed, cannot start
    /// or does not answer within 10 s (with the end of its log).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the process is killed when the future is dropped.
    pub async fn start(netns: &Netns, ip: Ipv4Addr, scratch: &str) -> Result<TurnServer, LabError> {
        let dir = std::env::temp_dir().join(format!("tether-lab-turn-{scratch}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::Turn(format!("cannot create {}: {e}", dir.display())))?;
        let log = dir.join("turnserver.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| LabError::Turn(format!("cannot create {}: {e}", log.display())))?;
        let secret = random_secret();
        let child = Command::new("ip")
            .args(["netns", "exec", netns.name(), "turnserver"])
            .args(["-n", "--verbose", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .arg("--log-file=stdout")
            .arg(format!("--listening-ip={ip}"))
            .arg(format!("--relay-ip={ip}"))
            .arg(format!("--listening-port={TURN_PORT}"))
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={secret}"))
            .arg(format!("--realm={TURN_REALM}"))
            .arg(format!("--pidfile={}", dir.join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                LabError::Turn(format!(
                    "cannot run `ip netns exec {} turnserver` (is coturn installed?): {e}",
                    netns.name()
                ))
            })?;
        let mut server = TurnServer { child, addr: SocketAddr::from((ip, TURN_PORT)), secret, dir };
        server.wait_ready(netns).await?;
        tracing::info!(event = "lab.turn.ready", netns = netns.name(), addr = %server.addr);
        Ok(server)
    }

    /// Sends STUN binding requests from inside `netns` until one is
    /// answered, or fails after [`READY_DEADLINE`] (or when coturn exits).
    async fn wait_ready(&mut self, netns: &Netns) -> Result<(), LabError> {
        let addr = self.addr;
        let probe = run_in_netns(netns, move || stun_ping_until(addr, READY_DEADLINE));
        tokio::select! {
            answered = probe => match answered? {
                Ok(()) => Ok(()),
                Err(reason) => Err(self.failed(&reason)),
            },
            status = self.child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(self.failed(&format!("turnserver exited ({status})")))
            }
        }
    }

    fn failed(&self, reason: &str) -> LabError {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        LabError::Turn(format!("{reason}; the end of its log:\n{}", tail.join("\n")))
    }

    /// Where it listens (the cloud's address, [`TURN_PORT`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared secret (`--static-auth-secret`) to mint credentials with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `turn:ADDR?transport=udp`.
    pub fn turn_url(&self) -> String {
        format!("turn:{}?transport=udp", self.addr)
    }

    /// `stun:ADDR` (coturn answers STUN binding requests too).
    pub fn stun_url(&self) -> String {
        format!("stun:{}", self.addr)
    }

    /// The process id (of `ip netns exec`, which became `turnserver`);
    /// `None` once it was reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills coturn and waits until it is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the server kills it too.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// coturn's log (`--verbose`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("turnserver.log")
    }

    /// How many relay allocations coturn has granted so far (from its log).
    pub fn allocations(&self) -> usize {
        count_lines(&self.log_path(), "ALLOCATE processed, success")
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        // kill_on_drop kills it too; this also reaps it.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|log| log.lines().filter(|line| line.contains(needle)).count())
        .unwrap_or(0)
}

/// A 32-character hex secret from the standard library's per-process random
/// hasher keys (all the randomness a lab's throwaway secret needs).
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    (0u64..2)
        .map(|i| {
            let mut hasher = state.build_hasher();
            hasher.write_u64(i);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}

/// Sends STUN binding requests to `server` every 100 ms until one is
/// answered (a success response to our transaction), or `deadline` passes.
async fn stun_ping_until(server: SocketAddr, deadline: Duration) -> Result<(), String> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| format!("cannot bind a probe socket: {e}"))?;
    // Binding request: type 0x0001, length 0, magic cookie, transaction id.
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(b"tether-ready");
    let until = tokio::time::Instant::now() + deadline;
    let mut answer = [0u8; 512];
    while tokio::time::Instant::now() < until {
        let _ = socket.send_to(&request, server).await;
        if let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut answer)).await
            && len >= 20
            && answer[..2] == [0x01, 0x01]
            && answer[8..20] == request[8..20]
        {
            return Ok(());
        }
    }
    Err(format!("coturn on {server} did not answer STUN within {deadline:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hex_and_differ() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
