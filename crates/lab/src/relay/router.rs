//! The delay router: every packet the lab's router forwards, whatever its
//! protocol, goes through one TUN device and a userspace delay line.
//!
//! `lab.sh delay on` adds policy rules in the router namespace so that
//! packets arriving on the phone's uplinks or from the cloud are routed
//! into the TUN device; this side reads each packet, holds it for its
//! one-way delay, and writes it back. A packet written to the device enters
//! the router as if received on it and is forwarded by the main table as
//! usual, so each packet is delayed exactly once per crossing and the round
//! trip between phone and cloud grows by twice the delay.
//!
//! Each packet's delay is drawn by a [`Schedule`]: the fixed one-way delay,
//! plus a uniform jitter in `±jitter/2` (never below zero), raised if
//! needed so that it never leaves before an earlier packet of the same
//! flow (same addresses, protocol and ports): packets of one flow keep
//! their order, as they mostly do on real paths, while different flows may
//! overtake each other. The schedule may also drop a packet on purpose
//! (random loss, counted as `lost`). Since due times are not in arrival
//! order once there is jitter, the line is a queue ordered by due time
//! (ties: arrival order), not a FIFO; a full line drops packets (counted as
//! `dropped`), like a router's buffer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tun::Tun;

use super::clock::PreciseClock;
use super::{Counters, DelayRouterConfig};
use crate::error::LabError;

/// Packets waiting in the delay line (both directions share it).
const QUEUE: usize = 8192;
/// Largest packet read from the device (its MTU is 1500; GSO is off for a
/// TUN device without a virtio header, so the kernel segments first).
const PACKET: usize = 65_536;
/// Flows remembered for ordering before those with nothing in flight are
/// forgotten.
const FLOWS: usize = 4096;
/// Mixed into the seed for the jitter draws, so that loss and jitter use
/// independent streams (turning one on does not change the other's draws).
const JITTER_STREAM: u64 = 0x6a09_e667_f3bc_c909;

/// A packet and when it is due.
type Delayed = (Instant, Vec<u8>);

/// A small seeded generator (SplitMix64): the same seed gives the same
/// sequence of draws, so a lab run's loss and jitter can be repeated.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Decides each packet's fate: lost, or when it leaves.
#[derive(Debug)]
pub(super) struct Schedule {
    config: DelayRouterConfig,
    loss: SplitMix64,
    jitter: SplitMix64,
    /// Per flow, when its latest packet leaves.
    flows: HashMap<u64, Instant>,
}

impl Schedule {
    pub(super) fn new(config: DelayRouterConfig) -> Self {
        Self {
            loss: SplitMix64(config.seed),
            jitter: SplitMix64(config.seed ^ JITTER_STREAM),
            config,
            flows: HashMap::new(),
        }
    }

    /// `None`: the packet is lost. Otherwise when it leaves: `now` plus
    /// its drawn delay, or, when that is earlier, when the previous packet
    /// of its flow leaves.
    pub(super) fn due(&mut self, now: Instant, packet: &[u8]) -> Option<Instant> {
        if self.config.loss_percent > 0.0 && self.loss.next_f64() * 100.0 < self.config.loss_percent
        {
            return None;
        }
        let delay = if self.config.jitter.is_zero() {
            self.config.one_way_delay
        } else {
            let offset = (self.jitter.next_f64() - 0.5) * self.config.jitter.as_secs_f64();
            Duration::from_secs_f64((self.config.one_way_delay.as_secs_f64() + offset).max(0.0))
        };
        let drawn = now + delay;
        if self.flows.len() >= FLOWS {
            self.flows.retain(|_, last| *last > now);
        }
        let last = self.flows.entry(flow_key(packet)).or_insert(drawn);
        let due = drawn.max(*last);
        *last = due;
        Some(due)
    }
}

/// Which flow an IP packet belongs to: its addresses and protocol, and its
/// ports for TCP and UDP (not for fragments, which carry none after the
/// first). Anything that does not parse shares one flow.
fn flow_key(packet: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    let version = packet.first().map(|b| b >> 4);
    let transport = match version {
        Some(4) if packet.len() >= 20 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let protocol = packet[9];
            // More-fragments flag or a fragment offset: no ports to read.
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
            hasher.write_u8(4);
            hasher.write_u8(protocol);
            hasher.write(&packet[12..20]);
            (!fragment).then_some((protocol, header))
        }
        Some(6) if packet.len() >= 40 => {
            let next_header = packet[6];
            hasher.write_u8(6);
            hasher.write_u8(next_header);
            hasher.write(&packet[8..40]);
            Some((next_header, 40))
        }
        _ => None,
    };
    if let Some((6 | 17, offset)) = transport
        && let Some(ports) = packet.get(offset..offset + 4)
    {
        hasher.write(ports);
    }
    hasher.finish()
}

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
    config: DelayRouterConfig,
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
    Ok(tokio::spawn(run(tun, Schedule::new(config), counters, clock)))
}

async fn run(tun: Tun, schedule: Schedule, counters: Arc<Counters>, clock: PreciseClock) {
    let (line_tx, line_rx) = mpsc::channel::<Delayed>(QUEUE);
    // One future for both halves, so aborting the task stops both and
    // closes the device.
    tokio::join!(
        read(&tun, schedule, line_tx, &counters),
        deliver(&tun, line_rx, &counters, clock)
    );
}

async fn read(tun: &Tun, mut schedule: Schedule, line: mpsc::Sender<Delayed>, counters: &Counters) {
    let mut buf = vec![0u8; PACKET];
    loop {
        match tun.recv(&mut buf).await {
            Ok(len) => {
                let packet = &buf[..len];
                let Some(due) = schedule.due(Instant::now(), packet) else {
                    counters.lost();
                    continue;
                };
                if line.try_send((due, packet.to_vec())).is_err() {
                    counters.dropped();
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                // The device is gone (its namespace was deleted); dropping
                // `line` ends the writer.
                tracing::debug!(event = "lab.relay.router.recv_error", %error);
                return;
            }
        }
    }
}

/// Holds the packets in due-time order and writes each back when due.
async fn deliver(
    tun: &Tun,
    mut line: mpsc::Receiver<Delayed>,
    counters: &Counters,
    clock: PreciseClock,
) {
    // (due, arrival number, packet): the earliest due first, ties in
    // arrival order (arrival numbers are unique, so packets never compare).
    let mut queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut arrivals = 0u64;
    loop {
        let next = queue.peek().map(|Reverse((due, _, _))| *due);
        tokio::select! {
            received = line.recv() => {
                let Some((due, packet)) = received else { return };
                if queue.len() >= QUEUE {
                    counters.dropped();
                } else {
                    arrivals += 1;
                    queue.push(Reverse((due, arrivals, packet)));
                }
            }
            // A packet that arrives meanwhile with an earlier due time
            // cancels this wait and the loop waits for it instead.
            () = clock.sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while queue.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
                    let Some(Reverse((_, _, packet))) = queue.pop() else { break };
                    match tun.send(&packet).await {
                        Ok(_) => counters.forwarded(packet.len()),
                        Err(error) => {
                            counters.dropped();
                            tracing::trace!(event = "lab.relay.router.send_error", %error);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal IPv4 UDP packet from port `sport`.
    fn udp(sport: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 28];
        packet[0] = 0x45;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[10, 77, 1, 2]);
        packet[16..20].copy_from_slice(&[10, 77, 9, 2]);
        packet[20..22].copy_from_slice(&sport.to_be_bytes());
        packet[22..24].copy_from_slice(&7447u16.to_be_bytes());
        packet
    }

    fn config(one_way_ms: u64, jitter_ms: u64, loss_percent: f64, seed: u64) -> DelayRouterConfig {
        DelayRouterConfig {
            one_way_delay: Duration::from_millis(one_way_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss_percent,
            seed,
        }
    }

    #[test]
    fn flows_are_told_apart_by_ports_and_addresses() {
        assert_eq!(flow_key(&udp(1000)), flow_key(&udp(1000)));
        assert_ne!(flow_key(&udp(1000)), flow_key(&udp(1001)));
        let mut other = udp(1000);
        other[15] = 3;
        assert_ne!(flow_key(&udp(1000)), flow_key(&other));
        // Garbage does not panic.
        let _ = flow_key(&[]);
        let _ = flow_key(&[0x4f, 0, 0]);
    }

    #[test]
    fn jitter_stays_in_its_band_and_never_reorders_a_flow() {
        let mut schedule = Schedule::new(config(50, 40, 0.0, 1));
        let start = Instant::now();
        let (mut low, mut high) = (Duration::MAX, Duration::ZERO);
        let mut last = [start; 2];
        for i in 0..2000u64 {
            // Packets 100 µs apart: much closer than the jitter.
            let now = start + Duration::from_micros(100 * i);
            let flow = usize::from(i % 2 == 0);
            let due = schedule.due(now, &udp(1000 + flow as u16)).expect("no loss configured");
            assert!(due >= last[flow], "packet {i} would overtake its flow");
            last[flow] = due;
            low = low.min(due - now);
            high = high.max(due - now);
        }
        assert!(low >= Duration::from_millis(30), "{low:?}");
        assert!(low < Duration::from_millis(35), "the band's low end is used: {low:?}");
        // Held back behind its flow, a packet leaves with the one before
        // it, which is due by its own (earlier) arrival plus the band's top:
        // never past the top.
        assert!(high <= Duration::from_millis(70), "{high:?}");
        assert!(high > Duration::from_millis(65), "the band's top end is used: {high:?}");
    }

    #[test]
    fn jitter_never_makes_a_delay_negative() {
        let mut schedule = Schedule::new(config(5, 40, 0.0, 2));
        let now = Instant::now();
        for port in 0..500 {
            // One packet per flow: nothing holds it back.
            assert!(schedule.due(now, &udp(port)).expect("no loss") >= now);
        }
    }

    #[test]
    fn loss_is_seeded_and_near_its_rate() {
        let fates = |seed| {
            let mut schedule = Schedule::new(config(0, 0, 5.0, seed));
            let now = Instant::now();
            (0..10_000).map(|_| schedule.due(now, &udp(1)).is_none()).collect::<Vec<_>>()
        };
        let first = fates(7);
        assert_eq!(first, fates(7), "the same seed drops the same packets");
        assert_ne!(first, fates(8), "another seed drops others");
        let lost = first.iter().filter(|&&lost| lost).count();
        // 5 % of 10 000 is 500; the seeded draw is fixed, the band loose.
        assert!((400..600).contains(&lost), "{lost}");
        let mut lossless = Schedule::new(config(0, 0, 0.0, 7));
        assert!((0..1000).all(|_| lossless.due(Instant::now(), &udp(1)).is_some()));
    }

    #[test]
    fn a_fixed_delay_is_exact() {
        let mut schedule = Schedule::new(config(20, 0, 0.0, 0));
        let now = Instant::now();
        assert_eq!(schedule.due(now, &udp(1)), Some(now + Duration::from_millis(20)));
    }
}
