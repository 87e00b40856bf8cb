//! What a platform adapter does: feed the phone's network and lifecycle
//! events through a [`NetworkEventHandle`], and watch the state stream a
//! "Reconnecting…" banner would follow.
//!
//! The node runs the real decision engine; its actions are simulated (a
//! [`ScriptedExecutor`]: each takes 50 ms and succeeds), so this needs no
//! network. `cargo run -p tether --example platform_events`; exits
//! non-zero on a failure, and every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use tether::{
    ActionKind, AppLifecycleState, Availability, CleanupReason, ConnectionState, HandledBy,
    LinkReporter, NetworkEvent, NetworkEventHandle, NetworkSnapshot, NoAction, Node, NodeConfig,
    ParkReason, ReconnectReason, ScriptedExecutor, Transport, TransportSet,
};
use tokio::sync::watch;
use tokio::time::timeout;

const PROMPT: Duration = Duration::from_secs(10);
type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (_link, link_events) = LinkReporter::channel();
    let executor = Arc::new(ScriptedExecutor::succeeding(Duration::from_millis(50)));
    let node = Node::spawn(NodeConfig::default(), executor, link_events)?;
    let handle: NetworkEventHandle = node.handle();

    // The state stream: a UI task prints every change it sees.
    let mut banner = node.state();
    let ui = tokio::spawn(async move {
        let mut seen = vec![*banner.borrow_and_update()];
        while banner.changed().await.is_ok() {
            let state = *banner.borrow_and_update();
            println!("  banner: {state}");
            seen.push(state);
        }
        seen // the node shut down
    });
    let mut state = node.state();

    let wifi = |sequence| {
        NetworkSnapshot::new(sequence, Availability::Available, TransportSet::only(Transport::Wifi))
    };
    println!("wifi up");
    expect(handle.network_path_changed(wifi(1)).await?.by, HandledBy::Action(ActionKind::Restore))?;
    println!("the same path again (platforms repeat themselves)");
    expect(
        handle.network_path_changed(wifi(2)).await?.by,
        HandledBy::NoAction(NoAction::Duplicate),
    )?;

    println!("handoff to cellular");
    let cellular = TransportSet::only(Transport::Cellular);
    let handoff = NetworkSnapshot::new(3, Availability::Available, cellular);
    expect(handle.network_path_changed(handoff).await?.by, HandledBy::Action(ActionKind::Restore))?;

    println!("45 s in the background");
    handle.app_lifecycle_changed(AppLifecycleState::Background).await?;
    let back = AppLifecycleState::Foreground { background_duration_ms: 45_000 };
    expect(handle.app_lifecycle_changed(back).await?.by, HandledBy::Action(ActionKind::Reconnect))?;

    println!("tunnel: no network");
    let gone = NetworkSnapshot::new(4, Availability::Unavailable, TransportSet::EMPTY);
    expect(handle.network_path_changed(gone).await?.by, HandledBy::Action(ActionKind::Disconnect))?;
    wait_for(&mut state, |s| *s == ConnectionState::Offline).await?;

    // `submit` returns once the node accepted the event: what an adapter
    // uses, so that it never waits for a recovery to finish.
    println!("out of the tunnel (submitted)");
    handle.submit(NetworkEvent::NetworkPathChanged { snapshot: wifi(5) }).await?;
    wait_for(&mut state, |s| *s == ConnectionState::Connected).await?;

    println!("the user presses Reconnect, then logs out");
    let manual = handle.force_reconnect(ReconnectReason::ManualReconnect).await?;
    expect(manual.by, HandledBy::Action(ActionKind::Reconnect))?;
    handle.cleanup_connections(CleanupReason::UserLogout).await?;
    let parked = ConnectionState::Parked { reason: ParkReason::UserLogout };
    wait_for(&mut state, |s| *s == parked).await?;

    let report = timeout(PROMPT, node.shutdown()).await?;
    let seen = timeout(PROMPT, ui).await??;
    // The banner saw the recoveries and the logout (then the shutdown's own
    // cleanup: parked for app termination, closed).
    let recovered = seen.iter().any(|s| matches!(s, ConnectionState::Recovering { .. }));
    if !recovered || !seen.contains(&parked) || seen.last() != Some(&ConnectionState::Closed) {
        return Err(format!("the banner saw {seen:?}").into());
    }
    println!("ok: the banner saw {} states; {report:?}", seen.len());
    Ok(())
}

fn expect(got: HandledBy, want: HandledBy) -> Result<(), Error> {
    println!("  -> {got:?}");
    if got == want { Ok(()) } else { Err(format!("expected {want:?}, got {got:?}").into()) }
}

/// Until the state stream shows a state for which `done` holds, within
/// [`PROMPT`].
async fn wait_for(
    state: &mut watch::Receiver<ConnectionState>,
    done: impl FnMut(&ConnectionState) -> bool,
) -> Result<(), Error> {
    timeout(PROMPT, state.wait_for(done)).await??;
    Ok(())
}
