//! A `nats-server` of the benchmark's own (`tether bench signal
//! --instances N`): from PATH (or Debian's /usr/sbin), JetStream on, a free
//! loopback port and a temporary store, killed and removed when dropped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub(crate) struct NatsProcess {
    child: Child,
    dir: PathBuf,
    url: String,
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir: PathBuf| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

impl NatsProcess {
    /// Starts the server and waits (up to 10 s) until it greets clients.
    pub(crate) fn start() -> anyhow::Result<NatsProcess> {
        let Some(binary) = find_binary() else {
            bail!("--instances needs nats-server on PATH (apt-get install nats-server)");
        };
        // A port found free can be taken before the server binds it: then
        // it exits, and another port is tried.
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .context("cannot find a free port")?
                .port();
            let dir = std::env::temp_dir()
                .join(format!("tether-bench-nats-{}-{attempt}", std::process::id()));
            std::fs::create_dir_all(&dir).context("cannot create the JetStream directory")?;
            let child = Command::new(&binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            let mut nats = NatsProcess { child, dir, url: format!("nats://127.0.0.1:{port}") };
            if nats.wait_ready(port)? {
                return Ok(nats);
            }
        }
        bail!("nats-server did not start on any of 5 free ports")
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `false` when the server exited (its port was taken).
    fn wait_ready(&mut self, port: u16) -> anyhow::Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(false);
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return Ok(true);
                }
            }
            if Instant::now() >= deadline {
                bail!("nats-server on port {port} did not answer within 10 s");
            }
            // Polling a child process's port, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
