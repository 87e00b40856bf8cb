//! The negotiation machine's timers: one enum and a small table of deadlines.

use std::time::Instant;

/// Why the machine wants to be woken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Timer {
    /// The connect attempt in flight runs out (`connect_timeout` from its start).
    Connect,
    /// The waiting ICE restart runs out (`restart_timeout` from the request).
    Restart,
    /// The outstanding offer has waited `connect_timeout` for its answer.
    Answer,
    /// A failed connect is retried (capped exponential backoff, §13.2).
    Retry,
    /// The outstanding offer may be re-sent again (§13.3: at most once a second).
    Resend,
    /// A token is back for a message this side holds back (§13.3, sending).
    SendBudget,
    /// A token is back for a message the remote sent beyond its budget (§13.3, receiving).
    ReceiveBudget,
}

impl Timer {
    const COUNT: usize = 7;
    const ALL: [Timer; Self::COUNT] = [
        Timer::Connect,
        Timer::Restart,
        Timer::Answer,
        Timer::Retry,
        Timer::Resend,
        Timer::SendBudget,
        Timer::ReceiveBudget,
    ];

    /// A stable name for logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Restart => "restart",
            Self::Answer => "answer",
            Self::Retry => "retry",
            Self::Resend => "resend",
            Self::SendBudget => "send_budget",
            Self::ReceiveBudget => "receive_budget",
        }
    }
}

/// Deadlines, at most one per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// The earliest deadline and the timer it belongs to.
    pub(crate) fn next(&self) -> Option<(Timer, Instant)> {
        Timer::ALL
            .into_iter()
            .filter_map(|t| self.get(t).map(|at| (t, at)))
            .min_by_key(|&(_, at)| at)
    }

    /// Disarms and returns a timer whose deadline is at or before `now`, if any; call repeatedly
    /// to expire every due timer, earliest first.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Timer> {
        let (timer, at) = self.next()?;
        if at > now {
            return None;
        }
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expires_due_timers_earliest_first_and_keeps_future_ones() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut table = TimerTable::default();
        table.set(Timer::Retry, t0 + ms(20));
        table.set(Timer::Connect, t0 + ms(10));
        table.set(Timer::Answer, t0 + ms(99));
        assert_eq!(table.next(), Some((Timer::Connect, t0 + ms(10))));
        assert_eq!(table.expire(t0 + ms(5)), None);
        assert_eq!(table.expire(t0 + ms(50)), Some(Timer::Connect));
        assert_eq!(table.expire(t0 + ms(50)), Some(Timer::Retry));
        assert_eq!(table.expire(t0 + ms(50)), None);
        assert!(table.is_armed(Timer::Answer));
        assert_eq!(Timer::Answer.name(), "answer");
    }
}
