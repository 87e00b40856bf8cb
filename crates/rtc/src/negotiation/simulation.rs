//! Two negotiation machines against each other on a virtual clock, through a simulated signaling
//! channel and simulated peer connections: the harness of the machine's scenario and property
//! tests (no WebRTC).
//!
//! The simulated peer connection keeps what decides connectivity: a session id and DTLS
//! fingerprint per pc, ICE credentials that change on every restart, the signaling state (an
//! answer applied without a local offer is a violation: two answers on one offer). Two pcs are
//! linked when each one's remote description is the other's current local identity; a link
//! connects them (state, ICE, data channel), a broken link makes ICE disconnected after 3 s and
//! failed after 10 s. Each side's "application" reconnects when it hears its peer is lost, as the
//! node's recovery does.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tether_signal::protocol::PeerId;

use super::Role;
use super::action::Action;
use super::fake_pc::{FakePc, describe, identity_of};
use super::input::{Input, Outcome, WaiterId};
use super::machine::{Machine, MachineConfig};
use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

/// One of the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Side {
    /// `a`: the offerer.
    A,
    /// `b`: the answerer.
    B,
}

impl Side {
    pub(super) fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// What happens at a point of virtual time.
#[derive(Debug, Clone)]
pub(super) enum Event {
    /// A relayed message reaches `to`.
    Deliver { to: Side, payload: SignalPayload },
    /// The application of `side` does something.
    Intent { side: Side, intent: Intent },
}

/// What an application (or the network around it) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent {
    Connect,
    Replace,
    RestartIce,
    /// The answerer's `register` asks the offerer for an ICE restart: the server relays
    /// `ice_restart` for it (not sent by the machine).
    AskRestartInRegister,
    /// The restart call after [`Intent::AskRestartInRegister`], with its time.
    RestartIceAsked,
    PeerJoined,
    SignalingDown,
    SignalingUp,
}

pub(super) struct SideState {
    pub(super) machine: Machine,
    pub(super) pcs: HashMap<ConnectionId, FakePc>,
    waiters: HashMap<WaiterId, Option<Result<(), RtcError>>>,
    next_waiter: WaiterId,
    pub(super) lost_reports: usize,
    pub(super) sent: Vec<SignalPayload>,
    /// When the last [`Intent::AskRestartInRegister`] of this side happened.
    asked_at: Option<Instant>,
}

/// The two sides, the network and the clock.
pub(super) struct Sim {
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) sides: [SideState; 2],
    events: BTreeMap<(Instant, u64), Event>,
    order: u64,
    /// One-way signaling latency, per message, drawn by the test (cycled).
    pub(super) latencies: Vec<Duration>,
    latency_at: usize,
    /// The last delivery scheduled towards each side.
    last_delivery: [Instant; 2],
    /// Drop the next message of this kind from this side.
    pub(super) drop_next: Vec<(Side, &'static str)>,
    /// Deliver every offer twice (a re-send on the relay's side).
    pub(super) duplicate_offers: bool,
    /// Things that must never happen, as they happened.
    pub(super) violations: Vec<String>,
    /// The applications reconnect when they hear their peer is lost.
    pub(super) reconnect_on_loss: bool,
    sessions: u64,
    /// What happened, for a failing test to print.
    pub(super) log: Vec<String>,
}

pub(super) fn config() -> MachineConfig {
    MachineConfig {
        connect_timeout: Duration::from_secs(10),
        restart_timeout: Duration::from_secs(5),
    }
}

fn peer(name: &str) -> PeerId {
    PeerId::new(name).unwrap_or_else(|error| panic!("test peer id {name}: {error}"))
}

impl Sim {
    pub(super) fn new() -> Self {
        let start = Instant::now();
        let side = |remote: &str, role| SideState {
            machine: Machine::new(peer(remote), role, config(), 0),
            pcs: HashMap::new(),
            waiters: HashMap::new(),
            next_waiter: 0,
            lost_reports: 0,
            sent: Vec::new(),
            asked_at: None,
        };
        Self {
            start,
            now: start,
            sides: [side("b", Role::Offerer), side("a", Role::Answerer)],
            events: BTreeMap::new(),
            order: 0,
            latencies: vec![Duration::from_millis(20)],
            latency_at: 0,
            last_delivery: [start; 2],
            drop_next: Vec::new(),
            duplicate_offers: false,
            violations: Vec::new(),
            reconnect_on_loss: true,
            sessions: 0,
            log: Vec::new(),
        }
    }

    pub(super) fn side(&self, side: Side) -> &SideState {
        &self.sides[side.index()]
    }

    pub(super) fn side_mut(&mut self, side: Side) -> &mut SideState {
        &mut self.sides[side.index()]
    }

    pub(super) fn schedule(&mut self, at: Instant, event: Event) {
        self.order += 1;
        self.events.insert((at, self.order), event);
    }

    /// Schedules an intent `after` from now.
    pub(super) fn intent(&mut self, side: Side, after: Duration, intent: Intent) {
        self.schedule(self.now + after, Event::Intent { side, intent });
    }

    /// Runs until `until` (virtual time since the start).
    pub(super) fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        loop {
            let next_event = self.events.keys().next().map(|&(at, _)| at);
            let next_timer = [Side::A, Side::B]
                .into_iter()
                .filter_map(|side| self.side(side).machine.poll_timeout().map(|at| (at, side)))
                .min();
            let next_ice = self.next_ice_change();
            let candidates =
                [next_event, next_timer.map(|(at, _)| at), next_ice].into_iter().flatten();
            let Some(at) = candidates.min() else { break };
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            if next_timer.is_some_and(|(timer_at, _)| timer_at <= self.now) {
                let (_, side) = next_timer.unwrap_or((at, Side::A));
                let now = self.now;
                self.side_mut(side).machine.handle_timeout(now);
                self.drain(side);
            } else if next_event.is_some_and(|event_at| event_at <= self.now) {
                if let Some((_, event)) = self.events.pop_first() {
                    self.apply(event);
                }
            } else {
                self.ice_tick();
            }
            self.link();
        }
        self.now = self.now.max(end);
    }

    fn apply(&mut self, event: Event) {
        let at = self.now.saturating_duration_since(self.start).as_millis();
        let line = match &event {
            Event::Deliver { to, payload } => format!("{at:>6} -> {to:?} {}", describe(payload)),
            Event::Intent { side, intent } => format!("{at:>6} {side:?} {intent:?}"),
        };
        self.log.push(line);
        match event {
            Event::Deliver { to, payload } => self.input(to, Input::Signal(payload)),
            Event::Intent { side, intent } => {
                let input = match intent {
                    Intent::Connect => Input::Connect(self.new_waiter(side)),
                    Intent::Replace => Input::Replace(self.new_waiter(side)),
                    Intent::RestartIce => {
                        Input::RestartIce { waiter: self.new_waiter(side), asked_at: None }
                    }
                    Intent::AskRestartInRegister => {
                        self.side_mut(side).asked_at = Some(self.now);
                        return self.deliver_later(side, SignalPayload::IceRestartRequest);
                    }
                    Intent::RestartIceAsked => {
                        let asked_at = self.side(side).asked_at;
                        Input::RestartIce { waiter: self.new_waiter(side), asked_at }
                    }
                    Intent::PeerJoined => Input::Presence(super::input::Presence::Joined),
                    Intent::SignalingDown => Input::Signaling { up: false },
                    Intent::SignalingUp => Input::Signaling { up: true },
                };
                self.input(side, input);
            }
        }
    }

    fn new_waiter(&mut self, side: Side) -> WaiterId {
        let state = self.side_mut(side);
        state.next_waiter += 1;
        state.waiters.insert(state.next_waiter, None);
        state.next_waiter
    }

    pub(super) fn input(&mut self, side: Side, input: Input) {
        let now = self.now;
        self.side_mut(side).machine.handle_input(now, input);
        self.drain(side);
    }

    /// Runs the actions of `side`, as the executor does: in order, outcomes back at once.
    fn drain(&mut self, side: Side) {
        while let Some(action) = self.side_mut(side).machine.poll_action() {
            self.execute(side, action);
        }
    }

    fn done(&mut self, side: Side, id: ConnectionId, outcome: Outcome) {
        let now = self.now;
        self.side_mut(side).machine.handle_input(now, Input::Done { id, outcome });
    }

    fn failed(&self, side: Side, what: &str) -> Outcome {
        let peer = self.side(side).machine.peer.clone();
        Outcome::Failed(RtcError::Negotiation { peer, reason: what.to_owned() })
    }

    fn execute(&mut self, side: Side, action: Action) {
        match action {
            Action::CreatePc { id } => {
                let at = self.now.saturating_duration_since(self.start).as_millis();
                self.log.push(format!("{at:>6} {side:?} builds {}", id.get()));
                self.sessions += 1;
                let pc = FakePc {
                    session: format!("{}{}", 1000 * (side.index() + 1), self.sessions),
                    fingerprint: format!("FP:{side:?}:{}", self.sessions),
                    version: 1,
                    ufrag: self.sessions * 100,
                    remote: None,
                    have_local_offer: false,
                    closed: false,
                    linked: false,
                    unlinked_since: None,
                    ice: PeerState::Connecting,
                    channel_open: false,
                    lie_identity: None,
                    held: false,
                };
                self.side_mut(side).pcs.insert(id, pc);
                self.done(side, id, Outcome::Created);
            }
            Action::CreateOffer { id, ice_restart } => {
                let outcome = match self.side_mut(side).pcs.get_mut(&id) {
                    Some(pc) if !pc.closed => {
                        pc.version += 1;
                        if ice_restart {
                            pc.ufrag += 1;
                        }
                        pc.have_local_offer = true;
                        Outcome::OfferCreated { sdp: pc.sdp() }
                    }
                    _ => self.failed(side, "create offer on a closed pc"),
                };
                self.done(side, id, outcome);
            }
            Action::ReadLocalOffer { id } => {
                let sdp = self.side(side).pcs.get(&id).map(FakePc::sdp);
                self.done(side, id, Outcome::LocalOffer { sdp });
            }
            Action::ApplyAnswer { id, sdp } => {
                let remote = identity_of(&sdp);
                let outcome = match (self.side_mut(side).pcs.get_mut(&id), remote) {
                    (Some(pc), Some(remote)) if !pc.closed && pc.have_local_offer => {
                        pc.have_local_offer = false;
                        pc.remote = Some(remote);
                        Outcome::AnswerApplied
                    }
                    (Some(pc), _) if !pc.have_local_offer => {
                        let violation = format!("{side:?}: answer applied in stable state");
                        self.violations.push(violation);
                        self.failed(side, "answer in stable state")
                    }
                    _ => self.failed(side, "bad answer"),
                };
                self.done(side, id, outcome);
            }
            Action::AnswerOffer { id, sdp } => {
                let remote = identity_of(&sdp);
                let outcome = match (self.side_mut(side).pcs.get_mut(&id), remote) {
                    (Some(pc), Some(remote)) if !pc.closed => {
                        let restart = pc.remote.as_ref().is_some_and(|old| old.2 != remote.2);
                        if restart {
                            pc.ufrag += 1;
                        }
                        pc.version += 1;
                        pc.remote = Some(remote);
                        let mut answer = pc.sdp();
                        if let Some(fingerprint) = &pc.lie_identity {
                            answer = answer.replace(&pc.fingerprint, fingerprint);
                        }
                        Outcome::AnswerCreated { sdp: answer }
                    }
                    _ => self.failed(side, "bad offer"),
                };
                self.done(side, id, outcome);
            }
            Action::AddCandidate { .. } | Action::IgnoreChannel { .. } => {}
            Action::Retire { id, state, .. } => {
                let at = self.now.saturating_duration_since(self.start).as_millis();
                self.log.push(format!("{at:>6} {side:?} retires {} ({state:?})", id.get()));
                if let Some(pc) = self.side_mut(side).pcs.get_mut(&id) {
                    pc.closed = true;
                    pc.linked = false;
                }
            }
            Action::State { .. } => {}
            Action::Hold { id, held } => {
                if let Some(pc) = self.side_mut(side).pcs.get_mut(&id) {
                    pc.held = held;
                }
            }
            Action::Send(payload) => self.relay(side, payload),
            Action::PeerLost { .. } => {
                self.side_mut(side).lost_reports += 1;
                if self.reconnect_on_loss {
                    self.intent(side, Duration::from_millis(300), Intent::Connect);
                }
            }
            Action::Complete { waiter, result } => {
                let failed = result.is_err();
                match self.side_mut(side).waiters.get_mut(&waiter) {
                    Some(slot @ None) => *slot = Some(result),
                    Some(Some(_)) => {
                        self.violations.push(format!("{side:?}: waiter {waiter} answered twice"))
                    }
                    None => self.violations.push(format!("{side:?}: unknown waiter {waiter}")),
                }
                if failed && self.reconnect_on_loss && !self.side(side).machine.is_closed() {
                    self.intent(side, Duration::from_millis(300), Intent::Connect);
                }
            }
        }
    }

    fn relay(&mut self, from: Side, payload: SignalPayload) {
        self.side_mut(from).sent.push(payload.clone());
        self.deliver_later(from, payload);
    }

    /// Relays `payload` from `from` with the network's latency (and its drops and copies).
    fn deliver_later(&mut self, from: Side, payload: SignalPayload) {
        let kind = payload.kind();
        if let Some(at) = self.drop_next.iter().position(|&(side, k)| side == from && k == kind) {
            self.drop_next.remove(at);
            return;
        }
        let latency = self.latencies[self.latency_at % self.latencies.len().max(1)];
        self.latency_at += 1;
        let to = from.other();
        // The relay keeps order per direction (PROTOCOL.md §3).
        let at = (self.now + latency).max(self.last_delivery[to.index()]);
        self.last_delivery[to.index()] = at;
        if self.duplicate_offers && kind == "offer" {
            // A copy re-sent later overtakes nothing but may arrive after newer messages.
            let again = Event::Deliver { to, payload: payload.clone() };
            self.schedule(at + latency * 3 + Duration::from_millis(7), again);
        }
        self.schedule(at, Event::Deliver { to, payload });
    }

    /// Whether both sides' current pcs are linked to each other with both channels open.
    pub(super) fn converged(&self) -> bool {
        let Some((a, b)) = self.current_pair() else { return false };
        self.linked(a, b)
            && self.side(Side::A).machine.channel_open()
            && self.side(Side::B).machine.channel_open()
    }

    /// Waiters not answered yet.
    pub(super) fn unanswered(&self, side: Side) -> usize {
        self.side(side).waiters.values().filter(|result| result.is_none()).count()
    }

    /// The results of `side`'s callers, in the order they asked.
    pub(super) fn results(&self, side: Side) -> Vec<Option<Result<(), RtcError>>> {
        let mut ids: Vec<&WaiterId> = self.side(side).waiters.keys().collect();
        ids.sort();
        ids.into_iter().map(|id| self.side(side).waiters[id].clone()).collect()
    }

    /// Messages of `kind` that `side` sent.
    pub(super) fn sent(&self, side: Side, kind: &str) -> usize {
        self.side(side).sent.iter().filter(|payload| payload.kind() == kind).count()
    }
}
