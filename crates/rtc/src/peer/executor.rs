//! The peer task: a thin executor of the negotiation machine on webrtc-rs.
//!
//! It turns commands, relayed signaling and webrtc-rs events into [`Input`]s, runs every
//! [`Action`] the machine emits in order (feeding each outcome back before anything else), and
//! sleeps until the machine's next timeout. It decides nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rtc::peer_connection::configuration::RTCOfferOptions;
use tether_signal::protocol::PeerId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};
use webrtc::data_channel::{DataChannel, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, RTCIceCandidateInit, RTCSessionDescription,
};

use super::channel::{CHANNEL_STREAM_ID, ChannelOpening, watch_channel};
use super::connection::{ConnectionHandler, Internal, OwnedConnection};
use super::view::PeerView;
use super::{Command, Reply, SetContext};
use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState, RtcEvent};
use crate::negotiation::Role;
use crate::negotiation::action::Action;
use crate::negotiation::input::{Input, Outcome, WaiterId};
use crate::negotiation::machine::Machine;
use crate::signal::{OutboundSignal, SignalPayload};

/// The machine's clock: tokio's (so paused-time tests drive it), as a std instant.
/// Which description of the remote [`PeerTask::set_remote`] applies.
#[derive(Debug, Clone, Copy)]
enum Remote {
    Offer,
    Answer,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(super) struct PeerTask {
    peer: PeerId,
    ctx: Arc<SetContext>,
    view: Arc<PeerView>,
    internal: mpsc::UnboundedSender<Internal>,
    /// Peer connections built so far for this peer (shared with the set).
    built: Arc<AtomicU64>,
    machine: Machine,
    /// The peer connection the machine calls current.
    pc: Option<OwnedConnection>,
    /// A data channel the remote announced, until the machine accepts or ignores it.
    announced: Option<(ConnectionId, Arc<dyn DataChannel>)>,
    waiters: HashMap<WaiterId, Reply>,
    next_waiter: WaiterId,
    last_emitted: Option<(ConnectionId, PeerState)>,
}

impl PeerTask {
    pub(super) fn new(
        peer: PeerId,
        ctx: Arc<SetContext>,
        view: Arc<PeerView>,
        internal: mpsc::UnboundedSender<Internal>,
        built: Arc<AtomicU64>,
        machine: Machine,
    ) -> Self {
        Self {
            peer,
            ctx,
            view,
            internal,
            built,
            machine,
            pc: None,
            announced: None,
            waiters: HashMap::new(),
            next_waiter: 0,
            last_emitted: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        debug!(name: "rtc.peer.task", "peer task started");
        loop {
            let deadline = self.machine.poll_timeout().map(Instant::from_std);
            tokio::select! {
                // webrtc-rs events first, so a command is always handled against the newest
                // state (an old `connected` cannot be mistaken for the end of a later restart).
                biased;
                Some(Internal { connection_id, event, channel }) = internal.recv() => {
                    if let Some(channel) = channel {
                        self.announced = Some((connection_id, channel));
                    }
                    self.feed(Input::Pc { id: connection_id, event }).await;
                }
                command = commands.recv() => match command {
                    Some(Command::Close(done)) => {
                        self.feed(Input::Close { notify_remote: true }).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.command(command).await,
                    None => {
                        // The PeerSet is gone: nobody can use this peer any more.
                        self.feed(Input::Close { notify_remote: true }).await;
                        break;
                    }
                },
                // No deadline: the branch is off (the placeholder instant is never awaited).
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => {
                    trace!(name: "rtc.peer.timeout", reason = self.machine.timeout_reason());
                    self.machine.handle_timeout(now());
                    self.drive().await;
                }
            }
            if self.machine.is_closed() {
                break;
            }
        }
        debug!(name: "rtc.peer.task", "peer task ended");
    }

    fn waiter(&mut self, reply: Reply) -> WaiterId {
        self.next_waiter += 1;
        self.waiters.insert(self.next_waiter, reply);
        self.next_waiter
    }

    async fn command(&mut self, command: Command) {
        let input = match command {
            Command::Connect(reply) => Input::Connect(self.waiter(reply)),
            Command::Replace(reply) => Input::Replace(self.waiter(reply)),
            Command::RestartIce { reply, asked_at } => {
                Input::RestartIce { waiter: self.waiter(reply), asked_at }
            }
            Command::ClearPendingRestart => Input::ClearPendingRestart,
            Command::Signal(payload) => Input::Signal(payload),
            Command::Presence(presence) => Input::Presence(presence),
            Command::Signaling { up } => Input::Signaling { up },
            // `run` handles Close before dispatching here; stay correct if that changes.
            Command::Close(done) => {
                self.feed(Input::Close { notify_remote: true }).await;
                let _ = done.send(());
                return;
            }
        };
        self.feed(input).await;
    }

    async fn feed(&mut self, input: Input) {
        self.machine.handle_input(now(), input);
        self.drive().await;
    }

    /// Runs every action the machine has, in order; outcomes go back in at once.
    async fn drive(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            self.execute(action).await;
        }
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::CreatePc { id } => {
                let outcome =
                    self.create_pc(id).await.map_or_else(Outcome::Failed, |()| Outcome::Created);
                self.done(id, outcome);
            }
            Action::CreateOffer { id, ice_restart } => {
                let outcome = self
                    .create_offer(id, ice_restart)
                    .await
                    .map_or_else(Outcome::Failed, |sdp| Outcome::OfferCreated { sdp });
                self.done(id, outcome);
            }
            Action::ReadLocalOffer { id } => {
                let sdp = match self.pc_for(id) {
                    Ok(pc) => pc.local_description().await.map(|local| local.sdp),
                    Err(_) => None,
                };
                self.done(id, Outcome::LocalOffer { sdp });
            }
            Action::ApplyAnswer { id, sdp } => {
                let outcome = self
                    .apply_answer(id, sdp)
                    .await
                    .map_or_else(Outcome::Failed, |()| Outcome::AnswerApplied);
                self.done(id, outcome);
            }
            Action::AnswerOffer { id, sdp } => {
                let outcome = self
                    .answer_offer(id, sdp)
                    .await
                    .map_or_else(Outcome::Failed, |sdp| Outcome::AnswerCreated { sdp });
                self.done(id, outcome);
            }
            Action::AddCandidate { id, candidate } => {
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                    ..Default::default()
                };
                if let Ok(pc) = self.pc_for(id)
                    && let Err(error) = pc.add_ice_candidate(init).await
                {
                    warn!(name: "rtc.signal.rejected", kind = "candidate", %error);
                }
            }
            Action::IgnoreChannel { id } => {
                if let Some((_, channel)) = self.announced.take() {
                    let _ = channel.close().await;
                }
                trace!(name: "rtc.channel.dropped", connection = id.get());
            }
            Action::Retire { id, state, replaced } => {
                self.view.set_held(id, false);
                self.view.set_state(id, state);
                if replaced {
                    self.view.set_replacing(id);
                }
                self.view.close_channel(id);
                if let Some(mut pc) = self.pc.take_if(|pc| pc.id == id) {
                    pc.close(self.ctx.config.close_timeout).await;
                }
                self.emit_state(id, state);
            }
            Action::State { id, state } => {
                self.view.set_state(id, state);
                self.emit_state(id, state);
            }
            Action::Hold { id, held } => self.hold(id, held),
            Action::Send(payload) => {
                let critical = matches!(
                    payload,
                    SignalPayload::Offer { .. } | SignalPayload::IceRestartRequest
                );
                if let Err(error) = self.signal(payload)
                    && critical
                {
                    self.machine.handle_input(now(), Input::SendFailed(error));
                }
            }
            Action::PeerLost { id, reason } => {
                info!(name: "rtc.peer.lost", connection = ?id.map(ConnectionId::get), reason);
                // Nobody listening is not an error for the peer.
                let _ = self
                    .ctx
                    .states
                    .send(RtcEvent::PeerLost { peer: self.peer.clone(), connection_id: id });
            }
            Action::Complete { waiter, result } => {
                if let Some(reply) = self.waiters.remove(&waiter) {
                    // A caller that stopped waiting dropped its receiver; that is its right.
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn done(&mut self, id: ConnectionId, outcome: Outcome) {
        self.machine.handle_input(now(), Input::Done { id, outcome });
    }

    fn pc_for(&self, id: ConnectionId) -> Result<Arc<dyn PeerConnection>, RtcError> {
        match &self.pc {
            Some(pc) if pc.id == id => Ok(Arc::clone(&pc.pc)),
            _ => Err(RtcError::NoPeerConnection { peer: self.peer.clone() }),
        }
    }

    async fn create_pc(&mut self, id: ConnectionId) -> Result<(), RtcError> {
        self.built.fetch_max(id.get(), Ordering::Relaxed);
        let handler =
            Arc::new(ConnectionHandler { connection_id: id, events: self.internal.clone() });
        let config = &self.ctx.config;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(self.ctx.rtc_configuration_for(&self.peer))
            .with_setting_engine(config.setting_engine())
            .with_handler(handler)
            .with_udp_addrs(config.local_addresses.bind_targets())
            .build()
            .await
            .map_err(|error| RtcError::webrtc(&self.peer, "build peer connection", error))?;
        let mut owned = OwnedConnection::new(id, Arc::new(pc));
        self.view.begin_connection(id, &owned.pc);
        info!(name: "rtc.peer.created", connection = id.get(), "peer connection built");
        // Both sides create the channel, negotiated out of band (NEGOTIATION.md §3): unordered,
        // so that a message SCTP lost into a dead path holds nothing else up (the reliable
        // stream above orders, and resends sooner than SCTP does). Negotiated, because
        // webrtc-rs 0.21 sends ordered on a channel it accepted in-band whatever its type.
        let label = &self.ctx.config.data_channel_label;
        let init = RTCDataChannelInit {
            ordered: false,
            negotiated: Some(CHANNEL_STREAM_ID),
            ..RTCDataChannelInit::default()
        };
        match owned.pc.create_data_channel(label, Some(init)).await {
            Ok(channel) => self.watch(id, channel),
            Err(error) => {
                owned.close(self.ctx.config.close_timeout).await;
                return Err(RtcError::webrtc(&self.peer, "create data channel", error));
            }
        }
        self.pc = Some(owned);
        Ok(())
    }

    async fn create_offer(&self, id: ConnectionId, ice_restart: bool) -> Result<String, RtcError> {
        let pc = self.pc_for(id)?;
        let peer = &self.peer;
        // The restart goes in through the offer options, not `PeerConnection::restart_ice`: in
        // webrtc 0.21.1 the latter also wakes the driver's gathering at once, and with fresh
        // sockets on restart that gathering can finish before `set_local_description` applies
        // the restart, which then discards the candidates just gathered (the restarted ICE
        // generation is left without local candidates and never connects). Through the options,
        // gathering starts from `set_local_description`, after the discard.
        let options = ice_restart.then_some(RTCOfferOptions { ice_restart: true });
        let offer = pc
            .create_offer(options)
            .await
            .map_err(|error| RtcError::webrtc(peer, "create offer", error))?;
        let sdp = offer.sdp.clone();
        pc.set_local_description(offer)
            .await
            .map_err(|error| RtcError::webrtc(peer, "set local offer", error))?;
        Ok(sdp)
    }

    async fn apply_answer(&self, id: ConnectionId, sdp: String) -> Result<(), RtcError> {
        self.set_remote(id, sdp, Remote::Answer).await
    }

    /// Parses the remote's `sdp` and applies it to peer connection `id`.
    async fn set_remote(
        &self,
        id: ConnectionId,
        sdp: String,
        kind: Remote,
    ) -> Result<(), RtcError> {
        let pc = self.pc_for(id)?;
        let peer = &self.peer;
        let (parsed, malformed, failed) = match kind {
            Remote::Offer => {
                (RTCSessionDescription::offer(sdp), "malformed offer", "set remote offer")
            }
            Remote::Answer => {
                (RTCSessionDescription::answer(sdp), "malformed answer", "set remote answer")
            }
        };
        let description = parsed.map_err(|error| RtcError::Negotiation {
            peer: peer.clone(),
            reason: format!("{malformed}: {error}"),
        })?;
        pc.set_remote_description(description)
            .await
            .map_err(|error| RtcError::webrtc(peer, failed, error))
    }

    async fn answer_offer(&self, id: ConnectionId, sdp: String) -> Result<String, RtcError> {
        self.set_remote(id, sdp, Remote::Offer).await?;
        let pc = self.pc_for(id)?;
        let peer = &self.peer;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|error| RtcError::webrtc(peer, "create answer", error))?;
        let sdp = answer.sdp.clone();
        pc.set_local_description(answer)
            .await
            .map_err(|error| RtcError::webrtc(peer, "set local answer", error))?;
        Ok(sdp)
    }

    fn watch(&self, id: ConnectionId, channel: Arc<dyn DataChannel>) {
        let opening = match self.machine.role() {
            Role::Answerer => ChannelOpening::Announce,
            Role::Offerer => ChannelOpening::AwaitPeer,
        };
        watch_channel(
            self.peer.clone(),
            Arc::clone(&self.view),
            self.internal.clone(),
            self.ctx.traffic.clone(),
            (id, opening),
            channel,
        );
    }

    fn emit_state(&mut self, connection_id: ConnectionId, state: PeerState) {
        if self.last_emitted == Some((connection_id, state)) {
            return;
        }
        self.last_emitted = Some((connection_id, state));
        debug!(name: "rtc.peer.state", connection = connection_id.get(), ?state);
        // Nobody listening is not an error for the peer.
        let _ = self.ctx.states.send(RtcEvent::PeerStateChanged {
            peer: self.peer.clone(),
            connection_id,
            state,
        });
    }

    /// Holds or releases data on peer connection `id`; a release is announced, so that whoever
    /// waits to send knows to go on.
    fn hold(&self, id: ConnectionId, held: bool) {
        if !self.view.set_held(id, held) {
            return;
        }
        debug!(name: "rtc.data.hold", connection = id.get(), held);
        if !held {
            // Nobody listening is not an error for the peer.
            let _ = self
                .ctx
                .states
                .send(RtcEvent::HoldReleased { peer: self.peer.clone(), connection_id: id });
        }
    }

    /// Pushes a signaling message towards the peer without waiting: a full or closed channel is
    /// reported (and logged) rather than stalling negotiation.
    fn signal(&self, payload: SignalPayload) -> Result<(), RtcError> {
        let kind = payload.kind();
        let message = OutboundSignal { to: self.peer.clone(), payload };
        match self.ctx.signals.try_send(message) {
            Ok(()) => {
                trace!(name: "rtc.signal.out", kind);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(name: "rtc.signal.dropped", kind, reason = "outbound channel full");
                Err(RtcError::SignalChannelFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!(name: "rtc.signal.dropped", kind, reason = "outbound channel closed");
                Err(RtcError::SignalChannelClosed)
            }
        }
    }
}
