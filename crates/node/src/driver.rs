//! The driver: the one task that owns a node's Supervisor, runs its
//! actions, and answers its callers.
//!
//! Everything that can make the node do something arrives as one
//! [`LoopEvent`]. After each, the driver drains the Supervisor's outputs in
//! order: commands (a `Cancel` always before the `Start` replacing it),
//! answers, then the state for UI.
//!
//! Ordering within one instant matches `tether replay`: an action that has
//! finished is handled before new requests, and requests that have arrived
//! are handled before a timer that is due at the same moment.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tether_recovery::{
    ActionCommand, ActionError, ActionId, ActionKind, ActionOutcome, CleanupReason,
    ConnectionState, Input, NetworkEvent, Resolution, Supervisor, Ticket, Verdict,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::executor::{ActionContext, ActionResult, LinkEvent, RecoveryExecutor};
use crate::mailbox::{Reply, Request};
use crate::{ActionReport, EventError, Handled, HandledBy, NodeConfig, NodeError};

type ActionFuture = Pin<Box<dyn Future<Output = ActionResult> + Send>>;

/// What the node did at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// How the final cleanup went (`Err` lists what it could not release, or
    /// that it hit the shutdown bound).
    pub cleanup: Result<(), ActionError>,
    /// Callers that were still waiting and got [`NodeError::Shutdown`].
    pub callers_answered: usize,
}

struct RunningAction {
    id: ActionId,
    kind: ActionKind,
    started: Instant,
    cancel: CancellationToken,
    future: ActionFuture,
}

struct Waiter {
    event: NetworkEvent,
    reply: Reply,
    accepted_at: Instant,
}

/// Everything that can wake the driver.
enum LoopEvent {
    Shutdown,
    ActionDone(ActionResult),
    Link(LinkEvent),
    Request(Request),
    Timer,
}

pub(crate) struct Driver<E> {
    supervisor: Supervisor,
    executor: Arc<E>,
    config: NodeConfig,
    mailbox: mpsc::Receiver<Request>,
    link_events: mpsc::UnboundedReceiver<LinkEvent>,
    shutdown: CancellationToken,
    running: Option<RunningAction>,
    waiters: HashMap<Ticket, Waiter>,
    next_ticket: u64,
    /// Waiter count at which closed waiters are swept next.
    sweep_at: usize,
    state: watch::Sender<ConnectionState>,
    reports: broadcast::Sender<ActionReport>,
}

const FIRST_SWEEP: usize = 1024;

pub(crate) struct DriverParts<E> {
    pub(crate) supervisor: Supervisor,
    pub(crate) executor: Arc<E>,
    pub(crate) config: NodeConfig,
    pub(crate) mailbox: mpsc::Receiver<Request>,
    pub(crate) link_events: mpsc::UnboundedReceiver<LinkEvent>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) reports: broadcast::Sender<ActionReport>,
}

impl<E: RecoveryExecutor> Driver<E> {
    pub(crate) fn new(parts: DriverParts<E>) -> Self {
        Self {
            supervisor: parts.supervisor,
            executor: parts.executor,
            config: parts.config,
            mailbox: parts.mailbox,
            link_events: parts.link_events,
            shutdown: parts.shutdown,
            running: None,
            waiters: HashMap::new(),
            next_ticket: 0,
            sweep_at: FIRST_SWEEP,
            state: parts.state,
            reports: parts.reports,
        }
    }

    pub(crate) async fn run(mut self) -> ShutdownReport {
        info!(name: "node.start", state = %self.supervisor.state());
        loop {
            match self.next_event().await {
                LoopEvent::Shutdown => break,
                LoopEvent::ActionDone(result) => self.action_done(result),
                LoopEvent::Link(event) => self.link(event),
                LoopEvent::Request(request) => self.request(request),
                LoopEvent::Timer => {
                    // Requests that arrived by the deadline come first, as in
                    // `tether replay`: let tasks woken at this instant enqueue.
                    tokio::task::yield_now().await;
                    while let Ok(request) = self.mailbox.try_recv() {
                        self.request(request);
                    }
                    self.supervisor.handle_timeout(supervisor_now());
                    if let Some(timer) = self.supervisor.last_timeout_reason() {
                        debug!(name: "node.timer", timer = timer.name());
                    }
                    self.flush();
                }
            }
        }
        self.shut_down().await
    }

    async fn next_event(&mut self) -> LoopEvent {
        let deadline = self.supervisor.poll_timeout().map(Instant::from_std);
        let running = &mut self.running;
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => LoopEvent::Shutdown,
            result = run_action(running) => LoopEvent::ActionDone(result),
            Some(event) = self.link_events.recv() => LoopEvent::Link(event),
            request = self.mailbox.recv() => match request {
                Some(request) => LoopEvent::Request(request),
                // Every sender is gone: nobody can reach the node any more.
                None => LoopEvent::Shutdown,
            },
            // No timer armed: the branch is off (the placeholder instant is never awaited).
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                if deadline.is_some() => LoopEvent::Timer,
        }
    }

    fn request(&mut self, request: Request) {
        let Request::Event { event, reply, accepted_at } = request;
        let ticket = reply.map(|reply| {
            self.next_ticket += 1;
            let ticket = Ticket(self.next_ticket);
            self.waiters.insert(ticket, Waiter { event, reply, accepted_at });
            ticket
        });
        self.sweep_waiters();
        debug!(name: "node.event", event = event.name(), ticket = ticket.map(|t| t.0));
        self.feed(Input::Event { event, ticket });
    }

    fn link(&mut self, event: LinkEvent) {
        debug!(name: "node.link", event = ?event);
        let input = match event {
            LinkEvent::SignalingLost => Input::SignalingLost,
            LinkEvent::SignalingConnected => Input::SignalingConnected,
            LinkEvent::CredentialsRenewed => Input::CredentialsRenewed,
            LinkEvent::PeerLost => Input::PeerLost,
        };
        self.feed(input);
    }

    fn action_done(&mut self, result: ActionResult) {
        // Invariant: `ActionDone` only comes from a running action.
        let Some(action) = self.running.take() else { return };
        self.end_report(&action, outcome_of(&result), result.as_ref().err().cloned());
        self.feed(Input::ActionCompleted { id: action.id, result });
    }

    /// Feeds one input to the Supervisor now, then drains its outputs.
    fn feed(&mut self, input: Input) {
        if let Err(err) = self.supervisor.handle_input(supervisor_now(), input) {
            warn!(name: "node.contract", error = %err);
        }
        self.flush();
    }

    /// Drains the Supervisor: commands, answers, state.
    fn flush(&mut self) {
        while let Some(command) = self.supervisor.poll_action() {
            match command {
                ActionCommand::Cancel { id, .. } => self.cancel(id),
                ActionCommand::Start { id, kind, attempt } => self.start(id, kind, attempt),
            }
        }
        while let Some(resolution) = self.supervisor.poll_resolution() {
            self.answer(resolution);
        }
        let state = self.supervisor.state();
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                debug!(name: "node.state", from = %current, to = %state);
                *current = state;
            }
            changed
        });
    }

    fn start(&mut self, id: ActionId, kind: ActionKind, attempt: u32) {
        if let Some(stale) = self.running.take() {
            // Invariant: the Supervisor cancels before it starts; never
            // leave two actions running if that were ever broken.
            warn!(name: "node.contract", error = "start while an action runs", running = %stale.id);
            self.drop_action(stale);
        }
        let cancel = CancellationToken::new();
        let ctx = ActionContext { id, kind, attempt, cancel: cancel.clone() };
        let executor = Arc::clone(&self.executor);
        let future: ActionFuture = match kind {
            ActionKind::Probe => Box::pin(async move { executor.probe(ctx).await }),
            ActionKind::Restore => Box::pin(async move { executor.restore(ctx).await }),
            ActionKind::Reconnect => Box::pin(async move { executor.reconnect(ctx).await }),
            ActionKind::Disconnect => Box::pin(async move { executor.disconnect(ctx).await }),
            ActionKind::Cleanup => Box::pin(async move { executor.cleanup(ctx).await }),
        };
        let started = Instant::now();
        info!(name: "recovery.action.start", id = id.0, kind = kind.name(), attempt);
        let _ = self.reports.send(ActionReport::Started { id, kind, attempt, at: started });
        self.running = Some(RunningAction { id, kind, started, cancel, future });
    }

    fn cancel(&mut self, id: ActionId) {
        if let Some(action) = self.running.take_if(|a| a.id == id) {
            self.drop_action(action);
        }
    }

    /// Cancels `action` now: its token fires and its future is dropped, so
    /// it can never run beside the next one.
    fn drop_action(&mut self, action: RunningAction) {
        action.cancel.cancel();
        self.end_report(&action, ActionOutcome::Cancelled, None);
        drop(action);
    }

    fn end_report(
        &self,
        action: &RunningAction,
        outcome: ActionOutcome,
        error: Option<ActionError>,
    ) {
        let at = Instant::now();
        let elapsed = at - action.started;
        info!(
            name: "recovery.action.end",
            id = action.id.0,
            kind = action.kind.name(),
            outcome = outcome.name(),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            error = error.as_ref().map(tracing::field::display),
        );
        let _ = self.reports.send(ActionReport::Ended {
            id: action.id,
            kind: action.kind,
            outcome,
            at,
            elapsed,
            error,
        });
    }

    /// Forwards a resolution to its caller: every fact is in the verdict.
    fn answer(&mut self, resolution: Resolution) {
        let Some(waiter) = self.waiters.remove(&resolution.ticket) else { return };
        trace!(name: "node.answer", ticket = resolution.ticket.0, ok = resolution.is_success());
        let coalesced = resolution.coalesced;
        let by = match resolution.verdict {
            Verdict::Succeeded { action } => Ok(HandledBy::Action(action.kind)),
            Verdict::NoAction(reason) => Ok(HandledBy::NoAction(reason)),
            Verdict::Failed { action, failure } => {
                Err(EventError::ActionFailed { action: action.kind, failure, coalesced })
            }
            Verdict::Cancelled { action } => {
                Err(EventError::Cancelled { action: action.kind, coalesced })
            }
            Verdict::Superseded => Err(EventError::Superseded),
            Verdict::Parked(reason) => Err(EventError::Parked(reason)),
        };
        let result = by.map(|by| Handled {
            event: waiter.event,
            by,
            coalesced,
            elapsed: waiter.accepted_at.elapsed(),
        });
        // The caller may have stopped waiting; that is its right.
        let _ = waiter.reply.send(result);
    }

    /// Forgets waiters whose callers stopped waiting, once the map grows.
    fn sweep_waiters(&mut self) {
        if self.waiters.len() < self.sweep_at {
            return;
        }
        self.waiters.retain(|_, waiter| !waiter.reply.is_closed());
        self.sweep_at = (self.waiters.len() * 2).max(FIRST_SWEEP);
    }

    async fn shut_down(mut self) -> ShutdownReport {
        info!(name: "node.shutdown", state = %self.supervisor.state());
        // New requests fail fast from here on.
        self.mailbox.close();
        // The Supervisor decides the final cleanup; it cancels whatever runs.
        let terminate = NetworkEvent::CleanupConnections { reason: CleanupReason::AppTerminating };
        self.feed(Input::Event { event: terminate, ticket: None });
        let cleanup = match self.running.take() {
            Some(mut action) => {
                match tokio::time::timeout(self.config.shutdown_timeout, action.future.as_mut())
                    .await
                {
                    Ok(result) => {
                        self.end_report(
                            &action,
                            outcome_of(&result),
                            result.as_ref().err().cloned(),
                        );
                        self.feed(Input::ActionCompleted { id: action.id, result: result.clone() });
                        result
                    }
                    Err(_) => {
                        let bound = self.config.shutdown_timeout;
                        self.drop_action(action);
                        Err(ActionError::timeout(format!(
                            "cleanup did not finish within {} ms",
                            bound.as_millis()
                        )))
                    }
                }
            }
            None => Ok(()),
        };
        let mut callers_answered = 0;
        while let Ok(Request::Event { reply, .. }) = self.mailbox.try_recv() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(NodeError::Shutdown.into()));
                callers_answered += 1;
            }
        }
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.reply.send(Err(NodeError::Shutdown.into()));
            callers_answered += 1;
        }
        self.state.send_replace(ConnectionState::Closed);
        info!(name: "node.stopped", callers_answered, cleanup_ok = cleanup.is_ok());
        ShutdownReport { cleanup, callers_answered }
    }
}

fn outcome_of(result: &ActionResult) -> ActionOutcome {
    match result {
        Ok(()) => ActionOutcome::Succeeded,
        Err(err) => ActionOutcome::Failed(err.kind),
    }
}

/// The running action's result, or never when nothing runs.
async fn run_action(running: &mut Option<RunningAction>) -> ActionResult {
    match running {
        Some(action) => action.future.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Now, on the Supervisor's clock. The node's time is tokio's (so paused
/// tests drive it); the sans-IO core takes `std` instants, converted here
/// and when reading its deadline back, nowhere else.
fn supervisor_now() -> std::time::Instant {
    Instant::now().into_std()
}
