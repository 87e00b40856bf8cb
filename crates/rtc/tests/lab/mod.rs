//! A tiny in-process signaling relay and event log for real WebRTC peers on loopback.
//!
//! Every node is a `PeerSet` bound to 127.0.0.1. Its outbound signals are relayed, in order, to
//! the addressed node's `handle_signal`; the relay records everything and can drop chosen kinds
//! of message or everything (a "blackhole"). Each node's events are collected in an `EventLog`
//! that tests wait on with a deadline; nothing waits by sleeping.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tether_rtc::{
    ConnectionId, OutboundSignal, PeerId, PeerSet, PeerState, RtcConfig, RtcEvent, SignalPayload,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long any single wait in a test may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The peer id `name`.
pub(crate) fn id(name: &str) -> PeerId {
    PeerId::new(name).unwrap_or_else(|error| panic!("{error}"))
}

/// What a status says of peer connection number `number`.
pub(crate) fn cid(number: u64) -> Option<ConnectionId> {
    Some(ConnectionId::new(number))
}

/// Short bounds, so the failure paths are quick to exercise.
pub(crate) fn fast_config() -> RtcConfig {
    RtcConfig {
        connect_timeout: Duration::from_secs(4),
        restart_timeout: Duration::from_secs(3),
        close_timeout: Duration::from_secs(1),
        ..RtcConfig::loopback()
    }
}

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One relayed message, as the relay saw it (delivered or dropped).
#[derive(Debug, Clone)]
pub(crate) struct Relayed {
    pub(crate) from: PeerId,
    pub(crate) to: PeerId,
    pub(crate) payload: SignalPayload,
}

#[derive(Default)]
pub(crate) struct Relay {
    sets: Mutex<HashMap<PeerId, PeerSet>>,
    blackhole: AtomicBool,
    dropped_kinds: Mutex<HashSet<&'static str>>,
    /// Candidate types (`host`, `relay`, ...) whose candidates are dropped.
    dropped_candidate_types: Mutex<HashSet<&'static str>>,
    seen: Mutex<Vec<Relayed>>,
}

impl Relay {
    fn forward(&self, from: &PeerId, message: OutboundSignal) {
        let kind = message.payload.kind();
        let dropped_candidate = match &message.payload {
            SignalPayload::Candidate { candidate, .. } => lock(&self.dropped_candidate_types)
                .iter()
                .any(|typ| candidate.contains(&format!(" typ {typ}"))),
            _ => false,
        };
        let deliver = !self.blackhole.load(Ordering::SeqCst)
            && !lock(&self.dropped_kinds).contains(kind)
            && !dropped_candidate;
        lock(&self.seen).push(Relayed {
            from: from.clone(),
            to: message.to.clone(),
            payload: message.payload.clone(),
        });
        if !deliver {
            return;
        }
        let target = lock(&self.sets).get(&message.to).cloned();
        if let Some(target) = target {
            target
                .handle_signal(from, message.payload)
                .unwrap_or_else(|error| panic!("relay to {}: {error}", message.to));
        }
    }

    /// Drops every message while set.
    pub(crate) fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Drops messages of this kind (`offer`, `bye`, ...) from now on.
    pub(crate) fn drop_kind(&self, kind: &'static str) {
        lock(&self.dropped_kinds).insert(kind);
    }

    /// Delivers messages of this kind again.
    pub(crate) fn deliver_kind(&self, kind: &'static str) {
        lock(&self.dropped_kinds).remove(kind);
    }

    /// Drops exactly the candidates of these types (`host`, `srflx`, `relay`) from now on, and
    /// delivers all others: a peer that can never learn those addresses of the other.
    #[allow(dead_code)] // tests/turn.rs only
    pub(crate) fn drop_only_candidates(&self, types: &[&'static str]) {
        *lock(&self.dropped_candidate_types) = types.iter().copied().collect();
    }

    /// Every message relayed so far, delivered or not.
    pub(crate) fn seen(&self) -> Vec<Relayed> {
        lock(&self.seen).clone()
    }

    /// How many messages of `kind` went from `from` to `to`.
    pub(crate) fn count(&self, from: &str, to: &str, kind: &str) -> usize {
        lock(&self.seen)
            .iter()
            .filter(|m| m.from == from && m.to == to && m.payload.kind() == kind)
            .count()
    }
}

/// Everything one node has reported.
pub(crate) struct EventLog {
    events: Mutex<Vec<RtcEvent>>,
    changed: watch::Sender<usize>,
}

impl EventLog {
    fn new() -> Self {
        Self { events: Mutex::new(Vec::new()), changed: watch::channel(0).0 }
    }

    fn push(&self, event: RtcEvent) {
        lock(&self.events).push(event);
        self.changed.send_modify(|count| *count += 1);
    }

    pub(crate) fn events(&self) -> Vec<RtcEvent> {
        lock(&self.events).clone()
    }

    /// Waits until `find` returns something for the events so far; fails the test after `WAIT`.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        mut find: impl FnMut(&[RtcEvent]) -> Option<T>,
    ) -> T {
        let mut changes = self.changed.subscribe();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = find(&lock(&self.events)) {
                return found;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("timed out waiting for {what}; events: {:#?}", self.events()),
            }
        }
    }

    /// The messages received from `peer`, in order.
    pub(crate) fn messages_from(&self, peer: &str) -> Vec<Bytes> {
        messages_from(&lock(&self.events), peer)
    }

    /// Waits until `count` messages from `peer` have arrived, and returns all of them.
    pub(crate) async fn wait_messages_from(&self, peer: &str, count: usize) -> Vec<Bytes> {
        self.wait_for(&format!("{count} messages from {peer}"), |events| {
            let messages = messages_from(events, peer);
            (messages.len() >= count).then_some(messages)
        })
        .await
    }

    /// Waits for a state change of the peer connection to `peer`.
    pub(crate) async fn wait_state(&self, peer: &str, connection: u64, state: PeerState) {
        self.wait_for(&format!("{peer} connection {connection} {state:?}"), |events| {
            events
                .iter()
                .any(|event| {
                    matches!(event, RtcEvent::PeerStateChanged { peer: p, connection_id: c, state: s }
                        if p == peer && c.get() == connection && *s == state)
                })
                .then_some(())
        })
        .await;
    }

    /// Waits for the data channel to `peer` of peer connection number `connection` to open.
    pub(crate) async fn wait_channel_open(&self, peer: &str, connection: u64) {
        self.wait_for(&format!("channel to {peer} on connection {connection} open"), |events| {
            events
                .iter()
                .any(|event| {
                    matches!(event, RtcEvent::ChannelOpened { peer: p, connection_id: c }
                        if p == peer && c.get() == connection)
                })
                .then_some(())
        })
        .await;
    }
}

fn messages_from(events: &[RtcEvent], peer: &str) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|event| match event {
            RtcEvent::MessageReceived { peer: p, data, .. } if p == peer => Some(data.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) struct Node {
    pub(crate) set: PeerSet,
    pub(crate) log: Arc<EventLog>,
}

pub(crate) struct Lab {
    pub(crate) relay: Arc<Relay>,
    nodes: HashMap<String, Node>,
}

impl Lab {
    pub(crate) fn new(ids: &[&str]) -> Self {
        Self::with_config(ids, fast_config())
    }

    pub(crate) fn with_config(ids: &[&str], config: RtcConfig) -> Self {
        init_tracing();
        let relay = Arc::new(Relay::default());
        let mut nodes = HashMap::new();
        for id in ids {
            let (signals_tx, mut signals_rx) = mpsc::channel::<OutboundSignal>(1024);
            let (set, mut events) = PeerSet::new(self::id(id), config.clone(), signals_tx);
            lock(&relay.sets).insert(self::id(id), set.clone());
            let from = self::id(id);
            let forward = Arc::clone(&relay);
            tokio::spawn(async move {
                while let Some(message) = signals_rx.recv().await {
                    forward.forward(&from, message);
                }
            });
            let log = Arc::new(EventLog::new());
            let collect = Arc::clone(&log);
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    collect.push(event);
                }
            });
            nodes.insert((*id).to_owned(), Node { set, log });
        }
        Self { relay, nodes }
    }

    pub(crate) fn node(&self, id: &str) -> &Node {
        self.nodes.get(id).unwrap_or_else(|| panic!("no node {id} in this lab"))
    }

    pub(crate) fn set(&self, id: &str) -> &PeerSet {
        &self.node(id).set
    }

    /// Sends `text` from `from` to `to` and waits until `to` has received it as its n-th message
    /// from `from`.
    pub(crate) async fn send_and_expect(&self, from: &str, to: &str, text: &str) {
        let before = self.node(to).log.messages_from(from).len();
        self.set(from)
            .send(&id(to), Bytes::copy_from_slice(text.as_bytes()))
            .await
            .unwrap_or_else(|error| panic!("send {from} -> {to}: {error}"));
        let messages = self.node(to).log.wait_messages_from(from, before + 1).await;
        assert_eq!(
            messages.get(before).map(|m| m.as_ref()),
            Some(text.as_bytes()),
            "{to} should receive {text:?} from {from}"
        );
    }

    /// `from.connect(to)`, then waits until the channel is open on both sides (the caller's
    /// side can open a moment before the other).
    pub(crate) async fn connect(&self, from: &str, to: &str) {
        self.set(from)
            .connect(&id(to))
            .await
            .unwrap_or_else(|error| panic!("connect {from} -> {to}: {error}"));
        for (id, peer) in [(from, to), (to, from)] {
            self.wait_status(id, peer, &format!("{id}'s channel to {peer} open"), |status| {
                status.channel_open
            })
            .await;
        }
    }

    /// Waits until `id`'s view of `peer` satisfies `ready`.
    pub(crate) async fn wait_status(
        &self,
        id: &str,
        peer: &str,
        what: &str,
        ready: impl Fn(&tether_rtc::PeerStatus) -> bool,
    ) {
        let set = self.set(id).clone();
        let log = &self.node(id).log;
        let peer = self::id(peer);
        log.wait_for(what, |_| set.status(&peer).filter(|status| ready(status)).map(|_| ())).await;
    }
}
