//! Two nodes on loopback exchange reliable, numbered messages while bob's
//! phone hands off from Wi-Fi to cellular and back, and alice's app forces
//! a reconnect: nothing may be lost, duplicated or reordered.
//!
//! `cargo run -p tether --example handoff`; exits non-zero on a failure,
//! and every wait is bounded.

use std::time::Duration;

use tether::live::testbed::{LoopbackTestbed, Traffic};
use tether::{
    ActionKind, Availability, Messages, NetworkSnapshot, PeerId, ReconnectReason, RtcNode,
    Transport, TransportSet,
};
use tokio::time::{Instant, timeout};

/// Bound on every wait (WebRTC restarts take seconds on a loaded machine).
const PROMPT: Duration = Duration::from_secs(20);
type Error = Box<dyn std::error::Error>;

struct Peer {
    id: PeerId,
    node: RtcNode,
    inbox: Messages,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let testbed = LoopbackTestbed::start().await?;
    let mut peers = Vec::new();
    for name in ["alice", "bob"] {
        let id = PeerId::new(name)?;
        // `online`: start the node and report an available Wi-Fi path.
        let node = testbed.online(testbed.config(&id)).await?;
        let inbox = node.messages().ok_or("inbox already taken")?;
        peers.push(Peer { id, node, inbox });
    }
    let [mut alice, mut bob]: [Peer; 2] = peers.try_into().map_err(|_| "two peers expected")?;
    timeout(PROMPT, alice.node.connect_peer(&bob.id)).await??;
    let mut traffic = Traffic::default();

    exchange(&mut alice, &mut bob, &mut traffic, 10).await?;

    // bob walks out of the house: Wi-Fi -> cellular, a new route. The node
    // restores (signaling, then an ICE restart of the peer connection).
    let mut cellular =
        NetworkSnapshot::new(2, Availability::Available, TransportSet::only(Transport::Cellular));
    cellular.is_expensive = true;
    post(&alice, &bob, &mut traffic, 10).await?; // in flight during the handoff
    let handled = timeout(PROMPT, bob.node.handle().network_path_changed(cellular)).await??;
    check(handled.action() == Some(ActionKind::Restore), format!("handoff led to {handled:?}"))?;
    println!("bob handed off to cellular: {:?} in {:?}", handled.action(), handled.elapsed);
    receive_all(&mut alice, &mut bob, &mut traffic).await?;
    exchange(&mut alice, &mut bob, &mut traffic, 10).await?;

    // And back home to Wi-Fi.
    let home =
        NetworkSnapshot::new(3, Availability::Available, TransportSet::only(Transport::Wifi));
    timeout(PROMPT, bob.node.handle().network_path_changed(home)).await??;
    exchange(&mut alice, &mut bob, &mut traffic, 10).await?;

    // alice's app suspects a stale connection: everything is rebuilt.
    post(&alice, &bob, &mut traffic, 10).await?;
    let handled = timeout(
        PROMPT,
        alice.node.handle().force_reconnect(ReconnectReason::StaleConnectionSuspected),
    )
    .await??;
    check(handled.action() == Some(ActionKind::Reconnect), format!("reconnect: {handled:?}"))?;
    receive_all(&mut alice, &mut bob, &mut traffic).await?;
    exchange(&mut alice, &mut bob, &mut traffic, 10).await?;

    let summary = traffic.summary();
    println!("{summary:?}");
    check(
        summary.lost == 0 && summary.duplicated == 0 && summary.out_of_order == 0,
        format!("messages went wrong: {summary:?}"),
    )?;
    timeout(PROMPT, alice.node.shutdown()).await?;
    timeout(PROMPT, bob.node.shutdown()).await?;
    timeout(PROMPT, testbed.shutdown()).await?;
    println!("ok: {} messages, none lost, duplicated or reordered", summary.sent);
    Ok(())
}

fn check(condition: bool, what: String) -> Result<(), Error> {
    if condition { Ok(()) } else { Err(what.into()) }
}

/// Posts `count` numbered messages each way (`post` returns on acceptance).
async fn post(alice: &Peer, bob: &Peer, traffic: &mut Traffic, count: usize) -> Result<(), Error> {
    for _ in 0..count {
        for (from, to) in [(alice, bob), (bob, alice)] {
            let message = traffic.next_message(&from.id, &to.id);
            timeout(PROMPT, from.node.post(&to.id, message)).await??;
            traffic.sent(&from.id, &to.id);
        }
    }
    Ok(())
}

/// Receives until everything sent so far arrived, within [`PROMPT`].
async fn receive_all(alice: &mut Peer, bob: &mut Peer, traffic: &mut Traffic) -> Result<(), Error> {
    let deadline = Instant::now() + PROMPT;
    while traffic.summary().lost > 0 {
        tokio::select! {
            Some(message) = alice.inbox.recv() => traffic.received(&alice.id, &message),
            Some(message) = bob.inbox.recv() => traffic.received(&bob.id, &message),
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!("messages did not arrive in {PROMPT:?}: {:?}", traffic.summary()).into());
            }
        }
    }
    Ok(())
}

async fn exchange(
    alice: &mut Peer,
    bob: &mut Peer,
    traffic: &mut Traffic,
    count: usize,
) -> Result<(), Error> {
    post(alice, bob, traffic, count).await?;
    receive_all(alice, bob, traffic).await
}
