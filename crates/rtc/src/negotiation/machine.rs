//! The per-peer negotiation machine: every decision of docs/NEGOTIATION.md for one remote peer,
//! without I/O and without a clock.
//!
//! Driving contract (as quinn-proto's `Connection` and tether-recovery's `Supervisor`): feed
//! [`Machine::handle_input`] and [`Machine::handle_timeout`] with the current time, then drain
//! [`Machine::poll_action`]; an action that ends in an outcome is answered with
//! [`Input::Done`] before any other input. Sleep until [`Machine::poll_timeout`].
//!
//! The rules live by concept: `connect.rs` (local intents, connect attempts and their retries,
//! presence, signaling), `offerer.rs` and `answerer.rs` (the rules of each role), `pacing.rs` (the
//! budgets). This file holds the state, the input dispatch, the peer connection's events, timers
//! and the building blocks they share.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tether_signal::protocol::PeerId;
use tracing::{debug, info, trace, warn};

use super::action::Action;
use super::budget::Budget;
use super::input::{Candidate, Input, Outcome, PcEvent, WaiterId};
use super::sdp::Fingerprints;
use super::timer::{Timer, TimerTable};
use super::{OfferId, Role};
use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

/// At most this many remote candidates wait for a remote description; older ones are dropped.
pub(crate) const MAX_BUFFERED_CANDIDATES: usize = 64;
/// How many superseded remote sessions the answerer remembers.
pub(super) const SUPERSEDED_SESSIONS: usize = 16;
/// An outstanding offer is re-sent at most this often (§13.3).
pub(crate) const RESEND_INTERVAL: Duration = Duration::from_secs(1);

/// The bounds the machine keeps.
#[derive(Debug, Clone)]
pub(crate) struct MachineConfig {
    /// A connect attempt, and the wait for an answer to one offer.
    pub(crate) connect_timeout: Duration,
    /// An ICE restart, from the request until ICE is connected again.
    pub(crate) restart_timeout: Duration,
}

/// The offerer's offer on the current peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OfferState {
    /// None outstanding.
    Idle,
    /// Being created (`CreateOffer` issued).
    Creating { restart: bool, seq: u64 },
    /// Sent (last at `sent_at`); waiting for its answer. `resend_held`: a re-send waits for
    /// the re-send interval.
    Outstanding { offer: OfferId, restart: bool, sent_at: Instant, resend_held: bool },
    /// Its answer is being applied.
    Applying { restart: bool, fingerprints: Fingerprints },
}

/// An offer the answerer is taking (waiting for its peer connection, or being applied).
#[derive(Debug, Clone)]
pub(super) struct TakenOffer {
    pub(super) sdp: String,
    pub(super) offer: OfferId,
    pub(super) restart: bool,
    pub(super) fingerprints: Fingerprints,
}

/// One peer connection, as far as negotiation is concerned.
#[derive(Debug, Clone)]
pub(super) struct Pc {
    pub(super) id: ConnectionId,
    /// The executor reported it built.
    pub(super) built: bool,
    pub(super) state: PeerState,
    /// Offerer: the offer in flight.
    pub(super) offer: OfferState,
    /// Offerer: an offer (its restart flag) waiting for a token of the sending budget.
    pub(super) held_offer: Option<bool>,
    /// Answerer: the offer being taken.
    pub(super) taking: Option<TakenOffer>,
    /// A remote description has been applied (candidates can be added).
    pub(super) remote_description_set: bool,
    /// The remote DTLS identity of the applied remote description.
    pub(super) remote_fingerprints: Fingerprints,
    /// Answerer: the last offer applied, to classify the next one.
    pub(super) remote_offer: Option<OfferId>,
    /// Answerer: the last answer sent, to answer a duplicate offer again.
    pub(super) last_answer: Option<String>,
    pub(super) channel_open: bool,
    /// An ICE restart was applied; the next ICE `connected` completes it.
    pub(super) restart_applied: bool,
    /// When an ICE restart last completed or the channel opened.
    pub(super) revived_at: Option<Instant>,
}

impl Pc {
    fn new(id: ConnectionId) -> Self {
        Self {
            id,
            built: false,
            state: PeerState::Connecting,
            offer: OfferState::Idle,
            held_offer: None,
            taking: None,
            remote_description_set: false,
            remote_fingerprints: Fingerprints::default(),
            remote_offer: None,
            last_answer: None,
            channel_open: false,
            restart_applied: false,
            revived_at: None,
        }
    }

    /// Offerer: an offer is on its way or awaited (or held for a token).
    pub(super) fn offer_in_flight(&self) -> bool {
        self.offer != OfferState::Idle || self.held_offer.is_some()
    }

    /// Offerer: the first offer of this peer connection is not answered yet.
    pub(super) fn first_offer_pending(&self) -> bool {
        !self.remote_description_set && self.offer_in_flight()
    }

    pub(super) fn usable(&self) -> bool {
        !matches!(self.state, PeerState::Failed | PeerState::Closed)
    }
}

/// The negotiation machine of one remote peer. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Machine {
    pub(super) peer: PeerId,
    pub(super) role: Role,
    pub(super) config: MachineConfig,
    /// Peer connections built for this peer so far (the next one is `built + 1`).
    pub(super) built: u64,
    /// Offers created so far (offerer), numbering them.
    pub(super) offers_sent: u64,
    pub(super) current: Option<Pc>,
    /// Remote candidates that arrived before a remote description to add them to.
    pub(super) candidates: VecDeque<Candidate>,
    pub(super) connect: Vec<WaiterId>,
    pub(super) restart: Vec<WaiterId>,
    /// Answerer: remote sessions the offerer replaced by a newer one, newest last (at most
    /// [`SUPERSEDED_SESSIONS`]): an offer of one of them is stale (§6.1).
    pub(super) superseded_sessions: VecDeque<String>,
    /// Answerer: the remote session of the last new-session offer taken (its pc may have been
    /// retired since); the next different session supersedes it.
    pub(super) last_taken_session: Option<String>,
    /// Answerer: `ice_restart` sent, no offer taken since (re-sent on `peer_joined`).
    pub(super) awaiting_offer: bool,
    /// Answerer: an `ice_restart` waiting for a token of the sending budget.
    pub(super) held_request: bool,
    /// This side wants a connection (asked to connect, or a channel opened; until closed).
    pub(super) wanted: bool,
    /// The remote is registered (unknown counts as present).
    pub(super) present: bool,
    /// This node's signaling is up (unknown counts as up).
    pub(super) signaling_up: bool,
    /// Consecutive failed connects, for the retry backoff.
    pub(super) failures: u32,
    /// A failed connect waits for its retry.
    pub(super) retry_due: bool,
    pub(super) send_budget: Budget,
    pub(super) receive_budget: Budget,
    /// The newest offer or `ice_restart` received beyond the budget, handled when a token is back.
    pub(super) deferred: Option<SignalPayload>,
    /// Messages the remote sent beyond its budget, ever.
    pub(super) deferred_total: u64,
    pub(super) timers: TimerTable,
    pub(super) actions: VecDeque<Action>,
    pub(super) closed: bool,
}

impl Machine {
    /// A machine for `peer`, this side being `role`. `built` is how many peer connections were
    /// built for this peer before (ids continue from there).
    pub(crate) fn new(peer: PeerId, role: Role, config: MachineConfig, built: u64) -> Self {
        Self {
            peer,
            role,
            config,
            built,
            offers_sent: 0,
            current: None,
            candidates: VecDeque::new(),
            connect: Vec::new(),
            restart: Vec::new(),
            superseded_sessions: VecDeque::new(),
            last_taken_session: None,
            awaiting_offer: false,
            held_request: false,
            wanted: false,
            present: true,
            signaling_up: true,
            failures: 0,
            retry_due: false,
            send_budget: Budget::default(),
            receive_budget: Budget::default(),
            deferred: None,
            deferred_total: 0,
            timers: TimerTable::default(),
            actions: VecDeque::new(),
            closed: false,
        }
    }

    // ----- getters -----------------------------------------------------------------------

    /// The current peer connection's id.
    pub(crate) fn connection_id(&self) -> Option<ConnectionId> {
        self.current.as_ref().map(|pc| pc.id)
    }

    /// Whether the current peer connection's data channel is open.
    pub(crate) fn channel_open(&self) -> bool {
        self.current.as_ref().is_some_and(|pc| pc.channel_open)
    }

    /// Whether the machine was closed (it does nothing more).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Offers and `ice_restart`s the remote sent beyond its budget so far.
    #[cfg(test)]
    pub(crate) fn deferred_total(&self) -> u64 {
        self.deferred_total
    }

    /// Whether a connect attempt is in flight (its bound is armed).
    pub(crate) fn connecting(&self) -> bool {
        self.timers.is_armed(Timer::Connect)
    }

    /// Why the next wake-up is due.
    pub(crate) fn timeout_reason(&self) -> Option<&'static str> {
        self.timers.next().map(|(timer, _)| timer.name())
    }

    // ----- outputs -----------------------------------------------------------------------

    /// The next action to run, in order.
    #[must_use]
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Machine::handle_timeout`] next.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(_, at)| at)
    }

    pub(super) fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    pub(super) fn send(&mut self, payload: SignalPayload) {
        self.push(Action::Send(payload));
    }

    // ----- inputs ------------------------------------------------------------------------

    /// Handles one input at `now`.
    pub(crate) fn handle_input(&mut self, now: Instant, input: Input) {
        if self.closed {
            if let Input::Connect(waiter)
            | Input::Replace(waiter)
            | Input::RestartIce { waiter, .. } = input
            {
                let result = Err(RtcError::PeerClosed { peer: self.peer.clone() });
                self.push(Action::Complete { waiter, result });
            }
            return;
        }
        match input {
            Input::Connect(waiter) => self.on_connect(now, waiter),
            Input::Replace(waiter) => self.on_replace(now, waiter),
            Input::RestartIce { waiter, asked_at } => self.on_restart_ice(now, waiter, asked_at),
            Input::ClearPendingRestart => {
                if !self.restart.is_empty() {
                    info!(name: "rtc.ice.restart", phase = "cleared");
                }
                self.finish_restart(Err(RtcError::RestartCancelled { peer: self.peer.clone() }));
            }
            Input::Close { notify_remote } => self.on_close(notify_remote),
            Input::Signal(payload) => self.on_signal(now, payload),
            Input::Presence(presence) => self.on_presence(now, presence),
            Input::Signaling { up } => self.on_signaling(now, up),
            Input::Pc { id, event } => {
                if self.connection_id() == Some(id) {
                    self.on_pc_event(now, event);
                } else {
                    trace!(name: "rtc.peer.stale_event", connection = id.get(), "event of a retired peer connection");
                }
            }
            Input::Done { id, outcome } => {
                if self.connection_id() == Some(id) {
                    self.on_outcome(now, outcome);
                } else {
                    trace!(name: "rtc.peer.stale_event", connection = id.get(), "outcome for a retired peer connection");
                }
            }
            Input::SendFailed(error) => {
                if self.connecting() {
                    self.connect_failed(now, error.clone(), "signaling refused a message");
                }
                self.finish_restart(Err(error));
            }
        }
    }

    /// Handles every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.expire(now) {
            if self.closed {
                return;
            }
            match timer {
                Timer::Connect => self.on_connect_timeout(now),
                Timer::Restart => {
                    let after = self.config.restart_timeout;
                    warn!(name: "rtc.ice.restart", phase = "timeout", ?after);
                    if let Some(pc) = self.current.as_mut() {
                        pc.restart_applied = false;
                    }
                    self.finish_restart(Err(RtcError::RestartTimeout {
                        peer: self.peer.clone(),
                        after,
                    }));
                }
                Timer::Answer => self.on_answer_timeout(now),
                Timer::Retry => self.on_retry(now),
                Timer::SendBudget => self.release_held(now),
                Timer::Resend => self.release_resend(now),
                Timer::ReceiveBudget => {
                    if let Some(payload) = self.deferred.take() {
                        debug!(name: "rtc.budget.released", kind = payload.kind());
                        self.on_signal(now, payload);
                    }
                }
            }
        }
    }

    // ----- peer connection events --------------------------------------------------------

    fn on_pc_event(&mut self, now: Instant, event: PcEvent) {
        let Some(pc) = self.current.as_mut() else {
            return;
        };
        let id = pc.id;
        match event {
            PcEvent::LocalCandidate(candidate) => self.send(SignalPayload::Candidate {
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
            }),
            PcEvent::GatheringComplete => self.send(SignalPayload::end_of_candidates()),
            PcEvent::State(state) => {
                pc.state = state;
                self.push(Action::State { id, state });
                if state == PeerState::Connected {
                    // Connected again: whatever held the data is over.
                    self.hold_data(false);
                }
                if matches!(state, PeerState::Failed | PeerState::Closed) && self.connecting() {
                    let error = RtcError::ConnectionFailed { peer: self.peer.clone() };
                    self.connect_failed(now, error, "peer connection failed");
                }
            }
            PcEvent::IceConnected => {
                if pc.restart_applied {
                    pc.restart_applied = false;
                    pc.revived_at = Some(now);
                    info!(name: "rtc.ice.restart", phase = "completed", connection = id.get());
                    self.finish_restart(Ok(()));
                }
            }
            PcEvent::ChannelAnnounced { label } => {
                // P8: the channel of §3 is negotiated out of band; nothing announced in-band
                // is ours.
                debug!(name: "rtc.channel.ignored", connection = id.get(), %label);
                self.push(Action::IgnoreChannel { id });
            }
            PcEvent::ChannelOpened => {
                pc.channel_open = true;
                pc.revived_at = Some(now);
                info!(name: "rtc.channel.open", connection = id.get());
                self.wanted = true;
                self.failures = 0;
                self.retry_due = false;
                self.timers.stop(Timer::Retry);
                self.finish_connect(Ok(()));
                // A new channel revives the peer just as well as a completed restart would.
                self.finish_restart(Ok(()));
            }
            PcEvent::ChannelClosed => pc.channel_open = false,
        }
    }

    fn on_outcome(&mut self, now: Instant, outcome: Outcome) {
        if let Outcome::Created = outcome {
            let Some(pc) = self.current.as_mut() else { return };
            pc.built = true;
            let id = pc.id;
            self.push(Action::State { id, state: PeerState::Connecting });
        }
        match self.role {
            Role::Offerer => self.offerer_outcome(now, outcome),
            Role::Answerer => self.answerer_outcome(now, outcome),
        }
    }

    // ----- time --------------------------------------------------------------------------

    // ----- shared building blocks --------------------------------------------------------

    pub(super) fn set_timer(&mut self, timer: Timer, at: Instant) {
        self.timers.set(timer, at);
    }

    pub(super) fn stop_timer(&mut self, timer: Timer) {
        self.timers.stop(timer);
    }

    /// A new peer connection becomes the current one.
    pub(super) fn new_pc(&mut self) {
        self.built += 1;
        let id = ConnectionId::new(self.built);
        self.current = Some(Pc::new(id));
        self.push(Action::CreatePc { id });
    }

    /// Closes the current peer connection and reports it in `state` (closed or failed).
    pub(super) fn retire(&mut self, state: PeerState, reason: &'static str) {
        self.retire_current(state, false, reason);
    }

    /// Closes the current peer connection to make way for the next one, which this side
    /// builds (or asks the offerer for) right away: no loss of the peer.
    pub(super) fn retire_for_replacement(&mut self, reason: &'static str) {
        self.retire_current(PeerState::Closed, true, reason);
    }

    fn retire_current(&mut self, state: PeerState, replaced: bool, reason: &'static str) {
        let Some(pc) = self.current.take() else {
            return;
        };
        info!(name: "rtc.peer.retired", connection = pc.id.get(), ?state, replaced, reason);
        self.timers.stop(Timer::Answer);
        self.timers.stop(Timer::Resend);
        self.timers.stop(Timer::SendBudget);
        self.push(Action::Retire { id: pc.id, state, replaced });
    }

    pub(super) fn finish_connect(&mut self, result: Result<(), RtcError>) {
        self.timers.stop(Timer::Connect);
        for waiter in std::mem::take(&mut self.connect) {
            self.push(Action::Complete { waiter, result: result.clone() });
        }
    }

    pub(super) fn finish_restart(&mut self, result: Result<(), RtcError>) {
        self.timers.stop(Timer::Restart);
        // Whatever the outcome, nothing is restarting any more: a failed restart is followed by
        // a replacement, which brings its own channel.
        self.hold_data(false);
        for waiter in std::mem::take(&mut self.restart) {
            self.push(Action::Complete { waiter, result: result.clone() });
        }
    }

    /// Which side of the pair this machine negotiates.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Holds (or releases) data on the current peer connection (see [`Action::Hold`]).
    pub(super) fn hold_data(&mut self, held: bool) {
        if let Some(pc) = self.current.as_ref() {
            let id = pc.id;
            self.push(Action::Hold { id, held });
        }
    }

    pub(super) fn on_remote_candidate(&mut self, candidate: Candidate) {
        if candidate.candidate.trim().is_empty() {
            trace!(name: "rtc.ice.remote_candidate", "end of candidates");
            return;
        }
        match self.current.as_ref() {
            Some(pc) if pc.remote_description_set => {
                self.push(Action::AddCandidate { id: pc.id, candidate });
            }
            _ => {
                if self.candidates.contains(&candidate) {
                    return;
                }
                if self.candidates.len() == MAX_BUFFERED_CANDIDATES {
                    self.candidates.pop_front();
                }
                trace!(name: "rtc.ice.remote_candidate", "buffered until a remote description");
                self.candidates.push_back(candidate);
            }
        }
    }

    pub(super) fn flush_candidates(&mut self) {
        let Some(id) = self.connection_id() else { return };
        while let Some(candidate) = self.candidates.pop_front() {
            self.push(Action::AddCandidate { id, candidate });
        }
    }

    pub(super) fn on_signal(&mut self, now: Instant, payload: SignalPayload) {
        trace!(name: "rtc.signal.in", kind = payload.kind());
        match (self.role, payload) {
            (Role::Answerer, SignalPayload::Offer { sdp }) => self.on_offer(now, sdp),
            (Role::Offerer, SignalPayload::Answer { sdp }) => self.on_answer(now, sdp),
            (Role::Offerer, SignalPayload::IceRestartRequest) => self.on_restart_request(now),
            (_, SignalPayload::Candidate { candidate, sdp_mid, sdp_mline_index }) => {
                self.on_remote_candidate(Candidate { candidate, sdp_mid, sdp_mline_index });
            }
            (_, SignalPayload::Bye) => self.on_bye(now),
            (role, payload) => ignored(payload.kind(), wrong_side(role)),
        }
    }

    fn on_bye(&mut self, now: Instant) {
        let Some(pc) = self.current.as_ref() else {
            return ignored("bye", "no peer connection");
        };
        if self.role == Role::Offerer && pc.first_offer_pending() {
            // The answerer answers an offer before it says anything else, so this `bye` left
            // before it saw the first offer of this peer connection: it is about an older one.
            return ignored("bye", "sent before the answerer saw this peer connection's offer");
        }
        self.retire(PeerState::Closed, "closed by remote");
        self.finish_restart(Err(RtcError::ClosedByRemote { peer: self.peer.clone() }));
        if self.connecting() {
            // A connect is still wanted and still within its bound: start over.
            self.connect_step(now, false);
        }
    }
}

fn wrong_side(role: Role) -> &'static str {
    match role {
        Role::Offerer => "only the answerer may send this, and this side offers",
        Role::Answerer => "only the offerer may send this, and this side answers",
    }
}

pub(super) fn ignored(kind: &'static str, reason: &'static str) {
    debug!(name: "rtc.signal.ignored", kind, reason);
}
