//! Pacing (§13.3, P6): the sending budget (hold an offer or `ice_restart` until a token is
//! back) and the receiving budget (defer what the remote sends beyond its budget).

use std::time::Instant;

use tracing::{debug, warn};

use super::machine::Machine;
use super::timer::Timer;
use crate::signal::SignalPayload;

impl Machine {
    /// Answerer: asks the offerer for an offer, within the sending budget.
    pub(super) fn request_offer(&mut self, now: Instant) {
        self.awaiting_offer = true;
        if self.held_request {
            return;
        }
        if self.send_budget.try_take(now) {
            self.send(SignalPayload::IceRestartRequest);
        } else {
            debug!(name: "rtc.budget.held", kind = "ice_restart");
            self.held_request = true;
            self.timers.set(Timer::SendBudget, self.send_budget.next_token(now));
        }
    }

    /// Offerer: takes a token for a new offer, or holds the offer until one is back.
    pub(super) fn take_offer_token(&mut self, now: Instant, restart: bool) -> bool {
        if self.send_budget.try_take(now) {
            return true;
        }
        debug!(name: "rtc.budget.held", kind = "offer", restart);
        if let Some(pc) = self.current.as_mut() {
            pc.held_offer = Some(restart);
        }
        self.timers.set(Timer::SendBudget, self.send_budget.next_token(now));
        false
    }

    pub(super) fn release_held(&mut self, now: Instant) {
        if std::mem::take(&mut self.held_request) {
            self.request_offer(now);
        }
        let held = self.current.as_mut().and_then(|pc| pc.held_offer.take());
        if let Some(restart) = held {
            self.offer(now, restart);
        }
    }

    /// Receiving budget (P6): whether a message that costs a token may be handled now. When
    /// not, it is deferred (replacing an older deferred one) until a token is back.
    pub(super) fn admit(&mut self, now: Instant, payload: &SignalPayload) -> bool {
        if self.deferred.is_none() && self.receive_budget.try_take(now) {
            return true;
        }
        self.deferred_total += 1;
        if self.deferred.is_none() {
            warn!(name: "rtc.budget.flood", kind = payload.kind(), deferred_total = self.deferred_total, "peer exceeds its budget; deferring");
        } else {
            debug!(name: "rtc.budget.superseded", kind = payload.kind(), deferred_total = self.deferred_total);
        }
        self.deferred = Some(payload.clone());
        self.timers.set(Timer::ReceiveBudget, self.receive_budget.next_token(now));
        false
    }
}
