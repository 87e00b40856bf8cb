//! A real `nats-server` (JetStream on) for one test: a free loopback port,
//! its own storage directory, stopped (SIGKILL) and removed on drop.
//!
//! When the binary is missing the tests skip with a message, unless
//! `TETHER_REQUIRE_NATS=1` (CI), where they fail. `TETHER_NATS_SERVER`
//! names a binary to use instead of searching.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct NatsServer {
    binary: PathBuf,
    name: String,
    port: u16,
    dir: PathBuf,
    /// Arguments beyond the single server's (cluster routes).
    extra: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

fn storage_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tether-nats-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create the jetstream directory");
    dir
}

/// The binary, or `None` (after saying why) when it is missing and not
/// required (`TETHER_REQUIRE_NATS=1` makes it required).
fn binary_or_skip() -> Option<PathBuf> {
    let binary = find_binary();
    if binary.is_none() {
        if std::env::var("TETHER_REQUIRE_NATS").as_deref() == Ok("1") {
            panic!("nats-server not found on PATH or in /usr/sbin, and TETHER_REQUIRE_NATS=1");
        }
        eprintln!("skipping: nats-server not found (apt-get install nats-server)");
    }
    binary
}

/// `TETHER_NATS_SERVER` when set, else `nats-server` on PATH or where
/// Debian puts it (`/usr/sbin`, not on a user's PATH).
fn find_binary() -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os("TETHER_NATS_SERVER") {
        let chosen = PathBuf::from(chosen);
        return chosen.is_file().then_some(chosen);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/usr/local/bin".into()])
        .map(|dir: PathBuf| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

impl NatsServer {
    /// Starts a server, or `None` (after saying why) when the binary is
    /// missing and not required.
    pub(crate) fn start() -> Option<NatsServer> {
        let binary = binary_or_skip()?;
        let dir = storage_dir();
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        // A port found free can be taken before the server binds it (tests
        // run in parallel): then the server exits, and we try another.
        for _ in 0..5 {
            let mut server = NatsServer {
                binary: binary.clone(),
                name: name.clone(),
                port: free_port(),
                dir: dir.clone(),
                extra: Vec::new(),
                child: None,
            };
            if server.launch() {
                return Some(server);
            }
        }
        panic!("nats-server did not start on any of 5 free ports");
    }

    /// Starts a NATS cluster of `size` nodes (JetStream clustered, routes
    /// between all of them on free ports), or `None` when the binary is
    /// missing and not required. JetStream elects its leader after this
    /// returns: the first bucket operations may have to be retried.
    pub(crate) fn start_cluster(size: usize) -> Option<Vec<NatsServer>> {
        let binary = binary_or_skip()?;
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for cluster_port in &cluster_ports {
            let dir = storage_dir();
            let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let mut node = NatsServer {
                binary: binary.clone(),
                name,
                port: free_port(),
                dir,
                extra: vec![
                    "--cluster_name".into(),
                    format!("tether-{}", std::process::id()),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{cluster_port}"),
                    "--routes".into(),
                    routes.clone(),
                ],
                child: None,
            };
            assert!(node.launch(), "nats node did not start on port {}", node.port);
            nodes.push(node);
        }
        Some(nodes)
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server and waits until it answers as itself; `false`
    /// when it exited (its port was taken).
    fn launch(&mut self) -> bool {
        let mut child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-n", &self.name, "-js", "-sd"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let ready = wait_ready(&mut child, self.port, &self.name);
        self.child = Some(child);
        ready
    }

    /// Kills the server and starts it again on the same port and storage.
    pub(crate) fn restart(&mut self) {
        self.stop();
        assert!(self.launch(), "nats-server did not restart on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bounded polling until the server greets a client with an INFO line
/// carrying its own name; `false` when it exited first.
fn wait_ready(child: &mut Child, port: u16, name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let me = format!("\"server_name\":\"{name}\"");
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut line = String::new();
            if BufReader::new(stream).read_line(&mut line).is_ok()
                && line.starts_with("INFO")
                && line.contains(&me)
            {
                return true;
            }
        }
        assert!(Instant::now() < deadline, "nats-server {name} on {port} not ready in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
