// The offerer's side of negotiation (docs/NEGOTIATION.md §2: the peer with
// the smaller id): it builds peer connections (with their data channel), sends
// numbered offers (ICE restarts marked), keeps at most one outstanding per
// peer connection and re-sends it rather than superseding it (§6.3, P2, P3),
// matches answers to it (§6.2, P1), handles rejections (§10) and treats a
// restart answered by a new DTLS identity as a replacement (§9.3, P7).
// Offers keep to the offer budget (§13.3, P6). The PeerLink (peer.js) owns
// the state and decides when; this decides what an offerer sends.

import { compareFingerprints, matchAnswer, parseOrigin, tagOffer, untag } from './sdp.js';

export class Offerer {
  /** @param {import('./peer.js').PeerLink} link */
  constructor(link) {
    this.link = link;
    /** The seq of the last offer, over the page's lifetime (§4.2). */
    this.offersSent = 0n;
    /** @type {ReturnType<typeof setTimeout> | null} a re-send of the outstanding offer, held back by the budget */
    this.resendTimer = null;
  }

  /** What a connect needs now (§5). */
  connect() {
    const c = this.link.current;
    if (!c || !c.usable()) return this.newOffer(true);
    if (c.negotiation) return undefined; // its answer is on the way, or the answer wait ends it
    if (c.state === 'disconnected') return this.newOffer(false);
    return undefined;
  }

  /** After our own re-registration (§11.4): re-send the outstanding offer, or restart. */
  renegotiate() {
    return this.link.current?.negotiation ? this.resendOffer() : this.newOffer(false);
  }

  /** The remote re-registered (§11.2): re-send the outstanding offer, if any. */
  rejoined() {
    return this.link.current?.negotiation ? this.resendOffer() : undefined;
  }

  /**
   * An ICE restart asked for locally. An offer outstanding on this peer
   * connection (its first one, or a restart) is the restart: re-send it,
   * queue nothing (P2, P3); a first offer's restart completes when the
   * channel opens.
   */
  restart() {
    return this.newOffer(false);
  }

  /** A new peer connection instead of the current one (§9.1). */
  replace() {
    return this.newOffer(true);
  }

  /** @param {any} msg an `answer` or `ice_restart` */
  onSignal(msg) {
    if (msg.type === 'answer') {
      this.link.counters.answersReceived += 1;
      return this.onAnswer(typeof msg.sdp === 'string' ? msg.sdp : '');
    }
    const decision = this.link.receiving.pass('ice_restart', false, 'deferred ice_restart', () => this.onRestartRequest());
    if (decision === 'send') return this.onRestartRequest();
    this.link.counters.deferred += 1;
    return this.link.log('peer: ice_restart deferred: over the request budget');
  }

  /**
   * A new offer within the offer budget (§13.3): for a new peer
   * connection when `fresh` or when there is no usable one, else an ICE
   * restart of the current one. With an offer outstanding on the current
   * peer connection, that offer is re-sent instead (P2).
   * @param {boolean} fresh
   */
  async newOffer(fresh) {
    if (!fresh && this.link.current?.negotiation) return this.resendOffer();
    const decision = this.link.sending.pass('offer', false, 'deferred offer', () => this.offerNow(fresh));
    if (decision === 'send') return this.offerNow(fresh);
    this.link.counters.deferred += 1;
    this.link.log('peer: offer deferred: over the offer budget');
    return undefined;
  }

  /** The offer a token was taken for. @param {boolean} fresh */
  async offerNow(fresh) {
    const c = this.link.current;
    // A failed pc gets a restart offer when asked for one (§13.1); the
    // supervisor's connect asks for a fresh one instead.
    if (fresh || !c || c.state === 'closed') {
      if (c) this.link.retire('closed', 'replaced by a new peer connection');
      // Its channel was created with it, so the offer has the m=application section (§3).
      const conn = this.link.build();
      try {
        await this.offer(conn, false);
      } catch (error) {
        if (this.link.current === conn) this.link.retire('failed', 'offer failed');
        throw error;
      }
      return undefined;
    }
    if (c.negotiation) return undefined; // one outstanding offer per peer connection
    return this.offer(c, true);
  }

  /** Creates, applies and sends an offer on `conn` (an ICE restart when `restart`). @param {import('./connection.js').Connection} conn @param {boolean} restart */
  async offer(conn, restart) {
    this.offersSent += 1n;
    const seq = this.offersSent;
    // From here the old candidate pair is on its way out (MESSAGING.md rule 8).
    if (restart) this.link.holdData(conn, true, 'ICE restart offer');
    let sdp;
    let origin;
    try {
      const created = await conn.pc.createOffer(restart ? { iceRestart: true } : undefined);
      sdp = created.sdp ?? '';
      origin = parseOrigin(sdp);
      await conn.pc.setLocalDescription(created);
    } catch (error) {
      if (restart) this.link.holdData(conn, false, 'the ICE restart offer failed');
      throw error;
    }
    if (this.link.current !== conn) return;
    const offer = { origin, seq };
    const timer = setTimeout(() => this.link.enqueue('answer timeout', () => this.onAnswerTimeout(conn, offer)), this.link.connectTimeoutMs);
    conn.negotiation = { offer, restart, sdp, timer };
    this.clearResend();
    this.link.counters.offersSent += 1;
    this.link.log(`peer: ${restart ? 'ICE restart offer' : 'offer'} ${seq} sent for peer connection ${conn.id}`);
    this.link.sendSignal({ type: 'offer', sdp: tagOffer(sdp, seq, restart) });
    this.link.emitChange();
  }

  /**
   * Re-sends the outstanding offer unchanged (§6.3): same o=, seq and marker,
   * with the candidates gathered since. At most once a second (§13.3): a
   * re-send asked for sooner goes when that second is over, if the offer is
   * still outstanding then.
   */
  resendOffer() {
    const conn = this.link.current;
    const outstanding = conn?.negotiation;
    if (!conn || !outstanding) return;
    const decision = this.link.sending.pass('offer', true, 'offer re-send', () => {});
    if (decision !== 'send') {
      const at = this.link.sending.budget.resendAt();
      if (at !== null && !this.resendTimer) {
        this.resendTimer = setTimeout(() => {
          this.resendTimer = null;
          this.link.enqueue('offer re-send', () => {
            if (this.link.current === conn && conn.negotiation === outstanding) this.resendOffer();
          });
        }, Math.max(0, at - this.link.now()) + 1);
      }
      return;
    }
    const local = conn.pc.localDescription?.sdp;
    let sdp = outstanding.sdp;
    try {
      const origin = local ? parseOrigin(local) : null;
      if (local && origin && origin.id === outstanding.offer.origin.id && origin.version === outstanding.offer.origin.version) sdp = local;
    } catch {
      // The offer as created, then.
    }
    this.link.counters.offersResent += 1;
    this.link.log(`peer: offer ${outstanding.offer.seq} re-sent for peer connection ${conn.id}`);
    this.link.sendSignal({ type: 'offer', sdp: tagOffer(sdp, outstanding.offer.seq ?? 0n, outstanding.restart) });
  }

  clearResend() {
    if (this.resendTimer) clearTimeout(this.resendTimer);
    this.resendTimer = null;
  }

  /** @param {import('./connection.js').Connection} conn @param {import('./sdp.js').OfferId} offer */
  async onAnswerTimeout(conn, offer) {
    if (this.link.current !== conn || conn.negotiation?.offer !== offer) return;
    this.clearResend();
    if (conn.remoteDescriptionSet) {
      // A restart offer went unanswered: forget it (a late answer is then
      // ignored); the connection stays as it was (§8.7).
      this.link.log('peer: ICE restart offer got no answer');
      conn.negotiation = null;
      this.link.holdData(conn, false, 'the ICE restart offer got no answer');
      try {
        await conn.pc.setLocalDescription({ type: 'rollback' });
      } catch (error) {
        this.link.log(`peer: rollback failed: ${/** @type {Error} */ (error).message}`);
      }
      return;
    }
    this.link.log('peer: offer got no answer');
    this.link.retire('failed', 'offer unanswered');
    this.link.sendSignal({ type: 'bye' });
  }

  /** @param {string} tagged */
  async onAnswer(tagged) {
    const { tags, sdp } = untag(tagged);
    const conn = this.link.current;
    const outstanding = conn?.negotiation ?? null;
    const result = matchAnswer(outstanding?.offer ?? null, tags);
    if (result === 'no-offer') return this.link.log('peer: ignored an answer: no offer outstanding');
    if (result === 'superseded') return this.link.log('peer: ignored an answer to a superseded offer');
    if (!conn || !outstanding) return undefined;
    if (result === 'refused:unknown-session' || result === 'refused:failed') {
      this.link.counters.rejectionsReceived += 1;
      return this.offerRefused(result === 'refused:failed' ? 'failed' : 'unknown-session');
    }
    const previous = outstanding.restart && conn.remoteDescriptionSet ? conn.remoteSdp() : null;
    if (previous !== null && compareFingerprints(previous, sdp) === 'changed') {
      // The answerer answered our restart with a new peer connection: ours
      // can never finish DTLS with it. Start over; no bye (§9.3, P7).
      this.link.log('peer: the restart was answered by a new peer connection (DTLS fingerprint changed): replacing ours');
      this.link.retire('closed', 'remote replaced its peer connection');
      this.link.attemptDeadline = performance.now() + this.link.connectTimeoutMs;
      return this.newOffer(true);
    }
    try {
      await conn.applyRemote('answer', sdp);
    } catch (error) {
      this.link.log(`peer: answer could not be applied: ${/** @type {Error} */ (error).message}`);
      if (this.link.current === conn) this.link.retire('failed', 'negotiation failed');
      this.link.sendSignal({ type: 'bye' });
      return undefined;
    }
    if (this.link.current !== conn) return undefined;
    clearTimeout(outstanding.timer);
    conn.negotiation = null;
    this.clearResend();
    if (outstanding.restart) this.link.restartApplied(conn);
    await conn.flushCandidates();
    this.link.emitChange();
    return undefined;
  }

  /** Offerer: the answerer refused the outstanding offer (§10). @param {'unknown-session' | 'failed'} why */
  async offerRefused(why) {
    this.link.log(`peer: the remote refused the offer (${why})`);
    if (why === 'unknown-session') {
      // The answerer no longer has this peer connection: nothing revives it.
      this.link.retire('closed', 'remote no longer has this session');
      this.link.clearRestart();
      if (this.link.canTry()) {
        this.link.attemptDeadline = performance.now() + this.link.connectTimeoutMs;
        await this.newOffer(true);
      }
      return;
    }
    this.link.retire('failed', 'offer refused');
    this.link.clearRestart();
  }

  /** The answerer asks for an offer (§6.3, P2). */
  async onRestartRequest() {
    const c = this.link.current;
    this.link.log('peer: the remote asks for an offer');
    if (!c) return this.newOffer(true);
    if (c.state === 'closed') return this.newOffer(true);
    // With an offer outstanding, newOffer re-sends it; else a restart.
    return this.newOffer(false);
  }
}
