//! The messenger: one task that owns every peer's reliable stream
//! ([`ReliableStream`]), carries frames over the peers' data channels, hands
//! received messages to the application, answers senders, reports peer
//! connections that die on their own, and publishes the peers' states. While a peer's data
//! path is being replaced it carries the frames on the detour through signaling instead
//! (MESSAGING.md rule 10, [`super::detour`]).
//!
//! The messenger keeps time on tokio's clock (so paused-time tests drive
//! it); the sans-IO streams take `std::time::Instant`, converted at the
//! calls into them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tether_recovery::ConnectionState;
use tether_rtc::{ConnectionId, PeerSet, PeerState, Role, RtcEvent, RtcEvents};
use tether_signal::SignalClient;
use tether_signal::protocol::{PeerId, RelayPayload};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::detour::{DetourBudget, DetourRoute, PeerKeys};
use super::error::SendError;
use super::peer_state::{PeerLinkState, PeerStates};
use super::roster::Roster;
use crate::executor::LinkReporter;
use crate::reliable::detour::{FRAME_OVERHEAD, SEAL_OVERHEAD};
use crate::reliable::{Frame, HelloTurn, MessageId, ReliableStream, StreamConfig, StreamStats};

/// One message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who sent it.
    pub from: PeerId,
    /// What it says.
    pub payload: Bytes,
}

/// What the signaling bridge tells the messenger for the detour.
#[derive(Debug)]
pub(crate) enum DetourNews {
    /// A `detour` message from a peer.
    Batch { from: PeerId, sealed: String },
    /// The peer registered again (it was offline, or moved): what went on the detour to it
    /// meanwhile was refused, so everything unacknowledged may go again.
    PeerJoined(PeerId),
    /// The peer is offline: nothing goes on the detour to it until it is back.
    PeerLeft(PeerId),
}

/// What the node asks of the messenger.
#[derive(Debug)]
pub(crate) enum Request {
    /// Send a message.
    Send(Outgoing),
    /// Put every owed acknowledgement on the wire now, then answer.
    FlushAcks(oneshot::Sender<()>),
}

/// A request to send.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) peer: PeerId,
    pub(crate) payload: Bytes,
    /// When the sender stops waiting.
    pub(crate) deadline: Instant,
    /// Answered once the message is accepted into the replay buffer.
    pub(crate) accepted: oneshot::Sender<Result<MessageId, SendError>>,
    /// When present, answered once the peer acknowledged it (or at the
    /// deadline); the message is then withdrawn if it was never sent.
    pub(crate) confirmed: Option<oneshot::Sender<Result<(), SendError>>>,
}

/// What the messenger did, when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessengerReport {
    /// Accepted messages whose acknowledgement had not arrived when the
    /// node stopped (they may well have been delivered: acks trail by up to
    /// the ack delay). Waiting senders were answered.
    pub unacknowledged: usize,
    /// Counters summed over every peer.
    pub stats: StreamStats,
}

struct PeerLink {
    stream: ReliableStream,
    /// The peer connection whose channel the stream runs on, while one is
    /// open.
    channel: Option<ConnectionId>,
    /// Senders waiting for room in the replay buffer, in order.
    waiting_for_room: VecDeque<Outgoing>,
    /// Senders waiting for an acknowledgement.
    confirmations: HashMap<MessageId, (Instant, oneshot::Sender<Result<(), SendError>>)>,
    /// The stream's progress count when a stall last replaced the peer connection: no second
    /// replacement before the peer shows progress again (a receiver that stopped reading looks
    /// like a stall too, and must not make the connection churn).
    stalled_at: Option<u64>,
    /// The peer's data was held when the pump last looked (tether-rtc's `data_held`): the
    /// first pump after the hold ends resends everything unacknowledged.
    held: bool,
    /// The detour's keys for this peer.
    keys: PeerKeys,
    /// The peer's last detour batch said its channel cannot carry frames (and no frame came on
    /// the channel since): its path is being replaced, so this side sends on the detour too,
    /// besides the channel (its own hold may start later, or not at all: the peer's path is the
    /// one that moved).
    peer_detouring: bool,
    /// The peer is registered, as far as this side knows (a detour to an offline peer is
    /// refused by the server).
    peer_present: bool,
    /// This side sent the peer's frames on the detour when the pump last looked: when it starts
    /// again, everything unacknowledged goes there, since what went on the channel meanwhile
    /// may be lost in the path being replaced.
    detouring: bool,
    /// The last batch this side sent said its channel was down: when the channel carries frames
    /// again, a batch saying so follows on the same link, so that the peer does not take a late
    /// batch (the detour and the channel do not keep each other's order) for a path still down.
    told_path_down: bool,
}

/// What the messenger is wired to, as [`RtcNode::start`](super::RtcNode::start)
/// builds it.
pub(crate) struct MessengerParts {
    pub(crate) session: u64,
    pub(crate) stream_config: StreamConfig,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) events: RtcEvents,
    pub(crate) deliveries: mpsc::Sender<Message>,
    pub(crate) receive_backlog: usize,
    pub(crate) peers: PeerSet,
    pub(crate) roster: Arc<Roster>,
    /// Where peer connections that die on their own are reported.
    pub(crate) link: LinkReporter,
    /// The node's connection state.
    pub(crate) connection_state: watch::Receiver<ConnectionState>,
    /// Where the peers' states are published.
    pub(crate) peer_states: watch::Sender<PeerStates>,
    /// The signaling client: the detour's way out.
    pub(crate) signal: SignalClient,
    /// The detour: the link it runs on (the bridge publishes it) and what arrives on it; `None`
    /// when the node does not use it.
    pub(crate) detour: Option<DetourParts>,
    pub(crate) stop: CancellationToken,
}

/// What the messenger needs for the detour.
pub(crate) struct DetourParts {
    pub(crate) route: watch::Receiver<Option<DetourRoute>>,
    pub(crate) inbound: mpsc::Receiver<DetourNews>,
}

/// The messenger task. See the [module docs](self).
pub(crate) struct Messenger {
    /// This node's stream session, the same towards every peer.
    session: u64,
    stream_config: StreamConfig,
    requests: mpsc::Receiver<Request>,
    events: RtcEvents,
    /// Where received messages go to the application.
    deliveries: mpsc::Sender<Message>,
    /// Received messages not yet taken by the application, at most
    /// `receive_backlog`.
    backlog: VecDeque<Message>,
    receive_backlog: usize,
    peers: PeerSet,
    roster: Arc<Roster>,
    /// Where peer connections that die on their own are reported.
    link: LinkReporter,
    /// The node's connection state (nothing is accepted while closed).
    connection_state: watch::Receiver<ConnectionState>,
    /// Where the peers' states are published.
    peer_states: watch::Sender<PeerStates>,
    stop: CancellationToken,
    /// Every peer's stream and waiting senders.
    links: HashMap<PeerId, PeerLink>,
    signal: SignalClient,
    detour: Option<Detour>,
}

/// The detour's running state.
struct Detour {
    route: watch::Receiver<Option<DetourRoute>>,
    inbound: mpsc::Receiver<DetourNews>,
    /// The route's generation when last seen.
    generation: Option<u64>,
    budget: DetourBudget,
    /// When the budget allows the next batch, while frames wait for it.
    wake: Option<Instant>,
}

impl Messenger {
    pub(crate) fn new(parts: MessengerParts) -> Self {
        Self {
            session: parts.session,
            stream_config: parts.stream_config,
            requests: parts.requests,
            events: parts.events,
            deliveries: parts.deliveries,
            backlog: VecDeque::new(),
            receive_backlog: parts.receive_backlog,
            peers: parts.peers,
            roster: parts.roster,
            link: parts.link,
            connection_state: parts.connection_state,
            peer_states: parts.peer_states,
            stop: parts.stop,
            links: HashMap::new(),
            signal: parts.signal,
            detour: parts.detour.map(|parts| Detour {
                route: parts.route,
                inbound: parts.inbound,
                generation: None,
                budget: DetourBudget::new(Instant::now()),
                wake: None,
            }),
        }
    }

    pub(crate) async fn run(mut self) -> MessengerReport {
        let mut stranded_check = tokio::time::interval(STRANDED_CHECK);
        stranded_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_wake();
            let backlog_full = self.backlog.len() >= self.receive_backlog;
            let deliver_next = !self.backlog.is_empty();
            // A clone, so that the permit borrows it rather than `self`.
            let deliveries = self.deliveries.clone();
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                permit = deliveries.reserve(), if deliver_next => match permit {
                    Ok(permit) => {
                        if let Some(message) = self.backlog.pop_front() {
                            permit.send(message);
                        }
                    }
                    // Nobody reads any more: drop what arrives.
                    Err(_) => self.backlog.clear(),
                },
                event = self.events.recv(), if !backlog_full => match event {
                    Some(event) => self.on_rtc(event),
                    None => break,
                },
                request = self.requests.recv() => match request {
                    Some(Request::Send(outgoing)) => self.on_request(outgoing),
                    Some(Request::FlushAcks(done)) => {
                        for link in self.links.values_mut() {
                            link.stream.flush_acks();
                        }
                        self.pump().await;
                        let _ = done.send(());
                    }
                    None => break,
                },
                // Only armed with a wake-up; the fallback instant is never
                // slept to.
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)),
                    if wake.is_some() => self.on_timer(),
                _ = stranded_check.tick(), if self.links.values().any(|l| l.channel.is_some()) => {
                    self.check_stranded().await;
                }
                event = next_detour_event(self.detour.as_mut()) => match event {
                    DetourEvent::News(news) => self.on_detour_news(news),
                    DetourEvent::RouteChanged => self.on_route_changed(),
                    // The bridge stopped: the node is stopping.
                    DetourEvent::Closed => self.detour = None,
                },
            }
            self.pump().await;
        }
        self.finish()
    }

    fn link(&mut self, peer: &PeerId) -> &mut PeerLink {
        let session = self.session;
        let stream_config = &self.stream_config;
        self.links.entry(peer.clone()).or_insert_with(|| PeerLink {
            stream: ReliableStream::new(session, stream_config.clone()),
            channel: None,
            waiting_for_room: VecDeque::new(),
            confirmations: HashMap::new(),
            stalled_at: None,
            held: false,
            keys: PeerKeys::default(),
            peer_detouring: false,
            peer_present: true,
            detouring: false,
            told_path_down: false,
        })
    }

    fn on_request(&mut self, request: Outgoing) {
        let state = *self.connection_state.borrow();
        if matches!(state, ConnectionState::Closed | ConnectionState::Parked { .. }) {
            let _ = request.accepted.send(Err(SendError::Closed { state: state.to_string() }));
            return;
        }
        if self.roster.want(&request.peer) {
            // A first message to a peer connects to it.
            let peers = self.peers.clone();
            let peer = request.peer.clone();
            tokio::spawn(async move {
                if let Err(err) = peers.connect(&peer).await {
                    debug!(name: "live.peer.connect_on_send_failed", peer = %peer, error = %err);
                }
            });
        }
        let link = self.link(&request.peer);
        if link.waiting_for_room.is_empty() {
            admit(link, request);
        } else {
            link.waiting_for_room.push_back(request);
        }
    }

    /// What the bridge heard for the detour: a batch, or a peer's presence.
    fn on_detour_news(&mut self, news: DetourNews) {
        match news {
            DetourNews::Batch { from, sealed } => self.on_detour(from, &sealed),
            DetourNews::PeerJoined(peer) => {
                // A peer this node never exchanged messages with has nothing to send again.
                if let Some(link) = self.links.get_mut(&peer) {
                    link.peer_present = true;
                    link.stream.restart_detour();
                }
            }
            DetourNews::PeerLeft(peer) => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.peer_present = false;
                }
            }
        }
    }

    /// A sealed batch from a peer: applied like frames on a channel, if it opens and names
    /// both streams' sessions as they are now.
    fn on_detour(&mut self, from: PeerId, sealed: &str) {
        let now = Instant::now().into_std();
        let session = self.session;
        let Some(link) = self.links.get_mut(&from) else {
            debug!(name: "live.detour.unknown_peer", peer = %from);
            return;
        };
        let batch = match link.keys.open(sealed) {
            Ok(batch) => batch,
            Err(err) => {
                debug!(name: "live.detour.dropped", peer = %from, error = %err);
                return;
            }
        };
        if batch.sender_session != link.stream.peer_session() || batch.receiver_session != session {
            debug!(name: "live.detour.dropped", peer = %from, error = "another stream session");
            return;
        }
        trace!(name: "live.detour.received", peer = %from, frames = batch.frames.len(), path_down = batch.path_down);
        link.peer_detouring = batch.path_down;
        link.peer_present = true;
        for frame in batch.frames {
            if let Err(err) = link.stream.handle_detour(now, frame) {
                warn!(name: "live.message.protocol", peer = %from, error = %err);
            }
        }
        take_progress(link, &from, &mut self.backlog);
    }

    /// The bridge published another signaling link: what went on the detour through the one
    /// before may have died with it, so everything unacknowledged is eligible again.
    fn on_route_changed(&mut self) {
        let Some(detour) = &mut self.detour else { return };
        let generation = detour.route.borrow_and_update().map(|route| route.generation);
        if generation.is_some() && generation != detour.generation {
            for link in self.links.values_mut() {
                link.stream.restart_detour();
            }
        }
        detour.generation = generation;
    }

    fn on_rtc(&mut self, event: RtcEvent) {
        let now = Instant::now().into_std();
        if let RtcEvent::PeerStateChanged { peer, .. }
        | RtcEvent::ChannelOpened { peer, .. }
        | RtcEvent::ChannelClosed { peer, .. } = &event
        {
            self.publish_peer_state(peer);
        }
        match event {
            RtcEvent::MessageReceived { peer, connection_id, data } => {
                let Some(link) = self.links.get_mut(&peer) else {
                    debug!(name: "live.message.unknown_peer", peer = %peer);
                    return;
                };
                if link.channel != Some(connection_id) {
                    let connection = connection_id.get();
                    trace!(name: "live.message.stale_channel", peer = %peer, connection);
                    return;
                }
                // The peer's path carries frames again.
                link.peer_detouring = false;
                match Frame::decode(data) {
                    Ok(Frame::Key { public_key }) => {
                        if link.keys.peer_share(&public_key) {
                            debug!(name: "live.detour.keys_agreed", peer = %peer);
                        }
                    }
                    Ok(frame) => {
                        if let Err(err) = link.stream.handle_frame(now, frame) {
                            warn!(name: "live.message.protocol", peer = %peer, error = %err);
                        }
                    }
                    Err(err) => warn!(name: "live.message.malformed", peer = %peer, error = %err),
                }
                take_progress(link, &peer, &mut self.backlog);
            }
            RtcEvent::ChannelOpened { peer, connection_id } => {
                let connection = connection_id.get();
                info!(name: "live.channel.opened", peer = %peer, connection);
                self.roster.want(&peer);
                // The answerer's side of the channel opens last: it speaks first, and the
                // offerer answers (MESSAGING.md rule 1).
                let turn = match self.peers.role_towards(&peer) {
                    Ok(Role::Offerer) => HelloTurn::AfterPeer,
                    _ => HelloTurn::First,
                };
                let link = self.link(&peer);
                link.channel = Some(connection_id);
                link.peer_detouring = false;
                link.stream.channel_opened(now, turn);
                link.keys.channel_opened();
            }
            RtcEvent::ChannelClosed { peer, connection_id } => {
                let Some(link) = self.links.get_mut(&peer) else { return };
                if link.channel != Some(connection_id) {
                    return;
                }
                link.channel = None;
                link.stream.channel_closed();
                self.peer_down(&peer, connection_id, "channel closed");
            }
            RtcEvent::PeerStateChanged { peer, connection_id, state } => {
                let connection = connection_id.get();
                debug!(name: "live.peer.state", peer = %peer, connection, state = ?state);
                let current = self.links.get(&peer).and_then(|l| l.channel) == Some(connection_id);
                if state == PeerState::Failed && current {
                    self.peer_down(&peer, connection_id, "ice failed");
                }
                if current && let Some(link) = self.links.get_mut(&peer) {
                    // A connection that just came back gets a whole bound to show progress.
                    link.stream.restart_stall_clock(now);
                }
            }
            RtcEvent::HoldReleased { peer, connection_id } => {
                let connection = connection_id.get();
                // The pump that follows every event sends what was held (see `pump`).
                debug!(name: "live.peer.hold_released", %peer, connection);
            }
            RtcEvent::PeerLost { peer, connection_id } => {
                // A connect ended without a channel: the peer is not connected, whatever
                // signaling says. The peer set retries by itself; the Supervisor hears of it
                // (its state leaves `connected`) unless this node gave the peer up on purpose.
                let on_purpose = connection_id
                    .is_some_and(|connection| self.roster.closed_on_purpose(&peer, connection));
                if on_purpose || !self.roster.wanted().contains(&peer) {
                    return;
                }
                info!(name: "live.peer.lost", %peer, connection = ?connection_id.map(ConnectionId::get), why = "connect failed");
                self.link.peer_lost();
            }
            other => debug!(name: "live.rtc.event", event = ?other),
        }
    }

    /// Publishes how `peer` is connected now. The peer set updates its view
    /// of a peer before it sends the event that says so, so the state read
    /// here is at least as new as the event that led here, and the last
    /// event of a change publishes its final state.
    fn publish_peer_state(&self, peer: &PeerId) {
        let status = self.peers.status(peer);
        self.peer_states.send_if_modified(|states| {
            let state = PeerLinkState::observe(status, states.get(peer));
            let changed = states.set(peer, state);
            if changed {
                debug!(name: "live.peer.published", %peer, state = ?state);
            }
            changed
        });
    }

    /// A peer connection of `peer` went away. Unless this node closed it on
    /// purpose or the peer's negotiation already replaced it, the Supervisor
    /// hears of it and decides.
    fn peer_down(&self, peer: &PeerId, connection_id: ConnectionId, why: &'static str) {
        if self.roster.closed_on_purpose(peer, connection_id) {
            return;
        }
        // A newer peer connection exists, or the negotiation closed this one to replace it
        // (for the far side's new session, or after a restart that timed out): the status
        // can still show the retired one, since its channel closes before the next is built.
        let replaced = self.peers.status(peer).is_some_and(|status| {
            status.connection_id > Some(connection_id)
                || (status.connection_id == Some(connection_id) && status.replacing)
        });
        if replaced {
            return;
        }
        info!(name: "live.peer.lost", %peer, connection = connection_id.get(), why);
        self.link.peer_lost();
    }

    /// Liveness: a peer whose channel is open and whose connection claims to be connected, but
    /// whose stream made no progress (no acknowledgement, no Hello) for its bound while messages
    /// wait, is not connected: the Supervisor hears of a peer loss and the peer connection is
    /// replaced (NEGOTIATION.md §13.2, issue 13). Anything else restarts the wait.
    fn check_stalls(&mut self, now: Instant) {
        let std_now = now.into_std();
        let mut stalled = Vec::new();
        for (peer, link) in &mut self.links {
            let Some(connection) = link.channel else { continue };
            if link.stream.stall_deadline().is_none_or(|deadline| deadline > std_now) {
                continue;
            }
            link.stream.restart_stall_clock(std_now);
            let status = self.peers.status(peer);
            if status.is_some_and(|status| status.data_held) {
                // Held on purpose: no progress is expected until the hold ends.
                continue;
            }
            let claims_connected = status.is_some_and(|status| {
                status.connection_id == Some(connection)
                    && status.state == Some(PeerState::Connected)
            });
            let progress = link.stream.progress();
            if claims_connected && link.stalled_at != Some(progress) {
                link.stalled_at = Some(progress);
                stalled.push((peer.clone(), connection, link.stream.buffered()));
            }
        }
        for (peer, connection, waiting) in stalled {
            warn!(name: "live.peer.stalled", %peer, connection = connection.get(), waiting, "no progress on an open channel: replacing the peer connection");
            self.roster.closing_on_purpose(&peer, connection);
            self.link.peer_lost();
            let peers = self.peers.clone();
            tokio::spawn(async move {
                if let Err(err) = peers.replace(&peer).await {
                    debug!(name: "live.peer.stall_replace_failed", peer = %peer, error = %err);
                }
            });
        }
    }

    /// A peer connection whose selected pair leaves from a local address the device lost is
    /// dead, whatever ICE says for the next seconds (webrtc-rs notices after its disconnected
    /// timeout, 3 s, and gives up later still). The platform reports a path change when the
    /// route changes; this catches the rest: the old uplink of a make-before-break handoff
    /// going away after the new one already carries the route, under a pair ICE kept on it.
    /// Its data is held, and, unless a recovery is already running, the Supervisor hears of a
    /// lost peer (its Restore ICE-restarts onto the addresses the device has now).
    async fn check_stranded(&mut self) {
        let held = self.peers.hold_if_address_lost().await;
        if held.is_empty() {
            return;
        }
        let state = *self.connection_state.borrow();
        if state == ConnectionState::Connected {
            warn!(name: "live.peer.stranded", peers = held.len(), "a peer connection's local address is gone");
            self.link.peer_lost();
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        self.check_stalls(now);
        for link in self.links.values_mut() {
            // Senders whose deadline passed.
            while link.waiting_for_room.front().is_some_and(|r| r.deadline <= now) {
                if let Some(request) = link.waiting_for_room.pop_front() {
                    let _ = request.accepted.send(Err(SendError::BufferFull));
                    if let Some(confirmed) = request.confirmed {
                        let _ = confirmed.send(Err(SendError::BufferFull));
                    }
                }
            }
            for id in link.stream.withdraw_expired(now.into_std()) {
                if let Some((_, reply)) = link.confirmations.remove(&id) {
                    let _ = reply.send(Err(SendError::NotDelivered));
                }
            }
            let due: Vec<MessageId> = link
                .confirmations
                .iter()
                .filter(|(_, (deadline, _))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                if let Some((_, reply)) = link.confirmations.remove(&id) {
                    let _ = reply.send(Err(SendError::Unconfirmed));
                }
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        };
        for link in self.links.values() {
            consider(link.stream.poll_timeout().map(Instant::from_std));
            if link.channel.is_some() {
                consider(link.stream.stall_deadline().map(Instant::from_std));
            }
            consider(link.waiting_for_room.front().map(|r| r.deadline));
            consider(link.confirmations.values().map(|(deadline, _)| *deadline).min());
            if self.detour.is_some() {
                consider(link.stream.detour_timeout().map(Instant::from_std));
            }
        }
        consider(self.detour.as_ref().and_then(|detour| detour.wake));
        wake
    }

    /// Puts every frame that is due on its data channel, or, while the channel cannot carry
    /// it, on the detour.
    async fn pump(&mut self) {
        let now = Instant::now().into_std();
        if let Some(detour) = &mut self.detour {
            detour.wake = None;
        }
        for (peer, link) in &mut self.links {
            let held =
                link.channel.is_some() && self.peers.status(peer).is_some_and(|s| s.data_held);
            if held {
                // Held frames wait in the replay buffer (see tether-rtc's `data_held`); the
                // release is an event, after which this runs again.
                link.held = true;
            }
            let channel_usable = link.channel.is_some() && !held;
            // A peer whose path is down gets this side's frames on the detour too
            // (acknowledgements first), as well as on the channel; its first frame on the
            // channel, or a batch saying its path is back, ends this.
            let detouring = !channel_usable || link.peer_detouring;
            if let Some(detour) = &mut self.detour {
                if detouring {
                    if !link.detouring {
                        link.stream.restart_detour();
                    }
                    detour.carry(&self.signal, self.session, peer, link, !channel_usable, now);
                }
                if channel_usable && link.told_path_down {
                    // The channel is back: say so on the link the earlier batches took.
                    send_batch(&self.signal, self.session, peer, link, false, &[]);
                }
            }
            link.detouring = detouring;
            if !channel_usable {
                continue;
            }
            if std::mem::take(&mut link.held) {
                // The path under the channel was replaced: what went out before the hold may
                // have been lost into the old one. Everything unacknowledged goes again, first,
                // and gets a whole bound to show progress.
                link.stream.resend_unacknowledged();
                link.stream.restart_stall_clock(now);
            }
            while let Some(frame) = link.stream.poll_transmit(now, true) {
                let hello = matches!(frame, Frame::Hello { .. });
                if let Err(err) = self.peers.send(peer, frame.encode()).await {
                    // The frame stays in the replay buffer (it is not
                    // acknowledged); the next channel's Hello resumes it.
                    debug!(name: "live.message.send_failed", peer = %peer, error = %err);
                    break;
                }
                // This channel's key share follows each of this side's Hellos: the peer is
                // ready for frames then (MESSAGING.md rules 1 and 10), and a repeat is harmless.
                if hello
                    && self.detour.is_some()
                    && let Some(public_key) = link.keys.public()
                    && let Err(err) =
                        self.peers.send(peer, Frame::Key { public_key }.encode()).await
                {
                    debug!(name: "live.message.send_failed", peer = %peer, error = %err);
                    break;
                }
            }
        }
    }

    fn finish(mut self) -> MessengerReport {
        // The last word on every peer, whatever events are still queued:
        // after a shutdown, the peer connections its final cleanup closed.
        let known: Vec<PeerId> =
            self.peer_states.borrow().iter().map(|(peer, _)| peer.clone()).collect();
        for peer in &known {
            self.publish_peer_state(peer);
        }
        let mut report = MessengerReport::default();
        for (peer, link) in self.links.drain() {
            let stats = link.stream.stats();
            report.stats.delivered += stats.delivered;
            report.stats.duplicates += stats.duplicates;
            report.stats.replayed += stats.replayed;
            report.stats.withdrawn += stats.withdrawn;
            report.stats.detoured += stats.detoured;
            for request in link.waiting_for_room {
                let _ = request.accepted.send(Err(SendError::Shutdown));
                if let Some(confirmed) = request.confirmed {
                    let _ = confirmed.send(Err(SendError::Shutdown));
                }
            }
            for (_, (_, reply)) in link.confirmations {
                let _ = reply.send(Err(SendError::Shutdown));
            }
            let unacknowledged = link.stream.abandon();
            if !unacknowledged.is_empty() {
                info!(name: "live.message.unacknowledged", peer = %peer, count = unacknowledged.len());
            }
            report.unacknowledged += unacknowledged.len();
        }
        report
    }
}

/// How often the messenger checks, while a channel is open, whether a peer connection's local
/// address is gone (see `Messenger::check_stranded`). webrtc-rs's driver already wakes every
/// 200 ms on a connected peer connection.
const STRANDED_CHECK: Duration = Duration::from_millis(250);

/// Hands what a peer's frames delivered to the application's backlog, answers the senders whose
/// messages they confirmed, and admits senders waiting for room.
fn take_progress(link: &mut PeerLink, peer: &PeerId, backlog: &mut VecDeque<Message>) {
    while let Some(payload) = link.stream.poll_delivery() {
        backlog.push_back(Message { from: peer.clone(), payload });
    }
    while let Some(id) = link.stream.poll_confirmed() {
        if let Some((_, reply)) = link.confirmations.remove(&id) {
            let _ = reply.send(Ok(()));
        }
    }
    while link.waiting_for_room.front().is_some() {
        let Some(request) = link.waiting_for_room.pop_front() else { break };
        if !admit(link, request) {
            break;
        }
    }
}

/// What the bridge told the messenger about the detour.
enum DetourEvent {
    News(DetourNews),
    RouteChanged,
    Closed,
}

/// The next word from the bridge about the detour; pending forever without one.
async fn next_detour_event(detour: Option<&mut Detour>) -> DetourEvent {
    let Some(detour) = detour else { return std::future::pending().await };
    tokio::select! {
        news = detour.inbound.recv() => news.map_or(DetourEvent::Closed, DetourEvent::News),
        changed = detour.route.changed() => match changed {
            Ok(()) => DetourEvent::RouteChanged,
            Err(_) => DetourEvent::Closed,
        },
    }
}

impl Detour {
    fn carry(
        &mut self,
        signal: &SignalClient,
        session: u64,
        peer: &PeerId,
        link: &mut PeerLink,
        path_down: bool,
        now: std::time::Instant,
    ) {
        let Some(route) = *self.route.borrow() else { return };
        let peer_session = link.stream.peer_session();
        if !link.keys.agreed() || peer_session == 0 || !link.peer_present {
            return;
        }
        let id_len = peer.as_str().len();
        let (max_batch, largest) = (route.max_batch(id_len), route.largest_frame(id_len));
        while link.stream.detour_due(now, largest) {
            let tokio_now = Instant::from_std(now);
            if !self.budget.take(tokio_now) {
                let next = self.budget.next_at();
                self.wake = Some(self.wake.map_or(next, |wake| wake.min(next)));
                return;
            }
            let mut frames = Vec::new();
            let mut size = SEAL_OVERHEAD;
            while let Some(frame) = link.stream.poll_detour(
                now,
                max_batch.saturating_sub(size + FRAME_OVERHEAD),
                largest,
            ) {
                let encoded = frame.encode();
                size += FRAME_OVERHEAD + encoded.len();
                frames.push(encoded);
            }
            if !send_batch(signal, session, peer, link, path_down, &frames) {
                // What it carried waits for the next link or the channel.
                return;
            }
        }
    }
}

/// Seals `frames` for `peer` and sends them as one `detour` message; returns whether it went.
/// An empty batch without `path_down` tells the peer, on the link this side's earlier batches
/// took, that this side's channel carries frames again.
fn send_batch(
    signal: &SignalClient,
    session: u64,
    peer: &PeerId,
    link: &mut PeerLink,
    path_down: bool,
    frames: &[Bytes],
) -> bool {
    let peer_session = link.stream.peer_session();
    let Some(sealed) = link.keys.seal(session, peer_session, path_down, frames) else {
        return false;
    };
    match signal.send(peer, RelayPayload::Detour { sealed }) {
        Ok(_) => {
            link.told_path_down = path_down;
            trace!(name: "live.detour.sent", peer = %peer, frames = frames.len(), path_down);
            true
        }
        Err(err) => {
            debug!(name: "live.detour.send_failed", peer = %peer, error = %err);
            false
        }
    }
}

/// Accepts `request` into its peer's replay buffer; returns `false` (and
/// puts it back in front) when there is no room.
fn admit(link: &mut PeerLink, request: Outgoing) -> bool {
    let withdraw_at = request.confirmed.as_ref().map(|_| request.deadline.into_std());
    match link.stream.push(request.payload.clone(), withdraw_at) {
        Ok(id) => {
            let _ = request.accepted.send(Ok(id));
            if let Some(confirmed) = request.confirmed {
                link.confirmations.insert(id, (request.deadline, confirmed));
            }
            true
        }
        Err(_) => {
            link.waiting_for_room.push_front(request);
            false
        }
    }
}

/// A random nonzero stream session, fresh per node instance (std's
/// randomly keyed hasher is random enough for an instance id).
pub(crate) fn new_session() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}
