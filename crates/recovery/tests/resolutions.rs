//! What each caller hears (tickets and resolutions), the connection state
//! for UI, and the driving contract — the parts of the Supervisor that the
//! node runtime builds on.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use tether_recovery::{
    ActionCommand, ActionError, ActionId, ActionKind, ActionRef, AppLifecycleState, Availability,
    CleanupReason, ConnectionState, DriveError, FailureKind, InitialState, Input, NetworkEvent,
    NetworkSnapshot, NoAction, ParkReason, Phase, PolicyConfig, ReconnectReason, Resolution,
    Supervisor, Ticket, Transport, TransportSet, Verdict,
};

/// A Supervisor with a clock, and the commands and answers it produced.
struct Harness {
    supervisor: Supervisor,
    epoch: Instant,
    now: Duration,
    sequence: u64,
    next_ticket: u64,
    commands: Vec<ActionCommand>,
    answers: Vec<Resolution>,
}

impl Harness {
    fn new(initial: InitialState) -> Self {
        Self {
            supervisor: Supervisor::new(PolicyConfig::default(), initial).unwrap(),
            epoch: Instant::now(),
            now: Duration::ZERO,
            sequence: initial.sequence,
            next_ticket: 0,
            commands: Vec::new(),
            answers: Vec::new(),
        }
    }

    fn online() -> Self {
        Self::new(InitialState {
            phase: Phase::Foreground,
            availability: Availability::Available,
            transports: TransportSet::only(Transport::Wifi),
            sequence: 1,
            signaling_connected: true,
        })
    }

    fn offline() -> Self {
        Self::new(InitialState {
            phase: Phase::Foreground,
            availability: Availability::Unavailable,
            ..InitialState::default()
        })
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.now = Duration::from_millis(ms);
        let now = self.epoch + self.now;
        self.supervisor.handle_timeout(now);
        self.drain();
        self
    }

    fn drain(&mut self) {
        while let Some(command) = self.supervisor.poll_action() {
            self.commands.push(command);
        }
        while let Some(answer) = self.supervisor.poll_resolution() {
            self.answers.push(answer);
        }
    }

    fn event(&mut self, event: NetworkEvent) -> Ticket {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        let now = self.epoch + self.now;
        self.supervisor.handle_input(now, Input::Event { event, ticket: Some(ticket) }).unwrap();
        self.drain();
        ticket
    }

    fn path(&mut self, availability: Availability, transport: Option<Transport>) -> Ticket {
        self.sequence += 1;
        let transports = transport.map_or(TransportSet::EMPTY, TransportSet::only);
        let snapshot = NetworkSnapshot::new(self.sequence, availability, transports);
        self.event(NetworkEvent::NetworkPathChanged { snapshot })
    }

    fn complete(&mut self, id: ActionId, result: Result<(), FailureKind>) {
        let now = self.epoch + self.now;
        let result = result.map_err(|kind| ActionError::new(kind, format!("{kind} in the test")));
        self.supervisor.handle_input(now, Input::ActionCompleted { id, result }).unwrap();
        self.drain();
    }

    fn last_start(&self) -> (ActionId, ActionKind) {
        self.commands
            .iter()
            .rev()
            .find_map(|c| match *c {
                ActionCommand::Start { id, kind, .. } => Some((id, kind)),
                ActionCommand::Cancel { .. } => None,
            })
            .expect("no action started")
    }

    fn answer(&self, ticket: Ticket) -> Resolution {
        let mut found = self.answers.iter().filter(|a| a.ticket == ticket);
        let answer = found.next().unwrap_or_else(|| panic!("{ticket:?} has no answer yet")).clone();
        assert!(found.next().is_none(), "{ticket:?} answered twice");
        answer
    }

    /// The action that served `ticket`, as `(id, kind)`.
    fn action_of(&self, ticket: Ticket) -> Option<(ActionId, ActionKind)> {
        self.answer(ticket).verdict.action().map(|action| (action.id, action.kind))
    }

    fn unanswered(&self, ticket: Ticket) -> bool {
        self.answers.iter().all(|a| a.ticket != ticket)
    }
}

#[test]
fn stale_and_duplicate_events_are_answered_at_once() {
    let mut h = Harness::online();
    h.sequence = 0;
    let stale = h.path(Availability::Unavailable, None);
    assert_eq!(h.answer(stale).verdict, Verdict::NoAction(NoAction::Stale));
    h.sequence = 5;
    let duplicate = h.path(Availability::Available, Some(Transport::Wifi));
    assert_eq!(h.answer(duplicate).verdict, Verdict::NoAction(NoAction::Duplicate));
    let background =
        h.event(NetworkEvent::AppLifecycleChanged { state: AppLifecycleState::Background });
    assert_eq!(h.answer(background).verdict, Verdict::NoAction(NoAction::StateOnly));
    let again = h.event(NetworkEvent::AppLifecycleChanged { state: AppLifecycleState::Background });
    assert_eq!(h.answer(again).verdict, Verdict::NoAction(NoAction::Duplicate));
    assert!(h.commands.is_empty());
    assert!(h.answer(stale).is_success() && h.answer(duplicate).is_success());
}

#[test]
fn the_event_that_starts_an_action_hears_its_outcome() {
    let mut h = Harness::offline();
    let ticket = h.path(Availability::Available, Some(Transport::Wifi));
    let (id, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Restore);
    assert!(h.unanswered(ticket), "answered before the action ended");
    assert_eq!(
        h.supervisor.state(),
        ConnectionState::Recovering { action: ActionKind::Restore, attempt: 1 }
    );
    h.at(30).complete(id, Ok(()));
    let answer = h.answer(ticket);
    assert_eq!(
        answer.verdict,
        Verdict::Succeeded { action: ActionRef { id, kind: ActionKind::Restore } }
    );
    assert!(!answer.coalesced);
    assert_eq!(h.supervisor.state(), ConnectionState::Connected);
}

#[test]
fn a_storm_during_an_action_shares_one_follow_up() {
    let mut h = Harness::offline();
    let first = h.path(Availability::Available, Some(Transport::Wifi));
    let (restore, _) = h.last_start();
    let second = h.at(10).path(Availability::Available, Some(Transport::Cellular));
    let third = h.at(20).path(Availability::Available, Some(Transport::Wifi));
    assert_eq!(h.supervisor.pending(), Some(ActionKind::Restore));
    h.at(30).complete(restore, Ok(()));
    assert!(
        matches!(h.answer(first).verdict, Verdict::Succeeded { action } if action.id == restore)
    );
    let (follow_up, kind) = h.last_start();
    assert_ne!(follow_up, restore);
    assert_eq!(kind, ActionKind::Restore);
    h.at(60).complete(follow_up, Err(FailureKind::Timeout));
    let (a, b) = (h.answer(second), h.answer(third));
    let action = ActionRef { id: follow_up, kind: ActionKind::Restore };
    let failure = ActionError::new(FailureKind::Timeout, "timeout in the test");
    assert_eq!(a.verdict, Verdict::Failed { action, failure });
    assert_eq!(b.verdict, a.verdict, "the coalesced caller hears the same failure");
    assert!(!a.coalesced, "the event that created the follow-up led to it");
    assert!(b.coalesced, "the later event shared it");
    assert!(!a.is_success());
}

#[test]
fn a_preempted_restore_hands_its_callers_to_the_reconnect() {
    let mut h = Harness::offline();
    let path = h.path(Availability::Available, Some(Transport::Wifi));
    let (restore, _) = h.last_start();
    let force =
        h.at(50).event(NetworkEvent::ForceReconnect { reason: ReconnectReason::ManualReconnect });
    assert_eq!(h.commands[1], ActionCommand::Cancel { id: restore, kind: ActionKind::Restore });
    let (reconnect, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Reconnect);
    // The late report of the cancelled restore is rejected, not applied.
    let late = h.supervisor.handle_input(
        h.epoch + Duration::from_millis(60),
        Input::ActionCompleted { id: restore, result: Ok(()) },
    );
    assert_eq!(late, Err(DriveError::NotRunning { id: restore }));
    h.at(80).complete(reconnect, Ok(()));
    assert_eq!(h.action_of(path), Some((reconnect, ActionKind::Reconnect)));
    assert!(h.answer(path).coalesced);
    assert!(!h.answer(force).coalesced);
    let action = ActionRef { id: reconnect, kind: ActionKind::Reconnect };
    assert_eq!(h.answer(force).verdict, Verdict::Succeeded { action });
}

#[test]
fn cleanup_cancels_and_supersedes() {
    let mut h = Harness::offline();
    let path = h.path(Availability::Available, Some(Transport::Wifi));
    let (restore, _) = h.last_start();
    let route = h.at(10).path(Availability::Available, Some(Transport::Cellular));
    let cleanup =
        h.at(20).event(NetworkEvent::CleanupConnections { reason: CleanupReason::ManualReset });
    let action = ActionRef { id: restore, kind: ActionKind::Restore };
    assert_eq!(h.answer(path).verdict, Verdict::Cancelled { action });
    assert_eq!(h.answer(route).verdict, Verdict::Superseded);
    let (id, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Cleanup);
    assert_eq!(h.supervisor.state(), ConnectionState::Closed);
    h.at(50).complete(id, Ok(()));
    assert_eq!(h.answer(cleanup).verdict, Verdict::Succeeded { action: ActionRef { id, kind } });
    assert_eq!(h.supervisor.state(), ConnectionState::Closed);
}

#[test]
fn a_second_cleanup_joins_and_drops_what_waits() {
    let mut h = Harness::online();
    let first = h.event(NetworkEvent::CleanupConnections { reason: CleanupReason::ManualReset });
    let (cleanup, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Cleanup);
    let route = h.at(10).path(Availability::Available, Some(Transport::Cellular));
    let gone = h.at(15).path(Availability::Unavailable, None);
    assert!(h.unanswered(route) && h.unanswered(gone));
    let second =
        h.at(20).event(NetworkEvent::CleanupConnections { reason: CleanupReason::UserLogout });
    // It joins the running cleanup (no cancel, no restart) ...
    assert_eq!(h.commands.len(), 1, "{:?}", h.commands);
    // ... and still drops the waiting restore and the offline candidate, and
    // parks for the logout.
    assert_eq!(h.answer(route).verdict, Verdict::Superseded);
    assert_eq!(h.answer(gone).verdict, Verdict::Superseded);
    assert_eq!(h.supervisor.pending(), None);
    assert_eq!(h.supervisor.poll_timeout(), None, "no grace left armed");
    assert_eq!(h.supervisor.state(), ConnectionState::Parked { reason: ParkReason::UserLogout });
    h.at(50).complete(cleanup, Ok(()));
    assert_eq!(h.action_of(first), Some((cleanup, ActionKind::Cleanup)));
    assert_eq!(h.action_of(second), Some((cleanup, ActionKind::Cleanup)));
    assert!(h.answer(second).coalesced);
    h.at(2_000);
    assert_eq!(h.commands.len(), 1, "nothing ran after the cleanup: {:?}", h.commands);
}

#[test]
fn an_unavailable_path_hears_from_the_offline_commit() {
    let mut h = Harness::online();
    let gone = h.path(Availability::Unavailable, None);
    assert!(h.unanswered(gone));
    assert_eq!(
        h.supervisor.state(),
        ConnectionState::Connected,
        "inside the grace nothing is torn down"
    );
    h.at(399);
    assert!(h.commands.is_empty());
    h.at(400);
    let (id, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Disconnect);
    assert_eq!(h.supervisor.state(), ConnectionState::Offline);
    h.at(430).complete(id, Ok(()));
    assert_eq!(h.action_of(gone), Some((id, ActionKind::Disconnect)));
    assert_eq!(h.supervisor.state(), ConnectionState::Offline);

    // Inside the grace, the path's return supersedes the candidate.
    let mut h = Harness::online();
    let gone = h.path(Availability::Unavailable, None);
    let back = h.at(100).path(Availability::Available, Some(Transport::Cellular));
    assert_eq!(h.answer(gone).verdict, Verdict::Superseded);
    assert_eq!(h.last_start().1, ActionKind::Restore);
    assert!(h.unanswered(back));
}

#[test]
fn parked_recovery_answers_parked_and_state_says_why() {
    let mut h = Harness::offline();
    h.path(Availability::Available, Some(Transport::Wifi));
    let (restore, _) = h.last_start();
    h.at(30).complete(restore, Err(FailureKind::AuthRejected));
    assert_eq!(h.supervisor.state(), ConnectionState::Parked { reason: ParkReason::AuthRejected });
    let route = h.at(100).path(Availability::Available, Some(Transport::Cellular));
    assert_eq!(h.answer(route).verdict, Verdict::Parked(ParkReason::AuthRejected));
    assert!(!h.answer(route).is_success());
    assert_eq!(h.supervisor.poll_timeout(), None, "no retry after a rejection");

    // New credentials lift an auth park and restore at once.
    let now = h.epoch + Duration::from_millis(200);
    h.supervisor.handle_input(now, Input::CredentialsRenewed).unwrap();
    h.drain();
    assert_eq!(h.last_start().1, ActionKind::Restore);
}

#[test]
fn retry_state_reports_the_next_attempt() {
    let mut h = Harness::offline();
    h.path(Availability::Available, Some(Transport::Wifi));
    let (first, _) = h.last_start();
    h.at(30).complete(first, Err(FailureKind::Unreachable));
    assert_eq!(
        h.supervisor.state(),
        ConnectionState::Recovering { action: ActionKind::Restore, attempt: 2 }
    );
    let due = h.supervisor.poll_timeout().unwrap() - h.epoch;
    assert!((Duration::from_millis(230)..=Duration::from_millis(330)).contains(&due), "{due:?}");
    h.at(due.as_millis() as u64 + 1);
    let (second, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Restore);
    assert_ne!(second, first);
    assert!(matches!(h.commands.last(), Some(ActionCommand::Start { attempt: 2, .. })));
}

#[test]
fn a_lost_peer_restores_and_follows_up_a_running_restore() {
    let mut h = Harness::online();
    let now = h.epoch;
    h.supervisor.handle_input(now, Input::PeerLost).unwrap();
    h.drain();
    let (first, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Restore);
    assert!(h.supervisor.signaling_connected(), "a lost peer says nothing about signaling");
    // Another peer dies while the restore runs: one follow-up, not two.
    h.supervisor.handle_input(now, Input::PeerLost).unwrap();
    h.supervisor.handle_input(now, Input::PeerLost).unwrap();
    h.drain();
    assert_eq!(h.supervisor.pending(), Some(ActionKind::Restore));
    h.at(30).complete(first, Ok(()));
    let (second, _) = h.last_start();
    assert_ne!(second, first);
    h.at(60).complete(second, Ok(()));
    assert_eq!(h.commands.len(), 2);

    // In the background it waits (the foreground's own probe or restore
    // repairs it).
    let mut h = Harness::online();
    h.event(NetworkEvent::AppLifecycleChanged { state: AppLifecycleState::Background });
    h.supervisor.handle_input(h.epoch, Input::PeerLost).unwrap();
    h.drain();
    assert!(h.commands.is_empty());
}

#[test]
fn invalid_policy_is_refused() {
    let policy = PolicyConfig { jitter: -0.5, ..PolicyConfig::default() };
    let err = Supervisor::new(policy, InitialState::default()).unwrap_err();
    assert_eq!(err.field, "jitter");
    let policy = PolicyConfig {
        backoff_cap: Duration::from_secs(10 * 365 * 24 * 3600),
        ..PolicyConfig::default()
    };
    assert!(Supervisor::new(policy, InitialState::default()).is_err());
}

#[test]
fn seed_style_waits_for_the_settle_window() {
    let mut h = Harness::offline();
    h.supervisor = Supervisor::new(
        PolicyConfig::seed_style(),
        InitialState {
            phase: Phase::Foreground,
            availability: Availability::Unavailable,
            ..InitialState::default()
        },
    )
    .unwrap();
    h.path(Availability::Available, Some(Transport::Wifi));
    assert!(h.commands.is_empty());
    assert_eq!(h.supervisor.poll_timeout(), Some(h.epoch + Duration::from_millis(400)));
    h.at(400);
    assert_eq!(h.last_start().1, ActionKind::Restore);
}

/// The types a driver moves across threads are `Send` and small.
#[test]
fn driver_facing_types_are_send_and_small() {
    fn is_send<T: Send>() {}
    is_send::<Supervisor>();
    is_send::<Input>();
    is_send::<Resolution>();
    assert!(std::mem::size_of::<Input>() <= 48, "{}", std::mem::size_of::<Input>());
    // An answer carries the executor's error (its message on the heap).
    assert!(std::mem::size_of::<Resolution>() <= 80, "{}", std::mem::size_of::<Resolution>());
}

#[test]
fn a_blip_under_a_running_restore_on_the_same_route_needs_no_follow_up() {
    // One handoff, as Linux reports it: Available on the new route, then within a millisecond
    // Unavailable and Available on that same route again. The Restore started on the first
    // ends after the blip: it answers for all three.
    let mut h = Harness::online();
    h.path(Availability::Available, Some(Transport::Cellular));
    let (first, kind) = h.last_start();
    assert_eq!(kind, ActionKind::Restore);
    h.path(Availability::Unavailable, None);
    let back = h.path(Availability::Available, Some(Transport::Cellular));
    assert_eq!(h.supervisor.pending(), None, "no follow-up queued");
    assert!(h.unanswered(back), "answered with the running Restore");
    h.at(30).complete(first, Ok(()));
    assert_eq!(h.action_of(back), Some((first, ActionKind::Restore)));
    assert_eq!(h.commands.len(), 1, "one Restore");

    // Back on another route, or after the Restore ended, a blip restores again.
    let mut h = Harness::online();
    h.path(Availability::Available, Some(Transport::Cellular));
    let (first, _) = h.last_start();
    h.path(Availability::Unavailable, None);
    h.path(Availability::Available, Some(Transport::Wifi));
    assert_eq!(h.supervisor.pending(), Some(ActionKind::Restore));
    h.at(30).complete(first, Ok(()));
    let (second, _) = h.last_start();
    assert_ne!(second, first);
    h.at(60).complete(second, Ok(()));
    h.path(Availability::Unavailable, None);
    h.path(Availability::Available, Some(Transport::Wifi));
    let (third, kind) = h.last_start();
    assert!(third != second && kind == ActionKind::Restore, "a blip on an idle node restores");
}
