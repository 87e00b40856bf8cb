//! The delay router: every packet the lab's router forwards, whatever its
//! protocol, goes through one TUN device and a userspace delay line.
//!
//! `lab.sh delay on` adds policy rules in the router namespace so that
//! packets arriving on the phone's uplinks or from the cloud are routed
//! into the TUN device; this side reads each packet, holds it for the
//! one-way delay, and writes it back. A packet written to the device enters
//! the router as if received on it and is forwarded by the main table as
//! usual, so each packet is delayed exactly once per crossing and the round
//! trip between phone and cloud grows by twice the delay. A fixed delay
//! keeps packets in order; a full delay line drops them (counted), like a
//! router's buffer.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tun::Tun;

use super::Counters;
use super::clock::PreciseClock;
use crate::error::LabError;

/// Packets waiting in the delay line (both directions share it).
const QUEUE: usize = 8192;
/// Largest packet read from the device (its MTU is 1500; GSO is off for a
/// TUN device without a virtio header, so the kernel segments first).
const PACKET: usize = 65_536;

type Delayed = (Instant, Vec<u8>);

fn io_error(error: tokio_tun::Error) -> io::Error {
    match error {
        tokio_tun::Error::IoError(error) => error,
        tokio_tun::Error::NixError(errno) => io::Error::from(errno),
    }
}

/// Creates the TUN device `device` (up, no address) in the calling thread's
/// network namespace and starts the delay line on it.
pub(super) fn start(
    device: &str,
    one_way_delay: Duration,
    counters: Arc<Counters>,
    clock: PreciseClock,
) -> Result<JoinHandle<()>, LabError> {
    let failed =
        |source| LabError::Relay { what: format!("create the tun device {device}"), source };
    let tun = Tun::builder()
        .name(device)
        .up()
        .close_on_exec()
        .build()
        .map_err(|error| failed(io_error(error)))?
        .pop()
        .ok_or_else(|| failed(io::Error::other("no queue was opened")))?;
    Ok(tokio::spawn(run(tun, one_way_delay, counters, clock)))
}

async fn run(tun: Tun, delay: Duration, counters: Arc<Counters>, clock: PreciseClock) {
    let (line_tx, line_rx) = mpsc::channel::<Delayed>(QUEUE);
    // One future for both halves, so aborting the task stops both and
    // closes the device.
    tokio::join!(read(&tun, delay, line_tx, &counters), deliver(&tun, line_rx, &counters, clock));
}

async fn read(tun: &Tun, delay: Duration, line: mpsc::Sender<Delayed>, counters: &Counters) {
    let mut buf = vec![0u8; PACKET];
    loop {
        match tun.recv(&mut buf).await {
            Ok(len) => {
                let due = Instant::now() + delay;
                if line.try_send((due, buf[..len].to_vec())).is_err() {
                    counters.dropped();
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // The device is gone (its namespace was deleted); dropping
                // `line` lets the writer drain and end.
                tracing::debug!(event = "lab.relay.router.recv_error", %error);
                return;
            }
        }
    }
}

async fn deliver(
    tun: &Tun,
    mut line: mpsc::Receiver<Delayed>,
    counters: &Counters,
    clock: PreciseClock,
) {
    while let Some((due, packet)) = line.recv().await {
        clock.sleep_until(due).await;
        match tun.send(&packet).await {
            Ok(_) => counters.forwarded(packet.len()),
            Err(error) => {
                counters.dropped();
                tracing::trace!(event = "lab.relay.router.send_error", %error);
            }
        }
    }
}
