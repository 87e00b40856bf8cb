//! Per-connection token buckets: a sender is throttled for its own traffic
//! (relays, pings), never its receivers.
//!
//! Sans-IO: time is an argument, so the bucket is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// A rate: `per_second` tokens refill continuously up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages that may arrive at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// A rate of `per_second` with room for `burst` at once.
    pub const fn new(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }
}

/// A token bucket that starts full.
#[derive(Debug, Clone)]
pub(super) struct TokenBucket {
    limit: RateLimit,
    /// Tokens, in millionths, so refills of a fraction of a token add up.
    micro_tokens: u64,
    refilled_at: Instant,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    pub(super) fn new(limit: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket { limit, micro_tokens: u64::from(limit.burst) * MICRO, refilled_at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed: Duration = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        let earned = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.limit.per_second));
        let cap = u64::from(self.limit.burst) * MICRO;
        self.micro_tokens = self.micro_tokens.saturating_add(earned).min(cap);
    }

    /// Takes one token at `now`; `false` when the bucket is empty (the
    /// message is over the limit).
    #[must_use]
    pub(super) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

/// Backoff of the accept loop when accepting fails (typically EMFILE), and
/// the rate limit of its warning: at most one per `log_interval`, carrying
/// how many failures it stands for.
#[derive(Debug)]
pub(super) struct AcceptBackoff {
    delay: Duration,
    min: Duration,
    max: Duration,
    log_interval: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// What to do after a failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AcceptFailure {
    /// Wait this long before accepting again.
    pub(super) wait: Duration,
    /// Log a warning now, standing for this many failures (`None`: stay quiet).
    pub(super) log: Option<u64>,
}

impl AcceptBackoff {
    pub(super) fn new(min: Duration, max: Duration, log_interval: Duration) -> AcceptBackoff {
        AcceptBackoff { delay: min, min, max, log_interval, last_logged: None, unlogged: 0 }
    }

    /// An accept failed at `now`.
    #[must_use]
    pub(super) fn failed(&mut self, now: Instant) -> AcceptFailure {
        let wait = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= self.log_interval);
        let log = due.then(|| {
            self.last_logged = Some(now);
            std::mem::take(&mut self.unlogged)
        });
        AcceptFailure { wait, log }
    }

    /// An accept succeeded: the next failure starts from the shortest wait.
    pub(super) fn succeeded(&mut self) {
        self.delay = self.min;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit::new(10, 5), start);
        assert_eq!((0..8).filter(|_| bucket.take(start)).count(), 5);
        // 10 per second: one token every 100 ms, never more than the burst.
        assert!(!bucket.take(start + Duration::from_millis(99)));
        assert!(bucket.take(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| bucket.take(later)).count(), 5);
    }

    #[test]
    fn accept_failures_back_off_and_log_once_per_interval() {
        let start = Instant::now();
        let mut backoff = AcceptBackoff::new(
            Duration::from_millis(5),
            Duration::from_millis(40),
            Duration::from_secs(10),
        );
        let first = backoff.failed(start);
        assert_eq!(first, AcceptFailure { wait: Duration::from_millis(5), log: Some(1) });
        let waits: Vec<_> =
            (0..4).map(|i| backoff.failed(start + Duration::from_millis(i))).collect();
        assert!(waits.iter().all(|failure| failure.log.is_none()), "{waits:?}");
        assert_eq!(waits.last().unwrap().wait, Duration::from_millis(40));
        let later = backoff.failed(start + Duration::from_secs(10));
        assert_eq!(later.log, Some(5), "the warning stands for the quiet failures");
        backoff.succeeded();
        assert_eq!(backoff.failed(start + Duration::from_secs(11)).wait, Duration::from_millis(5));
    }
}
