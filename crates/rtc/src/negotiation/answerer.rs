//! The answerer's rules: classifying offers (§6.1, P7), answering them (P1), rejections (§10).

use std::time::Instant;

use tracing::{debug, info, warn};

use super::action::Action;
use super::input::Outcome;
use super::machine::{Machine, SUPERSEDED_SESSIONS, TakenOffer, ignored};
use super::sdp::{Fingerprints, Rejection, rejection, tag_answer, untag};
use super::{OfferId, OfferKind, SessionOrigin};
use crate::error::RtcError;
use crate::event::PeerState;
use crate::signal::SignalPayload;

impl Machine {
    pub(super) fn on_offer(&mut self, now: Instant, tagged_sdp: String) {
        let (tags, sdp) = untag(&tagged_sdp);
        let origin = match SessionOrigin::parse(&sdp) {
            Ok(origin) => origin,
            Err(reason) => {
                warn!(name: "rtc.signal.rejected", kind = "offer", reason);
                return;
            }
        };
        let offer = OfferId { origin, seq: tags.seq };
        let fingerprints = Fingerprints::of(&sdp);
        let current = self.current.as_ref().and_then(|pc| pc.remote_offer.as_ref());
        let mut kind = OfferKind::classify(current, &offer);
        let changed_identity = self
            .current
            .as_ref()
            .is_some_and(|pc| pc.remote_fingerprints.changed_to(&fingerprints));
        if kind == OfferKind::Renegotiation && changed_identity {
            // P7: a renegotiation from another DTLS identity is another peer connection.
            info!(name: "rtc.negotiation.new_identity", "renegotiation with a new dtls fingerprint: new session");
            kind = OfferKind::NewSession;
        }
        let superseded = self.superseded_sessions.contains(&offer.origin.id);
        if kind == OfferKind::NewSession && superseded && !tags.ice_restart {
            // The offerer built a newer session after this one, so this offer is a late copy:
            // taking it would undo the newer peer connection.
            return ignored("offer", "offer of a session the offerer replaced");
        }
        match kind {
            OfferKind::Stale => ignored("offer", "older than the offer already applied"),
            OfferKind::Duplicate => {
                // Answered again whatever the time since the first answer: a re-sent offer
                // usually means that answer was lost (§6.3).
                let answer = self.current.as_ref().and_then(|pc| pc.last_answer.clone());
                if let Some(sdp) = answer {
                    debug!(name: "rtc.signal.duplicate", kind = "offer", "answering again");
                    self.send(SignalPayload::Answer { sdp });
                }
            }
            OfferKind::Renegotiation | OfferKind::NewSession => {
                if !self.admit(now, &SignalPayload::Offer { sdp: tagged_sdp }) {
                    return;
                }
                let restart = kind == OfferKind::Renegotiation;
                let taken = TakenOffer { sdp, offer, restart, fingerprints };
                if restart {
                    return self.take_offer(taken);
                }
                if tags.ice_restart {
                    return self.reject_unknown_session(now, &taken.offer);
                }
                // The offerer built this session after the one taken last, whether that one's
                // pc is still here or this side retired it on its own since: copies of the
                // older one are late from now on.
                let newer = Some(&taken.offer.origin.id);
                if let Some(older) = self.last_taken_session.take().filter(|id| Some(id) != newer) {
                    if self.superseded_sessions.len() == SUPERSEDED_SESSIONS {
                        self.superseded_sessions.pop_front();
                    }
                    self.superseded_sessions.push_back(older);
                }
                self.last_taken_session = Some(taken.offer.origin.id.clone());
                self.retire_for_replacement("offerer started a new session");
                self.new_pc();
                if let Some(pc) = self.current.as_mut() {
                    pc.taking = Some(taken);
                }
            }
        }
    }

    /// Applies the offer to the current peer connection and answers it.
    fn take_offer(&mut self, taken: TakenOffer) {
        let Some(pc) = self.current.as_mut() else { return };
        let id = pc.id;
        let sdp = taken.sdp.clone();
        let restart = taken.restart;
        pc.taking = Some(taken);
        if restart {
            // Applying the restart drops the old candidate pair: hold data until ICE is back.
            self.hold_data(true);
        }
        self.push(Action::AnswerOffer { id, sdp });
    }

    /// An ICE restart of a session this side does not have: never build a peer connection for
    /// it (its DTLS could never complete with the offerer's).
    fn reject_unknown_session(&mut self, now: Instant, offer: &OfferId) {
        warn!(
            name: "rtc.signal.rejected",
            kind = "offer",
            reason = "ice restart of a session this side does not have"
        );
        self.retire(PeerState::Closed, "offerer restarts an unknown session");
        self.send(SignalPayload::Answer { sdp: rejection(offer, Rejection::UnknownSession) });
        if self.wanted || self.connecting() {
            // This side still wants a connection: ask for a fresh one.
            self.request_offer(now);
        }
    }

    pub(super) fn answerer_outcome(&mut self, now: Instant, outcome: Outcome) {
        let Some(pc) = self.current.as_mut() else { return };
        let id = pc.id;
        match outcome {
            Outcome::Created => {
                if let Some(taken) = pc.taking.take() {
                    self.take_offer(taken);
                }
            }
            Outcome::AnswerCreated { sdp } => {
                let Some(taken) = pc.taking.take() else { return };
                let tagged = tag_answer(&sdp, &taken.offer);
                pc.remote_description_set = true;
                pc.remote_fingerprints = taken.fingerprints;
                pc.last_answer = Some(tagged.clone());
                let seq = taken.offer.seq;
                pc.remote_offer = Some(taken.offer);
                if taken.restart {
                    pc.restart_applied = true;
                    info!(name: "rtc.ice.restart", phase = "applied", connection = id.get());
                }
                self.awaiting_offer = false;
                debug!(name: "rtc.negotiation.answer", connection = id.get(), ?seq, restart = taken.restart);
                self.send(SignalPayload::Answer { sdp: tagged });
                self.flush_candidates();
            }
            Outcome::Failed(error) => {
                let offer = pc.taking.take().map(|taken| taken.offer);
                self.refuse_offer(now, offer, error);
            }
            Outcome::OfferCreated { .. } | Outcome::LocalOffer { .. } | Outcome::AnswerApplied => {}
        }
    }

    /// Refuses the offer (the offerer learns it exactly), dropping the peer connection that was
    /// being negotiated.
    fn refuse_offer(&mut self, now: Instant, offer: Option<OfferId>, error: RtcError) {
        warn!(name: "rtc.negotiation.failed", %error, "offer refused");
        self.retire(PeerState::Failed, "offer could not be taken");
        if let Some(offer) = offer {
            self.send(SignalPayload::Answer { sdp: rejection(&offer, Rejection::Failed) });
        }
        self.finish_restart(Err(error.clone()));
        if self.connecting() {
            self.connect_failed(now, error, "offer could not be taken");
        }
    }
}
