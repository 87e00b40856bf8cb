//! A custom [`RecoveryExecutor`]: the node's recovery actions carried out on
//! a plain TCP connection (a line protocol: `ping` -> `pong`) instead of
//! signaling + WebRTC. The node decides *when* to probe, restore or
//! reconnect; the executor only knows *how*, and reports what the link does
//! on its own (the server closing the connection) through a
//! [`LinkReporter`].
//!
//! `cargo run -p tether --example custom_executor`: a server on 127.0.0.1
//! drops the connection; the node notices and restores it. Exits non-zero
//! on a failure, and every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tether::{
    ActionContext, ActionError, ActionKind, ActionReport, ActionResult, AppLifecycleState,
    Availability, ConnectionState, FailureKind, HandledBy, LinkReporter, NetworkSnapshot, Node,
    NodeConfig, RecoveryExecutor, Transport, TransportSet,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const PROMPT: Duration = Duration::from_secs(10);
/// Every step of an action is bounded by the executor itself.
const STEP: Duration = Duration::from_secs(2);
type Error = Box<dyn std::error::Error>;

/// The link: one TCP connection, or none.
struct TcpExecutor {
    server: SocketAddr,
    link: LinkReporter,
    connection: Mutex<Option<Connection>>,
}

struct Connection {
    writer: OwnedWriteHalf,
    replies: mpsc::UnboundedReceiver<String>,
    /// Reads replies; reports a connection that ends on its own.
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closed on purpose: the reader must not report it as a loss.
        self.reader.abort();
    }
}

impl TcpExecutor {
    async fn connect(&self) -> Result<Connection, ActionError> {
        let stream = timeout(STEP, TcpStream::connect(self.server))
            .await
            .map_err(|_| ActionError::new(FailureKind::Timeout, "connect timed out"))?
            .map_err(|e| ActionError::new(FailureKind::Unreachable, format!("connect: {e}")))?;
        let (reader, writer) = stream.into_split();
        let (tx, replies) = mpsc::unbounded_channel();
        let link = self.link.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
            link.signaling_lost(); // the server (or the network) ended it
        });
        Ok(Connection { writer, replies, reader })
    }

    /// `ping` -> `pong` on the current connection.
    async fn ping(connection: &mut Connection) -> ActionResult {
        let failed = |what: String| ActionError::new(FailureKind::Unreachable, what);
        connection.writer.write_all(b"ping\n").await.map_err(|e| failed(format!("ping: {e}")))?;
        match timeout(STEP, connection.replies.recv()).await {
            Ok(Some(reply)) if reply == "pong" => Ok(()),
            Ok(other) => Err(failed(format!("unexpected reply {other:?}"))),
            Err(_) => Err(ActionError::new(FailureKind::Timeout, "no pong")),
        }
    }
}

impl RecoveryExecutor for TcpExecutor {
    async fn probe(&self, _ctx: ActionContext) -> ActionResult {
        let mut connection = self.connection.lock().await;
        let Some(current) = connection.as_mut() else {
            return Err(ActionError::new(FailureKind::Unreachable, "not connected"));
        };
        Self::ping(current).await
    }

    async fn restore(&self, _ctx: ActionContext) -> ActionResult {
        let mut connection = self.connection.lock().await;
        if let Some(current) = connection.as_mut()
            && Self::ping(current).await.is_ok()
        {
            return Ok(()); // still healthy
        }
        let mut fresh = self.connect().await?;
        Self::ping(&mut fresh).await?;
        *connection = Some(fresh);
        Ok(())
    }

    async fn reconnect(&self, _ctx: ActionContext) -> ActionResult {
        let mut connection = self.connection.lock().await;
        *connection = None; // closed on purpose, then built anew
        let mut fresh = self.connect().await?;
        Self::ping(&mut fresh).await?;
        *connection = Some(fresh);
        Ok(())
    }

    async fn disconnect(&self, _ctx: ActionContext) -> ActionResult {
        *self.connection.lock().await = None;
        Ok(())
    }

    async fn cleanup(&self, _ctx: ActionContext) -> ActionResult {
        *self.connection.lock().await = None;
        Ok(())
    }
}

/// A line server: `pong` for every `ping`; `drop_all` ends every open
/// connection (what a server restart or a NAT timeout does).
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    drop_all: Arc<Notify>,
    task: JoinHandle<()>,
}

async fn serve() -> Result<Server, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let drop_all = Arc::new(Notify::new());
    let (count, dropper) = (accepted.clone(), drop_all.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let dropper = dropper.clone();
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut lines = BufReader::new(reader).lines();
                loop {
                    tokio::select! {
                        line = lines.next_line() => match line {
                            Ok(Some(line)) if line == "ping" => {
                                if writer.write_all(b"pong\n").await.is_err() { break; }
                            }
                            Ok(Some(_)) => {}
                            _ => break,
                        },
                        () = dropper.notified() => break, // the connection ends
                    }
                }
            });
        }
    });
    Ok(Server { addr, accepted, drop_all, task })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = serve().await?;
    // Two-phase wiring: the link channel first, its reporter to the executor.
    let (link, link_events) = LinkReporter::channel();
    let executor =
        Arc::new(TcpExecutor { server: server.addr, link, connection: Mutex::new(None) });
    let node = Node::spawn(NodeConfig::default(), executor, link_events)?;
    let handle = node.handle();
    let mut state = node.state();

    let wifi =
        NetworkSnapshot::new(1, Availability::Available, TransportSet::only(Transport::Wifi));
    let handled = timeout(PROMPT, handle.network_path_changed(wifi)).await??;
    println!("online: {:?} in {:?}", handled.by, handled.elapsed);
    check(handled.by == HandledBy::Action(ActionKind::Restore), "a restore connected")?;
    check(server.accepted.load(Ordering::SeqCst) == 1, "one connection")?;

    // A short background: the node probes (ping/pong on the connection).
    timeout(PROMPT, handle.app_lifecycle_changed(AppLifecycleState::Background)).await??;
    let back = AppLifecycleState::Foreground { background_duration_ms: 2_000 };
    let handled = timeout(PROMPT, handle.app_lifecycle_changed(back)).await??;
    println!("back from a short background: {:?}", handled.by);
    check(handled.by == HandledBy::Action(ActionKind::Probe), "a probe")?;

    // The server drops the connection: the executor's reader reports it,
    // and the node restores on its own — no caller involved.
    let mut actions = node.actions(); // every action from now on
    server.drop_all.notify_waiters();
    let (outcome, error) = timeout(PROMPT, async {
        loop {
            match actions.recv().await {
                Ok(ActionReport::Ended { kind: ActionKind::Restore, outcome, error, .. }) => {
                    break Ok((outcome, error));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break Err("the node stopped"),
            }
        }
    })
    .await??;
    println!("the link was lost and restored: {outcome:?}");
    check(error.is_none(), "the restore succeeded")?;
    timeout(PROMPT, state.wait_for(|s| *s == ConnectionState::Connected)).await??;
    check(server.accepted.load(Ordering::SeqCst) == 2, "a second connection")?;

    let report = timeout(PROMPT, node.shutdown()).await?;
    server.task.abort();
    println!("ok: {report:?}");
    Ok(())
}

fn check(condition: bool, what: &str) -> Result<(), Error> {
    if condition { Ok(()) } else { Err(format!("expected {what}").into()) }
}
