// One remote peer over the browser's own RTCPeerConnection, negotiated exactly
// like a Rust tether node (crates/rtc/src/peer.rs), so that either side of a
// pair may be a browser or a node:
//
// - fixed roles: the smaller peer id offers and creates the data channel
//   "tether"; the answerer asks for offers with `ice_restart` (never offers);
// - every peer connection is a numbered "generation"; replacing one closes
//   the old one first, and every callback checks that its generation is
//   still current, so nothing of a retired peer connection is ever applied;
// - SDP is tagged and untagged with tether's attributes (sdp.js): offers are
//   numbered, restarts marked, answers name their offer, and an ICE restart of
//   a session this side does not have is refused instead of being built into
//   a peer connection that could never finish its DTLS handshake;
// - every operation runs one at a time on a queue (the Rust side has one task
//   per peer), so negotiation steps never interleave.
//
// On top of the Rust rules (which leave retries to the node's Supervisor),
// the page keeps its own small supervisor: while the remote peer is present
// and signaling is up, an unhealthy connection is retried with backoff, and an
// ICE restart that does not complete escalates to a new peer connection.

import {
  classifyOffer, parseOrigin, rejection, roleBetween, sameOrigin, tagAnswer, tagOffer, untag,
} from './sdp.js';

export const CHANNEL_LABEL = 'tether';
/** At most this many remote candidates wait for a remote description; older ones are dropped. */
const MAX_BUFFERED_CANDIDATES = 64;

/**
 * Whether ICE has a working pair of the ICE generation whose local username
 * fragment is `ufrag`: a succeeded candidate pair (checks answered with the
 * new credentials) whose local candidate has that fragment. Undefined when
 * the browser's stats do not say. (The controlled side may keep reporting the
 * old pair as selected, and see no nomination, while the old pair still
 * works, so neither can tell.)
 * @param {RTCPeerConnection} pc @param {string} ufrag
 * @returns {Promise<boolean | undefined>}
 */
async function hasWorkingPair(pc, ufrag) {
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return undefined;
  }
  let known = false;
  let found = false;
  report.forEach((/** @type {any} */ stat) => {
    if (stat.type !== 'candidate-pair') return;
    const local = report.get(stat.localCandidateId);
    if (typeof local?.usernameFragment !== 'string') return;
    known = true;
    if (local.usernameFragment === ufrag && stat.state === 'succeeded') found = true;
  });
  return known ? found : undefined;
}

/**
 * @typedef {object} Generation
 * @property {number} id
 * @property {RTCPeerConnection} pc
 * @property {string} state  'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed'
 * @property {{origin: import('./sdp.js').SessionOrigin, restart: boolean, timer: ReturnType<typeof setTimeout>} | null} negotiation
 * @property {boolean} remoteDescriptionSet
 * @property {import('./sdp.js').OfferId | null} remoteOffer  answerer: the last offer applied
 * @property {string | null} lastAnswer  answerer: the last answer sent
 * @property {RTCDataChannel | null} channel
 * @property {boolean} channelOpen
 * @property {boolean} restartApplied
 */

/**
 * Events (CustomEvent `detail`):
 * - `channel-open`   {channel, generation}: a new data channel is open (start a reliable session on it)
 * - `channel-closed` {generation}
 * - `change`         {}: anything shown in the status changed
 */
export class PeerLink extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.localId
   * @param {string} options.remoteId
   * @param {(payload: {type: string} & Record<string, unknown>) => boolean} options.signal  relays a message to the remote peer
   * @param {(line: string) => void} [options.log]
   * @param {RTCIceServer[]} [options.iceServers]
   * @param {number} [options.connectTimeoutMs]
   * @param {number} [options.restartTimeoutMs]
   */
  constructor(options) {
    super();
    this.localId = options.localId;
    this.remoteId = options.remoteId;
    const role = roleBetween(options.localId, options.remoteId);
    if (role === null) throw new Error('a peer cannot talk to itself');
    this.role = role;
    this.signal = options.signal;
    this.log = options.log ?? (() => {});
    this.iceServers = options.iceServers ?? [];
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.restartTimeoutMs = options.restartTimeoutMs ?? 5000;

    /** @type {Generation | null} */
    this.current = null;
    this.built = 0;
    this.offersSent = 0n;
    /** @type {RTCIceCandidateInit[]} */
    this.remoteCandidates = [];
    this.restart = { queued: false, timer: /** @type {ReturnType<typeof setTimeout> | null} */ (null) };

    // The page's supervisor.
    this.wanted = false;
    this.signalingUp = false;
    /** @type {boolean | null} null: unknown (no room) */
    this.remotePresent = null;
    /** @type {number | null} deadline of the connect attempt in flight */
    this.attemptDeadline = null;
    this.failures = 0;
    this.nextAttemptAt = 0;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.ticker = null;

    this.counters = {
      offersSent: 0, offersReceived: 0, answersSent: 0, answersReceived: 0, rejectionsSent: 0,
      rejectionsReceived: 0, restartsApplied: 0, restartsCompleted: 0, restartRequestsSent: 0,
      byesSent: 0, byesReceived: 0, candidatesSent: 0, candidatesReceived: 0,
    };
    /** @type {Promise<void>} */
    this.queue = Promise.resolve();
  }

  // ----- public ------------------------------------------------------------

  /** Wants a connection from now on, and keeps it up. */
  start() {
    this.wanted = true;
    if (!this.ticker) this.ticker = setInterval(() => this.enqueue('maintain', () => this.maintain()), 250);
    this.enqueue('maintain', () => this.maintain());
  }

  /** Closes everything and tells the remote. */
  close() {
    this.wanted = false;
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    return this.enqueue('close', async () => {
      const had = this.current !== null;
      this.retire('closed', 'closed locally');
      this.clearRestart();
      if (had) this.sendSignal({ type: 'bye' });
    });
  }

  /** Signaling registered (`replaced`/re-registration included) or lost. @param {boolean} up */
  setSignaling(up) {
    const wasUp = this.signalingUp;
    this.signalingUp = up;
    if (up && !wasUp) {
      // Frames queued for the old socket were dropped by the server: an
      // exchange in flight may never complete, so renegotiate it.
      this.enqueue('signaling up', () => this.renegotiateIfPending('signaling reconnected'));
    }
    this.emitChange();
  }

  /** Presence of the remote peer in the room. @param {boolean} present @param {boolean} [rejoined] */
  setRemotePresent(present, rejoined = false) {
    this.remotePresent = present;
    if (present) {
      this.failures = 0;
      this.nextAttemptAt = 0;
      if (rejoined) {
        // "It reconnected": what it had queued for it was dropped.
        this.enqueue('remote rejoined', () => this.renegotiateIfPending('remote peer re-registered'));
      }
      this.enqueue('maintain', () => this.maintain());
    }
    this.emitChange();
  }

  /** A relayed message from the remote peer. @param {any} msg */
  handleSignal(msg) {
    return this.enqueue(`signal ${msg.type}`, () => this.onSignal(msg));
  }

  /** Restarts ICE of the current peer connection (or connects when there is none). */
  restartIce() {
    return this.enqueue('restart ice', () => this.startRestart());
  }

  /** Replaces the peer connection with a new one. */
  replace() {
    return this.enqueue('replace', async () => {
      this.log(`peer: replacing peer connection ${this.current?.id ?? '-'}`);
      this.clearRestart();
      this.retire('closed', 'replaced');
      this.attemptDeadline = performance.now() + this.connectTimeoutMs;
      if (this.role === 'offerer') {
        await this.offerNewGeneration();
      } else {
        // `bye` even without a peer connection here: the offerer may still
        // hold one, and a restart of it could never complete with a new one.
        this.sendSignal({ type: 'bye' });
        this.requestOffer();
      }
    });
  }

  /** Whether the data channel is open on a connected peer connection. */
  healthy() {
    const c = this.current;
    return !!c && c.channelOpen && c.state === 'connected';
  }

  status() {
    const c = this.current;
    return {
      role: this.role,
      generation: c?.id ?? this.built,
      state: c?.state ?? (this.built ? 'closed' : 'new'),
      iceState: c?.pc.iceConnectionState ?? null,
      signalingState: c?.pc.signalingState ?? null,
      channelOpen: !!c?.channelOpen,
      negotiating: !!c?.negotiation,
      healthy: this.healthy(),
      remotePresent: this.remotePresent,
      counters: { ...this.counters },
    };
  }

  /** The candidate pairs of the current peer connection (for diagnosis). */
  async icePairs() {
    const c = this.current;
    if (!c) return [];
    const report = await c.pc.getStats();
    /** @type {string[]} */
    const pairs = [];
    report.forEach((/** @type {any} */ stat) => {
      if (stat.type !== 'candidate-pair') return;
      const local = report.get(stat.localCandidateId);
      const remote = report.get(stat.remoteCandidateId);
      pairs.push(`${local?.usernameFragment} ${local?.address}:${local?.port} -> ${remote?.address}:${remote?.port} ${stat.state}${stat.nominated ? ' nominated' : ''}`);
    });
    return pairs;
  }

  // ----- queue -------------------------------------------------------------

  /** @param {string} what @param {() => unknown} step */
  enqueue(what, step) {
    this.queue = this.queue.then(async () => {
      await step();
    }).catch((error) => {
      this.log(`peer: ${what} failed: ${error?.message ?? error}`);
    });
    return this.queue;
  }

  emitChange() {
    this.dispatchEvent(new CustomEvent('change', { detail: {} }));
  }

  /** @param {{type: string} & Record<string, unknown>} payload */
  sendSignal(payload) {
    const sent = this.signal(payload);
    if (!sent) this.log(`peer: could not send ${payload.type} (signaling down)`);
    else if (payload.type === 'bye') this.counters.byesSent += 1;
    return sent;
  }

  // ----- supervisor --------------------------------------------------------

  canTry() {
    return this.wanted && this.signalingUp && this.remotePresent !== false;
  }

  async maintain() {
    if (!this.canTry()) return;
    const now = performance.now();
    if (this.healthy()) {
      this.failures = 0;
      this.attemptDeadline = null;
      return;
    }
    if (this.attemptDeadline !== null) {
      if (now < this.attemptDeadline) return;
      // The attempt timed out: give up this peer connection (like the Rust
      // connect timeout) and try again after a backoff.
      this.attemptDeadline = null;
      this.failures += 1;
      this.nextAttemptAt = now + Math.min(500 * 2 ** (this.failures - 1), 8000);
      this.log(`peer: connect attempt timed out (${this.failures} in a row)`);
      if (this.current && !this.current.channelOpen) {
        this.retire('failed', 'connect timed out');
        this.sendSignal({ type: 'bye' });
      }
      return;
    }
    if (now < this.nextAttemptAt) return;
    this.attemptDeadline = now + this.connectTimeoutMs;
    await this.connectStep(true);
  }

  /**
   * What a connect needs now, as crates/rtc/src/peer.rs `connect_step`.
   * @param {boolean} fromCaller
   */
  async connectStep(fromCaller) {
    const c = this.current;
    if (this.role === 'offerer') {
      if (!c) return this.offerNewGeneration();
      if (c.state === 'failed' || c.state === 'closed') {
        this.retire('closed', 'unusable peer connection replaced');
        return this.offerNewGeneration();
      }
      if (c.negotiation) return undefined;
      if (c.state === 'disconnected') return this.offer(true);
      return undefined;
    }
    if (!c) {
      // With nothing here, make sure the offerer starts from scratch too.
      if (fromCaller) this.sendSignal({ type: 'bye' });
      return this.requestOffer();
    }
    if ((c.state === 'connecting' || c.state === 'connected') && c.remoteDescriptionSet) return undefined;
    return this.requestOffer();
  }

  /** An exchange that may have been lost with a signaling socket is started again. @param {string} why */
  async renegotiateIfPending(why) {
    const c = this.current;
    if (!this.canTry()) return;
    if (!c) {
      this.nextAttemptAt = 0;
      this.attemptDeadline = null;
      return this.maintain();
    }
    const pending = c.negotiation !== null || this.restart.queued || !this.healthy();
    if (!pending) return undefined;
    this.log(`peer: ${why}: renegotiating`);
    if (this.role === 'answerer') return this.requestOffer();
    if (!c.remoteDescriptionSet) {
      // The first offer may be lost: start this peer connection over.
      this.retire('closed', 'first offer may be lost');
      this.attemptDeadline = performance.now() + this.connectTimeoutMs;
      return this.offerNewGeneration();
    }
    return this.offer(true);
  }

  requestOffer() {
    this.counters.restartRequestsSent += 1;
    return this.sendSignal({ type: 'ice_restart' });
  }

  async startRestart() {
    const c = this.current;
    if (!c) {
      this.nextAttemptAt = 0;
      this.attemptDeadline = null;
      return this.maintain();
    }
    this.log(`peer: ICE restart of peer connection ${c.id} requested`);
    if (this.restart.timer) clearTimeout(this.restart.timer);
    this.restart.timer = setTimeout(() => this.enqueue('restart timeout', () => this.onRestartTimeout()), this.restartTimeoutMs);
    if (this.role === 'offerer') {
      if (c.negotiation && !c.remoteDescriptionSet) {
        this.restart.queued = true; // after the first answer
        return undefined;
      }
      return this.offer(true);
    }
    this.restart.queued = true;
    return this.requestOffer();
  }

  async onRestartTimeout() {
    this.restart.timer = null;
    this.restart.queued = false;
    if (this.current) this.current.restartApplied = false;
    if (this.healthy()) return;
    this.log('peer: ICE restart did not complete in time: replacing the peer connection');
    if (this.canTry()) await this.replaceNow();
  }

  async replaceNow() {
    this.retire('closed', 'restart did not complete');
    this.attemptDeadline = performance.now() + this.connectTimeoutMs;
    if (this.role === 'offerer') return this.offerNewGeneration();
    this.sendSignal({ type: 'bye' });
    return this.requestOffer();
  }

  clearRestart() {
    if (this.restart.timer) clearTimeout(this.restart.timer);
    this.restart.timer = null;
    this.restart.queued = false;
  }

  restartCompleted() {
    const c = this.current;
    if (c) c.restartApplied = false;
    this.counters.restartsCompleted += 1;
    this.log(`peer: ICE restart of peer connection ${c?.id} completed`);
    this.clearRestart();
    this.emitChange();
  }

  // ----- building blocks ---------------------------------------------------

  /** @returns {Generation} */
  buildGeneration() {
    this.built += 1;
    const id = this.built;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    /** @type {Generation} */
    const gen = {
      id, pc, state: 'connecting', negotiation: null, remoteDescriptionSet: false, remoteOffer: null,
      lastAnswer: null, channel: null, channelOpen: false, restartApplied: false,
    };
    // Candidates buffered for an older peer connection belong to it.
    this.remoteCandidates = [];
    let endSent = false;
    pc.onicecandidate = (event) => {
      if (this.current !== gen) return;
      const candidate = event.candidate;
      if (!candidate || !candidate.candidate) {
        if (endSent) return;
        endSent = true;
        this.signal({ type: 'candidate', candidate: '', sdp_mid: null, sdp_mline_index: null });
        return;
      }
      endSent = false;
      this.counters.candidatesSent += 1;
      this.signal({
        type: 'candidate',
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid ?? null,
        sdp_mline_index: candidate.sdpMLineIndex ?? null,
      });
    };
    pc.onicegatheringstatechange = () => {
      if (this.current === gen && pc.iceGatheringState === 'gathering') endSent = false;
    };
    pc.onconnectionstatechange = () => {
      if (this.current !== gen) return;
      const state = pc.connectionState === 'new' ? 'connecting' : pc.connectionState;
      if (state === gen.state) return;
      gen.state = state;
      this.log(`peer: peer connection ${id} ${state}`);
      this.emitChange();
      this.enqueue('maintain', () => this.maintain());
    };
    pc.oniceconnectionstatechange = () => {
      if (this.current === gen) this.emitChange();
    };
    pc.ondatachannel = (event) => {
      if (this.current !== gen) return;
      if (event.channel.label !== CHANNEL_LABEL) {
        this.log(`peer: ignored a data channel labelled ${JSON.stringify(event.channel.label)}`);
        return;
      }
      this.watchChannel(gen, event.channel);
    };
    this.log(`peer: peer connection ${id} built (${this.role})`);
    return gen;
  }

  /** @param {Generation} gen @param {RTCDataChannel} channel */
  watchChannel(gen, channel) {
    channel.binaryType = 'arraybuffer';
    gen.channel = channel;
    const opened = () => {
      if (this.current !== gen || gen.channel !== channel || gen.channelOpen) return;
      gen.channelOpen = true;
      this.attemptDeadline = null;
      this.failures = 0;
      this.log(`peer: data channel of peer connection ${gen.id} open`);
      // A new channel revives the peer just as well as a completed restart.
      if (this.restart.timer || this.restart.queued) this.restartCompleted();
      this.dispatchEvent(new CustomEvent('channel-open', { detail: { channel, generation: gen.id } }));
      this.emitChange();
    };
    channel.onopen = opened;
    channel.onclose = () => {
      if (gen.channel !== channel || !gen.channelOpen) return;
      gen.channelOpen = false;
      this.log(`peer: data channel of peer connection ${gen.id} closed`);
      this.dispatchEvent(new CustomEvent('channel-closed', { detail: { generation: gen.id } }));
      this.emitChange();
      this.enqueue('maintain', () => this.maintain());
    };
    if (channel.readyState === 'open') opened();
  }

  /** Offerer: a new peer connection with its data channel, offered to the peer. */
  async offerNewGeneration() {
    const gen = this.buildGeneration();
    this.current = gen;
    this.watchChannel(gen, gen.pc.createDataChannel(CHANNEL_LABEL));
    this.emitChange();
    try {
      await this.offer(false);
    } catch (error) {
      this.retire('failed', 'offer failed');
      throw error;
    }
  }

  /** Offerer: an offer for the current peer connection (an ICE restart when `restart`). @param {boolean} restart */
  async offer(restart) {
    const gen = this.current;
    if (!gen) throw new Error('no peer connection');
    this.offersSent += 1n;
    const seq = this.offersSent;
    const offer = await gen.pc.createOffer(restart ? { iceRestart: true } : undefined);
    const sdp = offer.sdp ?? '';
    const origin = parseOrigin(sdp);
    await gen.pc.setLocalDescription(offer);
    if (this.current !== gen) return;
    if (gen.negotiation) clearTimeout(gen.negotiation.timer);
    const timer = setTimeout(() => this.enqueue('answer timeout', () => this.onAnswerTimeout(gen, origin)), this.connectTimeoutMs);
    gen.negotiation = { origin, restart, timer };
    this.counters.offersSent += 1;
    this.log(`peer: ${restart ? 'ICE restart offer' : 'offer'} ${seq} sent for peer connection ${gen.id}`);
    this.sendSignal({ type: 'offer', sdp: tagOffer(sdp, seq, restart) });
    this.emitChange();
  }

  /** @param {Generation} gen @param {import('./sdp.js').SessionOrigin} origin */
  async onAnswerTimeout(gen, origin) {
    if (this.current !== gen || !gen.negotiation || !sameOrigin(gen.negotiation.origin, origin)) return;
    if (gen.remoteDescriptionSet) {
      // A restart offer went unanswered: forget it (a late answer is then
      // ignored); the connection stays as it was.
      this.log('peer: ICE restart offer got no answer');
      gen.negotiation = null;
      try {
        await gen.pc.setLocalDescription({ type: 'rollback' });
      } catch (error) {
        this.log(`peer: rollback failed: ${/** @type {Error} */ (error).message}`);
      }
      return;
    }
    this.log('peer: offer got no answer');
    this.retire('failed', 'offer unanswered');
    this.sendSignal({ type: 'bye' });
  }

  /** Closes the current peer connection. @param {'closed' | 'failed'} state @param {string} reason */
  retire(state, reason) {
    const gen = this.current;
    if (!gen) return;
    this.current = null;
    if (gen.negotiation) clearTimeout(gen.negotiation.timer);
    gen.negotiation = null;
    gen.state = state;
    const wasOpen = gen.channelOpen;
    gen.channelOpen = false;
    gen.channel = null;
    gen.pc.onicecandidate = gen.pc.onconnectionstatechange = gen.pc.oniceconnectionstatechange = null;
    gen.pc.ondatachannel = gen.pc.onicegatheringstatechange = null;
    try {
      gen.pc.close();
    } catch {
      // Closing twice is fine.
    }
    this.log(`peer: peer connection ${gen.id} ${state} (${reason})`);
    if (wasOpen) this.dispatchEvent(new CustomEvent('channel-closed', { detail: { generation: gen.id } }));
    this.emitChange();
  }

  // ----- inbound signaling -------------------------------------------------

  /** @param {any} msg */
  async onSignal(msg) {
    switch (msg.type) {
      case 'offer':
        if (this.role !== 'answerer') return this.log('peer: ignored an offer: this side offers');
        this.counters.offersReceived += 1;
        return this.onOffer(msg.sdp);
      case 'answer':
        if (this.role !== 'offerer') return this.log('peer: ignored an answer: this side answers');
        this.counters.answersReceived += 1;
        return this.onAnswer(msg.sdp);
      case 'ice_restart':
        if (this.role !== 'offerer') return this.log('peer: ignored ice_restart: this side answers');
        return this.onRestartRequest();
      case 'candidate':
        return this.onRemoteCandidate(msg.candidate ?? '', msg.sdp_mid ?? null, msg.sdp_mline_index ?? null);
      case 'bye':
        this.counters.byesReceived += 1;
        return this.onBye();
      default:
        return undefined;
    }
  }

  /** @param {string} tagged */
  async onOffer(tagged) {
    const { tags, sdp } = untag(tagged);
    let origin;
    try {
      origin = parseOrigin(sdp);
    } catch (error) {
      this.log(`peer: dropped an offer: ${/** @type {Error} */ (error).message}`);
      return;
    }
    const offer = { origin, seq: tags.seq };
    const kind = classifyOffer(this.current?.remoteOffer ?? null, offer);
    switch (kind) {
      case 'stale':
        this.log('peer: ignored an offer older than the one applied');
        return;
      case 'duplicate':
        if (this.current?.lastAnswer) {
          this.log('peer: duplicate offer: answering again');
          this.sendSignal({ type: 'answer', sdp: this.current.lastAnswer });
        }
        return;
      case 'renegotiation':
        try {
          await this.answer(sdp, offer, true);
        } catch (error) {
          this.refuseOffer(origin, 'failed', /** @type {Error} */ (error));
        }
        return;
      default:
        break;
    }
    if (tags.iceRestart) {
      this.log('peer: refused an ICE restart of a session this side does not have');
      this.retire('closed', 'offerer restarts an unknown session');
      this.counters.rejectionsSent += 1;
      this.sendSignal({ type: 'answer', sdp: rejection(origin, 'unknown-session') });
      // This side still wants a connection: ask for a fresh one.
      if (this.canTry()) this.requestOffer();
      return;
    }
    this.retire('closed', 'offerer started a new session');
    this.current = this.buildGeneration();
    this.emitChange();
    try {
      await this.answer(sdp, offer, false);
    } catch (error) {
      this.refuseOffer(origin, 'failed', /** @type {Error} */ (error));
    }
  }

  /**
   * Answerer: applies an offer to the current peer connection and answers.
   * @param {string} sdp @param {import('./sdp.js').OfferId} offerId @param {boolean} restart
   */
  async answer(sdp, offerId, restart) {
    const gen = this.current;
    if (!gen) throw new Error('no peer connection');
    await gen.pc.setRemoteDescription({ type: 'offer', sdp });
    gen.remoteDescriptionSet = true;
    const answer = await gen.pc.createAnswer();
    const tagged = tagAnswer(answer.sdp ?? '', offerId.origin);
    await gen.pc.setLocalDescription(answer);
    if (this.current !== gen) return;
    gen.lastAnswer = tagged;
    gen.remoteOffer = offerId;
    if (restart) this.restartApplied(gen);
    this.counters.answersSent += 1;
    this.log(`peer: answered ${restart ? 'ICE restart offer' : 'offer'} ${offerId.seq ?? '(unnumbered)'} on peer connection ${gen.id}`);
    this.sendSignal({ type: 'answer', sdp: tagged });
    await this.flushRemoteCandidates();
    this.emitChange();
  }

  /**
   * An ICE restart was applied (offerer: its answer; answerer: its offer). It
   * completes when ICE has a working pair of the new ICE generation. A
   * browser keeps using the old pair while the new one is checked, so its ICE
   * state may never leave `connected` and no event says so: the pairs are
   * read from getStats instead.
   * @param {Generation} gen
   */
  restartApplied(gen) {
    this.counters.restartsApplied += 1;
    this.restart.queued = false;
    gen.restartApplied = true;
    const ufrag = /a=ice-ufrag:(\S+)/.exec(gen.pc.localDescription?.sdp ?? '')?.[1] ?? null;
    this.log(`peer: ICE restart applied on peer connection ${gen.id} (local ufrag ${ufrag})`);
    const deadline = performance.now() + this.restartTimeoutMs;
    const check = async () => {
      if (this.current !== gen || !gen.restartApplied) return;
      const working = ufrag === null ? undefined : await hasWorkingPair(gen.pc, ufrag);
      if (this.current !== gen || !gen.restartApplied) return;
      const ice = gen.pc.iceConnectionState;
      const connected = ice === 'connected' || ice === 'completed';
      // Without the stats (another browser), `connected` is the best sign.
      if (connected && (working ?? true)) {
        this.restartCompleted();
      } else if (performance.now() < deadline) {
        setTimeout(check, 50);
      }
    };
    check();
  }

  /**
   * Answerer: refuses `origin` (the offerer learns exactly which offer).
   * @param {import('./sdp.js').SessionOrigin} origin @param {'failed' | 'unknown-session'} why @param {Error} error
   */
  refuseOffer(origin, why, error) {
    this.log(`peer: offer refused: ${error.message}`);
    this.retire('failed', 'offer could not be taken');
    this.counters.rejectionsSent += 1;
    this.sendSignal({ type: 'answer', sdp: rejection(origin, why) });
  }

  /** @param {string} tagged */
  async onAnswer(tagged) {
    const { tags, sdp } = untag(tagged);
    const gen = this.current;
    if (!gen) return this.log('peer: ignored an answer: no peer connection');
    const negotiation = gen.negotiation;
    if (!negotiation) return this.log('peer: ignored an answer: no offer outstanding');
    if (tags.answers && !sameOrigin(tags.answers, negotiation.origin)) {
      return this.log('peer: ignored an answer to a superseded offer');
    }
    if (tags.rejected) {
      this.counters.rejectionsReceived += 1;
      return this.offerRefused(tags.rejected);
    }
    try {
      await gen.pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (error) {
      this.log(`peer: answer could not be applied: ${/** @type {Error} */ (error).message}`);
      this.retire('failed', 'negotiation failed');
      this.sendSignal({ type: 'bye' });
      return undefined;
    }
    if (this.current !== gen) return undefined;
    clearTimeout(negotiation.timer);
    gen.negotiation = null;
    gen.remoteDescriptionSet = true;
    if (negotiation.restart) this.restartApplied(gen);
    await this.flushRemoteCandidates();
    if (this.restart.queued) {
      this.restart.queued = false;
      await this.offer(true);
    }
    this.emitChange();
    return undefined;
  }

  /** Offerer: the answerer refused the outstanding offer. @param {'unknown-session' | 'failed'} why */
  async offerRefused(why) {
    this.log(`peer: the remote refused the offer (${why})`);
    if (why === 'unknown-session') {
      // The answerer no longer has this peer connection: nothing revives it.
      this.retire('closed', 'remote no longer has this session');
      this.clearRestart();
      if (this.canTry()) {
        this.attemptDeadline = performance.now() + this.connectTimeoutMs;
        await this.offerNewGeneration();
      }
      return;
    }
    this.retire('failed', 'offer refused');
    this.clearRestart();
  }

  async onRestartRequest() {
    const c = this.current;
    this.log('peer: the remote asks for an offer');
    if (!c) return this.offerNewGeneration();
    if (c.state === 'closed') {
      this.retire('closed', 'unusable peer connection replaced');
      return this.offerNewGeneration();
    }
    // The first offer of this peer connection is on its way: it is the answer.
    if (c.negotiation && !c.remoteDescriptionSet) return undefined;
    // Otherwise offer a restart, superseding one still unanswered.
    return this.offer(true);
  }

  /**
   * @param {string} candidate @param {string | null} sdpMid @param {number | null} sdpMLineIndex
   */
  async onRemoteCandidate(candidate, sdpMid, sdpMLineIndex) {
    if (candidate.trim() === '') return; // end of candidates
    this.counters.candidatesReceived += 1;
    // webrtc-rs sends `sdp_mid: ""` with index 0: an empty mid names no
    // m-section, so only the index may be used. A single m-section is all
    // tether negotiates, so with neither, it is index 0.
    const mid = sdpMid === '' ? null : sdpMid;
    /** @type {RTCIceCandidateInit} */
    const init = { candidate, sdpMid: mid, sdpMLineIndex: mid === null ? (sdpMLineIndex ?? 0) : sdpMLineIndex };
    const c = this.current;
    if (c && c.remoteDescriptionSet) {
      await this.addRemoteCandidate(c, init);
      return;
    }
    if (this.remoteCandidates.some((b) => b.candidate === init.candidate)) return;
    if (this.remoteCandidates.length === MAX_BUFFERED_CANDIDATES) this.remoteCandidates.shift();
    this.remoteCandidates.push(init);
  }

  /** @param {Generation} gen @param {RTCIceCandidateInit} init */
  async addRemoteCandidate(gen, init) {
    try {
      await gen.pc.addIceCandidate(init);
    } catch (error) {
      this.log(`peer: remote candidate refused: ${/** @type {Error} */ (error).message} (${init.candidate})`);
    }
  }

  async flushRemoteCandidates() {
    const c = this.current;
    while (c && this.remoteCandidates.length > 0) {
      const init = /** @type {RTCIceCandidateInit} */ (this.remoteCandidates.shift());
      await this.addRemoteCandidate(c, init);
    }
  }

  async onBye() {
    const c = this.current;
    if (!c) return this.log('peer: ignored bye: no peer connection');
    if (c.negotiation && !c.remoteDescriptionSet) {
      // The answerer answers an offer before anything else it says, so this
      // bye left before it saw this peer connection's first offer.
      return this.log('peer: ignored bye sent before the remote saw this offer');
    }
    this.retire('closed', 'closed by remote');
    this.clearRestart();
    // Let the remote drive its own reconnect first (a node replacing its peer
    // connection says bye and offers, or asks, right after); take over if it
    // does not.
    this.attemptDeadline = null;
    this.nextAttemptAt = Math.max(this.nextAttemptAt, performance.now() + 1000);
    return undefined;
  }
}
