//! The offer and `ice_restart` budgets of docs/NEGOTIATION.md §13.3: a token bucket per pair
//! and direction, at most [`CAPACITY`] tokens, one back every [`REFILL`].

use std::time::{Duration, Instant};

/// Tokens a full bucket holds: the longest burst.
pub(crate) const CAPACITY: u32 = 4;
/// One token comes back this often: 30 a minute sustained.
pub(crate) const REFILL: Duration = Duration::from_secs(2);

/// One token bucket on the caller's clock.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    tokens: u32,
    /// When the last token came back (or the bucket was last full); `None` until first used.
    since: Option<Instant>,
}

impl Default for Budget {
    fn default() -> Self {
        Self { tokens: CAPACITY, since: None }
    }
}

impl Budget {
    fn refill(&mut self, now: Instant) {
        let Some(since) = self.since else {
            self.since = Some(now);
            return;
        };
        if self.tokens >= CAPACITY {
            self.since = Some(now);
            return;
        }
        let elapsed = now.saturating_duration_since(since);
        let earned = u32::try_from(elapsed.as_nanos() / REFILL.as_nanos()).unwrap_or(u32::MAX);
        if earned == 0 {
            return;
        }
        self.tokens = self.tokens.saturating_add(earned).min(CAPACITY);
        self.since = Some(if self.tokens >= CAPACITY { now } else { since + REFILL * earned });
    }

    /// Takes a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// When the next token will be there (`now` when there is one).
    pub(crate) fn next_token(&mut self, now: Instant) -> Instant {
        self.refill(now);
        match self.since {
            Some(since) if self.tokens == 0 => since + REFILL,
            _ => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_in_a_burst_then_one_every_two_seconds() {
        let t0 = Instant::now();
        let mut budget = Budget::default();
        for _ in 0..CAPACITY {
            assert!(budget.try_take(t0));
        }
        assert!(!budget.try_take(t0));
        assert_eq!(budget.next_token(t0), t0 + REFILL);
        assert!(!budget.try_take(t0 + Duration::from_millis(1999)));
        assert!(budget.try_take(t0 + REFILL));
        assert!(!budget.try_take(t0 + REFILL));
        // A long pause refills to the cap, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..CAPACITY {
            assert!(budget.try_take(later));
        }
        assert!(!budget.try_take(later));
    }
}

/// What a paced message kind is.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paced {
    Offer,
    IceRestart,
    Bye,
}

/// The decision on one message (sent, or handled by a receiver).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    Send,
    Defer,
    Drop,
}

/// The pacing of §13.3 as one pure model over a sequence of messages, composed of the pieces
/// the machine uses ([`Budget`], [`super::machine::RESEND_INTERVAL`]): one bucket per kind; the
/// newest deferred message of a kind takes the first token back; a re-send takes no token and
/// goes at most once per interval since that offer was last sent; `bye` is free.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    buckets: [Budget; 2],
    deferred: [bool; 2],
    offer_sent_at: Option<Instant>,
}

#[cfg(test)]
impl Pacer {
    fn release(&mut self, now: Instant) {
        for kind in 0..2 {
            if !self.deferred[kind] {
                continue;
            }
            let at = self.buckets[kind].next_token(now);
            if at <= now && self.buckets[kind].try_take(at) {
                self.deferred[kind] = false;
                if kind == 0 {
                    self.offer_sent_at = Some(at);
                }
            }
        }
    }

    pub(crate) fn decide(&mut self, now: Instant, paced: Paced, resend: bool) -> Pace {
        self.release(now);
        let kind = match paced {
            Paced::Bye => return Pace::Send,
            Paced::Offer if resend => {
                let interval = super::machine::RESEND_INTERVAL;
                if self.offer_sent_at.is_some_and(|at| now.saturating_duration_since(at) < interval)
                {
                    return Pace::Drop;
                }
                self.offer_sent_at = Some(now);
                return Pace::Send;
            }
            Paced::Offer => 0,
            Paced::IceRestart => 1,
        };
        if self.deferred[kind] {
            return Pace::Defer;
        }
        if self.buckets[kind].try_take(now) {
            if kind == 0 {
                self.offer_sent_at = Some(now);
            }
            return Pace::Send;
        }
        self.deferred[kind] = true;
        Pace::Defer
    }
}
