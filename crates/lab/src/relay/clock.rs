//! Sub-millisecond waits for the delay lines.
//!
//! tokio's timer wheel has millisecond ticks and rounds deadlines up, so a
//! plain `sleep_until` lands 1-1.5 ms late. A delay line instead sleeps on
//! tokio until shortly before the deadline, then hands the last stretch to
//! one timer thread per relay, which waits on a futex timeout (hrtimer
//! precision, about 50 µs of slack) and completes a oneshot. Never early.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Waits longer than this start on tokio's timer.
const COARSE_MARGIN: Duration = Duration::from_millis(2);

struct Request {
    due: Instant,
    /// Tie-breaker so that equal deadlines fire in request order.
    order: u64,
    done: oneshot::Sender<()>,
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Request {}

impl PartialOrd for Request {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Request {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// The relay's precise clock; the thread ends when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub(super) struct PreciseClock {
    requests: mpsc::Sender<(Instant, oneshot::Sender<()>)>,
}

impl PreciseClock {
    pub(super) fn start() -> io::Result<Self> {
        let (requests, rx) = mpsc::channel();
        thread::Builder::new().name("relay-clock".to_owned()).spawn(move || run(rx))?;
        Ok(Self { requests })
    }

    /// Completes at `due`, at most about a tenth of a millisecond late and
    /// never early.
    pub(super) async fn sleep_until(&self, due: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        if due <= now {
            return;
        }
        if due - now > COARSE_MARGIN {
            tokio::time::sleep_until(due - COARSE_MARGIN).await;
        }
        let (done, wait) = oneshot::channel();
        if self.requests.send((due.into_std(), done)).is_err() || wait.await.is_err() {
            // The clock thread is gone: fall back to tokio's timer.
            tokio::time::sleep_until(due).await;
        }
    }
}

fn run(requests: mpsc::Receiver<(Instant, oneshot::Sender<()>)>) {
    let mut pending: BinaryHeap<Reverse<Request>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut open = true;
    while open || !pending.is_empty() {
        let now = Instant::now();
        while pending.peek().is_some_and(|Reverse(r)| r.due <= now) {
            if let Some(Reverse(request)) = pending.pop() {
                let _ = request.done.send(());
            }
        }
        let next = pending.peek().map(|Reverse(r)| r.due.saturating_duration_since(now));
        let received = match (next, open) {
            (Some(wait), true) => requests.recv_timeout(wait),
            (None, true) => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (Some(wait), false) => {
                thread::sleep(wait);
                continue;
            }
            (None, false) => break,
        };
        match received {
            Ok((due, done)) => {
                order += 1;
                pending.push(Reverse(Request { due, order, done }));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_early_and_close() {
        let clock = PreciseClock::start().expect("clock thread");
        let mut late = Vec::new();
        for wait_us in [0u64, 300, 1_500, 2_500, 5_000] {
            let due = tokio::time::Instant::now() + Duration::from_micros(wait_us);
            clock.sleep_until(due).await;
            let now = tokio::time::Instant::now();
            assert!(now >= due, "woke {:?} early", due - now);
            late.push(now - due);
        }
        // Loose: only catches a clock that ignores the deadline.
        assert!(late.iter().all(|l| *l < Duration::from_millis(50)), "{late:?}");
    }
}
