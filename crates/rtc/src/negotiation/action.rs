//! What comes out of the negotiation machine: one closed enum of everything the executor does.

use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

use super::input::{Candidate, WaiterId};

/// One action from [`super::machine::Machine::poll_action`]. Actions that end in an
/// [`super::input::Outcome`] are answered with [`super::input::Input::Done`] before any other
/// input (the executor runs them one at a time, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Build peer connection `id` and its data channel (negotiated out of band, §3). Outcome:
    /// `Created` or `Failed`.
    CreatePc { id: ConnectionId },
    /// Create an offer (with the ICE-restart option when `ice_restart`) and set it as local
    /// description. Outcome: `OfferCreated` or `Failed`.
    CreateOffer { id: ConnectionId, ice_restart: bool },
    /// Read the local description, to send the outstanding offer again. Outcome: `LocalOffer`.
    ReadLocalOffer { id: ConnectionId },
    /// Apply this (untagged) answer. Outcome: `AnswerApplied` or `Failed`.
    ApplyAnswer { id: ConnectionId, sdp: String },
    /// Apply this (untagged) offer, create the answer and set it. Outcome: `AnswerCreated` or
    /// `Failed`.
    AnswerOffer { id: ConnectionId, sdp: String },
    /// Add a remote candidate; a failure is logged, nothing else.
    AddCandidate { id: ConnectionId, candidate: Candidate },
    /// Drop the data channel the remote announced in-band on `id` (not ours, §3).
    IgnoreChannel { id: ConnectionId },
    /// Close peer connection `id` and report it in `state` (closed or failed). `replaced`: this
    /// side's negotiation builds (or asks the offerer for) the next one itself, so the close is
    /// no loss of the peer (`PeerStatus::replacing`).
    Retire { id: ConnectionId, state: PeerState, replaced: bool },
    /// Report peer connection `id` in `state`.
    State { id: ConnectionId, state: PeerState },
    /// Hold (or release) data on `id`: while an ICE restart replaces its candidate pair,
    /// anything written is lost into the old one and waits for SCTP's retransmission timer
    /// (see `PeerStatus::data_held`).
    Hold { id: ConnectionId, held: bool },
    /// Relay this to the remote peer.
    Send(SignalPayload),
    /// Tell the node the peer is not connected (a connect ended without a channel, §13.2).
    PeerLost { id: Option<ConnectionId>, reason: &'static str },
    /// Answer a waiting caller.
    Complete { waiter: WaiterId, result: Result<(), RtcError> },
}
