//! The Supervisor's timers: one enum and a small table of deadlines.

use std::time::Instant;

/// Why the Supervisor wants to be woken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The path went Unavailable; when this fires, offline is committed
    /// (the offline grace).
    OfflineGrace,
    /// A failed action's retry is due (backoff).
    Retry,
    /// Seed-style settle window ended; decide now
    /// ([`PolicyConfig::settle_window`](crate::PolicyConfig::settle_window)).
    Settle,
}

impl Timer {
    const COUNT: usize = 3;
    const ALL: [Timer; Self::COUNT] = [Timer::OfflineGrace, Timer::Retry, Timer::Settle];

    /// A stable name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::OfflineGrace => "offline_grace",
            Self::Retry => "retry",
            Self::Settle => "settle",
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

    /// Disarms and returns a timer whose deadline is at or before `now`, if
    /// any; call repeatedly to expire every due timer, earliest first.
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
        table.set(Timer::OfflineGrace, t0 + ms(10));
        table.set(Timer::Settle, t0 + ms(99));
        assert_eq!(table.next(), Some((Timer::OfflineGrace, t0 + ms(10))));
        assert_eq!(table.expire(t0 + ms(5)), None);
        assert_eq!(table.expire(t0 + ms(50)), Some(Timer::OfflineGrace));
        assert_eq!(table.expire(t0 + ms(50)), Some(Timer::Retry));
        assert_eq!(table.expire(t0 + ms(50)), None);
        assert!(table.is_armed(Timer::Settle));
    }
}
