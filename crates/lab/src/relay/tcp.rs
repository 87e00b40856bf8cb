//! The TCP side of the delay relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::clock::PreciseClock;
use super::{Counters, DelayRelayConfig};
use crate::error::LabError;

/// Chunks in flight per direction and connection (up to 64 KiB each); past
/// that the reader waits, and TCP flow control pushes back on the sender.
const CHUNKS: usize = 256;
/// Largest chunk read at once.
const CHUNK: usize = 65_536;

pub(super) async fn start(
    config: DelayRelayConfig,
    counters: Arc<Counters>,
    clock: PreciseClock,
) -> Result<(SocketAddr, JoinHandle<()>), LabError> {
    let listener = TcpListener::bind(config.listen).await.map_err(|source| LabError::Relay {
        what: format!("bind tcp {}", config.listen),
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(|source| LabError::Relay { what: "read the tcp address".to_owned(), source })?;
    let task = tokio::spawn(run(listener, config, counters, clock));
    Ok((local, task))
}

async fn run(
    listener: TcpListener,
    config: DelayRelayConfig,
    counters: Arc<Counters>,
    clock: PreciseClock,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    counters.session();
                    connections.spawn(relay_connection(
                        client,
                        peer,
                        config,
                        counters.clone(),
                        clock.clone(),
                    ));
                }
                Err(error) => {
                    // Out of descriptors and the like; the listener stays.
                    tracing::warn!(event = "lab.relay.tcp.accept_error", %error);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay_connection(
    client: TcpStream,
    peer: SocketAddr,
    config: DelayRelayConfig,
    counters: Arc<Counters>,
    clock: PreciseClock,
) {
    let upstream = match TcpStream::connect(config.upstream).await {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(event = "lab.relay.tcp.upstream_failed", %peer, upstream = %config.upstream, %error);
            counters.upstream_failure();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tracing::debug!(event = "lab.relay.tcp.connection", %peer, upstream = %config.upstream);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let delay = config.one_way_delay;
    tokio::join!(
        pump(client_read, upstream_write, delay, counters.clone(), clock.clone()),
        pump(upstream_read, client_write, delay, counters, clock),
    );
    tracing::debug!(event = "lab.relay.tcp.closed", %peer);
}

/// Copies `from` to `to`, each chunk `delay` after it was read; the end of
/// the stream (or a read error) is passed on as a shutdown, delayed too.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    counters: Arc<Counters>,
    clock: PreciseClock,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let chunk = match from.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(len) => Some(buf[..len].to_vec()),
            };
            let done = chunk.is_none();
            if tx.send((Instant::now() + delay, chunk)).await.is_err() || done {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            clock.sleep_until(due).await;
            let Some(chunk) = chunk else {
                let _ = to.shutdown().await;
                break;
            };
            if to.write_all(&chunk).await.is_err() {
                break;
            }
            counters.forwarded(chunk.len());
        }
    };
    tokio::join!(read, write);
}
