// The answerer's side of negotiation (docs/NEGOTIATION.md §2: the peer with
// the larger id): it never offers (its data channel is built with each peer
// connection, negotiated out of band, connection.js), asks for offers with
// `ice_restart` (after a `bye` when it has nothing, §5, §9.2), classifies
// every offer (§6.1, with P7's fingerprint check), answers naming the offer
// with its seq (§4.4, P1), and rejects what it cannot take (§10). Requests
// and the offers it takes keep to their budgets (§13.3, P6). The PeerLink
// (peer.js) owns the state and decides when; this decides what an answerer
// sends.

import { classifyOffer, compareFingerprints, parseOrigin, rejection, tagAnswer, untag } from './sdp.js';

/** How many replaced remote sessions an answerer remembers (§6.1). */
const SUPERSEDED_SESSIONS = 16;

export class Answerer {
  /** @param {import('./peer.js').PeerLink} link */
  constructor(link) {
    this.link = link;
    /** The remote session of the last new-session offer taken (its pc may be retired since). @type {string | null} */
    this.lastTakenSession = null;
    /** Remote sessions the offerer replaced by a newer one, newest last (§6.1). @type {string[]} */
    this.supersededSessions = [];
  }

  /** What a connect needs now (§5). */
  connect() {
    const c = this.link.current;
    if (!c) {
      // With nothing here, make sure the offerer starts from scratch too.
      this.link.sendSignal({ type: 'bye' });
      return this.requestOffer();
    }
    if ((c.state === 'connecting' || c.state === 'connected') && c.remoteDescriptionSet) return undefined;
    return this.requestOffer();
  }

  /**
   * After our own re-registration (§11.4): one `ice_restart`, unless our `register` asked for
   * it and the server sends it; the restart offer answers it either way.
   * @param {boolean} [restartAsked]
   */
  renegotiate(restartAsked = false) {
    if (!restartAsked) return this.requestOffer();
    this.link.counters.restartRequestsInRegister += 1;
    return true;
  }

  /** The remote re-registered (§11.2): ask again if an offer is awaited. */
  rejoined() {
    const c = this.link.current;
    if (this.link.restart.awaitingOffer || !c?.remoteDescriptionSet) return this.requestOffer();
    return undefined;
  }

  /** An ICE restart asked for locally: ask the offerer for one. */
  restart() {
    this.link.restart.awaitingOffer = true;
    return this.requestOffer();
  }

  /**
   * A new peer connection instead of the current one (§9.2), which the
   * caller retired: `bye` even without a peer connection here (the offerer
   * may still hold one, and a restart of it could never complete with a new
   * one), then ask.
   */
  replace() {
    this.link.sendSignal({ type: 'bye' });
    return this.requestOffer();
  }

  /** @param {any} msg an `offer` */
  onSignal(msg) {
    this.link.counters.offersReceived += 1;
    return this.onOffer(typeof msg.sdp === 'string' ? msg.sdp : '');
  }

  /** Asks the offerer for an offer, within the `ice_restart` budget (§13.3). */
  requestOffer() {
    const send = () => {
      this.link.counters.restartRequestsSent += 1;
      return this.link.sendSignal({ type: 'ice_restart' });
    };
    const decision = this.link.sending.pass('ice_restart', false, 'deferred ice_restart', send);
    if (decision === 'send') return send();
    this.link.counters.deferred += 1;
    this.link.log('peer: ice_restart deferred: over the request budget');
    return false;
  }

  /**
   * An offer (§6.1), within the budget of offers taken from the remote.
   * @param {string} tagged @param {boolean} [paid] its budget decision was made when it arrived
   */
  async onOffer(tagged, paid = false) {
    const { tags, sdp } = untag(tagged);
    let origin;
    try {
      origin = parseOrigin(sdp);
    } catch (error) {
      this.link.log(`peer: dropped an offer: ${/** @type {Error} */ (error).message}`);
      return;
    }
    const offer = { origin, seq: tags.seq };
    const current = this.link.current;
    let kind = classifyOffer(current?.remoteOffer ?? null, offer);
    const previous = current?.remoteSdp() ?? null;
    if (kind === 'renegotiation' && previous !== null && compareFingerprints(previous, sdp) === 'changed') {
      this.link.log('peer: a renegotiation with another DTLS fingerprint is a new session');
      kind = 'new-session';
    }
    if (kind === 'stale') {
      this.link.log('peer: ignored an offer older than the one applied');
      return;
    }
    if (!paid) {
      const decision = this.link.receiving.pass('offer', kind === 'duplicate', 'deferred offer', () => this.onOffer(tagged, true));
      if (decision === 'drop') {
        this.link.log('peer: dropped a duplicate offer: its answer is on the way');
        return;
      }
      if (decision === 'defer') {
        this.link.counters.deferred += 1;
        this.link.log('peer: offer deferred: over the offer budget');
        return;
      }
    }
    if (kind === 'duplicate') {
      if (current?.lastAnswer) {
        this.link.log('peer: duplicate offer: answering again');
        this.link.sendSignal({ type: 'answer', sdp: current.lastAnswer });
      }
      return;
    }
    if (kind === 'renegotiation' && current) {
      try {
        await this.answer(current, sdp, offer, true);
      } catch (error) {
        this.refuseOffer(offer, 'failed', /** @type {Error} */ (error));
      }
      return;
    }
    if (!tags.iceRestart && this.supersededSessions.includes(offer.origin.id)) {
      // The offerer built a newer session after this one: a late copy (§6.1).
      this.link.log('peer: ignored an offer of a session the offerer replaced');
      return;
    }
    if (tags.iceRestart) {
      this.link.log('peer: refused an ICE restart of a session this side does not have');
      this.link.retire('closed', 'offerer restarts an unknown session');
      this.link.counters.rejectionsSent += 1;
      this.link.sendSignal({ type: 'answer', sdp: rejection(offer, 'unknown-session') });
      // This side still wants a connection: ask for a fresh one.
      if (this.link.canTry()) this.requestOffer();
      return;
    }
    if (this.lastTakenSession !== null && this.lastTakenSession !== offer.origin.id) {
      if (this.supersededSessions.length === SUPERSEDED_SESSIONS) this.supersededSessions.shift();
      this.supersededSessions.push(this.lastTakenSession);
    }
    this.lastTakenSession = offer.origin.id;
    this.link.retire('closed', 'offerer started a new session');
    const conn = this.link.build();
    try {
      await this.answer(conn, sdp, offer, false);
    } catch (error) {
      this.refuseOffer(offer, 'failed', /** @type {Error} */ (error));
    }
  }

  /**
   * Answerer: applies an offer to `conn` and answers, naming the offer.
   * @param {import('./connection.js').Connection} conn @param {string} sdp @param {import('./sdp.js').OfferId} offer @param {boolean} restart
   */
  async answer(conn, sdp, offer, restart) {
    // Applying the restart drops the old candidate pair (MESSAGING.md rule 8);
    // a failure retires the peer connection, and its hold with it.
    if (restart) this.link.holdData(conn, true, 'applying an ICE restart offer');
    await conn.applyRemote('offer', sdp);
    const created = await conn.pc.createAnswer();
    const tagged = tagAnswer(created.sdp ?? '', offer);
    await conn.pc.setLocalDescription(created);
    if (this.link.current !== conn) return;
    conn.lastAnswer = tagged;
    conn.remoteOffer = offer;
    if (restart) this.link.restartApplied(conn);
    this.link.counters.answersSent += 1;
    this.link.log(`peer: answered ${restart ? 'ICE restart offer' : 'offer'} ${offer.seq ?? '(unnumbered)'} on peer connection ${conn.id}`);
    this.link.sendSignal({ type: 'answer', sdp: tagged });
    await conn.flushCandidates();
    this.link.emitChange();
  }

  /**
   * Answerer: refuses `offer` (the offerer learns exactly which one, §10).
   * @param {import('./sdp.js').OfferId} offer @param {'failed' | 'unknown-session'} why @param {Error} error
   */
  refuseOffer(offer, why, error) {
    this.link.log(`peer: offer refused: ${error.message}`);
    this.link.retire('failed', 'offer could not be taken');
    this.link.counters.rejectionsSent += 1;
    this.link.sendSignal({ type: 'answer', sdp: rejection(offer, why) });
  }
}
