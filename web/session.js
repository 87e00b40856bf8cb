// The reliable message stream to the remote peer, carried by whichever data
// channel is current (reliable.js holds the rules; this module does the I/O):
// a new channel gets Hello and the replay, frames of a channel that is no
// longer current are never applied, malformed frames are dropped and logged,
// acknowledgements go out on time, and unsent messages past their deadline
// are withdrawn with an explicit "not delivered". While the peer link holds
// data (an ICE restart, peer.js holdData), no Data or Ack frame goes out; on
// release everything unacknowledged goes again (MESSAGING.md rule 8). Meanwhile,
// or while no channel is open, the frames take the detour through signaling,
// sealed end to end with keys agreed on the channel (rule 10, detour.js).

import { FRAME_OVERHEAD, PeerKeys, SEAL_OVERHEAD, fromBase64, toBase64 } from './detour.js';
import { decodeFrame, encodeFrame } from './frame.js';
import { BufferFull, ReliableStream, randomSession } from './reliable.js';

/** Pause data frames while this much is queued on the channel. */
const HIGH_WATER = 1 << 20;
const LOW_WATER = 256 << 10;
/**
 * When to say Hello again on a new channel (ms after it opened) while the
 * peer shows no sign of having ours. Chromium (seen with 156, as the answerer,
 * against webrtc-rs) now and then drops the first message sent on a data
 * channel that just opened: `send()` returns, the channel's stats count
 * nothing and nothing goes on the wire. A peer without our Hello refuses our
 * data and sends none of its own, so without this the stream would stall
 * until the next channel.
 */
const HELLO_REPEATS_MS = [500, 1500, 4000];
/** Detour batches a second, and in a burst (MESSAGING.md rule 10). */
const DETOUR_RATE = 25;
const DETOUR_BURST = 40;
/** The largest sealed batch, and the room a signaling frame needs around it. */
const DETOUR_MAX_BATCH = 9 * 1024;
const DETOUR_ENVELOPE = 160;

/**
 * The signaling link the detour runs on, while one is registered whose server
 * relays `detour`.
 * @typedef {{generation: number, maxFrameBytes: number, send: (sealed: string) => boolean}} DetourRoute
 */
/**
 * Events (CustomEvent `detail`):
 * - `message`   {id, text, bytes}: delivered, in order, exactly once
 * - `confirmed` {id}: the peer acknowledged one of our messages
 * - `withdrawn` {id}: a message could not be sent before its deadline
 * - `change`    {}
 */
export class MessageSession extends EventTarget {
  /**
   * @param {object} [options]
   * @param {(line: string) => void} [options.log]
   * @param {Partial<import('./reliable.js').StreamConfig>} [options.stream]
   * @param {number} [options.sendDeadlineMs]
   * @param {bigint} [options.session]
   */
  constructor(options = {}) {
    super();
    this.log = options.log ?? (() => {});
    this.stream = new ReliableStream(options.session ?? randomSession(), options.stream ?? {});
    this.sendDeadlineMs = options.sendDeadlineMs ?? 30000;
    /** @type {RTCDataChannel | null} */
    this.channel = null;
    this.generation = 0;
    this.dropOutgoing = false;
    this.counters = {
      sent: 0, confirmed: 0, received: 0, withdrawn: 0, badFrames: 0, protocolErrors: 0,
      framesOut: 0, framesIn: 0, framesDropped: 0, channels: 0, helloRepeats: 0,
      detourBatchesOut: 0, detourBatchesIn: 0, detourDropped: 0,
    };
    /** The detour's keys for the peer (MESSAGING.md rule 10). */
    this.keys = new PeerKeys();
    /** Whether this channel's key share is owed after the Hello that went. */
    this.keyOwed = false;
    /** @type {DetourRoute | null} */
    this.detourRoute = null;
    /** The peer's last batch said its channel is down (and nothing came on the channel since). */
    this.peerDetouring = false;
    /** Whether this side sent on the detour when the pump last looked. */
    this.detouring = false;
    /**
     * The last batch sent said this side's channel was down: when it carries
     * frames again, a batch saying so follows on the same link (the detour and
     * the channel do not keep each other's order).
     */
    this.toldPathDown = false;
    /** The peer is registered, as far as this page knows. */
    this.peerPresent = true;
    this.detourTokens = DETOUR_BURST;
    this.detourRefilledAt = performance.now();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.detourTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.ackTimer = null;
    /** When the pending ackTimer fires (performance.now() clock). */
    this.ackTimerDue = 0;
    /** Whether the peer showed it has our Hello on this channel (it sent Data or an Ack). */
    this.peerHasHello = false;
    /** @type {ReturnType<typeof setTimeout>[]} */
    this.helloTimers = [];
    /** The generation whose channel holds its Data and Ack frames, if any (see hold). @type {number | null} */
    this.heldGeneration = null;
    this.decoder = new TextDecoder('utf-8', { fatal: true });
    this.encoder = new TextEncoder();
    this.deadlineTimer = setInterval(() => this.checkDeadlines(), 1000);
  }

  /**
   * A new data channel to the peer is open: it carries the stream from now on.
   * The answerer says Hello first (and again while the peer says nothing);
   * the offerer answers each Hello (MESSAGING.md rule 1).
   * @param {RTCDataChannel} channel @param {number} generation
   * @param {'first' | 'after_peer'} [turn]
   */
  attach(channel, generation, turn = 'first') {
    if (this.channel) this.detach(this.generation);
    this.channel = channel;
    this.generation = generation;
    this.counters.channels += 1;
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = LOW_WATER;
    channel.onmessage = (event) => {
      // Frames of a closed channel are never applied after a new one opened.
      if (this.channel !== channel) return;
      this.onData(event.data);
    };
    channel.onbufferedamountlow = () => {
      if (this.channel === channel) this.pump();
    };
    if (turn === 'first') {
      // The answerer announces its side of the channel (NEGOTIATION.md §3).
      try {
        channel.send(new ArrayBuffer(0));
      } catch (error) {
        this.log(`session: the ready message did not go: ${/** @type {Error} */ (error).message}`);
      }
    }
    this.stream.channelOpened(turn);
    this.peerHasHello = false;
    this.peerDetouring = false;
    this.keyOwed = false;
    this.keys.channelOpened().then(
      () => this.sendKeyIfOwed(channel),
      (error) => this.log(`session: no key share for the detour: ${/** @type {Error} */ (error).message}`),
    );
    this.helloTimers =
      turn === 'first' ? HELLO_REPEATS_MS.map((ms) => setTimeout(() => this.checkHello(channel), ms)) : [];
    this.log(`session: channel of peer connection ${generation} carries the stream (${this.stream.buffered()} messages to resume)`);
    this.pump();
    this.emitChange();
  }

  /**
   * Carries the stream on the channels of `link` (a PeerLink, peer.js): each
   * new channel, its end, and its holds.
   * @param {EventTarget} link
   */
  follow(link) {
    link.addEventListener('channel-open', (event) => {
      const { channel, generation } = /** @type {CustomEvent} */ (event).detail;
      const offerer = /** @type {{ role?: string }} */ (link).role === 'offerer';
      this.attach(channel, generation, offerer ? 'after_peer' : 'first');
    });
    link.addEventListener('channel-closed', (event) => {
      this.detach(/** @type {CustomEvent} */ (event).detail.generation);
    });
    link.addEventListener('hold', (event) => {
      const { generation, held } = /** @type {CustomEvent} */ (event).detail;
      this.hold(generation, held);
    });
  }

  /**
   * Holds (or releases) Data and Ack frames on the channel of `generation`
   * (its path is being replaced: an ICE restart). A Hello still goes. On
   * release, everything unacknowledged goes again, from the first: what went
   * into the old path may be lost below SCTP, and the peer drops copies.
   * @param {number} generation @param {boolean} held
   */
  hold(generation, held) {
    if (held) {
      this.heldGeneration = generation;
      return;
    }
    if (this.heldGeneration !== generation) return;
    this.heldGeneration = null;
    if (this.channel && this.generation === generation) {
      this.stream.resendUnacknowledged();
      this.pump();
    }
  }

  /**
   * The signaling link the detour may use now (null: none, or its server does
   * not relay `detour`). A new link makes every unacknowledged message eligible
   * again: what went into the old one may have died with it.
   * @param {DetourRoute | null} route
   */
  setDetourRoute(route) {
    if (route && route.generation !== this.detourRoute?.generation) this.stream.restartDetour();
    this.detourRoute = route;
    this.pump();
  }

  /**
   * The peer's presence: once it registers again, what went on the detour to
   * it while it was away was refused, so everything unacknowledged may go again.
   * @param {boolean} present
   */
  setPeerPresent(present) {
    if (present) this.stream.restartDetour();
    this.peerPresent = present;
    this.pump();
  }

  /**
   * A `detour` message from the peer: applied like frames on the channel, if it
   * opens and names both streams' sessions as they are now.
   * @param {string} sealed
   */
  async onDetour(sealed) {
    const bytes = fromBase64(sealed);
    let batch;
    try {
      if (!bytes) throw new Error('sealed is not base64');
      batch = await this.keys.open(bytes);
    } catch (error) {
      this.counters.detourDropped += 1;
      this.log(`session: dropped a detour batch: ${/** @type {Error} */ (error).message}`);
      return;
    }
    if (batch.senderSession !== this.stream.peerSession || batch.receiverSession !== this.stream.session) {
      this.counters.detourDropped += 1;
      this.log('session: dropped a detour batch of another stream session');
      return;
    }
    this.counters.detourBatchesIn += 1;
    this.peerDetouring = batch.pathDown;
    this.peerPresent = true;
    const now = performance.now();
    for (const frame of batch.frames) {
      try {
        this.stream.handleDetour(now, frame);
      } catch (error) {
        this.counters.protocolErrors += 1;
        this.log(`session: dropped a detoured ${frame.type} frame: ${/** @type {Error} */ (error).message}`);
      }
    }
    this.drain();
    this.pump();
  }

  /** Sends this channel's key share, once it exists, after this side's Hello. @param {RTCDataChannel} channel */
  sendKeyIfOwed(channel) {
    const publicKey = this.keys.public;
    if (!this.keyOwed || this.channel !== channel || channel.readyState !== 'open' || !publicKey) return;
    this.keyOwed = false;
    try {
      channel.send(encodeFrame({ type: 'key', publicKey }));
      this.counters.framesOut += 1;
    } catch (error) {
      this.log(`session: the key share did not go: ${/** @type {Error} */ (error).message}`);
    }
  }

  /** Whether the current channel holds its Data and Ack frames. */
  held() {
    return this.channel !== null && this.heldGeneration === this.generation;
  }

  /** Says Hello again on `channel` if it is still current and the peer gave no sign of having it. @param {RTCDataChannel} channel */
  checkHello(channel) {
    if (this.channel !== channel || this.peerHasHello) return;
    this.counters.helloRepeats += 1;
    this.log('session: no data or ack from the peer yet on this channel; saying Hello again');
    this.stream.repeatHello();
    this.pump();
  }

  /** The channel of `generation` is gone. @param {number} generation */
  detach(generation) {
    if (!this.channel || generation !== this.generation) return;
    const channel = this.channel;
    channel.onmessage = null;
    channel.onbufferedamountlow = null;
    this.channel = null;
    this.stream.channelClosed();
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    for (const timer of this.helloTimers) clearTimeout(timer);
    this.helloTimers = [];
    this.emitChange();
  }

  /**
   * Accepts a text message for reliable delivery.
   * @param {string} text
   * @returns {number} its id
   * @throws {BufferFull} when the replay buffer is full
   */
  send(text) {
    const id = this.stream.push(this.encoder.encode(text), performance.now() + this.sendDeadlineMs);
    this.counters.sent += 1;
    this.pump();
    this.emitChange();
    return id;
  }

  ready() {
    return this.channel !== null && this.stream.isReady();
  }

  close() {
    clearInterval(this.deadlineTimer);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.detourTimer) clearTimeout(this.detourTimer);
    for (const timer of this.helloTimers) clearTimeout(timer);
  }

  status() {
    return {
      session: this.stream.session.toString(16),
      peerSession: this.stream.peerSession.toString(16),
      ready: this.ready(),
      generation: this.channel ? this.generation : null,
      buffered: this.stream.buffered(),
      unconfirmedSent: this.stream.unconfirmedSent().length,
      delivered: Number(this.stream.delivered),
      stats: { ...this.stream.stats },
      counters: { ...this.counters },
    };
  }

  // ----- internals --------------------------------------------------------

  emitChange() {
    this.dispatchEvent(new CustomEvent('change', { detail: {} }));
  }

  /** @param {unknown} data */
  onData(data) {
    // An empty message is the channel's own "ready" (NEGOTIATION.md §3), never a frame.
    if (data instanceof ArrayBuffer && data.byteLength === 0) return;
    this.counters.framesIn += 1;
    let frame;
    try {
      if (!(data instanceof ArrayBuffer)) throw new Error('a text message, not a binary frame');
      frame = decodeFrame(data);
    } catch (error) {
      this.counters.badFrames += 1;
      this.log(`session: dropped a malformed frame: ${/** @type {Error} */ (error).message}`);
      return;
    }
    // The peer's path carries frames again.
    this.peerDetouring = false;
    if (frame.type === 'key') {
      this.keys.peerShare(frame.publicKey).then((agreed) => {
        if (agreed) this.log('session: detour keys agreed with the peer');
      });
      return;
    }
    try {
      this.stream.handleFrame(performance.now(), frame);
      // The peer sends Data only after our Hello, and acks only our Data (its Key share
      // follows its own Hello, which says nothing about ours).
      if (frame.type === 'data' || frame.type === 'ack') this.peerHasHello = true;
    } catch (error) {
      this.counters.protocolErrors += 1;
      this.log(`session: dropped a ${frame.type} frame: ${/** @type {Error} */ (error).message}`);
    }
    this.drain();
    this.pump();
  }

  drain() {
    let changed = false;
    for (let bytes = this.stream.pollDelivery(); bytes; bytes = this.stream.pollDelivery()) {
      this.counters.received += 1;
      let text;
      try {
        text = this.decoder.decode(bytes);
      } catch {
        text = `0x${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
      }
      changed = true;
      this.dispatchEvent(new CustomEvent('message', { detail: { id: this.counters.received, text, bytes } }));
    }
    for (let id = this.stream.pollConfirmed(); id !== null; id = this.stream.pollConfirmed()) {
      this.counters.confirmed += 1;
      changed = true;
      this.dispatchEvent(new CustomEvent('confirmed', { detail: { id } }));
    }
    if (changed) this.emitChange();
  }

  /**
   * Puts every frame that may go on the current channel, and, while the
   * channel cannot carry them (or the peer's cannot), on the detour.
   */
  pump() {
    const channel = this.channel;
    const now = performance.now();
    const held = this.held();
    const channelUsable = channel !== null && channel.readyState === 'open' && !held;
    const detouring = !channelUsable || this.peerDetouring;
    if (detouring) {
      if (!this.detouring) this.stream.restartDetour();
      this.carryOnDetour(now, !channelUsable);
    }
    if (channelUsable && this.toldPathDown) this.tellPathBack();
    this.detouring = detouring;
    if (!channel || channel.readyState !== 'open') return;
    for (;;) {
      // Held: a Hello owed still goes (the stream gives it first); Data and Acks wait.
      if (held && !this.stream.helloOwed) break;
      const room = channel.bufferedAmount < HIGH_WATER;
      const frame = this.stream.pollTransmit(now, room);
      if (!frame) break;
      if (this.dropOutgoing) {
        // Test hook: the path ate it (as a dying link would).
        this.counters.framesDropped += 1;
        continue;
      }
      try {
        channel.send(encodeFrame(frame));
        this.counters.framesOut += 1;
      } catch (error) {
        // The channel is closing: what did not go out is replayed on the next.
        this.log(`session: send failed: ${/** @type {Error} */ (error).message}`);
        break;
      }
      // This channel's key share follows each of this side's Hellos (MESSAGING.md rule 10).
      if (frame.type === 'hello') {
        this.keyOwed = true;
        this.sendKeyIfOwed(channel);
      }
    }
    this.scheduleAck();
  }

  /**
   * Carries what is due on the detour, in sealed batches within the budget,
   * when a route is up and keys are agreed; otherwise it waits.
   * @param {number} now @param {boolean} pathDown
   */
  carryOnDetour(now, pathDown) {
    const route = this.detourRoute;
    const keys = this.keys.current;
    const peerSession = this.stream.peerSession;
    if (!route || !keys || peerSession === 0n || !this.peerPresent) return;
    const maxBatch = Math.min(Math.floor((route.maxFrameBytes - DETOUR_ENVELOPE - 64) / 4) * 3, DETOUR_MAX_BATCH);
    const largest = maxBatch - SEAL_OVERHEAD - FRAME_OVERHEAD;
    while (this.stream.detourDue(now, largest)) {
      this.detourTokens = Math.min(DETOUR_BURST, this.detourTokens + ((now - this.detourRefilledAt) * DETOUR_RATE) / 1000);
      this.detourRefilledAt = now;
      if (this.detourTokens < 1) {
        this.scheduleDetour(now + ((1 - this.detourTokens) * 1000) / DETOUR_RATE);
        return;
      }
      this.detourTokens -= 1;
      /** @type {Uint8Array[]} */
      const frames = [];
      let size = SEAL_OVERHEAD;
      for (let frame = this.stream.pollDetour(now, maxBatch - size - FRAME_OVERHEAD, largest); frame; frame = this.stream.pollDetour(now, maxBatch - size - FRAME_OVERHEAD, largest)) {
        const encoded = encodeFrame(frame);
        size += FRAME_OVERHEAD + encoded.length;
        frames.push(encoded);
      }
      if (frames.length === 0) return;
      this.sendBatch(route, keys, pathDown, frames);
    }
    const ackDue = this.stream.detourTimeout();
    if (ackDue !== null) this.scheduleDetour(ackDue);
  }

  /** Tells the peer, on the detour's link, that this side's channel carries frames again: an empty batch. */
  tellPathBack() {
    const route = this.detourRoute;
    const keys = this.keys.current;
    if (!route || !keys || this.stream.peerSession === 0n) return;
    this.sendBatch(route, keys, false, []);
  }

  /**
   * Seals `frames` and sends them as one `detour` message on `route`.
   * @param {DetourRoute} route @param {import('./detour.js').DetourKeys} keys
   * @param {boolean} pathDown @param {Uint8Array[]} frames
   */
  sendBatch(route, keys, pathDown, frames) {
    this.toldPathDown = pathDown;
    // The counter is taken now, so concurrent seals never share a nonce.
    keys.seal(this.stream.session, this.stream.peerSession, pathDown, frames).then((sealed) => {
      if (this.detourRoute !== route || !route.send(toBase64(sealed))) {
        this.log('session: a detour batch did not go (the signaling link changed)');
        return;
      }
      this.counters.detourBatchesOut += 1;
    }, (error) => this.log(`session: a detour batch was not sealed: ${/** @type {Error} */ (error).message}`));
  }

  /** Wakes the pump at `at` for the detour. @param {number} at */
  scheduleDetour(at) {
    if (this.detourTimer) clearTimeout(this.detourTimer);
    this.detourTimer = setTimeout(() => {
      this.detourTimer = null;
      this.pump();
    }, Math.max(0, at - performance.now()));
  }

  /** Wakes the pump when an ack or a probe (MESSAGING.md rule 9) is due. */
  scheduleAck() {
    const due = this.stream.pollTimeout();
    // A held ack goes when the hold ends (hold pumps then).
    if (due === null || this.held()) return;
    if (this.ackTimer) {
      if (this.ackTimerDue <= due) return;
      clearTimeout(this.ackTimer);
    }
    this.ackTimerDue = due;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.pump();
    }, Math.max(0, due - performance.now()));
  }

  checkDeadlines() {
    for (const id of this.stream.withdrawExpired(performance.now())) {
      this.counters.withdrawn += 1;
      this.dispatchEvent(new CustomEvent('withdrawn', { detail: { id } }));
    }
  }
}

export { BufferFull };
