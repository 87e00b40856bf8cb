//! Shared by the CLI's integration tests: running `tether` as a user does,
//! with every wait bounded, so that a hung child fails the test with what it
//! printed instead of hanging the run.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long collecting a finished (or killed) child's output may take.
const DRAIN: Duration = Duration::from_secs(10);

/// Like [`Command::output`], but a hang guard: a child still running after
/// `limit` is killed and the test fails, showing what it wrote to stderr.
/// `limit` is generous, not a timing target.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    let stdout = read_to_end_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_to_end_in_background(child.stderr.take().expect("piped stderr"));
    let status = wait_within(&mut child, limit);
    let stderr = stderr.recv_timeout(DRAIN).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{command:?} did not finish within {limit:?} and was killed; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    };
    let stdout = stdout.recv_timeout(DRAIN).expect("the child's stdout did not end");
    Output { status, stdout, stderr }
}

/// Waits for `child` up to `limit`; `None` (after killing and reaping it)
/// when it was still running.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        // Polling a child process (std has no wait with a timeout), bounded
        // by the deadline above.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first line `pipe` yields, or a test failure naming `what` after
/// `limit`. The rest of the pipe is drained in the background (and
/// dropped), so the child never writes into a closed pipe.
pub fn first_line_within(pipe: impl Read + Send + 'static, what: &str, limit: Duration) -> String {
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = line_tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    line_rx.recv_timeout(limit).unwrap_or_else(|_| panic!("no {what} within {limit:?}"))
}

fn read_to_end_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (done, bytes) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = done.send(buf);
    });
    bytes
}

/// The secret `serve` hands `tether serve` (TETHER_SECRET).
pub const SECRET: &str = "cli-test-secret-0123456789";

/// A hang guard for one step of a server: each takes well under a second
/// when healthy.
const SERVER_GUARD: Duration = Duration::from_secs(30);

/// Kills the server if a test fails before stopping it.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `tether serve` on a free loopback port with `extra` flags and
/// TETHER_SECRET set; returns the process and its `HOST:PORT`.
pub fn serve(extra: &[&str]) -> (Server, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("TETHER_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let stderr = server.0.stderr.take().unwrap();
    let line = first_line_within(stderr, "address line from tether serve", SERVER_GUARD);
    let addr = line
        .trim()
        .strip_prefix("tether: signaling on ws://")
        .and_then(|rest| rest.strip_suffix("/ws"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (server, addr)
}
