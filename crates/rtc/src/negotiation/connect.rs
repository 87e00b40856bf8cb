//! Connect attempts: the local intents (connect, replace, restart, close), what a connect does
//! with the current peer connection, presence and signaling, and the retries of a failed connect
//! (§13.2, P5).

use std::time::{Duration, Instant};

use tracing::{debug, info, trace, warn};

use super::Role;
use super::action::Action;
use super::input::{Presence, WaiterId};
use super::machine::{Machine, OfferState, Pc};
use super::timer::{Timer, TimerTable};
use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

/// The first retry of a failed connect (§13.2); doubling per consecutive failure.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two connect retries.
const RETRY_CAP: Duration = Duration::from_secs(8);

impl Machine {
    pub(super) fn on_connect(&mut self, now: Instant, waiter: WaiterId) {
        if self.channel_open() {
            self.push(Action::Complete { waiter, result: Ok(()) });
            return;
        }
        self.wanted = true;
        self.connect.push(waiter);
        if self.connecting() {
            trace!(name: "rtc.connect.join", "joining the connect attempt in flight");
            return;
        }
        self.start_attempt(now, true);
    }

    /// Starts a connect attempt bounded by `connect_timeout`.
    pub(super) fn start_attempt(&mut self, now: Instant, caller_initiated: bool) {
        self.retry_due = false;
        self.timers.stop(Timer::Retry);
        self.timers.set(Timer::Connect, now + self.config.connect_timeout);
        debug!(name: "rtc.connect.start", "connect attempt started");
        self.connect_step(now, caller_initiated);
    }

    pub(super) fn on_replace(&mut self, now: Instant, waiter: WaiterId) {
        info!(name: "rtc.peer.replace", connection = ?self.connection_id().map(ConnectionId::get), "replacing the peer connection");
        self.wanted = true;
        self.connect.push(waiter);
        self.retry_due = false;
        self.timers.stop(Timer::Retry);
        self.timers.set(Timer::Connect, now + self.config.connect_timeout);
        self.retire_for_replacement("replaced");
        match self.role {
            Role::Offerer => self.new_pc(),
            // `bye` even without a peer connection here: the offerer may still hold one, and an
            // ICE restart of it could never complete with a new peer connection on this side.
            Role::Answerer => {
                self.send(SignalPayload::Bye);
                self.request_offer(now);
            }
        }
    }

    pub(super) fn on_restart_ice(
        &mut self,
        now: Instant,
        waiter: WaiterId,
        asked_at: Option<Instant>,
    ) {
        let Some(pc) = self.current.as_ref() else {
            let result = Err(RtcError::NoPeerConnection { peer: self.peer.clone() });
            self.push(Action::Complete { waiter, result });
            return;
        };
        let asked_at = asked_at.filter(|_| self.role == Role::Answerer);
        if let Some(asked_at) = asked_at
            && pc.revived_at.is_some_and(|revived| revived >= asked_at)
        {
            // The offer our `register` asked for was taken and ICE is back already (or the
            // offerer built a new connection, whose channel is open).
            debug!(name: "rtc.ice.restart", phase = "answered_before_asked", connection = pc.id.get());
            self.wanted = true;
            self.push(Action::Complete { waiter, result: Ok(()) });
            return;
        }
        let connection = pc.id.get();
        let first_offer_pending = pc.first_offer_pending();
        let outstanding = matches!(pc.offer, OfferState::Outstanding { .. });
        let in_flight = pc.offer_in_flight();
        self.wanted = true;
        self.restart.push(waiter);
        if self.timers.is_armed(Timer::Restart) {
            trace!(name: "rtc.ice.restart", phase = "joined", connection);
            return;
        }
        self.timers.set(Timer::Restart, now + self.config.restart_timeout);
        info!(name: "rtc.ice.restart", phase = "requested", connection);
        match self.role {
            // P3: the first offer of a peer connection being built gathers on the current
            // network anyway; the restart completes when its channel opens.
            Role::Offerer if first_offer_pending => {}
            // P2: at most one offer outstanding; send it again instead of superseding it.
            Role::Offerer if outstanding => self.resend_offer(now),
            Role::Offerer if in_flight => {}
            Role::Offerer => self.offer(now, true),
            // The request went with `register`: wait for the offer it asked for (or the one
            // being taken already) without asking again.
            Role::Answerer if asked_at.is_some() => {
                self.awaiting_offer = true;
                let _ = self.send_budget.try_take(now);
            }
            Role::Answerer => self.request_offer(now),
        }
    }

    pub(super) fn on_close(&mut self, notify_remote: bool) {
        let closed = RtcError::PeerClosed { peer: self.peer.clone() };
        self.finish_connect(Err(closed.clone()));
        self.finish_restart(Err(closed));
        let had_connection = self.current.is_some();
        self.retire(PeerState::Closed, "closed locally");
        if had_connection && notify_remote {
            self.send(SignalPayload::Bye);
        }
        self.wanted = false;
        self.timers = TimerTable::default();
        self.closed = true;
        info!(name: "rtc.peer.closed", "peer closed");
    }

    /// What a connect does with the current peer connection.
    pub(super) fn connect_step(&mut self, now: Instant, caller_initiated: bool) {
        let role = self.role;
        let Some(pc) = self.current.as_ref() else {
            match role {
                Role::Offerer => self.new_pc(),
                Role::Answerer => {
                    // With nothing here, make sure the offerer starts from scratch too rather
                    // than restarting a peer connection this side no longer has.
                    if caller_initiated {
                        self.send(SignalPayload::Bye);
                    }
                    self.request_offer(now);
                }
            }
            return;
        };
        match role {
            Role::Offerer => match pc.state {
                PeerState::Failed | PeerState::Closed => {
                    self.retire_for_replacement("unusable peer connection replaced");
                    self.new_pc();
                }
                _ if pc.offer_in_flight() => {}
                PeerState::Disconnected => self.offer(now, true),
                _ => {}
            },
            Role::Answerer => {
                let waiting = matches!(pc.state, PeerState::Connecting | PeerState::Connected)
                    && pc.remote_description_set;
                if !waiting {
                    self.request_offer(now);
                }
            }
        }
    }

    pub(super) fn on_presence(&mut self, now: Instant, presence: Presence) {
        match presence {
            Presence::Left => {
                debug!(name: "rtc.peer.presence", present = false);
                self.present = false;
                self.timers.stop(Timer::Retry);
            }
            Presence::Joined => {
                debug!(name: "rtc.peer.presence", present = true);
                self.present = true;
                self.failures = 0;
                if !self.wanted {
                    return;
                }
                // P4: never a new offer or peer connection because of `peer_joined` alone.
                let usable = self.current.as_ref().is_some_and(Pc::usable);
                let healthy = self.channel_open();
                let outstanding = self
                    .current
                    .as_ref()
                    .is_some_and(|pc| matches!(pc.offer, OfferState::Outstanding { .. }));
                if healthy {
                } else if outstanding {
                    self.resend_offer(now);
                } else if self.role == Role::Answerer && self.awaiting_offer {
                    self.request_offer(now);
                } else if (!usable || self.retry_due) && !self.connecting() {
                    self.start_attempt(now, true);
                }
            }
        }
    }

    pub(super) fn on_signaling(&mut self, now: Instant, up: bool) {
        debug!(name: "rtc.peer.signaling", up);
        self.signaling_up = up;
        if !up {
            self.timers.stop(Timer::Retry);
            return;
        }
        self.failures = 0;
        if self.retry_due && self.wanted && self.present && !self.connecting() {
            self.start_attempt(now, true);
        }
    }

    pub(super) fn on_connect_timeout(&mut self, now: Instant) {
        let after = self.config.connect_timeout;
        warn!(name: "rtc.connect.timeout", ?after);
        if self.current.is_some() && !self.channel_open() {
            self.retire(PeerState::Failed, "connect timed out");
            self.send(SignalPayload::Bye);
        }
        let error = RtcError::ConnectTimeout { peer: self.peer.clone(), after };
        self.connect_failed(now, error, "connect timed out");
    }

    pub(super) fn on_retry(&mut self, now: Instant) {
        if self.retry_due && self.wanted && self.present && self.signaling_up {
            if self.channel_open() || self.connecting() {
                self.retry_due = false;
                return;
            }
            info!(name: "rtc.connect.retry", failures = self.failures);
            self.start_attempt(now, true);
        }
    }

    /// The connect attempt in flight ended without a channel (P5): answer its callers, tell the
    /// node the peer is not connected, and retry with backoff while it is wanted.
    pub(super) fn connect_failed(&mut self, now: Instant, error: RtcError, reason: &'static str) {
        if self.connect.is_empty() {
            debug!(name: "rtc.connect.failed", %error);
        } else {
            debug!(name: "rtc.connect.failed", %error, callers = self.connect.len());
        }
        self.finish_connect(Err(error));
        if !self.wanted {
            return;
        }
        self.push(Action::PeerLost { id: self.connection_id(), reason });
        self.schedule_retry(now);
    }

    pub(super) fn schedule_retry(&mut self, now: Instant) {
        self.retry_due = true;
        self.failures = self.failures.saturating_add(1);
        if !(self.present && self.signaling_up) {
            return;
        }
        let exponent = self.failures.saturating_sub(1).min(16);
        let delay = RETRY_FIRST.saturating_mul(1 << exponent).min(RETRY_CAP);
        debug!(name: "rtc.connect.retry_scheduled", failures = self.failures, ?delay);
        self.timers.set(Timer::Retry, now + delay);
    }
}
