//! Telling each caller what its event led to.
//!
//! A driver that wants an answer for an event passes a [`Ticket`] with it.
//! The Supervisor keeps the ticket with the work the event led to (a running
//! action, a pending intent, an offline grace) and emits exactly one
//! [`Resolution`] per ticket, drained with
//! [`Supervisor::poll_resolution`](crate::Supervisor::poll_resolution).

use crate::{ActionId, ActionKind, FailureKind};

/// An opaque caller token chosen by the driver; the Supervisor only carries
/// it and hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Why an event led to no action of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoAction {
    /// A snapshot whose sequence was not greater than the last accepted one.
    Stale,
    /// Nothing changed: same path, or the same lifecycle phase again.
    Duplicate,
    /// The event changed what the node believes (metered flags, background,
    /// offline after a cleanup) but warrants no action.
    StateOnly,
    /// Recovery is parked; the event was recorded but recovers nothing.
    Parked,
    /// The work the event asked for was dropped before it started: a cleanup
    /// or an offline commit took its place, or the path came back within the
    /// offline grace.
    Superseded,
}

impl NoAction {
    /// A stable snake-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::StateOnly => "state_only",
            Self::Parked => "parked",
            Self::Superseded => "superseded",
        }
    }
}

/// How the work behind a ticket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The action succeeded.
    Succeeded,
    /// The action failed (a retry may follow; it resolves no ticket).
    Failed(FailureKind),
    /// The action was cancelled by a cleanup or by the path going offline.
    Cancelled,
    /// No action ran for this event.
    NoAction(NoAction),
}

/// The answer for one [`Ticket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    /// The caller's ticket.
    pub ticket: Ticket,
    /// The action the event led to, or that subsumed it.
    pub action: Option<(ActionId, ActionKind)>,
    /// How it ended.
    pub verdict: Verdict,
    /// Whether the event shared an action that another event started (it
    /// was folded into a pending intent, joined a running action, or moved
    /// to an action that preempted its own).
    pub coalesced: bool,
}

impl Resolution {
    /// Whether the caller should see success: the action succeeded, or no
    /// action was needed.
    pub fn is_success(&self) -> bool {
        match self.verdict {
            Verdict::Succeeded => true,
            Verdict::NoAction(reason) => !matches!(reason, NoAction::Superseded | NoAction::Parked),
            Verdict::Failed(_) | Verdict::Cancelled => false,
        }
    }
}

/// A ticket waiting on some work, and whether it came second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    pub(crate) ticket: Ticket,
    pub(crate) coalesced: bool,
}

/// The tickets waiting on one piece of work. Stays allocation-free until the
/// first ticket arrives, so ticket-less drivers (replay, benchmarks) pay
/// nothing.
#[derive(Debug, Default)]
pub(crate) struct Waiters(Vec<Waiter>);

impl Waiters {
    pub(crate) fn one(ticket: Option<Ticket>, coalesced: bool) -> Self {
        let mut w = Self::default();
        w.push(ticket, coalesced);
        w
    }

    pub(crate) fn push(&mut self, ticket: Option<Ticket>, coalesced: bool) {
        if let Some(ticket) = ticket {
            self.0.push(Waiter { ticket, coalesced });
        }
    }

    /// Moves every waiter of `other` here, marking them coalesced.
    pub(crate) fn absorb(&mut self, other: Waiters) {
        self.0.extend(other.0.into_iter().map(|w| Waiter { coalesced: true, ..w }));
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.0.drain(..)
    }
}
