//! The signaling bridge: one task that carries WebRTC negotiation between
//! the peer set and the signaling client, reports spontaneous signaling
//! losses to the Supervisor, and follows room presence.

use std::sync::Arc;

use tether_rtc::{IceServer, OutboundSignal, PeerSet, SignalPayload};
use tether_signal::protocol::{IceCandidate, PeerId, RelayPayload};
use tether_signal::{SignalClient, SignalEvent, SignalEvents};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::detour::DetourRoute;
use super::messenger::DetourNews;
use super::roster::Roster;
use crate::executor::LinkReporter;

/// What the bridge needs.
pub(crate) struct Bridge {
    pub(crate) signal: SignalClient,
    pub(crate) events: SignalEvents,
    pub(crate) outbound: mpsc::Receiver<OutboundSignal>,
    pub(crate) peers: PeerSet,
    pub(crate) roster: Arc<Roster>,
    /// Where spontaneous signaling losses go.
    pub(crate) link: LinkReporter,
    pub(crate) auto_connect: bool,
    /// Where the detour's link and messages go (MESSAGING.md rule 10); `None` without one.
    pub(crate) detour: Option<BridgeDetour>,
    pub(crate) stop: CancellationToken,
}

/// The bridge's side of the detour.
pub(crate) struct BridgeDetour {
    /// The registered link while its server relays `detour`.
    pub(crate) route: watch::Sender<Option<DetourRoute>>,
    /// `detour` messages for the messenger.
    pub(crate) inbound: mpsc::Sender<DetourNews>,
}

pub(crate) fn to_relay(payload: SignalPayload) -> RelayPayload {
    match payload {
        SignalPayload::Offer { sdp } => RelayPayload::Offer { sdp },
        SignalPayload::Answer { sdp } => RelayPayload::Answer { sdp },
        SignalPayload::Candidate { candidate, sdp_mid, sdp_mline_index } => {
            RelayPayload::Candidate(IceCandidate { candidate, sdp_mid, sdp_mline_index })
        }
        SignalPayload::IceRestartRequest => RelayPayload::IceRestart,
        SignalPayload::Bye => RelayPayload::Bye,
    }
}

/// The rtc form of a relayed payload; `None` for a kind this version does
/// not know.
pub(crate) fn to_rtc(payload: RelayPayload) -> Option<SignalPayload> {
    Some(match payload {
        RelayPayload::Offer { sdp } => SignalPayload::Offer { sdp },
        RelayPayload::Answer { sdp } => SignalPayload::Answer { sdp },
        RelayPayload::Candidate(c) => SignalPayload::Candidate {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
        },
        RelayPayload::IceRestart => SignalPayload::IceRestartRequest,
        RelayPayload::Bye => SignalPayload::Bye,
        _ => return None,
    })
}

impl Bridge {
    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => self.on_signal(event),
                    None => break,
                },
                outbound = self.outbound.recv() => match outbound {
                    Some(signal) => self.relay(signal),
                    None => break,
                },
            }
        }
        debug!(name: "live.bridge.stopped", "signaling bridge stopped");
    }

    fn on_signal(&self, event: SignalEvent) {
        match event {
            SignalEvent::Relay { from, payload: RelayPayload::Detour { sealed } } => {
                if self.detour.is_none() {
                    debug!(name: "live.bridge.unknown_payload", from = %from, kind = "detour");
                    return;
                }
                // A batch the messenger is too busy for comes again (it is unacknowledged) on
                // the channel or in a later batch.
                self.tell_detour(DetourNews::Batch { from, sealed });
            }
            SignalEvent::Relay { from, payload } => {
                let kind = payload.type_name();
                let Some(payload) = to_rtc(payload) else {
                    debug!(name: "live.bridge.unknown_payload", from = %from, kind);
                    return;
                };
                if let Err(err) = self.peers.handle_signal(&from, payload) {
                    warn!(name: "live.bridge.refused", from = %from, error = %err);
                }
            }
            SignalEvent::Lost { generation, cause } => {
                info!(name: "live.signaling.lost", generation = generation.get(), %cause);
                self.peers.signaling_changed(false);
                if let Some(detour) = &self.detour {
                    detour.route.send_replace(None);
                }
                self.link.signaling_lost();
            }
            SignalEvent::Connected(connected) => {
                // Before anything below may build a peer connection: fresh TURN credentials.
                self.peers.set_granted_ice_servers(
                    connected
                        .ice_servers
                        .iter()
                        .map(|grant| IceServer {
                            urls: grant.urls.clone(),
                            username: grant.username.clone().unwrap_or_default(),
                            credential: grant.credential.clone().unwrap_or_default(),
                        })
                        .collect(),
                );
                self.peers.signaling_changed(true);
                if let Some(detour) = &self.detour {
                    detour.route.send_replace(connected.detour.then_some(DetourRoute {
                        generation: connected.generation.get(),
                        max_frame_bytes: connected.max_frame_bytes,
                    }));
                }
                for peer in &connected.peers {
                    self.peers.peer_joined(peer);
                    if self.auto_connect {
                        self.follow(peer);
                    }
                }
            }
            SignalEvent::PeerJoined(peer) => {
                // The peer set re-sends what is in flight and retries a failed connect at once
                // (NEGOTIATION.md §11.2); following only adds the wish to connect.
                self.peers.peer_joined(&peer);
                self.tell_detour(DetourNews::PeerJoined(peer.clone()));
                if self.auto_connect {
                    self.follow(&peer);
                }
            }
            SignalEvent::PeerLeft(peer) => {
                self.peers.peer_left(&peer);
                self.tell_detour(DetourNews::PeerLeft(peer.clone()));
                if self.auto_connect {
                    debug!(name: "live.peer.left", peer = %peer);
                    self.roster.forget(&peer);
                }
            }
            SignalEvent::ServerError { code, message, id } => {
                debug!(name: "live.signaling.error", code = ?code, %message, id);
            }
            other => debug!(name: "live.signaling.event", event = ?other),
        }
    }

    /// Passes presence news to the messenger's detour, if the node has one. A full queue drops
    /// it: the detour is an optimisation, and the channel carries everything anyway.
    fn tell_detour(&self, news: DetourNews) {
        if let Some(detour) = &self.detour
            && detour.inbound.try_send(news).is_err()
        {
            debug!(name: "live.bridge.detour_dropped", "messenger busy");
        }
    }

    /// Keeps a room member connected: remembered for recovery, connected
    /// now (a no-op when it already is; the rtc layer's single flight and
    /// roles make both sides calling it safe).
    fn follow(&self, peer: &PeerId) {
        self.roster.want(peer);
        let peers = self.peers.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(err) = peers.connect(&peer).await {
                debug!(name: "live.peer.follow_failed", peer = %peer, error = %err);
            }
        });
    }

    fn relay(&self, signal: OutboundSignal) {
        let OutboundSignal { to, payload } = signal;
        let kind = payload.kind();
        if let Err(err) = self.signal.send(&to, to_relay(payload)) {
            // The operation that needed it times out and the Supervisor
            // decides what next; nothing to retry here.
            debug!(name: "live.bridge.send_failed", to = %to, kind, error = %err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_map_both_ways() {
        let all = [
            SignalPayload::Offer { sdp: "o".into() },
            SignalPayload::Answer { sdp: "a".into() },
            SignalPayload::Candidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
            SignalPayload::end_of_candidates(),
            SignalPayload::IceRestartRequest,
            SignalPayload::Bye,
        ];
        for payload in all {
            assert_eq!(to_rtc(to_relay(payload.clone())), Some(payload));
        }
    }
}
