//! The node runtime on paused tokio time: answers, correlation, timeouts,
//! shutdown, the actor path and the state stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tether::{
    ActionKind, ActionReport, Availability, CleanupReason, ConnectionState, EventError, HandledBy,
    InitialState, LinkReporter, NetworkEvent, NetworkSnapshot, NoAction, Node, NodeConfig,
    NodeError, Phase, ReconnectReason, ScriptedExecutor, Transport, TransportSet,
};
use tether::{AppLifecycleState, PolicyConfig};
use tether_recovery::FailureKind;
use tether_recovery::scenario::{Effects, FailRule};
use tokio::task::JoinSet;

use tokio::time::Instant;

fn snapshot(sequence: u64, availability: Availability, transport: Transport) -> NetworkSnapshot {
    let transports = if availability == Availability::Unavailable {
        TransportSet::EMPTY
    } else {
        TransportSet::only(transport)
    };
    NetworkSnapshot::new(sequence, availability, transports)
}

fn offline_start() -> NodeConfig {
    NodeConfig {
        initial: InitialState {
            phase: Phase::Foreground,
            availability: Availability::Unavailable,
            ..InitialState::default()
        },
        ..NodeConfig::default()
    }
}

fn online_start() -> NodeConfig {
    NodeConfig {
        initial: InitialState {
            phase: Phase::Foreground,
            availability: Availability::Available,
            transports: TransportSet::only(Transport::Wifi),
            sequence: 1,
            signaling_connected: true,
        },
        ..NodeConfig::default()
    }
}

fn spawn(config: NodeConfig, effects: Effects) -> (Node, Arc<ScriptedExecutor>) {
    let (node, executor, _) = spawn_linked(config, effects);
    (node, executor)
}

/// A node and the reporter of its link, which tests use as the executor's
/// link watchers would.
fn spawn_linked(
    config: NodeConfig,
    effects: Effects,
) -> (Node, Arc<ScriptedExecutor>, LinkReporter) {
    let (link, events) = LinkReporter::channel();
    let executor = Arc::new(ScriptedExecutor::new(effects));
    (Node::spawn(config, Arc::clone(&executor), events).unwrap(), executor, link)
}

fn lasting(ms: u64) -> Effects {
    Effects { duration_ms: ms, failures: Vec::new() }
}

#[tokio::test(start_paused = true)]
async fn stale_and_duplicate_events_answer_at_once() {
    let (node, executor) = spawn(online_start(), lasting(100));
    let handle = node.handle();
    let started = Instant::now();
    let stale = handle
        .network_path_changed(snapshot(1, Availability::Unavailable, Transport::Wifi))
        .await
        .unwrap();
    assert_eq!(stale.by, HandledBy::NoAction(NoAction::Stale));
    let duplicate = handle
        .network_path_changed(snapshot(2, Availability::Available, Transport::Wifi))
        .await
        .unwrap();
    assert_eq!(duplicate.by, HandledBy::NoAction(NoAction::Duplicate));
    assert_eq!(duplicate.elapsed, Duration::ZERO);
    assert_eq!(Instant::now(), started, "no virtual time passed");
    assert_eq!(executor.starts(ActionKind::Restore), 0);
}

#[tokio::test(start_paused = true)]
async fn an_event_hears_its_action_and_the_state_follows() {
    let (node, _) = spawn(offline_start(), lasting(250));
    let handle = node.handle();
    let mut state = node.state();
    assert_eq!(*state.borrow_and_update(), ConnectionState::Offline);
    let call = tokio::spawn(async move {
        handle.network_path_changed(snapshot(1, Availability::Available, Transport::Wifi)).await
    });
    state.changed().await.unwrap();
    assert_eq!(
        *state.borrow_and_update(),
        ConnectionState::Recovering { action: ActionKind::Restore, attempt: 1 }
    );
    let result = call.await.unwrap().unwrap();
    assert_eq!(result.by, HandledBy::Action(ActionKind::Restore));
    assert!(!result.coalesced);
    assert_eq!(result.elapsed, Duration::from_millis(250));
    assert_eq!(*state.borrow_and_update(), ConnectionState::Connected);
}

#[tokio::test(start_paused = true)]
async fn coalesced_callers_share_one_result() {
    let (node, executor) = spawn(online_start(), lasting(100));
    let handle = node.handle();
    let mut calls = JoinSet::new();
    for i in 0..5u64 {
        let handle = handle.clone();
        calls.spawn(async move {
            handle.force_reconnect(ReconnectReason::ManualReconnect).await.map(|r| (i, r))
        });
    }
    let mut results = Vec::new();
    while let Some(done) = calls.join_next().await {
        results.push(done.unwrap().unwrap());
    }
    assert_eq!(executor.starts(ActionKind::Reconnect), 1, "five requests, one reconnect");
    assert!(results.iter().all(|(_, r)| r.by == HandledBy::Action(ActionKind::Reconnect)));
    assert_eq!(results.iter().filter(|(_, r)| !r.coalesced).count(), 1);
    assert_eq!(results.iter().filter(|(_, r)| r.coalesced).count(), 4);
}

#[tokio::test(start_paused = true)]
async fn many_cloned_handles_get_their_own_answers() {
    let (node, _) = spawn(online_start(), lasting(40));
    let mut calls = JoinSet::new();
    for i in 0..200u64 {
        let handle = node.handle();
        calls.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i % 7)).await;
            let transport = if i % 8 == 0 { Transport::Cellular } else { Transport::Wifi };
            let event = match i % 4 {
                // Route changes (sequences out of order: some are stale).
                0 => NetworkEvent::NetworkPathChanged {
                    snapshot: snapshot(10 + i, Availability::Available, transport),
                },
                1 => NetworkEvent::NetworkPathChanged {
                    snapshot: snapshot(10 + i, Availability::Available, transport)
                        .with_expensive(true),
                },
                2 => NetworkEvent::AppLifecycleChanged {
                    state: AppLifecycleState::Foreground { background_duration_ms: i },
                },
                _ => NetworkEvent::ForceReconnect {
                    reason: ReconnectReason::StaleConnectionSuspected,
                },
            };
            (event, handle.node_ref().call(event).await)
        });
    }
    let mut answered = 0;
    while let Some(done) = calls.join_next().await {
        let (sent, result) = done.unwrap();
        let result = result.unwrap();
        assert_eq!(result.event, sent, "an answer went to the wrong caller");
        answered += 1;
    }
    assert_eq!(answered, 200);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_waiting_disturbs_nobody() {
    let (node, executor) = spawn(offline_start(), lasting(300));
    let handle = node.handle();
    let impatient = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle.network_path_changed(snapshot(1, Availability::Available, Transport::Wifi)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let patient = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .network_path_changed(snapshot(2, Availability::Available, Transport::Cellular))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    impatient.abort();
    assert!(impatient.await.unwrap_err().is_cancelled());
    let result = patient.await.unwrap().unwrap();
    assert_eq!(result.by, HandledBy::Action(ActionKind::Restore));
    // The route change during the first restore still got its follow-up.
    assert_eq!(executor.starts(ActionKind::Restore), 2);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_error_arrives_while_the_work_goes_on() {
    let config = NodeConfig { result_timeout: Duration::from_secs(5), ..offline_start() };
    let (node, _) = spawn(config, lasting(10_000));
    let mut reports = node.actions();
    let handle = node.handle();
    let started = Instant::now();
    let err = handle
        .network_path_changed(snapshot(1, Availability::Available, Transport::Wifi))
        .await
        .unwrap_err();
    assert_eq!(err, EventError::Node(NodeError::ResultTimeout(Duration::from_secs(5))));
    assert_eq!(Instant::now() - started, Duration::from_secs(5));
    assert!(err.to_string().contains("the work goes on"), "{err}");
    let start = reports.recv().await.unwrap();
    assert!(matches!(start, ActionReport::Started { kind: ActionKind::Restore, .. }));
    match reports.recv().await.unwrap() {
        ActionReport::Ended { kind, outcome, at, .. } => {
            assert_eq!(kind, ActionKind::Restore);
            assert_eq!(outcome.name(), "ok");
            assert_eq!(at - started, Duration::from_secs(10));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(*node.state().borrow(), ConnectionState::Connected);
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_every_pending_caller_and_later_calls_fail_fast() {
    let config = NodeConfig { result_timeout: Duration::from_secs(60), ..offline_start() };
    let (node, executor) = spawn(config, lasting(20_000));
    let handle = node.handle();
    let call = |event: NetworkEvent, delay: u64| {
        let node_ref = handle.node_ref().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            node_ref.call(event).await
        })
    };
    let path = |seq, transport| NetworkEvent::NetworkPathChanged {
        snapshot: snapshot(seq, Availability::Available, transport),
    };
    // A waits on a running restore, B on its pending follow-up; C's cleanup
    // cancels the one and supersedes the other, and is still running (it
    // takes 20 s) when the node shuts down.
    let a = call(path(1, Transport::Wifi), 0);
    let b = call(path(2, Transport::Cellular), 1);
    let c = call(NetworkEvent::CleanupConnections { reason: CleanupReason::ManualReset }, 2);
    let a = a.await.unwrap().unwrap_err();
    assert_eq!(a, EventError::Cancelled { action: ActionKind::Restore, coalesced: false });
    let b = b.await.unwrap().unwrap_err();
    assert_eq!(b, EventError::Superseded);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A call still in the mailbox when shutdown begins, by construction, not
    // by a race: one poll puts it there (there is room), and shutdown is
    // asked for in the same poll of this task, so the driver (on this
    // current-thread runtime) cannot take the request before it sees the
    // shutdown, which it checks first.
    let actor = handle.node_ref().clone();
    let mut queued =
        pin!(actor.call(NetworkEvent::ForceReconnect { reason: ReconnectReason::ManualReconnect }));
    std::future::poll_fn(|cx| {
        assert!(queued.as_mut().poll(cx).is_pending(), "answered before the driver ran");
        Poll::Ready(())
    })
    .await;
    let (report, queued) = tokio::join!(node.shutdown(), queued);
    assert_eq!(executor.starts(ActionKind::Cleanup), 1, "the final cleanup joins the running one");
    let err = report.cleanup.clone().unwrap_err();
    assert_eq!(err.kind, FailureKind::Timeout, "a 20 s cleanup hits the 3 s bound: {err}");
    assert_eq!(c.await.unwrap().unwrap_err(), NodeError::Shutdown.into());
    assert_eq!(queued.unwrap_err(), NodeError::Shutdown.into());
    // Exactly the two still waiting: C (its cleanup was cut short) and the
    // queued reconnect. A and B had their answers already.
    assert_eq!(report.callers_answered, 2, "{report:?}");

    let before = Instant::now();
    let late = handle.force_reconnect(ReconnectReason::ManualReconnect).await;
    assert_eq!(late.unwrap_err(), NodeError::Shutdown.into());
    assert_eq!(Instant::now(), before, "fails fast");
    let tell = handle
        .node_ref()
        .tell(NetworkEvent::ForceReconnect { reason: ReconnectReason::ManualReconnect });
    assert_eq!(tell, Err(NodeError::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_node_shuts_it_down() {
    let (node, _) = spawn(online_start(), lasting(10));
    let handle = node.handle();
    drop(node);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !handle.node_ref().is_shut_down() {
        assert!(Instant::now() < deadline, "the node did not stop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = handle.cleanup_connections(CleanupReason::ManualReset).await.unwrap_err();
    assert_eq!(err, NodeError::Shutdown.into());
}

#[tokio::test(start_paused = true)]
async fn the_actor_path_reaches_the_same_supervisor() {
    let (node, executor) = spawn(online_start(), lasting(50));
    let actor = node.node_ref();
    let handle = node.handle();
    let mut state = node.state();
    state.borrow_and_update();
    actor.tell(NetworkEvent::ForceReconnect { reason: ReconnectReason::ManualReconnect }).unwrap();
    state.changed().await.unwrap();
    assert_eq!(
        *state.borrow_and_update(),
        ConnectionState::Recovering { action: ActionKind::Reconnect, attempt: 1 }
    );
    // The handle's request joins the reconnect the actor asked for.
    let joined = handle.force_reconnect(ReconnectReason::ManualReconnect).await.unwrap();
    assert!(joined.coalesced);
    assert_eq!(joined.action(), Some(ActionKind::Reconnect));
    assert_eq!(executor.starts(ActionKind::Reconnect), 1);
    let logout = actor
        .call(NetworkEvent::CleanupConnections { reason: CleanupReason::UserLogout })
        .await
        .unwrap();
    assert_eq!(logout.by, HandledBy::Action(ActionKind::Cleanup));
    assert_eq!(
        *node.state().borrow(),
        ConnectionState::Parked { reason: tether::ParkReason::UserLogout }
    );
    let parked = handle
        .network_path_changed(snapshot(9, Availability::Available, Transport::Cellular))
        .await
        .unwrap_err();
    assert_eq!(parked, EventError::Parked(tether::ParkReason::UserLogout));
}

#[tokio::test(start_paused = true)]
async fn a_signaling_loss_reported_on_the_link_restores() {
    let (node, _, link) = spawn_linked(online_start(), lasting(30));
    let mut reports = node.actions();
    assert!(link.signaling_lost());
    let started = reports.recv().await.unwrap();
    assert!(
        matches!(started, ActionReport::Started { kind: ActionKind::Restore, .. }),
        "{started:?}"
    );
}

/// Waits (on virtual time, bounded) for the next action to start and end
/// successfully, and returns its kind.
async fn first_action(reports: &mut tokio::sync::broadcast::Receiver<ActionReport>) -> ActionKind {
    let bound = Duration::from_secs(60);
    let started = tokio::time::timeout(bound, reports.recv())
        .await
        .expect("no action started: the link report was lost")
        .unwrap();
    let ActionReport::Started { kind, .. } = started else { panic!("{started:?}") };
    let ended = tokio::time::timeout(bound, reports.recv()).await.expect("no end").unwrap();
    assert!(
        matches!(ended, ActionReport::Ended { kind: k, outcome: tether::ActionOutcome::Succeeded, .. } if k == kind),
        "{ended:?}"
    );
    kind
}

#[tokio::test(start_paused = true)]
async fn link_reports_made_while_the_node_starts_are_not_lost() {
    // Before the node exists: whatever watches the link may report as soon
    // as it is built, before `Node::spawn`.
    let (link, events) = LinkReporter::channel();
    assert!(link.signaling_lost(), "kept for the node to come");
    let executor = Arc::new(ScriptedExecutor::new(lasting(30)));
    let node = Node::spawn(online_start(), Arc::clone(&executor), events).unwrap();
    // The driver has not run yet (this runtime has one thread and this
    // task has not yielded), so this subscription sees its first action.
    let mut reports = node.actions();
    assert_eq!(first_action(&mut reports).await, ActionKind::Restore);
    assert_eq!(executor.starts(ActionKind::Restore), 1);
    node.shutdown().await;
    assert!(!link.signaling_lost(), "a stopped node hears nothing");

    // Right at spawn, before the driver's first loop iteration.
    let (link, events) = LinkReporter::channel();
    let executor = Arc::new(ScriptedExecutor::new(lasting(30)));
    let node = Node::spawn(online_start(), Arc::clone(&executor), events).unwrap();
    let mut reports = node.actions();
    assert!(link.peer_lost());
    assert_eq!(first_action(&mut reports).await, ActionKind::Restore);
    assert_eq!(executor.starts(ActionKind::Restore), 1);
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failures_carry_the_executors_message() {
    let effects = Effects {
        duration_ms: 30,
        failures: vec![FailRule {
            action: ActionKind::Restore,
            nth: 1,
            error: FailureKind::Unreachable,
        }],
    };
    let (node, _) = spawn(offline_start(), effects);
    let result = node
        .handle()
        .network_path_changed(snapshot(1, Availability::Available, Transport::Wifi))
        .await
        .unwrap_err();
    match result {
        EventError::ActionFailed { action, failure, coalesced: false } => {
            assert_eq!((action, failure.kind), (ActionKind::Restore, FailureKind::Unreachable));
            assert!(failure.message.contains("scripted failure"), "{failure}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn outside_a_runtime_spawning_is_an_error_not_a_panic() {
    let executor = Arc::new(ScriptedExecutor::succeeding(Duration::from_millis(1)));
    let (link, events) = LinkReporter::channel();
    let err = Node::spawn(NodeConfig::default(), executor, events).unwrap_err();
    assert_eq!(err, NodeError::NoRuntime);
    assert!(!link.signaling_lost(), "no node will hear it");
}

#[tokio::test]
async fn an_invalid_policy_is_refused() {
    let executor = Arc::new(ScriptedExecutor::succeeding(Duration::from_millis(1)));
    let config = NodeConfig {
        policy: PolicyConfig { jitter: 3.0, ..PolicyConfig::default() },
        ..NodeConfig::default()
    };
    let err = Node::spawn(config, executor, LinkReporter::channel().1).unwrap_err();
    assert!(err.to_string().contains("jitter"), "{err}");
}
