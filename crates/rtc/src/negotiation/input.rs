//! What goes into the negotiation machine: one closed enum of everything that can make it act.

use std::time::Instant;

use crate::error::RtcError;
use crate::event::{ConnectionId, PeerState};
use crate::signal::SignalPayload;

/// Names a caller waiting for an outcome; the executor keeps the reply channel, the machine only
/// says when and with what to answer it.
pub(crate) type WaiterId = u64;

/// An ICE candidate as relayed (`candidate` attribute value, media section id and index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) candidate: String,
    pub(crate) sdp_mid: Option<String>,
    pub(crate) sdp_mline_index: Option<u16>,
}

/// Room presence of the remote peer (§11.2, §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// `peer_joined`: the remote registered, or re-registered.
    Joined,
    /// `peer_left`: nothing can be relayed to it any more.
    Left,
}

/// One input to [`super::machine::Machine::handle_input`].
#[derive(Debug)]
pub(crate) enum Input {
    /// The application wants an open data channel (single flight, bounded by `connect_timeout`).
    Connect(WaiterId),
    /// Throw the peer connection away and connect from scratch.
    Replace(WaiterId),
    /// Restart ICE on the peer connection (bounded by `restart_timeout`). With `asked_at`, an
    /// answerer's `ice_restart` already went to the offerer at that time (it rode in this
    /// node's `register`): the machine does not send another, and a revival since answers it.
    RestartIce { waiter: WaiterId, asked_at: Option<Instant> },
    /// Withdraw the waiting ICE restart.
    ClearPendingRestart,
    /// Close everything; tell the remote (`bye`) when `notify_remote`.
    Close { notify_remote: bool },
    /// A relayed message from the remote peer.
    Signal(SignalPayload),
    /// The remote's presence changed.
    Presence(Presence),
    /// This node's signaling connection went down or came back.
    Signaling { up: bool },
    /// Peer connection `id` reported something.
    Pc { id: ConnectionId, event: PcEvent },
    /// The executor finished an action for peer connection `id`.
    Done { id: ConnectionId, outcome: Outcome },
    /// An offer or `ice_restart` could not be handed to signaling.
    SendFailed(RtcError),
}

/// What a peer connection reports (webrtc-rs callbacks and the data channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PcEvent {
    /// Its connection state.
    State(PeerState),
    /// ICE is connected (or completed).
    IceConnected,
    /// The remote announced a data channel with this label (answerer).
    ChannelAnnounced { label: String },
    /// The data channel opened (its open event, or its first message).
    ChannelOpened,
    /// The data channel closed.
    ChannelClosed,
    /// A local candidate was gathered.
    LocalCandidate(Candidate),
    /// Local gathering finished.
    GatheringComplete,
}

/// How an action of the executor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// [`super::action::Action::CreatePc`]: built (with its channel, for the offerer).
    Created,
    /// [`super::action::Action::CreateOffer`]: created and set as local description.
    OfferCreated { sdp: String },
    /// [`super::action::Action::ReadLocalOffer`]: the local description as it stands now.
    LocalOffer { sdp: Option<String> },
    /// [`super::action::Action::ApplyAnswer`]: applied.
    AnswerApplied,
    /// [`super::action::Action::AnswerOffer`]: offer applied, answer created and set.
    AnswerCreated { sdp: String },
    /// Any of them failed.
    Failed(RtcError),
}
