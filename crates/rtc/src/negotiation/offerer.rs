//! The offerer's rules: creating and re-sending offers, matching answers (§6.2, P1), ICE
//! restart requests (§6.3, P2), rejections (§10) and a restart answered by a new DTLS identity
//! (§9.3, P7).

use std::time::Instant;

use tracing::{debug, info, warn};

use super::action::Action;
use super::input::Outcome;
use super::machine::{Machine, OfferState, RESEND_INTERVAL, ignored};
use super::sdp::{AnswerMatch, Fingerprints, Rejection, match_answer, tag_offer, untag};
use super::timer::Timer;
use super::{OfferId, SessionOrigin};
use crate::error::RtcError;
use crate::event::PeerState;
use crate::signal::SignalPayload;

impl Machine {
    /// Creates an offer for the current peer connection (an ICE restart when `restart`), within
    /// the sending budget.
    pub(super) fn offer(&mut self, now: Instant, restart: bool) {
        let Some(pc) = self.current.as_ref() else { return };
        if !pc.built || pc.offer != OfferState::Idle {
            return;
        }
        if !self.take_offer_token(now, restart) {
            return;
        }
        self.offers_sent += 1;
        let seq = self.offers_sent;
        let Some(pc) = self.current.as_mut() else { return };
        pc.offer = OfferState::Creating { restart, seq };
        let id = pc.id;
        if restart {
            // From here the old candidate pair is on its way out.
            self.hold_data(true);
        }
        self.push(Action::CreateOffer { id, ice_restart: restart });
    }

    /// Sends the outstanding offer again, unchanged (same session and seq), as the stack has it
    /// now. At most once per [`RESEND_INTERVAL`] since it was last sent: a re-send asked for
    /// sooner is held until then (and dropped if the offer is answered meanwhile).
    pub(super) fn resend_offer(&mut self, now: Instant) {
        let Some(pc) = self.current.as_mut() else { return };
        let OfferState::Outstanding { sent_at, resend_held, .. } = &mut pc.offer else { return };
        let due = *sent_at + RESEND_INTERVAL;
        let id = pc.id;
        if now < due {
            debug!(name: "rtc.negotiation.resend_held", connection = id.get());
            *resend_held = true;
            self.set_timer(Timer::Resend, due);
            return;
        }
        *resend_held = false;
        self.push(Action::ReadLocalOffer { id });
    }

    /// The re-send interval is up: send the held re-send, if the offer is still outstanding.
    pub(super) fn release_resend(&mut self, now: Instant) {
        let held = self.current.as_ref().is_some_and(|pc| {
            matches!(pc.offer, OfferState::Outstanding { resend_held: true, .. })
        });
        if held {
            self.resend_offer(now);
        }
    }

    pub(super) fn offerer_outcome(&mut self, now: Instant, outcome: Outcome) {
        let Some(pc) = self.current.as_mut() else { return };
        let id = pc.id;
        match outcome {
            Outcome::Created => self.offer(now, false),
            Outcome::OfferCreated { sdp } => {
                let OfferState::Creating { restart, seq } = pc.offer else { return };
                let origin = match SessionOrigin::parse(&sdp) {
                    Ok(origin) => origin,
                    Err(reason) => {
                        let error = RtcError::Negotiation {
                            peer: self.peer.clone(),
                            reason: format!("local offer: {reason}"),
                        };
                        return self.offer_failed(now, restart, error);
                    }
                };
                pc.offer = OfferState::Outstanding {
                    offer: OfferId { origin, seq: Some(seq) },
                    restart,
                    sent_at: now,
                    resend_held: false,
                };
                self.timers_set_answer(now);
                debug!(name: "rtc.negotiation.offer", connection = id.get(), seq, restart);
                if restart {
                    info!(name: "rtc.ice.restart", phase = "offer_sent", connection = id.get());
                }
                self.send(SignalPayload::Offer { sdp: tag_offer(&sdp, seq, restart) });
            }
            Outcome::LocalOffer { sdp } => {
                let OfferState::Outstanding { offer, restart, sent_at, .. } = &mut pc.offer else {
                    return;
                };
                let (Some(sdp), Some(seq)) = (sdp, offer.seq) else { return };
                *sent_at = now;
                let restart = *restart;
                debug!(name: "rtc.negotiation.offer", connection = id.get(), seq, restart, resent = true);
                self.send(SignalPayload::Offer { sdp: tag_offer(&sdp, seq, restart) });
            }
            Outcome::AnswerApplied => {
                let OfferState::Applying { restart, fingerprints } =
                    std::mem::replace(&mut pc.offer, OfferState::Idle)
                else {
                    return;
                };
                pc.remote_description_set = true;
                pc.remote_fingerprints = fingerprints;
                if restart {
                    pc.restart_applied = true;
                    info!(name: "rtc.ice.restart", phase = "applied", connection = id.get());
                }
                debug!(name: "rtc.negotiation.answered", connection = id.get(), restart);
                self.flush_candidates();
            }
            Outcome::Failed(error) => match pc.offer.clone() {
                OfferState::Creating { restart, .. } => self.offer_failed(now, restart, error),
                OfferState::Applying { .. } => self.negotiation_failed(now, error),
                // Building the peer connection (or its channel) failed.
                _ => {
                    warn!(name: "rtc.negotiation.failed", %error, "peer connection not built");
                    self.retire(PeerState::Failed, "peer connection not built");
                    self.finish_restart(Err(error.clone()));
                    if self.connecting() {
                        self.connect_failed(now, error, "peer connection not built");
                    }
                }
            },
            Outcome::AnswerCreated { .. } => {}
        }
    }

    fn timers_set_answer(&mut self, now: Instant) {
        self.set_timer(Timer::Answer, now + self.config.connect_timeout);
    }

    /// Creating an offer failed: a restart offer fails the restart; a first offer retires the
    /// peer connection.
    fn offer_failed(&mut self, now: Instant, restart: bool, error: RtcError) {
        warn!(name: "rtc.negotiation.failed", %error, "offer not created");
        let first = self.current.as_ref().is_some_and(|pc| !pc.remote_description_set);
        if let Some(pc) = self.current.as_mut() {
            pc.offer = OfferState::Idle;
        }
        if restart && !first {
            self.finish_restart(Err(error));
            return;
        }
        self.retire(PeerState::Failed, "offer failed");
        self.finish_restart(Err(error.clone()));
        if self.connecting() {
            self.connect_failed(now, error, "offer failed");
        }
    }

    /// The answer could not be applied: retire, say `bye`.
    fn negotiation_failed(&mut self, now: Instant, error: RtcError) {
        warn!(name: "rtc.negotiation.failed", %error);
        let had_connection = self.current.is_some();
        self.retire(PeerState::Failed, "negotiation failed");
        if had_connection {
            self.send(SignalPayload::Bye);
        }
        self.finish_restart(Err(error.clone()));
        if self.connecting() {
            self.connect_failed(now, error, "negotiation failed");
        }
    }

    pub(super) fn on_answer(&mut self, now: Instant, tagged_sdp: String) {
        let (tags, sdp) = untag(&tagged_sdp);
        let Some(pc) = self.current.as_mut() else {
            return ignored("answer", "no peer connection");
        };
        let (outstanding, restart) = match &pc.offer {
            OfferState::Outstanding { offer, restart, .. } => (Some(offer), *restart),
            _ => (None, false),
        };
        match match_answer(outstanding, &tags) {
            AnswerMatch::NoOffer => ignored("answer", "no offer outstanding"),
            AnswerMatch::Superseded => ignored("answer", "answers a superseded offer"),
            AnswerMatch::Refused(why) => self.offer_refused(now, why),
            AnswerMatch::Apply => {
                let fingerprints = Fingerprints::of(&sdp);
                if restart && pc.remote_fingerprints.changed_to(&fingerprints) {
                    return self.replaced_by_remote(now);
                }
                pc.offer = OfferState::Applying { restart, fingerprints };
                let id = pc.id;
                self.stop_timer(Timer::Answer);
                self.stop_timer(Timer::Resend);
                self.push(Action::ApplyAnswer { id, sdp });
            }
        }
    }

    /// P7: the answer to an in-place restart comes from another DTLS identity, so the answerer
    /// replaced its peer connection; ours can never complete DTLS with it. Replace ours (§9.1),
    /// without `bye`: the new session's offer replaces the answerer's new one anyway.
    fn replaced_by_remote(&mut self, now: Instant) {
        info!(
            name: "rtc.negotiation.replaced_by_remote",
            connection = ?self.connection_id().map(|id| id.get()),
            "the answer to an ice restart has a new dtls fingerprint: replacing the peer connection"
        );
        self.retire_for_replacement("answerer replaced its peer connection");
        if !self.connecting() {
            // The replacement is a connect attempt: bounded, and retried if it fails (P5).
            self.set_timer(Timer::Connect, now + self.config.connect_timeout);
        }
        self.new_pc();
    }

    /// The answerer refused the outstanding offer.
    fn offer_refused(&mut self, now: Instant, why: Rejection) {
        warn!(name: "rtc.negotiation.refused", why = why.token());
        match why {
            Rejection::UnknownSession => {
                // The answerer no longer has this peer connection: nothing can revive it.
                self.retire(PeerState::Closed, "remote no longer has this session");
                self.finish_restart(Err(RtcError::ClosedByRemote { peer: self.peer.clone() }));
                if self.connecting() {
                    self.connect_step(now, false);
                }
            }
            Rejection::Failed => {
                let error = RtcError::Negotiation {
                    peer: self.peer.clone(),
                    reason: "the remote could not take the offer".to_owned(),
                };
                self.retire(PeerState::Failed, "offer refused");
                self.finish_restart(Err(error.clone()));
                if self.connecting() {
                    self.connect_failed(now, error, "offer refused");
                }
            }
        }
    }

    /// The answerer asks for an offer (`ice_restart`).
    pub(super) fn on_restart_request(&mut self, now: Instant) {
        if !self.admit(now, &SignalPayload::IceRestartRequest) {
            return;
        }
        info!(name: "rtc.ice.restart", phase = "requested_by_remote");
        let Some(pc) = self.current.as_ref() else {
            return self.new_pc();
        };
        if pc.state == PeerState::Closed {
            self.retire_for_replacement("unusable peer connection replaced");
            return self.new_pc();
        }
        match pc.offer {
            // P2: the outstanding offer (first or restart) is sent again, unchanged: the
            // request usually crossed it, but the relay drops frames to a peer that was not
            // registered yet, so it may have been lost.
            OfferState::Outstanding { .. } => self.resend_offer(now),
            OfferState::Creating { .. } | OfferState::Applying { .. } => {}
            OfferState::Idle if pc.held_offer.is_some() => {}
            OfferState::Idle => self.offer(now, true),
        }
    }

    /// The outstanding offer waited `connect_timeout` for its answer.
    pub(super) fn on_answer_timeout(&mut self, now: Instant) {
        let Some(pc) = self.current.as_mut() else { return };
        if !matches!(pc.offer, OfferState::Outstanding { .. }) {
            return;
        }
        if pc.remote_description_set {
            // A restart offer went unanswered. Forget it (a late answer is then ignored); the
            // connection stays as it was and the next restart offers again.
            warn!(name: "rtc.negotiation.unanswered", "restart offer got no answer");
            pc.offer = OfferState::Idle;
            return;
        }
        warn!(name: "rtc.negotiation.unanswered", "offer got no answer");
        self.retire(PeerState::Failed, "offer unanswered");
        self.send(SignalPayload::Bye);
        if !self.connecting() && self.wanted {
            // P5: never a silent dead end.
            self.push(Action::PeerLost { id: None, reason: "offer unanswered" });
            self.schedule_retry(now);
        }
    }
}
