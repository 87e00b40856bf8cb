// One reliable, ordered message stream to one peer, across any number of data
// channels (docs/MESSAGING.md). A line-by-line port of
// crates/node/src/reliable/stream.rs: same rules, same counters, same errors.
//
// The channel may be unordered (tether's own channel is, so that a message
// lost below SCTP holds nothing else up): a Data frame ahead of the next one
// waits until the gap fills, and Data that overtook the peer's Hello on a new
// channel waits for the Hello. After an ICE restart, resendUnacknowledged()
// puts everything unacknowledged on the channel again, so that messages lost
// into the old path do not wait for SCTP's own retransmission timer. Messages
// that stay unacknowledged for a probe timeout (twice the round trip plus the
// peer's ack delay) go again, the two oldest at a time (MESSAGING.md rule 9).
//
// While the channel cannot carry frames, pollDetour gives what is due for the
// detour through signaling and handleDetour applies what came on it (rule 10).
//
// Sans-IO: frames in with handleFrame, frames out with pollTransmit, messages
// for the app with pollDelivery, confirmations with pollConfirmed, time (ms,
// any monotonic clock) as an argument. Sequence numbers are BigInt (u64).
//
// A message may carry a deadline: if it was never put on any channel when the
// deadline passes, it is withdrawn (and its sender told). A message that went
// out once is never withdrawn, since it may have arrived: it is replayed and
// deduplicated instead. Messages without a deadline wait as long as it takes.

/**
 * @typedef {import('./frame.js').Frame} Frame
 * @typedef {{maxBufferedMessages: number, maxBufferedBytes: number, ackEvery: number, ackDelayMs: number}} StreamConfig
 * @typedef {{id: number, payload: Uint8Array, deadline: number | null, firstSent: number | null, sentAgain: boolean}} Outgoing
 */

/** How many of the oldest unacknowledged messages one probe sends again. */
export const PROBE_FRAMES = 2;
/** The round trip a probe timeout assumes before the first sample (ms). */
const INITIAL_ROUND_TRIP_MS = 250;
/** Bounds of the probe timeout (ms). */
const PROBE_TIMEOUT_MIN_MS = 100;
const PROBE_TIMEOUT_MAX_MS = 2000;

/** @type {StreamConfig} */
export const DEFAULT_CONFIG = Object.freeze({
  maxBufferedMessages: 8192,
  maxBufferedBytes: 16 << 20,
  ackEvery: 32,
  ackDelayMs: 10,
});

/** The replay buffer is full: wait for acknowledgements. */
export class BufferFull extends Error {
  /** @param {number} messages @param {number} bytes */
  constructor(messages, bytes) {
    super(`the replay buffer is full (${messages} messages, ${bytes} bytes)`);
    this.name = 'BufferFull';
    this.messages = messages;
    this.bytes = bytes;
  }
}

/** A frame that breaks the protocol; the stream ignores it and stays consistent. */
export class StreamError extends Error {
  /** @param {'data_before_hello' | 'gap' | 'ack_beyond_sent' | 'not_on_detour'} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'StreamError';
    this.code = code;
  }
}

/** A random nonzero u64: this page's stream session (a reload is a new session). */
export function randomSession() {
  const words = new Uint32Array(2);
  for (;;) {
    crypto.getRandomValues(words);
    const session = (BigInt(words[0]) << 32n) | BigInt(words[1]);
    if (session !== 0n) return session;
  }
}

export class ReliableStream {
  /** @param {bigint} session nonzero @param {Partial<StreamConfig>} [config] */
  constructor(session, config = {}) {
    if (typeof session !== 'bigint' || session === 0n) throw new RangeError('session must be a nonzero BigInt');
    this.config = { ...DEFAULT_CONFIG, ...config };
    this.session = session;

    // Send side. unacked[i] has sequence number acked + 1 + i.
    this.nextId = 0;
    this.acked = 0n;
    /** @type {Outgoing[]} */
    this.unacked = [];
    this.unackedBytes = 0;
    /** The next sequence number to put on the current channel. */
    this.transmitNext = 1n;
    /** The highest sequence number ever put on any channel (or on the detour). */
    this.everSent = 0n;
    /** The next sequence number to carry on the detour (MESSAGING.md rule 10). */
    this.detourNext = 1n;
    /** @type {number[]} */
    this.confirmed = [];

    // Receive side.
    this.peerSession = 0n;
    this.delivered = 0n;
    /** @type {Uint8Array[]} */
    this.deliveries = [];
    this.acksOwed = 0;
    /** @type {number | null} */
    this.ackDue = null;
    /**
     * Data of `peerSession` that arrived ahead of `delivered + 1` (an
     * unordered channel), by sequence number; delivered
     * once the gap before it fills.
     * @type {Map<bigint, Uint8Array>}
     */
    this.early = new Map();
    this.earlyBytes = 0;
    /**
     * Data that arrived on this channel before the peer's Hello (an unordered
     * channel lets it overtake), by sequence number; applied right after the Hello.
     * @type {Map<bigint, Uint8Array>}
     */
    this.beforeHello = new Map();

    // Channel.
    this.channelOpen = false;
    this.helloOwed = false;
    /** Who says Hello first on this channel (see channelOpened). @type {'first' | 'after_peer'} */
    this.helloTurn = 'first';
    this.helloSeen = false;

    // Probes (MESSAGING.md rule 9).
    /** Smoothed round trip from sending a message to its acknowledgement (ms). @type {number | null} */
    this.roundTrip = null;
    /** When to probe. @type {number | null} */
    this.probeDue = null;
    this.probesUnanswered = 0;
    this.probeNext = 0n;
    this.probeLeft = 0;
    this.stats = { delivered: 0, duplicates: 0, replayed: 0, withdrawn: 0, detoured: 0 };
  }

  /**
   * Accepts `payload` for delivery and returns its message id; with a
   * `deadline`, it is withdrawn if still unsent then (see withdrawExpired).
   * @param {Uint8Array} payload @param {number | null} [deadline]
   * @throws {BufferFull} when the replay buffer has no room; nothing changed.
   */
  push(payload, deadline = null) {
    const full =
      this.unacked.length >= this.config.maxBufferedMessages ||
      (this.unackedBytes + payload.length > this.config.maxBufferedBytes && this.unacked.length > 0);
    if (full) throw new BufferFull(this.unacked.length, this.unackedBytes);
    this.nextId += 1;
    const id = this.nextId;
    this.unackedBytes += payload.length;
    this.unacked.push({ id, payload, deadline, firstSent: null, sentAgain: false });
    return id;
  }

  /**
   * A new channel to the peer is open: say Hello when it is this side's turn
   * (MESSAGING.md rule 1: the answerer first, at once; the offerer in answer
   * to each of the peer's Hellos), and replay everything not yet acknowledged
   * once the peer's Hello arrived.
   * @param {'first' | 'after_peer'} [turn]
   */
  channelOpened(turn = 'first') {
    this.channelOpen = true;
    this.helloTurn = turn;
    this.helloOwed = turn === 'first';
    this.helloSeen = false;
    this.beforeHello.clear();
    this.transmitNext = this.acked + 1n;
    this.stopProbing();
  }

  /**
   * Says Hello again on the current channel and replays everything not yet
   * acknowledged: for a Hello that never reached the peer, which then drops
   * our data as "data before hello" and sends none of its own. Harmless when
   * the first one did arrive: a repeated Hello changes nothing for the peer
   * (MESSAGING.md rule 2) and the replay comes back as duplicates it drops.
   * (Not in the Rust stream, which never needed it: see session.js.)
   */
  repeatHello() {
    if (!this.channelOpen || this.helloTurn !== 'first') return;
    this.helloOwed = true;
    this.transmitNext = this.acked + 1n;
  }

  /** The channel is gone; frames in flight on it may be lost. */
  channelClosed() {
    this.channelOpen = false;
    this.helloOwed = false;
    this.helloSeen = false;
    this.beforeHello.clear();
    this.acksOwed = 0;
    this.ackDue = null;
    this.stopProbing();
  }

  /**
   * The peer connection's path was replaced under the open channel (an ICE
   * restart completed): messages put on it before may have been lost into the
   * old path, where SCTP only sends them again when its own retransmission
   * timer fires. Sends every unacknowledged message again, in order, from the
   * first; the peer drops what it already has. Nothing happens before the
   * peer's Hello (the Hello replays anyway).
   */
  resendUnacknowledged() {
    if (this.channelOpen && this.helloSeen) {
      this.transmitNext = this.acked + 1n;
      // Everything goes again anyway; the next send arms a fresh probe.
      this.stopProbing();
    }
  }

  stopProbing() {
    this.probeDue = null;
    this.probesUnanswered = 0;
    this.probeLeft = 0;
  }

  /** Whether messages put on this channel wait for their acknowledgement. */
  outstanding() {
    return this.transmitNext > this.acked + 1n;
  }

  /** Twice the round trip plus the ack delay, doubled per unanswered probe, within bounds. */
  probeTimeout() {
    const roundTrip = this.roundTrip ?? INITIAL_ROUND_TRIP_MS;
    const base = Math.max(roundTrip * 2 + this.config.ackDelayMs, PROBE_TIMEOUT_MIN_MS);
    return Math.min(base * 2 ** Math.min(this.probesUnanswered, 8), PROBE_TIMEOUT_MAX_MS);
  }

  /** The peer showed progress: the probe timeout starts again. @param {number} now */
  progressed(now) {
    this.probesUnanswered = 0;
    this.probeDue = this.outstanding() ? now + this.probeTimeout() : null;
  }

  /**
   * Applies one frame from the peer.
   * @param {number} now @param {Frame} frame
   * @throws {StreamError} for a frame that breaks the protocol (it is ignored).
   */
  handleFrame(now, frame) {
    switch (frame.type) {
      case 'hello': {
        if (frame.session !== this.peerSession) {
          // A stream we have not seen: it starts where it says.
          this.peerSession = frame.session;
          this.delivered = frame.resumeFrom > 0n ? frame.resumeFrom - 1n : 0n;
          this.early.clear();
          this.earlyBytes = 0;
        }
        this.helloSeen = true;
        // The offerer speaks after the answerer: one Hello for each of its.
        if (this.helloTurn === 'after_peer' && this.channelOpen) this.helloOwed = true;
        this.progressed(now);
        if (frame.peerSession === this.session) {
          const delivered = frame.delivered < this.everSent ? frame.delivered : this.everSent;
          this.acknowledged(now, delivered);
        }
        const waiting = [...this.beforeHello].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        this.beforeHello.clear();
        for (const [seq, payload] of waiting) this.data(now, seq, payload);
        return;
      }
      case 'data': {
        if (!this.helloSeen) {
          // The peer sends Data only after its Hello; this one overtook it.
          // Until that Hello the peer sends at most one replay buffer's worth.
          const known = this.beforeHello.has(frame.seq);
          if (!known && this.beforeHello.size >= this.config.maxBufferedMessages) {
            throw new StreamError('data_before_hello', 'data before hello');
          }
          this.beforeHello.set(frame.seq, frame.payload);
          return;
        }
        this.data(now, frame.seq, frame.payload);
        return;
      }
      case 'ack':
        this.acknowledged(now, frame.delivered);
        return;
      case 'key':
        // A key share for the detour through signaling (MESSAGING.md rule 10): the session's
        // business (session.js, detour.js), not the stream's.
        return;
      default:
        throw new TypeError('not a frame');
    }
  }

  /**
   * Data of the peer's stream, in whatever order the channel brought it.
   * @param {number} now @param {bigint} seq @param {Uint8Array} payload
   * @throws {StreamError} `gap` for a frame further ahead than a sender's replay buffer can be.
   */
  data(now, seq, payload) {
    if (seq <= this.delivered || this.early.has(seq)) {
      this.stats.duplicates += 1;
      // Tell the sender again, so it stops replaying.
      this.acksOwed = Math.max(this.acksOwed, this.config.ackEvery);
      return;
    }
    if (seq !== this.delivered + 1n) {
      // Ahead of a gap (an unordered channel): wait for the gap to fill. A
      // sender holds at most its replay buffer unacknowledged, so nothing
      // further ahead can come.
      const tooFar = seq - this.delivered > BigInt(this.config.maxBufferedMessages);
      const tooMuch = this.earlyBytes + payload.length > this.config.maxBufferedBytes;
      if (tooFar || tooMuch) {
        throw new StreamError('gap', `gap: got seq ${seq}, expected ${this.delivered + 1n}`);
      }
      this.earlyBytes += payload.length;
      this.early.set(seq, payload);
      return;
    }
    this.deliver(now, seq, payload);
    for (let next = this.early.get(this.delivered + 1n); next !== undefined; next = this.early.get(this.delivered + 1n)) {
      this.early.delete(this.delivered + 1n);
      this.earlyBytes -= next.length;
      this.deliver(now, this.delivered + 1n, next);
    }
  }

  /**
   * Applies one frame that came on the detour through signaling (MESSAGING.md
   * rule 10). The caller checked that its sender is this stream's peerSession
   * and its receiver this session, so Data applies as on a channel after the Hello.
   * @param {number} now @param {Frame} frame
   * @throws {StreamError} for a frame that breaks the protocol (it is ignored).
   */
  handleDetour(now, frame) {
    switch (frame.type) {
      case 'data':
        this.data(now, frame.seq, frame.payload);
        return;
      case 'ack':
        this.acknowledged(now, frame.delivered);
        return;
      default:
        throw new StreamError('not_on_detour', `a ${frame.type} frame on the detour`);
    }
  }

  /** Whether an acknowledgement is due (as on a channel). @param {number} now */
  ackIsDue(now) {
    const timerFired = this.ackDue !== null && this.ackDue <= now;
    return this.acksOwed >= this.config.ackEvery || (this.acksOwed > 0 && timerFired);
  }

  /**
   * Whether pollDetour has something to carry: an Ack that is due, or a
   * message not yet carried whose frame is at most `largest` bytes.
   * @param {number} now @param {number} largest
   */
  detourDue(now, largest) {
    if (this.ackIsDue(now)) return true;
    const next = this.detourNext > this.acked + 1n ? this.detourNext : this.acked + 1n;
    return this.unacked.slice(Number(next - this.acked - 1n)).some((m) => 9 + m.payload.length <= largest);
  }

  /**
   * The next frame to carry on the detour while the channel cannot be used
   * (MESSAGING.md rule 10): an Ack when one is due, then each unacknowledged
   * message not yet carried there, in order. Null once the next frame's
   * encoding does not fit in `room` bytes; a message whose frame is larger
   * than `largest` is skipped for good (it waits for a channel).
   * @param {number} now @param {number} room @param {number} largest
   * @returns {Frame | null}
   */
  pollDetour(now, room, largest) {
    if (this.ackIsDue(now) && room >= 9) {
      this.acksOwed = 0;
      this.ackDue = null;
      return { type: 'ack', delivered: this.delivered };
    }
    if (this.detourNext < this.acked + 1n) this.detourNext = this.acked + 1n;
    for (;;) {
      const message = this.unacked[Number(this.detourNext - this.acked - 1n)];
      if (message === undefined) return null;
      const length = 9 + message.payload.length;
      if (length > largest) {
        this.detourNext += 1n;
        continue;
      }
      if (length > room) return null;
      // Its acknowledgement may answer a copy on either path: no round-trip sample.
      if (message.firstSent === null) message.firstSent = now;
      message.sentAgain = true;
      const seq = this.detourNext;
      this.detourNext += 1n;
      if (seq > this.everSent) this.everSent = seq;
      this.stats.detoured += 1;
      return { type: 'data', seq, payload: message.payload };
    }
  }

  /** When an acknowledgement is due on the detour, or null. */
  detourTimeout() {
    return this.acksOwed > 0 ? this.ackDue : null;
  }

  /** Makes every unacknowledged message eligible for the detour again. */
  restartDetour() {
    this.detourNext = this.acked + 1n;
  }

  /** @param {number} now @param {bigint} seq @param {Uint8Array} payload */
  deliver(now, seq, payload) {
    this.delivered = seq;
    this.stats.delivered += 1;
    this.deliveries.push(payload);
    this.acksOwed += 1;
    if (this.ackDue === null) this.ackDue = now + this.config.ackDelayMs;
  }

  /** @param {number} now @param {bigint} delivered */
  acknowledged(now, delivered) {
    if (delivered > this.everSent) {
      throw new StreamError('ack_beyond_sent', `ack for ${delivered} but only ${this.everSent} were sent`);
    }
    const before = this.acked;
    /** @type {Outgoing | undefined} */
    let newest;
    while (this.acked < delivered) {
      const message = this.unacked.shift();
      if (message === undefined) break;
      this.acked += 1n;
      this.unackedBytes -= message.payload.length;
      this.confirmed.push(message.id);
      newest = message;
    }
    if (this.transmitNext < this.acked + 1n) this.transmitNext = this.acked + 1n;
    if (this.probeNext < this.acked + 1n) this.probeNext = this.acked + 1n;
    if (this.acked === before) return;
    // A sample only from a message that went out once (Karn).
    if (newest && !newest.sentAgain && newest.firstSent !== null) {
      const sample = Math.max(0, now - newest.firstSent);
      this.roundTrip = this.roundTrip === null ? sample : (this.roundTrip * 7 + sample) / 8;
    }
    this.progressed(now);
  }

  /**
   * The next frame to put on the channel, or null. Control frames (Hello,
   * Ack) come first; data only once the peer's Hello arrived on this channel,
   * and only when `roomForData` (the channel is not congested).
   * @param {number} now @param {boolean} roomForData
   * @returns {Frame | null}
   */
  pollTransmit(now, roomForData) {
    if (!this.channelOpen) return null;
    if (this.helloOwed) {
      this.helloOwed = false;
      return {
        type: 'hello',
        session: this.session,
        resumeFrom: this.acked + 1n,
        peerSession: this.peerSession,
        delivered: this.delivered,
      };
    }
    if (this.ackIsDue(now)) {
      this.acksOwed = 0;
      this.ackDue = null;
      return { type: 'ack', delivered: this.delivered };
    }
    if (!roomForData || !this.maySendData()) return null;
    if (this.probeDue !== null && this.probeDue <= now) {
      this.probesUnanswered += 1;
      this.probeNext = this.acked + 1n;
      this.probeLeft = PROBE_FRAMES;
      this.probeDue = this.outstanding() ? now + this.probeTimeout() : null;
    }
    if (this.probeLeft > 0 && this.probeNext < this.transmitNext) {
      this.probeLeft -= 1;
      const seq = this.probeNext;
      this.probeNext += 1n;
      const message = this.unacked[Number(seq - this.acked - 1n)];
      if (message === undefined) return null;
      message.sentAgain = true;
      this.stats.replayed += 1;
      return { type: 'data', seq, payload: message.payload };
    }
    const index = Number(this.transmitNext - this.acked - 1n);
    const message = this.unacked[index];
    if (message === undefined) return null;
    if (message.firstSent !== null) message.sentAgain = true;
    else message.firstSent = now;
    const seq = this.transmitNext;
    this.transmitNext += 1n;
    if (seq <= this.everSent) this.stats.replayed += 1;
    if (seq > this.everSent) this.everSent = seq;
    if (this.probeDue === null) this.probeDue = now + this.probeTimeout();
    return { type: 'data', seq, payload: message.payload };
  }

  /** The next message for the app, in order, or null. @returns {Uint8Array | null} */
  pollDelivery() {
    return this.deliveries.shift() ?? null;
  }

  /** The id of the next message the peer acknowledged, or null. @returns {number | null} */
  pollConfirmed() {
    return this.confirmed.shift() ?? null;
  }

  /** When an acknowledgement or a probe is due (same clock as `now`), or null. */
  pollTimeout() {
    if (!this.channelOpen) return null;
    const due = [this.acksOwed > 0 ? this.ackDue : null, this.maySendData() ? this.probeDue : null];
    const set = due.filter((at) => at !== null);
    return set.length === 0 ? null : Math.min(...set);
  }

  /**
   * Withdraws every message whose deadline is at or before `now` and that was
   * never put on any channel, and returns their ids. Messages that went out
   * once stay: they may have arrived.
   * @param {number} now
   * @returns {number[]}
   */
  withdrawExpired(now) {
    const firstUnsent = Number(this.everSent > this.acked ? this.everSent - this.acked : 0n);
    /** @type {number[]} */
    const withdrawn = [];
    // Unsent messages have no sequence number on the wire yet, so removing
    // some renumbers the rest without anyone noticing.
    let index = firstUnsent;
    while (index < this.unacked.length) {
      const message = this.unacked[index];
      if (message.deadline !== null && message.deadline <= now) {
        this.unacked.splice(index, 1);
        this.unackedBytes -= message.payload.length;
        withdrawn.push(message.id);
      } else {
        index += 1;
      }
    }
    this.stats.withdrawn += withdrawn.length;
    return withdrawn;
  }

  /**
   * Ids of messages that went out at least once and are still unacknowledged.
   * @returns {number[]}
   */
  unconfirmedSent() {
    const sent = Number(this.everSent > this.acked ? this.everSent - this.acked : 0n);
    return this.unacked.slice(0, sent).map((m) => m.id);
  }

  /** Messages waiting for acknowledgement. */
  buffered() {
    return this.unacked.length;
  }

  /** Ends the stream and returns the ids of every message never acknowledged. */
  abandon() {
    const ids = this.unacked.map((m) => m.id);
    this.unacked = [];
    this.unackedBytes = 0;
    return ids;
  }

  /**
   * Whether Data may go on the channel (MESSAGING.md rule 3): the side that
   * says Hello first sends right after it; the other waits for the peer's
   * Hello (its side of the channel opens first, and a frame that reached the
   * peer's side before that existed would be dropped).
   */
  maySendData() {
    return this.helloSeen || this.helloTurn === 'first';
  }

  /** Whether the channel is open and the peer's Hello arrived. */
  isReady() {
    return this.channelOpen && this.helloSeen;
  }
}
