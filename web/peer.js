// One remote peer, negotiated by docs/NEGOTIATION.md, so that either side of
// a pair may be a browser or a Rust node (crates/rtc):
//
// - fixed roles (§2): the smaller peer id offers; the answerer asks for offers
//   with `ice_restart` (never offers); both create the data channel "tether"
//   with each peer connection, negotiated out of band (§3, connection.js);
// - every peer connection is a numbered generation (connection.js); replacing
//   one closes the old one first, and a closed one reports nothing more;
// - SDP is tagged and untagged with tether's attributes (sdp.js): offers are
//   numbered and restarts marked, answers and rejections name their offer
//   (with its seq, P1) and are matched to the outstanding one (§6.2);
// - at most one offer is outstanding per peer connection: whatever would
//   offer while one is (an `ice_restart`, `peer_joined`, a restart request)
//   re-sends it unchanged instead (§6.3, P2, P3);
// - `peer_joined` only re-sends what is outstanding, or connects without a
//   usable peer connection (§11.2, P4); after our own re-registration we
//   renegotiate by role (§11.4);
// - an answer to an in-place restart with another DTLS fingerprint, or a
//   renegotiation offer with one, comes from a replaced peer connection (§9.3, P7);
// - offers and `ice_restart` keep to their budgets both ways (§13.3, P6, budget.js);
// - every operation runs one at a time on a queue, so negotiation steps never
//   interleave;
// - Data and Ack frames are held during an ICE restart (MESSAGING.md rule 8,
//   `hold` events): from creating or applying the restart offer until the
//   restart completes (or fails, or the peer connection goes); the session
//   then resends everything unacknowledged (session.js).
//
// The page's supervisor (§13.2, P5): while the remote peer is wanted, present
// and signaling is up, a connect that times out is retired and retried with
// backoff, and an ICE restart that does not complete escalates to a new peer
// connection.

import { Answerer } from './answerer.js';
import { Throttle } from './budget.js';
import { Connection } from './connection.js';
import { Offerer } from './offerer.js';
import { roleBetween } from './sdp.js';

export { CHANNEL_LABEL } from './connection.js';

/** How long the page waits after a `bye` for the remote to drive the reconnect (§11.1). */
const BYE_GRACE_MS = 1000;

/**
 * Events (CustomEvent `detail`):
 * - `channel-open`   {channel, generation}: a new data channel is open (start a reliable session on it)
 * - `channel-closed` {generation}
 * - `hold`           {generation, held}: put no Data or Ack frames on that channel while held; on
 *                    release, resend everything unacknowledged (an ICE restart replaced the path)
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
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy]  'relay': TURN candidates only
   * @param {number} [options.connectTimeoutMs]
   * @param {number} [options.restartTimeoutMs]
   * @param {() => number} [options.now]  the budgets' clock in ms (default performance.now; tests set it)
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
    this.iceTransportPolicy = options.iceTransportPolicy ?? 'all';
    /** @type {RTCIceServer[]} ICE servers the signaling server handed out (setGrantedIceServers) */
    this.grantedIceServers = [];
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.restartTimeoutMs = options.restartTimeoutMs ?? 5000;

    /** @type {Connection | null} */
    this.current = null;
    this.built = 0;
    /** A restart in progress: its bound, and (answerer) whether its offer is still awaited. */
    this.restart = { timer: /** @type {ReturnType<typeof setTimeout> | null} */ (null), awaitingOffer: false };
    this.now = options.now ?? (() => performance.now());
    const run = (/** @type {string} */ what, /** @type {() => unknown} */ action) => this.enqueue(what, action);
    /** What this side sends (offers or `ice_restart`, by role) and what it takes from the remote (§13.3). */
    this.sending = new Throttle({ run, now: this.now });
    this.receiving = new Throttle({ run, now: this.now });

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
      offersSent: 0, offersResent: 0, offersReceived: 0, answersSent: 0, answersReceived: 0, rejectionsSent: 0,
      rejectionsReceived: 0, restartsApplied: 0, restartsCompleted: 0, restartRequestsSent: 0, restartRequestsInRegister: 0,
      byesSent: 0, byesReceived: 0, candidatesSent: 0, candidatesReceived: 0, deferred: 0,
    };
    /** @type {Promise<void>} */
    this.queue = Promise.resolve();
    /** What this side sends and answers, by role. */
    this.negotiator = role === 'offerer' ? new Offerer(this) : new Answerer(this);
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
      this.sending.clear();
      this.receiving.clear();
      if (had) this.sendSignal({ type: 'bye' });
    });
  }

  /**
   * Signaling registered (`replaced`/re-registration included) or lost.
   * @param {boolean} up
   * @param {boolean} [restartAsked] the `register` asked the remote for an ICE restart and the
   *   server sends it (`registered`'s `ice_restart` names the remote): none is sent again
   */
  setSignaling(up, restartAsked = false) {
    const wasUp = this.signalingUp;
    this.signalingUp = up;
    if (up && !wasUp) this.enqueue('signaling up', () => this.onSignalingBack(restartAsked));
    this.emitChange();
  }

  /**
   * Whether the next `register` should ask the remote for an ICE restart (PROTOCOL.md §3): as
   * an answerer, when coming back would renegotiate (§11.4) a peer connection it keeps.
   */
  restartToAsk() {
    const c = this.current;
    if (this.role !== 'answerer' || !this.wanted || this.remotePresent === false) return false;
    return !!c && c.usable() && this.needsRenegotiating(c);
  }

  /**
   * Whether the usable peer connection `c` needs renegotiating after our own re-registration
   * (§11.4): a healthy one with nothing in flight may be left alone.
   * @param {NonNullable<PeerLink['current']>} c
   */
  needsRenegotiating(c) {
    return !(this.healthy() && !c.negotiation && !this.restart.awaitingOffer);
  }

  /** Presence of the remote peer in the room. @param {boolean} present @param {boolean} [rejoined] `peer_joined` */
  setRemotePresent(present, rejoined = false) {
    this.remotePresent = present;
    if (present) {
      this.failures = 0;
      this.nextAttemptAt = 0;
      if (rejoined) this.enqueue('remote rejoined', () => this.onRemoteRejoined());
      else this.enqueue('maintain', () => this.maintain());
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
      await this.replaceNow('replaced');
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
      dataHeld: !!c?.dataHeld,
      negotiating: !!c?.negotiation,
      healthy: this.healthy(),
      remotePresent: this.remotePresent,
      counters: { ...this.counters },
    };
  }

  /** The candidate pairs of the current peer connection (for diagnosis). */
  async icePairs() {
    return this.current ? this.current.icePairs() : [];
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

  // ----- supervisor (§13.2) ------------------------------------------------

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
    await this.negotiator.connect();
  }

  /** Our own signaling came back: renegotiate by role what may have been lost with it (§11.4). */
  /** @param {boolean} restartAsked see `setSignaling` */
  async onSignalingBack(restartAsked) {
    if (!this.canTry()) return undefined;
    const c = this.current;
    if (!c || !c.usable()) return this.connectNow();
    if (!this.needsRenegotiating(c)) return undefined;
    this.log(`peer: signaling reconnected: renegotiating${restartAsked ? ' (register asked for the restart)' : ''}`);
    return this.negotiator.renegotiate(restartAsked);
  }

  /**
   * The remote re-registered (`peer_joined`, §11.2, P4): what it had queued
   * was dropped. Re-send what is outstanding; never start a new offer or peer
   * connection for it, except to connect when there is no usable one.
   */
  async onRemoteRejoined() {
    if (!this.canTry()) return undefined;
    const c = this.current;
    if (!c || !c.usable()) return this.connectNow();
    return this.negotiator.rejoined();
  }

  /** A connect at once, without backoff. */
  connectNow() {
    this.nextAttemptAt = 0;
    this.attemptDeadline = null;
    return this.maintain();
  }

  // ----- ICE restart (§8) and replacement (§9) -----------------------------

  async startRestart() {
    const c = this.current;
    if (!c) return this.connectNow();
    this.log(`peer: ICE restart of peer connection ${c.id} requested`);
    if (this.restart.timer) clearTimeout(this.restart.timer);
    this.restart.timer = setTimeout(() => this.enqueue('restart timeout', () => this.onRestartTimeout()), this.restartTimeoutMs);
    return this.negotiator.restart();
  }

  async onRestartTimeout() {
    this.restart.timer = null;
    this.restart.awaitingOffer = false;
    if (this.current) {
      this.current.restartApplied = false;
      // The restart failed: nothing is restarting any more (a replacement,
      // if any, brings its own channel).
      this.holdData(this.current, false, 'the ICE restart did not complete');
    }
    if (this.healthy()) return;
    this.log('peer: ICE restart did not complete in time: replacing the peer connection');
    if (this.canTry()) await this.replaceNow('restart did not complete');
  }

  /** A new peer connection instead of the current one (§9.1, §9.2). @param {string} why */
  async replaceNow(why) {
    this.retire('closed', why);
    this.attemptDeadline = performance.now() + this.connectTimeoutMs;
    return this.negotiator.replace();
  }

  clearRestart() {
    if (this.restart.timer) clearTimeout(this.restart.timer);
    this.restart.timer = null;
    this.restart.awaitingOffer = false;
  }

  restartCompleted() {
    const c = this.current;
    if (c) c.restartApplied = false;
    this.counters.restartsCompleted += 1;
    this.log(`peer: ICE restart of peer connection ${c?.id} completed`);
    this.clearRestart();
    if (c) this.holdData(c, false, 'the ICE restart completed');
    this.emitChange();
  }

  /**
   * Holds (or releases) Data and Ack frames on the channel of `conn`
   * (MESSAGING.md rule 8): from the start of an ICE restart (the offerer
   * creates the restart offer, the answerer applies it) until it completes
   * or fails. Whatever is written into the old pair meanwhile is lost below
   * SCTP, which sends it again only on its own backed-off retransmission
   * timer; held, it waits in the replay buffer and goes (all of what is
   * unacknowledged, again) the moment the new pair works. A retired peer
   * connection's hold ends with it: a new one starts unheld.
   * @param {Connection} conn @param {boolean} held @param {string} why
   */
  holdData(conn, held, why) {
    if (conn.dataHeld === held || conn.closed) return;
    conn.dataHeld = held;
    this.log(`peer: data on peer connection ${conn.id} ${held ? 'held' : 'released'} (${why})`);
    this.dispatchEvent(new CustomEvent('hold', { detail: { generation: conn.id, held } }));
    this.emitChange();
  }

  /**
   * An ICE restart was applied (offerer: its answer; answerer: its offer). It
   * completes when ICE has a working pair of the new ICE generation (§8.5). A
   * browser keeps using the old pair while the new one is checked, so its ICE
   * state may never leave `connected` and no event says so: the pairs are
   * read from getStats instead.
   * @param {Connection} conn
   */
  restartApplied(conn) {
    this.counters.restartsApplied += 1;
    this.restart.awaitingOffer = false;
    conn.restartApplied = true;
    const ufrag = conn.localUfrag();
    this.log(`peer: ICE restart applied on peer connection ${conn.id} (local ufrag ${ufrag})`);
    const deadline = performance.now() + this.restartTimeoutMs;
    const check = async () => {
      if (this.current !== conn || !conn.restartApplied) return;
      const working = ufrag === null ? undefined : await conn.hasWorkingPair(ufrag);
      if (this.current !== conn || !conn.restartApplied) return;
      const ice = conn.pc.iceConnectionState;
      const connected = ice === 'connected' || ice === 'completed';
      // Without the stats (another browser), `connected` is the best sign.
      if (connected && (working ?? true)) {
        this.restartCompleted();
      } else if (performance.now() < deadline) {
        setTimeout(check, 50);
      } else {
        this.holdData(conn, false, 'the ICE restart did not complete');
      }
    };
    check();
  }

  // ----- peer connections --------------------------------------------------

  /**
   * ICE servers from the signaling server's `registered` (TURN with fresh
   * credentials): peer connections built from now on use them after the
   * configured ones.
   * @param {RTCIceServer[]} servers
   */
  setGrantedIceServers(servers) {
    this.grantedIceServers = servers;
  }

  /** A new peer connection, made current. */
  build() {
    this.built += 1;
    const conn = new Connection({
      id: this.built,
      iceServers: [...this.iceServers, ...this.grantedIceServers],
      iceTransportPolicy: this.iceTransportPolicy,
      log: this.log,
      hooks: {
        candidate: (payload) => {
          if (this.current !== conn) return;
          if (payload.candidate) this.counters.candidatesSent += 1;
          this.signal(payload);
        },
        state: () => {
          if (this.current !== conn) return;
          // ICE is connected again: whatever held the data is over.
          if (conn.state === 'connected') this.holdData(conn, false, 'connected');
          this.emitChange();
          this.enqueue('maintain', () => this.maintain());
        },
        change: () => {
          if (this.current === conn) this.emitChange();
        },
        channelOpen: (_, channel) => {
          if (this.current !== conn) return;
          this.attemptDeadline = null;
          this.failures = 0;
          // A new channel revives the peer just as well as a completed restart.
          if (this.restart.timer || this.restart.awaitingOffer) this.restartCompleted();
          this.dispatchEvent(new CustomEvent('channel-open', { detail: { channel, generation: conn.id } }));
          this.emitChange();
        },
        channelClosed: () => {
          this.dispatchEvent(new CustomEvent('channel-closed', { detail: { generation: conn.id } }));
          this.emitChange();
          this.enqueue('maintain', () => this.maintain());
        },
      },
    });
    this.current = conn;
    this.log(`peer: peer connection ${conn.id} built (${this.role})`);
    this.emitChange();
    return conn;
  }

  /** Retires the current peer connection (§1 "Retire"). @param {'closed' | 'failed'} state @param {string} reason */
  retire(state, reason) {
    const conn = this.current;
    if (!conn) return;
    this.current = null;
    if (this.negotiator instanceof Offerer) this.negotiator.clearResend();
    const wasOpen = conn.close(state);
    this.log(`peer: peer connection ${conn.id} ${state} (${reason})`);
    if (wasOpen) this.dispatchEvent(new CustomEvent('channel-closed', { detail: { generation: conn.id } }));
    this.emitChange();
  }

  // ----- inbound signaling -------------------------------------------------

  /** @param {any} msg */
  async onSignal(msg) {
    switch (msg.type) {
      case 'offer':
        // Only the answerer takes offers; only the offerer answers and requests (§2).
        if (this.role !== 'answerer') return this.log('peer: ignored an offer: this side offers');
        return this.negotiator.onSignal(msg);
      case 'answer':
      case 'ice_restart':
        if (this.role !== 'offerer') return this.log(`peer: ignored ${msg.type === 'answer' ? 'an answer' : 'ice_restart'}: this side answers`);
        return this.negotiator.onSignal(msg);
      case 'candidate':
        return this.onRemoteCandidate(msg.candidate ?? '', msg.sdp_mid ?? null, msg.sdp_mline_index ?? null);
      case 'bye':
        this.counters.byesReceived += 1;
        return this.onBye();
      default:
        return undefined;
    }
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
    // Without a peer connection, it belongs to one the remote has retired.
    await this.current?.addRemoteCandidate(init);
  }

  /** §11.1 */
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
    this.nextAttemptAt = Math.max(this.nextAttemptAt, performance.now() + BYE_GRACE_MS);
    return undefined;
  }
}
