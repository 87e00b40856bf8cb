//! [`RtcNode`]: a tether node on real connections — a signaling client, a
//! set of WebRTC peers, reliable messaging over their data channels, and
//! the recovery runtime ([`Node`]) deciding what to do when the network
//! changes.
//!
//! ```text
//!   app / platform ──► NetworkEventHandle ──► Node (driver + Supervisor)
//!                                                  │ actions
//!                                                  ▼
//!   send / post ──► messenger ──frames──►  RtcExecutor ──► SignalClient
//!   messages  ◄───  (reliable streams)          │             ▲   │
//!                        ▲   │                  ▼             │   ▼
//!                        │   └──────────────► PeerSet ◄──── bridge (offers,
//!                        └──── RtcEvents ◄────┘                candidates, losses)
//! ```
//!
//! Connecting: a node starts idle. The first Available path snapshot (or a
//! `force_reconnect`) makes the Supervisor restore, which connects
//! signaling and the peers.
//!
//! Peers are named by [`PeerId`], validated once where an id enters (the
//! application, the FFI, the command line, the signaling server's frames)
//! and carried as is through the roster, the messenger, the bridge and the
//! peer set.

mod bridge;
mod config;
mod detour;
mod error;
mod executor;
mod messenger;
mod peer_state;
mod roster;
#[cfg(feature = "testbed")]
pub mod testbed;

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tether_recovery::ConnectionState;
use tether_rtc::PeerSet;
use tether_signal::protocol::RoomId;
use tether_signal::{ClientConfig, SignalClient};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use config::{
    MessagingConfig, RecoveryTiming, RestoreStrategy, RtcNodeConfig, SignalingTiming,
};
pub use error::{RtcNodeError, SendError};
pub use messenger::{Message, MessengerReport};
pub use peer_state::{PeerLinkState, PeerStates};
/// Which peer connection to a peer, as [`PeerLinkState::connection_id`]
/// reports it.
pub use tether_rtc::ConnectionId;
/// The state of a peer connection, as [`PeerLinkState::connection`] reports
/// it.
pub use tether_rtc::PeerState;
/// Which way a peer connection's packets go ([`RtcNode::peer_route`]): the
/// ICE candidate pair it selected, and what kind each end is.
pub use tether_rtc::{CandidateKind, CandidateProtocol, IceRoute, RouteEnd};
/// Whom a `wss://` signaling server must be signed by
/// ([`RtcNodeConfig::tls`]).
pub use tether_signal::TlsTrust;
/// A peer's identity: the signaling protocol's validated id.
pub use tether_signal::protocol::PeerId;

use self::bridge::Bridge;
use self::executor::RtcExecutor;
use self::messenger::{Messenger, MessengerParts, Outgoing, Request};
use self::roster::Roster;
use crate::executor::LinkReporter;
use crate::reliable::MessageId;
use crate::{ActionReport, NetworkEventHandle, Node, NodeRef, ShutdownReport};

/// Outbound signaling messages the peer set may queue before it drops one
/// (a burst of candidates per peer).
const SIGNAL_QUEUE: usize = 1024;
/// Send requests queued for the messenger.
const SEND_QUEUE: usize = 1024;
/// `detour` messages queued for the messenger (each a batch of frames).
const DETOUR_QUEUE: usize = 256;
/// How long shutdown waits for the last acknowledgements to go out.
const ACK_FLUSH_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

/// Receives the messages peers send to this node, in order per peer.
#[derive(Debug)]
pub struct Messages {
    receiver: mpsc::Receiver<Message>,
}

impl Messages {
    /// The next message; `None` once the node has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is only taken when this returns it.
    pub async fn recv(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.receiver.try_recv().ok()
    }
}

/// What shutting down did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcShutdownReport {
    /// The recovery runtime's shutdown (final cleanup, callers answered).
    pub node: ShutdownReport,
    /// The messenger's last word (messages not acknowledged yet).
    pub messaging: MessengerReport,
}

/// Fault injection for demos and tests: breaks things the way networks do,
/// without telling the Supervisor (it has to notice, as in real life).
#[derive(Debug)]
pub struct Faults<'a> {
    node: &'a RtcNode,
}

impl Faults<'_> {
    /// Drops the signaling socket without a close frame, as a dead network
    /// would. Returns `false` when there was no connection.
    pub fn sever_signaling(&self) -> bool {
        self.node.signal.sever()
    }

    /// Tears the peer connection to `peer` down, as a failure on this side
    /// would (the far side hears `bye` and sees its channel close).
    ///
    /// This node reports the loss to its Supervisor itself, exactly once,
    /// whatever the far side does meanwhile: a connection that died here is
    /// this node's loss, so its Supervisor always decides a Restore, whether
    /// or not the far side has already begun a replacement. (Left to the
    /// channel's close event, the report would depend on which side moved
    /// first.) The far side notices on its own and may recover too.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped before the close finishes, the close still
    /// runs in the peer's task but the loss is not reported.
    pub async fn drop_peer_connection(&self, peer: &PeerId) -> Result<(), RtcNodeError> {
        if let Some(id) = self.node.peers.status(peer).and_then(|status| status.connection_id) {
            // The report below stands for this close: the channel's close
            // event must not report it a second time.
            self.node.roster.closing_on_purpose(peer, id);
        }
        let closed = self
            .node
            .peers
            .close(peer)
            .await
            .map_err(|err| RtcNodeError::Peer { peer: peer.clone(), message: err.to_string() });
        self.node.link.peer_lost();
        closed
    }
}

/// A tether node on real connections. See the [module docs](self).
#[derive(Debug)]
pub struct RtcNode {
    peer_id: PeerId,
    node: Node,
    signal: SignalClient,
    peers: PeerSet,
    roster: Arc<Roster>,
    /// Reports the peer connections [`Faults`] breaks.
    link: LinkReporter,
    peer_states: watch::Receiver<PeerStates>,
    requests: mpsc::Sender<Request>,
    messages: Mutex<Option<Messages>>,
    messaging: MessagingConfig,
    stop: CancellationToken,
    /// Stops the bridge and the messenger when the node is dropped without
    /// a shutdown (the recovery runtime stops on its own drop).
    _stop_on_drop: tokio_util::sync::DropGuard,
    bridge: JoinHandle<()>,
    messenger: JoinHandle<MessengerReport>,
}

impl RtcNode {
    /// Starts a node on the current tokio runtime. It does not connect until
    /// the first Available snapshot or forced reconnect.
    ///
    /// # Errors
    ///
    /// [`RtcNodeError::Config`] for an unusable URL, room or timing;
    /// [`RtcNodeError::Node`] when the recovery runtime refuses (policy, no
    /// runtime).
    pub fn start(config: RtcNodeConfig) -> Result<RtcNode, RtcNodeError> {
        let invalid = |err: &dyn std::fmt::Display| RtcNodeError::Config(err.to_string());
        let mut client = ClientConfig::new(
            config.signaling_url.clone(),
            config.peer_id.clone(),
            config.token.clone(),
        );
        client.tls = config.tls.clone();
        client.fallback_urls = config.fallback_signaling_urls.clone();
        client.room = match &config.room {
            Some(room) => Some(RoomId::new(room.clone()).map_err(|e| invalid(&e))?),
            None => None,
        };
        client.connect_timeout = config.signaling.connect_timeout;
        client.ping_interval = config.signaling.ping_interval;
        client.dead_after = config.signaling.dead_after;
        client.rebuild_head_start = config.signaling.rebuild_head_start;
        let (signal, signal_events) = SignalClient::new(client).map_err(|e| invalid(&e))?;

        let (signals_tx, signals_rx) = mpsc::channel(SIGNAL_QUEUE);
        let (detour_route_tx, detour_route) = watch::channel(None);
        let (detours_tx, detours_rx) = mpsc::channel(DETOUR_QUEUE);
        let (peers, rtc_events) =
            PeerSet::new(config.peer_id.clone(), config.rtc.clone(), signals_tx);
        let roster = Arc::new(Roster::default());
        // The link channel comes first: the bridge and the messenger report
        // into it from the moment they exist, and the node hears every
        // report, whenever its driver first runs.
        let (link, link_events) = LinkReporter::channel();
        let executor = Arc::new(RtcExecutor {
            signal: signal.clone(),
            peers: peers.clone(),
            roster: Arc::clone(&roster),
            timing: config.recovery,
        });
        let node = Node::spawn(config.node.clone(), executor, link_events)?;

        let stop = CancellationToken::new();
        let span = tracing::info_span!("live", peer = %config.peer_id);
        let bridge = Bridge {
            signal: signal.clone(),
            events: signal_events,
            outbound: signals_rx,
            peers: peers.clone(),
            roster: Arc::clone(&roster),
            link: link.clone(),
            auto_connect: config.auto_connect,
            detour: config
                .messaging
                .detour
                .then_some(bridge::BridgeDetour { route: detour_route_tx, inbound: detours_tx }),
            stop: stop.clone(),
        };
        let bridge = tokio::spawn(bridge.run().instrument(span.clone()));

        let (requests, requests_rx) = mpsc::channel(SEND_QUEUE);
        let (deliveries, deliveries_rx) = mpsc::channel(config.messaging.receive_backlog.max(1));
        let (peer_states_tx, peer_states) = watch::channel(PeerStates::default());
        let messenger = Messenger::new(MessengerParts {
            session: messenger::new_session(),
            stream_config: config.messaging.stream.clone(),
            requests: requests_rx,
            events: rtc_events,
            deliveries,
            receive_backlog: config.messaging.receive_backlog.max(1),
            peers: peers.clone(),
            roster: Arc::clone(&roster),
            link: link.clone(),
            connection_state: node.state(),
            peer_states: peer_states_tx,
            signal: signal.clone(),
            detour: config
                .messaging
                .detour
                .then(|| messenger::DetourParts { route: detour_route, inbound: detours_rx }),
            stop: stop.clone(),
        });
        let messenger = tokio::spawn(messenger.run().instrument(span));

        Ok(RtcNode {
            peer_id: config.peer_id,
            node,
            signal,
            peers,
            roster,
            link,
            peer_states,
            requests,
            messages: Mutex::new(Some(Messages { receiver: deliveries_rx })),
            messaging: config.messaging,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            bridge,
            messenger,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    /// The platform's way in.
    pub fn handle(&self) -> NetworkEventHandle {
        self.node.handle()
    }

    /// The actor-style address of this node.
    pub fn node_ref(&self) -> NodeRef {
        self.node.node_ref()
    }

    /// Replaces the signaling token. Every later registration uses it: the
    /// next reconnect, whatever causes it. Tokens expire (the server closes
    /// a session whose token ran out with 4010 and refuses the old token
    /// after that), so an app renews before expiry and the node reconnects
    /// with the new one unnoticed; renewed after a refusal, the node leaves
    /// [`ParkReason::AuthRejected`](crate::ParkReason::AuthRejected)
    /// (or `ConfigRejected`) and restores at once.
    ///
    /// # Errors
    ///
    /// [`RtcNodeError::Config`] for an empty token; the current one stays.
    pub fn renew_token(&self, token: impl Into<String>) -> Result<(), RtcNodeError> {
        let token = token.into();
        if token.is_empty() {
            return Err(RtcNodeError::Config("token must not be empty".into()));
        }
        self.signal.set_token(token);
        self.link.credentials_renewed();
        tracing::info!(name: "live.token_renewed", peer = %self.peer_id);
        Ok(())
    }

    /// The connection state, for UI.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.node.state()
    }

    /// Every action's start and end from now on.
    pub fn actions(&self) -> broadcast::Receiver<ActionReport> {
        self.node.actions()
    }

    /// The messages peers send to this node. There is one receiver: the
    /// first call takes it, later calls get `None`.
    pub fn messages(&self) -> Option<Messages> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Connects to `peer` (or finds it connected), and keeps it connected
    /// through recoveries from now on.
    ///
    /// # Errors
    ///
    /// [`RtcNodeError::Peer`] when the peer connection could not be made
    /// within the rtc connect timeout (it stays wanted: recovery retries).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the attempt runs in the peer's task.
    pub async fn connect_peer(&self, peer: &PeerId) -> Result<(), RtcNodeError> {
        self.roster.want(peer);
        self.peers
            .connect(peer)
            .await
            .map_err(|err| RtcNodeError::Peer { peer: peer.clone(), message: err.to_string() })
    }

    /// Stops keeping `peer` connected and closes its peer connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the close runs in the peer's task.
    pub async fn disconnect_peer(&self, peer: &PeerId) {
        self.roster.forget(peer);
        if let Some(id) = self.peers.status(peer).and_then(|status| status.connection_id) {
            self.roster.closing_on_purpose(peer, id);
        }
        let _ = self.peers.close(peer).await;
    }

    /// The peers with an open data channel now.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.peers.connected_peers()
    }

    /// The peers' states for UI ("bob connected"): the current snapshot
    /// with [`borrow`](watch::Receiver::borrow), and
    /// [`changed`](watch::Receiver::changed) wakes when it changes (a state
    /// that lasted no time may be skipped; the latest is always seen).
    /// `changed` fails once the node has shut down.
    ///
    /// The snapshot follows the peer connections' events as the messenger
    /// takes them in, in order with received messages: while the
    /// application leaves [`messages`](Self::messages) unread and their
    /// backlog full, it waits with them. Its last value, after
    /// [`shutdown`](Self::shutdown), shows the peer connections the final
    /// cleanup closed.
    pub fn peer_states(&self) -> watch::Receiver<PeerStates> {
        self.peer_states.clone()
    }

    /// The route of the current peer connection to `peer`: the ICE
    /// candidate pair it selected, so whether its packets go directly
    /// (host, reflexive candidates) or through a TURN relay
    /// ([`IceRoute::is_relayed`]). `None` while there is no peer connection
    /// or ICE has not selected a pair. A restart or a replacement may change
    /// it; [`peer_states`](Self::peer_states) says when.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn peer_route(&self, peer: &PeerId) -> Option<IceRoute> {
        self.peers.selected_route(peer).await
    }

    /// Queues `payload` for `peer`, reliably and in order, and returns once
    /// it is accepted into the replay buffer (waiting for room up to the
    /// send deadline). An accepted message is delivered exactly once, across
    /// ICE restarts and reconnects, as long as both nodes run; shutdown
    /// counts what was not acknowledged yet.
    ///
    /// # Errors
    ///
    /// Not accepted: [`SendError::TooLarge`], [`SendError::InvalidPeer`],
    /// [`SendError::Closed`] (after a cleanup or logout),
    /// [`SendError::BufferFull`], [`SendError::Shutdown`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once the request is handed over, cancelling loses
    /// only the message's id, not the message, which is still sent.
    pub async fn post(
        &self,
        peer: &PeerId,
        payload: impl Into<Bytes>,
    ) -> Result<MessageId, SendError> {
        let (accepted, answer) = oneshot::channel();
        self.request(peer, payload.into(), accepted, None).await?;
        answer.await.unwrap_or(Err(SendError::Shutdown))
    }

    /// Sends `payload` to `peer` and waits for the peer's acknowledgement,
    /// up to the send deadline.
    ///
    /// # Errors
    ///
    /// Those of [`post`](Self::post), and after acceptance:
    /// [`SendError::NotDelivered`] (withdrawn unsent at the deadline) or
    /// [`SendError::Unconfirmed`] (sent, not yet acknowledged; still queued
    /// for replay).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the same way as [`post`](Self::post): a cancelled
    /// send may still be delivered.
    pub async fn send(&self, peer: &PeerId, payload: impl Into<Bytes>) -> Result<(), SendError> {
        let (accepted, accepted_answer) = oneshot::channel();
        let (confirmed, confirmed_answer) = oneshot::channel();
        self.request(peer, payload.into(), accepted, Some(confirmed)).await?;
        accepted_answer.await.unwrap_or(Err(SendError::Shutdown))?;
        confirmed_answer.await.unwrap_or(Err(SendError::Shutdown))
    }

    async fn request(
        &self,
        peer: &PeerId,
        payload: Bytes,
        accepted: oneshot::Sender<Result<MessageId, SendError>>,
        confirmed: Option<oneshot::Sender<Result<(), SendError>>>,
    ) -> Result<(), SendError> {
        let limit = self.messaging.max_message_bytes;
        if payload.len() > limit {
            return Err(SendError::TooLarge { size: payload.len(), limit });
        }
        if *peer == self.peer_id {
            return Err(SendError::InvalidPeer { peer: peer.clone() });
        }
        let deadline = Instant::now() + self.messaging.send_deadline;
        let outgoing = Outgoing { peer: peer.clone(), payload, deadline, accepted, confirmed };
        self.requests.send(Request::Send(outgoing)).await.map_err(|_| SendError::Shutdown)
    }

    /// Fault injection for demos and tests.
    pub fn faults(&self) -> Faults<'_> {
        Faults { node: self }
    }

    /// Shuts down: the recovery runtime's final cleanup (signaling first,
    /// then the peer connections), then the messenger, which answers every
    /// waiting sender.
    ///
    /// # Cancel safety
    ///
    /// Cancelling the wait leaves the background tasks to finish on their own.
    pub async fn shutdown(self) -> RtcShutdownReport {
        let RtcNode { node, stop, bridge, messenger, _stop_on_drop, requests, .. } = self;
        // Acknowledge what arrived before the channels close, so that peers
        // do not replay it to whoever takes this peer id next.
        let (flushed, done) = oneshot::channel();
        if requests.send(Request::FlushAcks(flushed)).await.is_ok() {
            let _ = tokio::time::timeout(ACK_FLUSH_BOUND, done).await;
        }
        let node = node.shutdown().await;
        stop.cancel();
        let messaging = messenger.await.unwrap_or_default();
        let _ = bridge.await;
        drop(_stop_on_drop);
        RtcShutdownReport { node, messaging }
    }
}
