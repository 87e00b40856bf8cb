//! The smallest working program (the README's "Use it as a library"): two
//! live nodes, one reliable message.
//!
//! `cargo run -p tether --example quickstart`. The signaling server here is
//! the embedded loopback testbed (cargo feature `testbed`); an app points
//! [`RtcNodeConfig::new`] at its own server instead.

use std::time::Duration;

use tether::live::testbed::LoopbackTestbed;
use tether::{Availability, NetworkSnapshot, PeerId, RtcNode, Transport, TransportSet};
use tokio::time::timeout;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = LoopbackTestbed::start().await?; // a signaling server on 127.0.0.1
    let (alice_id, bob_id) = (PeerId::new("alice")?, PeerId::new("bob")?);

    // A node per peer: signaling URL, peer id and token (plus, here, the
    // testbed's room and loopback-only WebRTC).
    let alice = RtcNode::start(server.config(&alice_id))?;
    let bob = RtcNode::start(server.config(&bob_id))?;
    let mut bob_inbox = bob.messages().ok_or("bob's inbox was taken")?;

    // The platform says the network is up: each node connects (a Restore).
    let wifi =
        NetworkSnapshot::new(1, Availability::Available, TransportSet::only(Transport::Wifi));
    alice.handle().network_path_changed(wifi).await?;
    bob.handle().network_path_changed(wifi).await?;

    // A WebRTC data channel to bob, then a message that survives recoveries.
    let prompt = Duration::from_secs(20);
    timeout(prompt, alice.connect_peer(&bob_id)).await??;
    timeout(prompt, alice.send(&bob_id, "hello, bob")).await??; // returns once bob acknowledged
    let message = timeout(prompt, bob_inbox.recv()).await?.ok_or("bob's inbox closed")?;
    println!("bob got {:?} from {}", String::from_utf8_lossy(&message.payload), message.from);

    alice.shutdown().await;
    bob.shutdown().await;
    server.shutdown().await;
    Ok(())
}
