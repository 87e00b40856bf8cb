//! The simulated peer connection of `simulation.rs`: what decides connectivity (session,
//! DTLS fingerprint, ICE credentials, signaling state), its SDP text, and the connectivity
//! between the two sides' pcs (links, ICE states, data channels).

use std::time::{Duration, Instant};

use super::input::{Input, PcEvent};
use super::simulation::{Intent, Side, Sim};
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

/// A local identity: (session id, fingerprint, ICE ufrag).
pub(super) type Identity = (String, String, u64);

#[derive(Debug, Clone)]
pub(super) struct FakePc {
    pub(super) session: String,
    pub(super) fingerprint: String,
    pub(super) version: u64,
    pub(super) ufrag: u64,
    pub(super) remote: Option<Identity>,
    /// An offer is set locally and waits for its answer.
    pub(super) have_local_offer: bool,
    pub(super) closed: bool,
    pub(super) linked: bool,
    pub(super) unlinked_since: Option<Instant>,
    pub(super) ice: PeerState,
    pub(super) channel_open: bool,
    /// Set by the test: the pc answers with another identity (a peer that lost its pc, P7).
    pub(super) lie_identity: Option<String>,
    /// The machine holds data on this pc (`Action::Hold`).
    pub(super) held: bool,
}

impl FakePc {
    pub(super) fn identity(&self) -> Identity {
        (self.session.clone(), self.fingerprint.clone(), self.ufrag)
    }

    pub(super) fn sdp(&self) -> String {
        format!(
            "v=0\r\no=- {} {} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 {}\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:u{}\r\n",
            self.session, self.version, self.fingerprint, self.ufrag
        )
    }
}

/// Reads the identity of a simulated SDP.
pub(super) fn identity_of(sdp: &str) -> Option<Identity> {
    let mut session = None;
    let mut fingerprint = None;
    let mut ufrag = None;
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("o=") {
            session = rest.split_whitespace().nth(1).map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("a=fingerprint:sha-256 ") {
            fingerprint = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("a=ice-ufrag:u") {
            ufrag = rest.trim().parse().ok();
        }
    }
    Some((session?, fingerprint?, ufrag?))
}

/// A relayed message in one line: its kind and tether attributes.
pub(super) fn describe(payload: &SignalPayload) -> String {
    match payload {
        SignalPayload::Offer { sdp } | SignalPayload::Answer { sdp } => {
            let (tags, plain) = super::sdp::untag(sdp);
            let origin = super::SessionOrigin::parse(&plain).map(|o| o.id).unwrap_or_default();
            format!("{} session {origin} {tags:?}", payload.kind())
        }
        other => other.kind().to_owned(),
    }
}

/// Connectivity of the simulated pcs: links, ICE states, channels.
impl Sim {
    /// The current pcs of both sides, when both exist.
    pub(super) fn current_pair(&self) -> Option<(ConnectionId, ConnectionId)> {
        Some((
            self.side(Side::A).machine.connection_id()?,
            self.side(Side::B).machine.connection_id()?,
        ))
    }

    /// Whether `side` holds data on its current pc.
    pub(super) fn holding(&self, side: Side) -> bool {
        let current = self.side(side).machine.connection_id();
        current.and_then(|id| self.pc(side, id)).is_some_and(|pc| pc.held)
    }

    pub(super) fn pc(&self, side: Side, id: ConnectionId) -> Option<&FakePc> {
        self.side(side).pcs.get(&id)
    }

    /// Whether pcs `a` and `b` can talk: each one's remote is the other's current identity.
    pub(super) fn linked(&self, a: ConnectionId, b: ConnectionId) -> bool {
        match (self.pc(Side::A, a), self.pc(Side::B, b)) {
            (Some(pa), Some(pb)) => {
                !pa.closed
                    && !pb.closed
                    && pa.remote.as_ref() == Some(&pb.identity())
                    && pb.remote.as_ref() == Some(&pa.identity())
            }
            _ => false,
        }
    }

    /// Connects newly linked pcs; breaks links that no longer hold.
    pub(super) fn link(&mut self) {
        for side in [Side::A, Side::B] {
            let ids: Vec<ConnectionId> = self.side(side).pcs.keys().copied().collect();
            for id in ids {
                let partner_ids: Vec<ConnectionId> =
                    self.side(side.other()).pcs.keys().copied().collect();
                let linked = partner_ids.iter().any(|&other| match side {
                    Side::A => self.linked(id, other),
                    Side::B => self.linked(other, id),
                });
                let Some(pc) = self.side(side).pcs.get(&id).cloned() else { continue };
                if pc.closed {
                    continue;
                }
                if linked && !pc.linked {
                    if let Some(pc) = self.side_mut(side).pcs.get_mut(&id) {
                        pc.linked = true;
                        pc.unlinked_since = None;
                        pc.ice = PeerState::Connected;
                    }
                    self.pc_event(side, id, PcEvent::State(PeerState::Connected));
                    self.pc_event(side, id, PcEvent::IceConnected);
                    // Both sides' negotiated channels open with SCTP (§3).
                    self.open_channel(side, id);
                } else if !linked && pc.linked {
                    let now = self.now;
                    if let Some(pc) = self.side_mut(side).pcs.get_mut(&id) {
                        pc.linked = false;
                        pc.unlinked_since = Some(now);
                    }
                    // The partner closed (DTLS close): the channel goes at once.
                    let partner_closed = !partner_ids.iter().any(|&other| {
                        self.pc(side.other(), other)
                            .is_some_and(|p| !p.closed && p.remote.as_ref() == Some(&pc.identity()))
                    });
                    if partner_closed && pc.channel_open {
                        self.close_channel(side, id);
                    }
                }
            }
        }
    }

    pub(super) fn open_channel(&mut self, side: Side, id: ConnectionId) {
        let Some(pc) = self.side_mut(side).pcs.get_mut(&id) else { return };
        if pc.channel_open || pc.closed {
            return;
        }
        pc.channel_open = true;
        self.pc_event(side, id, PcEvent::ChannelOpened);
    }

    pub(super) fn close_channel(&mut self, side: Side, id: ConnectionId) {
        let Some(pc) = self.side_mut(side).pcs.get_mut(&id) else { return };
        if !pc.channel_open {
            return;
        }
        pc.channel_open = false;
        self.pc_event(side, id, PcEvent::ChannelClosed);
        if self.reconnect_on_loss && self.side(side).machine.connection_id() == Some(id) {
            self.intent(side, Duration::from_millis(300), Intent::Connect);
        }
    }

    pub(super) fn pc_event(&mut self, side: Side, id: ConnectionId, event: PcEvent) {
        self.input(side, Input::Pc { id, event });
    }

    /// When an unlinked pc's ICE changes state next.
    pub(super) fn next_ice_change(&self) -> Option<Instant> {
        self.sides
            .iter()
            .flat_map(|state| state.pcs.values())
            .filter(|pc| !pc.closed)
            .filter_map(|pc| {
                let since = pc.unlinked_since?;
                match pc.ice {
                    PeerState::Connected => Some(since + Duration::from_secs(3)),
                    PeerState::Disconnected => Some(since + Duration::from_secs(13)),
                    _ => None,
                }
            })
            .min()
    }

    pub(super) fn ice_tick(&mut self) {
        for side in [Side::A, Side::B] {
            let ids: Vec<ConnectionId> = self.side(side).pcs.keys().copied().collect();
            for id in ids {
                let Some(pc) = self.side(side).pcs.get(&id).cloned() else { continue };
                let Some(since) = pc.unlinked_since.filter(|_| !pc.closed) else { continue };
                let elapsed = self.now.saturating_duration_since(since);
                let next = match pc.ice {
                    PeerState::Connected if elapsed >= Duration::from_secs(3) => {
                        PeerState::Disconnected
                    }
                    PeerState::Disconnected if elapsed >= Duration::from_secs(13) => {
                        PeerState::Failed
                    }
                    _ => continue,
                };
                if let Some(pc) = self.side_mut(side).pcs.get_mut(&id) {
                    pc.ice = next;
                }
                self.pc_event(side, id, PcEvent::State(next));
                if next == PeerState::Failed {
                    self.close_channel(side, id);
                }
            }
        }
    }
}
