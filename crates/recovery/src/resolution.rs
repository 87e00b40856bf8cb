//! Telling each caller what its event led to.
//!
//! A driver that wants an answer for an event passes a [`Ticket`] with it.
//! The Supervisor keeps the ticket with the work the event led to (a running
//! action, a pending intent, an offline grace) and emits exactly one
//! [`Resolution`] per ticket, drained with
//! [`Supervisor::poll_resolution`](crate::Supervisor::poll_resolution).

use crate::{ActionError, ActionRef, ParkReason};

/// An opaque caller token chosen by the driver; the Supervisor only carries
/// it and hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Why an event needed no action: it is handled as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoAction {
    /// A snapshot whose sequence was not greater than the last accepted one.
    Stale,
    /// Nothing changed: same path, or the same lifecycle phase again.
    Duplicate,
    /// The event changed what the node believes (metered flags, background,
    /// offline after a cleanup) but warrants no action.
    StateOnly,
}

impl NoAction {
    /// A stable snake-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::StateOnly => "state_only",
        }
    }
}

/// How the work behind a ticket ended. Every fact a caller's answer needs
/// is here: the action, its failure, the park reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The action the event led to (or that absorbed it) succeeded.
    Succeeded {
        /// The action.
        action: ActionRef,
    },
    /// That action failed (a retry may follow on its own; it answers no
    /// ticket).
    Failed {
        /// The action.
        action: ActionRef,
        /// How it failed, as the executor reported it.
        failure: ActionError,
    },
    /// That action was cancelled by a cleanup or by the path going offline.
    Cancelled {
        /// The action.
        action: ActionRef,
    },
    /// The work the event asked for was dropped before it started: a
    /// cleanup or an offline commit took its place, or the path came back
    /// within the offline grace.
    Superseded,
    /// Recovery is parked; the event was recorded but recovers nothing.
    Parked(ParkReason),
    /// No action was needed.
    NoAction(NoAction),
}

impl Verdict {
    /// The action that served the event, if one ran.
    pub fn action(&self) -> Option<ActionRef> {
        match self {
            Self::Succeeded { action }
            | Self::Failed { action, .. }
            | Self::Cancelled { action } => Some(*action),
            Self::Superseded | Self::Parked(_) | Self::NoAction(_) => None,
        }
    }

    /// Whether the caller should see success: the action succeeded, or no
    /// action was needed.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeeded { .. } | Self::NoAction(_))
    }
}

/// The answer for one [`Ticket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The caller's ticket.
    pub ticket: Ticket,
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
        self.verdict.is_success()
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
