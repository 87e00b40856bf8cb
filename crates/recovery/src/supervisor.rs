//! The Supervisor: every recovery decision of tether, as a sans-IO state
//! machine. docs/POLICY.md states each rule in words, with the scenario
//! files that pin it.
//!
//! Methods come in four groups, like quinn-proto's `Connection`:
//! getters (`&self`), inputs (`handle_input`, `handle_timeout`), and outputs
//! drained by polling (`poll_action`, `poll_resolution`, `poll_timeout`).
//! After every input, drain `poll_action` until `None` and run the commands
//! in order (a `Cancel` always comes before the `Start` that replaces it),
//! drain `poll_resolution` to answer callers, and re-arm the wake-up at
//! `poll_timeout`.
//!
//! The Supervisor never reads a clock, never sleeps and never spawns: `now`
//! is always an argument, and its only randomness is the seeded jitter RNG.

use std::collections::VecDeque;
use std::mem;
use std::time::Instant;

use tracing::{debug, trace};

use crate::backoff::Backoff;
use crate::resolution::Waiters;
use crate::timer::TimerTable;
use crate::{
    ActionCommand, ActionError, ActionId, ActionKind, ActionOutcome, ActionRef, AppLifecycleState,
    Availability, CleanupReason, ConnectionState, FailureKind, NetworkEvent, NetworkSnapshot,
    NoAction, ParkReason, PathStatus, Phase, PolicyConfig, PolicyError, ReconnectReason,
    Resolution, Ticket, Timer, TransportSet, Verdict,
};

/// Everything that can change what the Supervisor decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A platform or application event. Pass a ticket to get one
    /// [`Resolution`] for it.
    Event {
        /// The event.
        event: NetworkEvent,
        /// The caller's ticket, if it waits for an answer.
        ticket: Option<Ticket>,
    },
    /// The executor finished the action `id` (not for cancelled actions:
    /// those ended when the Supervisor cancelled them).
    ActionCompleted {
        /// The id from [`ActionCommand::Start`].
        id: ActionId,
        /// `Ok` when it did its job; the executor's error otherwise, which
        /// the Supervisor hands to every caller the action served.
        result: Result<(), ActionError>,
    },
    /// The signaling link died on its own (server closed it, ping timeout).
    SignalingLost,
    /// The signaling link came up on its own.
    SignalingConnected,
    /// A peer connection that was up failed or closed on its own (ICE
    /// failure, the far side went away): Restore replaces it. Like a route
    /// change, it needs a follow-up when a recovery is already running,
    /// since that one may have passed the peer before it died.
    PeerLost,
    /// The app has new credentials: lifts an auth or config park.
    CredentialsRenewed,
}

/// How a Supervisor starts: what the platform already knew before any event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialState {
    /// The lifecycle phase.
    pub phase: Phase,
    /// The path's availability.
    pub availability: Availability,
    /// The path's transports.
    pub transports: TransportSet,
    /// The last accepted snapshot sequence.
    pub sequence: u64,
    /// Whether signaling is connected.
    pub signaling_connected: bool,
}

impl Default for InitialState {
    /// A cold start: nothing known, nothing connected.
    fn default() -> Self {
        Self {
            phase: Phase::Unknown,
            availability: Availability::Unknown,
            transports: TransportSet::EMPTY,
            sequence: 0,
            signaling_connected: false,
        }
    }
}

/// Misuse of the driving contract (building a Supervisor fails with a
/// [`PolicyError`] instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// A completion named an action that is not running: it was cancelled,
    /// already reported, or never started. Drivers may ignore this for
    /// actions they know were cancelled.
    #[error("action {id} is not running")]
    NotRunning {
        /// The id that was reported.
        id: ActionId,
    },
}

/// Why an intent exists; decides how it folds into a running action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The route changed: work running on the old route needs a follow-up.
    RouteChange,
    /// Signaling died: anything that re-establishes signaling covers it.
    SignalingLoss,
    /// A peer connection died: like a route change, work already running
    /// may have passed it.
    PeerLoss,
    /// Lifecycle, explicit request, retry: a running action at least as
    /// strong covers it.
    Request,
}

impl Cause {
    /// Whether a running action of the same strength still leaves work to
    /// do (a follow-up), rather than covering the intent.
    fn needs_follow_up(self) -> bool {
        matches!(self, Cause::RouteChange | Cause::PeerLoss)
    }
}

#[derive(Debug)]
struct Running {
    id: ActionId,
    kind: ActionKind,
    attempt: u32,
    waiters: Waiters,
    /// The path when it started.
    path: NetworkSnapshot,
}

/// Work decided but not started: at most one, of the strongest kind asked.
#[derive(Debug)]
struct Intent {
    kind: ActionKind,
    waiters: Waiters,
}

/// The persistent recovery decision engine: every rule of docs/POLICY.md as
/// a sans-IO state machine.
///
/// Inputs go in through [`handle_input`](Self::handle_input) and
/// [`handle_timeout`](Self::handle_timeout). After every input, drain
/// [`poll_action`](Self::poll_action) until `None` and run the commands in
/// order (a `Cancel` always comes before the `Start` that replaces it),
/// drain [`poll_resolution`](Self::poll_resolution) to answer callers, and
/// re-arm the wake-up at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Supervisor {
    config: PolicyConfig,
    backoff: Backoff,
    timers: TimerTable,
    last_timeout_reason: Option<Timer>,

    // What the node believes about the world.
    phase: Phase,
    path: NetworkSnapshot,
    /// The offline grace expired while the path was Unavailable.
    offline_committed: bool,
    signaling_up: bool,
    parked: Option<ParkReason>,
    /// A non-parking cleanup ran and no recovery has started since.
    closed: bool,
    /// A Cleanup or Disconnect released the connections and no recovery has
    /// started since: committing offline needs no Disconnect.
    released: bool,

    // Work.
    running: Option<Running>,
    pending: Option<Intent>,
    /// The kind of the retry armed in `timers`.
    retry_kind: ActionKind,
    /// Consecutive failed Restore/Reconnect attempts.
    failures: u32,
    /// Tickets of Unavailable snapshots, answered when the grace ends.
    grace_waiters: Waiters,
    next_action_id: u64,

    // Outputs.
    commands: VecDeque<ActionCommand>,
    resolutions: VecDeque<Resolution>,
}

impl Supervisor {
    /// A Supervisor with `config`, starting from `initial`.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when a knob is out of range.
    pub fn new(config: PolicyConfig, initial: InitialState) -> Result<Self, PolicyError> {
        config.validate()?;
        let backoff =
            Backoff::new(config.backoff_base, config.backoff_cap, config.jitter, config.seed);
        Ok(Self {
            config,
            backoff,
            timers: TimerTable::default(),
            last_timeout_reason: None,
            phase: initial.phase,
            path: NetworkSnapshot::new(initial.sequence, initial.availability, initial.transports),
            offline_committed: initial.availability == Availability::Unavailable,
            signaling_up: initial.signaling_connected,
            parked: None,
            closed: false,
            released: false,
            running: None,
            pending: None,
            retry_kind: ActionKind::Restore,
            failures: 0,
            grace_waiters: Waiters::default(),
            next_action_id: 0,
            commands: VecDeque::new(),
            resolutions: VecDeque::new(),
        })
    }

    // ---- getters ----

    /// The connection state for UI; the first match wins: parked, closed,
    /// offline, recovering (a Probe of a live link shows connected),
    /// connected, then by phase.
    pub fn state(&self) -> ConnectionState {
        if let Some(reason) = self.parked {
            return ConnectionState::Parked { reason };
        }
        if let Some(running) = &self.running {
            match running.kind {
                ActionKind::Cleanup => return ConnectionState::Closed,
                ActionKind::Disconnect => return ConnectionState::Offline,
                ActionKind::Probe if self.signaling_up => return ConnectionState::Connected,
                kind => {
                    return ConnectionState::Recovering { action: kind, attempt: running.attempt };
                }
            }
        }
        if self.closed {
            return ConnectionState::Closed;
        }
        if self.offline_committed {
            return ConnectionState::Offline;
        }
        let next_attempt = self.failures + 1;
        if self.timers.is_armed(Timer::Retry) {
            return ConnectionState::Recovering { action: self.retry_kind, attempt: next_attempt };
        }
        match &self.pending {
            Some(intent) if intent.kind != ActionKind::Probe || !self.signaling_up => {
                ConnectionState::Recovering { action: intent.kind, attempt: next_attempt }
            }
            _ if self.signaling_up => ConnectionState::Connected,
            // Signaling is down and nothing is decided. In the background,
            // the foreground will restore it; otherwise nothing asked for a
            // connection yet (a cold start before the first snapshot): not
            // connected, and not trying.
            _ if self.phase == Phase::Background => {
                ConnectionState::Recovering { action: ActionKind::Restore, attempt: next_attempt }
            }
            _ => ConnectionState::Offline,
        }
    }

    /// The path as last reported.
    pub fn path(&self) -> PathStatus {
        PathStatus::of(self.path.availability)
    }

    /// The last accepted snapshot (its metered flags included).
    pub fn snapshot(&self) -> &NetworkSnapshot {
        &self.path
    }

    /// The app's lifecycle phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether signaling is believed connected.
    pub fn signaling_connected(&self) -> bool {
        self.signaling_up
    }

    /// The action running now, if any.
    pub fn running(&self) -> Option<(ActionId, ActionKind)> {
        self.running.as_ref().map(|r| (r.id, r.kind))
    }

    /// The kind of the follow-up decided but not started, if any.
    pub fn pending(&self) -> Option<ActionKind> {
        self.pending.as_ref().map(|i| i.kind)
    }

    /// The policy in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Which timer the last [`handle_timeout`](Self::handle_timeout) fired
    /// (like str0m's `last_timeout_reason`), for logs.
    pub fn last_timeout_reason(&self) -> Option<Timer> {
        self.last_timeout_reason
    }

    /// The timer behind [`poll_timeout`](Self::poll_timeout).
    pub fn next_timer(&self) -> Option<Timer> {
        self.timers.next().map(|(timer, _)| timer)
    }

    // ---- inputs ----

    /// Feeds one input at time `now`.
    ///
    /// # Errors
    ///
    /// [`DriveError::NotRunning`] when a completion names an action that is
    /// not running; nothing changes then.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), DriveError> {
        match input {
            Input::Event { event, ticket } => self.handle_event(now, event, ticket),
            Input::ActionCompleted { id, result } => return self.complete(now, id, result),
            Input::SignalingLost => self.signaling_lost(now),
            Input::SignalingConnected => self.signaling_up = true,
            Input::PeerLost => self.peer_lost(now),
            Input::CredentialsRenewed => {
                if self.parked.is_some_and(|p| !p.needs_manual_reconnect()) {
                    self.parked = None;
                    self.failures = 0;
                    self.request(now, ActionKind::Restore, Cause::Request, None);
                }
            }
        }
        Ok(())
    }

    /// Fires every timer due at `now`. Call it when `now` reaches
    /// [`poll_timeout`](Self::poll_timeout); calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.expire(now) {
            self.last_timeout_reason = Some(timer);
            trace!(name: "recovery.timer", timer = timer.name());
            match timer {
                Timer::OfflineGrace => self.commit_offline(),
                Timer::Retry => {
                    let kind = self.retry_kind;
                    self.fold_pending(kind, None, false);
                    self.drive();
                }
                Timer::Settle => self.drive(),
            }
        }
    }

    // ---- outputs ----

    /// The next command for the executor.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ActionCommand> {
        self.commands.pop_front()
    }

    /// The next answer for a caller's ticket.
    #[must_use]
    pub fn poll_resolution(&mut self) -> Option<Resolution> {
        self.resolutions.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(_, at)| at)
    }

    // ---- events ----

    fn handle_event(&mut self, now: Instant, event: NetworkEvent, ticket: Option<Ticket>) {
        match event {
            NetworkEvent::NetworkPathChanged { snapshot } => {
                self.path_changed(now, snapshot, ticket)
            }
            NetworkEvent::AppLifecycleChanged { state } => {
                self.lifecycle_changed(now, state, ticket)
            }
            NetworkEvent::CleanupConnections { reason } => self.cleanup(reason, ticket),
            NetworkEvent::ForceReconnect { reason } => self.force_reconnect(now, reason, ticket),
        }
    }

    /// Stale snapshots change nothing; a duplicate route does nothing (unless
    /// it finds a dead link nobody repairs); a new Available route restores
    /// at once; Unknown probes a live link; Unavailable arms the offline
    /// grace.
    fn path_changed(&mut self, now: Instant, snapshot: NetworkSnapshot, ticket: Option<Ticket>) {
        if snapshot.sequence <= self.path.sequence {
            return self.answer(ticket, Verdict::NoAction(NoAction::Stale));
        }
        let previous = mem::replace(&mut self.path, snapshot);
        let same_route = previous.same_route(&snapshot);
        let was_unavailable = previous.availability == Availability::Unavailable;
        match snapshot.availability {
            Availability::Unavailable => {
                if same_route {
                    // A repeated Unavailable does not restart the grace.
                    return self.answer(ticket, Verdict::NoAction(NoAction::Duplicate));
                }
                self.timers.set(Timer::OfflineGrace, now + self.config.offline_grace);
                self.grace_waiters.push(ticket, false);
            }
            Availability::Available | Availability::Unknown => {
                self.leave_offline(was_unavailable);
                let available = snapshot.availability == Availability::Available;
                if was_unavailable && self.blip_under_restore(&snapshot) {
                    // The path blinked out and came back on the route a running Restore is
                    // bringing up: that Restore ends after the blip, so what it reports is
                    // about the route as it is now. No follow-up (a platform reports one
                    // handoff as several snapshots within a millisecond).
                    if let Some(running) = self.running.as_mut() {
                        running.waiters.push(ticket, true);
                    }
                    return;
                }
                if !same_route {
                    let kind = if available || !self.signaling_up {
                        ActionKind::Restore
                    } else {
                        ActionKind::Probe
                    };
                    self.request(now, kind, Cause::RouteChange, ticket);
                } else if available && !self.signaling_up && !self.recovery_in_hand() {
                    // A duplicate still restores a dead link that
                    // nothing is repairing.
                    self.request(now, ActionKind::Restore, Cause::SignalingLoss, ticket);
                } else if previous.is_expensive != snapshot.is_expensive
                    || previous.is_constrained != snapshot.is_constrained
                {
                    self.answer(ticket, Verdict::NoAction(NoAction::StateOnly));
                } else {
                    self.answer(ticket, Verdict::NoAction(NoAction::Duplicate));
                }
            }
        }
    }

    /// Whether a Restore (or a Reconnect) runs, started on `snapshot`'s route, and nothing
    /// waits behind it.
    fn blip_under_restore(&self, snapshot: &NetworkSnapshot) -> bool {
        self.pending.is_none()
            && self.running.as_ref().is_some_and(|running| {
                running.kind.is_recovery()
                    && running.kind >= ActionKind::Restore
                    && running.path.same_route(snapshot)
            })
    }

    /// The path is usable again (Available or Unknown): drop the offline
    /// candidate, and if it had been offline, reset the retry schedule.
    fn leave_offline(&mut self, was_unavailable: bool) {
        if self.timers.is_armed(Timer::OfflineGrace) {
            self.timers.stop(Timer::OfflineGrace);
            self.answer_all_waiting_grace(Verdict::Superseded);
        }
        if was_unavailable {
            self.offline_committed = false;
            self.failures = 0;
        }
    }

    /// Foreground probes, or reconnects after a long absence; the
    /// background holds recovery and tears nothing down.
    fn lifecycle_changed(
        &mut self,
        now: Instant,
        state: AppLifecycleState,
        ticket: Option<Ticket>,
    ) {
        match state {
            AppLifecycleState::Background => {
                if self.phase == Phase::Background {
                    return self.answer(ticket, Verdict::NoAction(NoAction::Duplicate));
                }
                self.phase = Phase::Background;
                self.answer(ticket, Verdict::NoAction(NoAction::StateOnly));
            }
            AppLifecycleState::Foreground { background_duration_ms } => {
                let previous = mem::replace(&mut self.phase, Phase::Foreground);
                let long =
                    u128::from(background_duration_ms) >= self.config.long_background.as_millis();
                match previous {
                    Phase::Foreground => {
                        return self.answer(ticket, Verdict::NoAction(NoAction::Duplicate));
                    }
                    // Cold start already counted as foreground: only an
                    // explicit long absence warrants work.
                    Phase::Unknown if !long => {
                        return self.answer(ticket, Verdict::NoAction(NoAction::StateOnly));
                    }
                    Phase::Unknown | Phase::Background => {}
                }
                self.failures = 0;
                let kind = if long { ActionKind::Reconnect } else { ActionKind::Probe };
                self.request(now, kind, Cause::Request, ticket);
            }
        }
    }

    /// Cleanup tears down at once, drops what waits, never reconnects, and
    /// parks on logout or termination; a second one joins the first.
    fn cleanup(&mut self, reason: CleanupReason, ticket: Option<Ticket>) {
        let park = ParkReason::from_cleanup(reason);
        // A cleanup drops whatever was decided but not started, whether it
        // starts a Cleanup or joins the one already running.
        if let Some(mut intent) = self.pending.take() {
            self.resolve(&mut intent.waiters, &Verdict::Superseded);
        }
        self.timers.stop(Timer::Retry);
        self.timers.stop(Timer::Settle);
        if self.timers.is_armed(Timer::OfflineGrace) {
            self.timers.stop(Timer::OfflineGrace);
            self.answer_all_waiting_grace(Verdict::Superseded);
        }
        match park {
            Some(reason) => self.parked = Some(reason),
            None => self.closed = true,
        }
        debug!(name: "recovery.cleanup", reason = reason.name(), parked = park.is_some());
        if let Some(running) = self.running.as_mut().filter(|r| r.kind == ActionKind::Cleanup) {
            // A second Cleanup joins the running one instead of restarting it.
            running.waiters.push(ticket, true);
            return;
        }
        self.cancel_running_for_good(|_| true);
        self.start(ActionKind::Cleanup, Waiters::one(ticket, false));
    }

    /// ForceReconnect reconnects, preempting weaker work only when it could
    /// start now, and lifts a park.
    fn force_reconnect(&mut self, now: Instant, reason: ReconnectReason, ticket: Option<Ticket>) {
        if let Some(park) = self.parked {
            if park.needs_manual_reconnect() && reason != ReconnectReason::ManualReconnect {
                return self.answer(ticket, Verdict::Parked(park));
            }
            debug!(name: "recovery.unpark", reason = park.name());
            self.parked = None;
        }
        self.failures = 0;
        self.request(now, ActionKind::Reconnect, Cause::Request, ticket);
    }

    /// A spontaneous loss of a live link restores, unless something that
    /// re-establishes signaling is already in hand.
    fn signaling_lost(&mut self, now: Instant) {
        if !mem::replace(&mut self.signaling_up, false) {
            return;
        }
        let teardown_running = self.running.as_ref().is_some_and(|r| !r.kind.is_recovery());
        if self.parked.is_some()
            || self.phase == Phase::Background
            || self.path.availability == Availability::Unavailable
            || teardown_running
            || self.recovery_in_hand_at_least(ActionKind::Restore)
        {
            return;
        }
        self.request(now, ActionKind::Restore, Cause::SignalingLoss, None);
    }

    /// A peer connection died on its own: restored like a signaling loss,
    /// with a follow-up like a route change's (a tether extension).
    fn peer_lost(&mut self, now: Instant) {
        let teardown_running = self.running.as_ref().is_some_and(|r| !r.kind.is_recovery());
        let pending_restore = self.pending.as_ref().is_some_and(|i| i.kind >= ActionKind::Restore);
        if self.parked.is_some()
            || self.phase == Phase::Background
            || self.path.availability == Availability::Unavailable
            || teardown_running
            || pending_restore
            || self.timers.is_armed(Timer::Retry)
        {
            return;
        }
        self.request(now, ActionKind::Restore, Cause::PeerLoss, None);
    }

    /// The end of every action: failures retry with backoff, failed
    /// Restores escalate to Reconnect on an Available path, rejections park.
    fn complete(
        &mut self,
        now: Instant,
        id: ActionId,
        result: Result<(), ActionError>,
    ) -> Result<(), DriveError> {
        let Some(mut running) = self.running.take_if(|r| r.id == id) else {
            return Err(DriveError::NotRunning { id });
        };
        let kind = running.kind;
        let action = ActionRef { id, kind };
        let outcome = match &result {
            Ok(()) => ActionOutcome::Succeeded,
            Err(failure) => ActionOutcome::Failed(failure.kind),
        };
        debug!(name: "recovery.action.end", id = id.0, kind = kind.name(), outcome = outcome.name());
        let failure = result.as_ref().err().map(|failure| failure.kind);
        let verdict = match result {
            Ok(()) => Verdict::Succeeded { action },
            Err(failure) => Verdict::Failed { action, failure },
        };
        self.resolve(&mut running.waiters, &verdict);

        match (kind, failure.map_or(Ok(()), Err)) {
            (ActionKind::Disconnect | ActionKind::Cleanup, _) => self.signaling_up = false,
            (_, Ok(())) => {
                self.signaling_up = true;
                if kind != ActionKind::Probe {
                    self.failures = 0;
                }
            }
            (_, Err(failure)) if failure.is_rejection() => {
                self.signaling_up = false;
                self.park(if failure == FailureKind::AuthRejected {
                    ParkReason::AuthRejected
                } else {
                    ParkReason::ConfigRejected
                });
            }
            (ActionKind::Probe, Err(_)) => {
                // Probe failures are not attempts: escalate at once.
                self.signaling_up = false;
                self.fold_pending(ActionKind::Restore, None, false);
            }
            (_, Err(_)) => {
                self.signaling_up = false;
                self.failures = self.failures.saturating_add(1);
                // Failed Restores escalate only on an Available path: behind
                // a captive portal (Unknown) a Reconnect would throw away
                // the peer state that an ICE restart still needs.
                let escalate = kind == ActionKind::Reconnect
                    || (self.failures >= self.config.restore_failures_before_reconnect
                        && self.path.availability == Availability::Available);
                let retry = if escalate { ActionKind::Reconnect } else { ActionKind::Restore };
                if let Some(intent) = self.pending.as_mut() {
                    // Something new happened meanwhile (a route change): the
                    // follow-up runs now, as strong as the retry would be.
                    intent.kind = intent.kind.max(retry);
                } else {
                    self.retry_kind = retry;
                    let delay = self.backoff.delay(self.failures);
                    self.timers.set(Timer::Retry, now + delay);
                    debug!(name: "recovery.retry", kind = retry.name(), failures = self.failures, delay_ms = delay.as_millis() as u64);
                }
            }
        }
        self.drive();
        Ok(())
    }

    fn commit_offline(&mut self) {
        self.offline_committed = true;
        debug!(name: "recovery.offline", released = self.released);
        self.cancel_running_for_good(ActionKind::is_recovery);
        if let Some(mut intent) = self.pending.take() {
            if intent.kind == ActionKind::Reconnect {
                self.pending = Some(intent);
            } else {
                self.resolve(&mut intent.waiters, &Verdict::Superseded);
            }
        }
        if self.timers.is_armed(Timer::Retry) {
            self.timers.stop(Timer::Retry);
            if self.retry_kind == ActionKind::Reconnect {
                self.fold_pending(ActionKind::Reconnect, None, false);
            }
        }
        self.timers.stop(Timer::Settle);
        let waiters = mem::take(&mut self.grace_waiters);
        if self.released || self.running.is_some() {
            // A Cleanup or Disconnect already released the connections.
            let mut waiters = waiters;
            self.resolve(&mut waiters, &Verdict::NoAction(NoAction::StateOnly));
        } else {
            self.start(ActionKind::Disconnect, waiters);
        }
    }

    // ---- the mechanism ----

    /// Decides what to do with a recovery intent (`Probe`, `Restore`,
    /// `Reconnect`) at `now`.
    fn request(&mut self, now: Instant, kind: ActionKind, cause: Cause, ticket: Option<Ticket>) {
        if let Some(reason) = self.parked {
            return self.answer(ticket, Verdict::Parked(reason));
        }
        let kind = self.sharpen(kind);
        if let Some(running) = self.running.as_mut() {
            let covered = running.kind.is_recovery()
                && running.kind >= kind
                && (kind == ActionKind::Probe || !cause.needs_follow_up());
            if covered {
                running.waiters.push(ticket, true);
                return;
            }
            let preempts = kind == ActionKind::Reconnect
                && running.kind.is_recovery()
                && running.kind < kind
                && self.gate_open();
            if preempts {
                let mut waiters = Waiters::one(ticket, false);
                if let Some(preempted) = self.cancel_running(|_| true) {
                    // Reconnect does what the preempted action was for.
                    waiters.absorb(preempted.waiters);
                }
                if let Some(intent) = self.pending.take() {
                    // ... and what every weaker intent waiting behind it was
                    // for: no Restore follows for a cause older than it.
                    waiters.absorb(intent.waiters);
                }
                return self.start_recovery(kind, waiters);
            }
            return self.fold_pending(kind, ticket, false);
        }
        self.fold_pending(kind, ticket, false);
        if cause == Cause::RouteChange
            && let Some(window) = self.config.settle_window
            && !self.timers.is_armed(Timer::Settle)
        {
            self.timers.set(Timer::Settle, now + window);
        }
        self.drive();
    }

    /// A Probe is only worth it while signaling is believed up.
    fn sharpen(&self, kind: ActionKind) -> ActionKind {
        if kind == ActionKind::Probe && !self.signaling_up { ActionKind::Restore } else { kind }
    }

    /// Folds `kind` into the pending intent: the stronger kind wins and every
    /// waiter after the first is coalesced.
    fn fold_pending(&mut self, kind: ActionKind, ticket: Option<Ticket>, coalesced: bool) {
        match self.pending.as_mut() {
            Some(intent) => {
                intent.kind = intent.kind.max(kind);
                intent.waiters.push(ticket, true);
            }
            None => self.pending = Some(Intent { kind, waiters: Waiters::one(ticket, coalesced) }),
        }
    }

    /// Whether recovery actions may start now.
    fn gate_open(&self) -> bool {
        self.parked.is_none()
            && self.phase != Phase::Background
            && self.path.availability != Availability::Unavailable
            && !self.timers.is_armed(Timer::Settle)
    }

    /// Starts the pending intent if nothing runs and the gate is open.
    fn drive(&mut self) {
        if self.running.is_some() || !self.gate_open() {
            return;
        }
        if let Some(intent) = self.pending.take() {
            self.start_recovery(intent.kind, intent.waiters);
        }
    }

    /// Starts a recovery action, absorbing any armed retry.
    fn start_recovery(&mut self, kind: ActionKind, waiters: Waiters) {
        // Probe or Restore was chosen when the trigger arrived (`request`),
        // from what was believed then; it is not chosen again here.
        let mut kind = kind;
        if self.timers.is_armed(Timer::Retry) {
            self.timers.stop(Timer::Retry);
            kind = kind.max(self.retry_kind);
        }
        self.closed = false;
        self.released = false;
        self.start(kind, waiters);
    }

    fn start(&mut self, kind: ActionKind, waiters: Waiters) {
        debug_assert!(self.running.is_none(), "one action at a time");
        let attempt = if kind.is_recovery() { self.failures.saturating_add(1) } else { 1 };
        if !kind.is_recovery() {
            self.released = true;
            self.signaling_up = false;
        }
        self.next_action_id += 1;
        let id = ActionId(self.next_action_id);
        debug!(name: "recovery.action.start", id = id.0, kind = kind.name(), attempt);
        self.commands.push_back(ActionCommand::Start { id, kind, attempt });
        self.running = Some(Running { id, kind, attempt, waiters, path: self.path });
    }

    /// Cancels the running action if `which` selects its kind and hands it
    /// back, so that the caller decides what its waiters hear.
    fn cancel_running(&mut self, which: impl Fn(ActionKind) -> bool) -> Option<Running> {
        let running = self.running.take_if(|r| which(r.kind))?;
        debug!(name: "recovery.action.cancel", id = running.id.0, kind = running.kind.name());
        self.commands.push_back(ActionCommand::Cancel { id: running.id, kind: running.kind });
        Some(running)
    }

    /// Cancels the running action if `which` selects its kind; its waiters
    /// hear that it was cancelled.
    fn cancel_running_for_good(&mut self, which: impl Fn(ActionKind) -> bool) {
        if let Some(mut running) = self.cancel_running(which) {
            let action = ActionRef { id: running.id, kind: running.kind };
            self.resolve(&mut running.waiters, &Verdict::Cancelled { action });
        }
    }

    fn park(&mut self, reason: ParkReason) {
        debug!(name: "recovery.park", reason = reason.name());
        self.parked = Some(reason);
        self.timers.stop(Timer::Retry);
        self.timers.stop(Timer::Settle);
        if let Some(mut intent) = self.pending.take() {
            self.resolve(&mut intent.waiters, &Verdict::Parked(reason));
        }
    }

    /// Whether a recovery runs, waits, or is scheduled for retry.
    fn recovery_in_hand(&self) -> bool {
        self.recovery_in_hand_at_least(ActionKind::Probe)
    }

    fn recovery_in_hand_at_least(&self, kind: ActionKind) -> bool {
        let running = self.running.as_ref().is_some_and(|r| r.kind.is_recovery() && r.kind >= kind);
        let pending = self.pending.as_ref().is_some_and(|i| i.kind >= kind);
        running || pending || self.timers.is_armed(Timer::Retry)
    }

    /// Answers a ticket at once (no action ran for its event).
    fn answer(&mut self, ticket: Option<Ticket>, verdict: Verdict) {
        trace!(name: "recovery.no_action", verdict = ?verdict);
        if let Some(ticket) = ticket {
            self.resolutions.push_back(Resolution { ticket, verdict, coalesced: false });
        }
    }

    fn answer_all_waiting_grace(&mut self, verdict: Verdict) {
        let mut waiters = mem::take(&mut self.grace_waiters);
        self.resolve(&mut waiters, &verdict);
    }

    fn resolve(&mut self, waiters: &mut Waiters, verdict: &Verdict) {
        for waiter in waiters.drain() {
            self.resolutions.push_back(Resolution {
                ticket: waiter.ticket,
                verdict: verdict.clone(),
                coalesced: waiter.coalesced,
            });
        }
    }
}

impl From<Result<(), FailureKind>> for ActionOutcome {
    fn from(result: Result<(), FailureKind>) -> Self {
        match result {
            Ok(()) => Self::Succeeded,
            Err(failure) => Self::Failed(failure),
        }
    }
}
