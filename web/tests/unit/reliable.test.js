// Reliable messaging over a channel that breaks at random: the same two-party
// stepper on a virtual clock as crates/node/tests/reliable.rs. Whatever breaks
// when, every accepted message is delivered exactly once and in order, or was
// withdrawn unsent and its sender told. The channel may reorder frames
// (tether's channel is unordered), lose a data frame or an ack (as SCTP does
// until its own timer fires, which this model never does: the stream's probes
// must recover), and either side may resend everything unacknowledged at any
// time (as after an ICE restart).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFrame, encodeFrame } from '../../frame.js';
import { BufferFull, ReliableStream, StreamError, randomSession } from '../../reliable.js';

/** A small seeded PRNG (mulberry32), so a failing case can be replayed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Side {
  constructor(session, config) {
    this.stream = new ReliableStream(session, config);
    /** @type {[number, number][]} */
    this.sent = [];
    this.nextPayload = 0;
    /** @type {number[]} */
    this.received = [];
    /** @type {number[]} */
    this.confirmed = [];
    this.withdrawn = new Set();
  }

  push(deadline) {
    this.nextPayload += 1;
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setBigUint64(0, BigInt(this.nextPayload));
    try {
      const id = this.stream.push(payload, deadline);
      this.sent.push([id, this.nextPayload]);
    } catch (error) {
      assert.ok(error instanceof BufferFull);
      this.nextPayload -= 1;
    }
  }

  drain() {
    for (let bytes = this.stream.pollDelivery(); bytes; bytes = this.stream.pollDelivery()) {
      this.received.push(Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0)));
    }
    for (let id = this.stream.pollConfirmed(); id !== null; id = this.stream.pollConfirmed()) {
      this.confirmed.push(id);
    }
  }
}

class Pair {
  constructor(config) {
    this.now = 1000;
    this.a = new Side(0xan, config);
    this.b = new Side(0xbn, config);
    /** @type {Uint8Array[]} */
    this.aToB = [];
    /** @type {Uint8Array[]} */
    this.bToA = [];
    this.up = false;
    /** @type {Uint8Array[]} frames B already took, to hand it again */
    this.seenByB = [];
  }

  static pump(side, queue, now, data) {
    for (let frame = side.stream.pollTransmit(now, data); frame; frame = side.stream.pollTransmit(now, data)) {
      queue.push(encodeFrame(frame));
    }
  }

  static lose(queue, index) {
    if (queue.length === 0) return;
    const at = index % queue.length;
    if (decodeFrame(queue[at]).type !== 'hello') queue.splice(at, 1);
  }

  static deliver(to, queue, count, now) {
    for (let i = 0; i < count; i++) {
      const bytes = queue.shift();
      if (!bytes) break;
      // Every frame on a live channel is well-formed and in protocol.
      to.stream.handleFrame(now, decodeFrame(bytes));
    }
    to.drain();
  }

  apply(op) {
    const now = this.now;
    switch (op.kind) {
      case 'pushA': return this.a.push(op.deadlineMs === null ? null : now + op.deadlineMs);
      case 'pushB': return this.b.push(null);
      case 'pumpA': return Pair.pump(this.a, this.aToB, now, op.data);
      case 'pumpB': return Pair.pump(this.b, this.bToA, now, op.data);
      case 'deliverToB':
        this.seenByB.push(...this.aToB.slice(0, op.n));
        return Pair.deliver(this.b, this.aToB, op.n, now);
      case 'duplicateToB':
        if (this.seenByB.length > 0 && this.up) {
          const copy = this.seenByB[op.index % this.seenByB.length];
          Pair.deliver(this.b, [copy], 1, now);
        }
        return undefined;
      case 'deliverToA': return Pair.deliver(this.a, this.bToA, op.n, now);
      case 'overtakeToB': {
        // One frame overtakes the others (an unordered channel).
        if (this.aToB.length === 0) return undefined;
        const [bytes] = this.aToB.splice(op.index % this.aToB.length, 1);
        this.seenByB.push(bytes);
        return Pair.deliver(this.b, [bytes], 1, now);
      }
      case 'overtakeToA': {
        if (this.bToA.length === 0) return undefined;
        const [bytes] = this.bToA.splice(op.index % this.bToA.length, 1);
        return Pair.deliver(this.a, [bytes], 1, now);
      }
      // A data frame or an ack in flight is lost (never a Hello: its repeats are tested on their own).
      case 'loseToB': return Pair.lose(this.aToB, op.index);
      case 'loseToA': return Pair.lose(this.bToA, op.index);
      // The path under the channel was replaced: resend everything unacknowledged.
      case 'resendA': return this.a.stream.resendUnacknowledged();
      case 'resendB': return this.b.stream.resendUnacknowledged();
      case 'break':
        // Whatever was in flight on the old channel is lost.
        this.aToB = [];
        this.bToA = [];
        this.a.stream.channelClosed();
        this.b.stream.channelClosed();
        this.up = false;
        this.seenByB = [];
        return undefined;
      case 'open':
        if (!this.up) {
          this.up = true;
          // A answers, B offers (MESSAGING.md rule 1).
          this.a.stream.channelOpened('first');
          this.b.stream.channelOpened('after_peer');
        }
        return undefined;
      case 'advance':
        this.now += op.ms;
        return undefined;
      case 'withdrawA':
        for (const id of this.a.stream.withdrawExpired(now)) this.a.withdrawn.add(id);
        return undefined;
      default:
        throw new Error(`unknown op ${op.kind}`);
    }
  }

  /** Opens the channel and runs until nothing moves. */
  settle() {
    this.apply({ kind: 'open' });
    for (let i = 0; i < 10000; i++) {
      const now = this.now;
      Pair.pump(this.a, this.aToB, now, true);
      Pair.pump(this.b, this.bToA, now, true);
      if (this.aToB.length === 0 && this.bToA.length === 0) {
        const timeouts = [this.a.stream.pollTimeout(), this.b.stream.pollTimeout()].filter((t) => t !== null);
        if (timeouts.length === 0) return;
        this.now = Math.max(this.now, Math.min(...timeouts));
        continue;
      }
      const ab = this.aToB.length;
      const ba = this.bToA.length;
      Pair.deliver(this.b, this.aToB, ab, now);
      Pair.deliver(this.a, this.bToA, ba, now);
    }
    throw new Error('the pair did not settle');
  }
}

/** The same weights as the Rust strategy. */
function randomOp(next) {
  const weights = [
    [6, () => ({ kind: 'pushA', deadlineMs: next() < 0.5 ? null : Math.floor(next() * 60) })],
    [3, () => ({ kind: 'pushB' })],
    [4, () => ({ kind: 'pumpA', data: next() < 0.5 })],
    [3, () => ({ kind: 'pumpB', data: next() < 0.5 })],
    [4, () => ({ kind: 'deliverToB', n: Math.floor(next() * 8) })],
    [3, () => ({ kind: 'deliverToA', n: Math.floor(next() * 8) })],
    [1, () => ({ kind: 'break' })],
    [2, () => ({ kind: 'open' })],
    [2, () => ({ kind: 'advance', ms: Math.floor(next() * 40) })],
    [1, () => ({ kind: 'withdrawA' })],
    [1, () => ({ kind: 'duplicateToB', index: Math.floor(next() * 1e9) })],
    [2, () => ({ kind: 'overtakeToB', index: Math.floor(next() * 1e9) })],
    [1, () => ({ kind: 'overtakeToA', index: Math.floor(next() * 1e9) })],
    [1, () => ({ kind: 'resendA' })],
    [1, () => ({ kind: 'resendB' })],
    [1, () => ({ kind: 'loseToB', index: Math.floor(next() * 1e9) })],
    [1, () => ({ kind: 'loseToA', index: Math.floor(next() * 1e9) })],
  ];
  const total = weights.reduce((sum, [w]) => sum + w, 0);
  let pick = next() * total;
  for (const [w, make] of weights) {
    if (pick < w) return make();
    pick -= w;
  }
  return weights[0][1]();
}

function checkSide(from, to, label) {
  const expected = from.sent.filter(([id]) => !from.withdrawn.has(id)).map(([, p]) => p);
  assert.deepEqual(to.received, expected, `${label}: delivered exactly once, in order`);
  const confirmed = new Set(from.confirmed);
  assert.equal(confirmed.size, from.confirmed.length, `${label}: a message confirmed twice`);
  for (const [id] of from.sent) {
    assert.ok(confirmed.has(id) !== from.withdrawn.has(id), `${label}: message ${id} must be either confirmed or withdrawn`);
  }
  assert.equal(from.stream.buffered(), 0, `${label}: replay buffer empty`);
}

test('nothing lost, nothing duplicated, whatever breaks when (512 seeded cases)', () => {
  const base = Number(process.env.RELIABLE_SEED ?? 20240601);
  for (let c = 0; c < 512; c++) {
    const seed = base + c;
    const next = rng(seed);
    const small = next() < 0.5;
    const config = small ? { maxBufferedMessages: 4, ackEvery: 2 } : {};
    const ops = Array.from({ length: Math.floor(next() * 300) }, () => randomOp(next));
    const pair = new Pair(config);
    try {
      for (const op of ops) pair.apply(op);
      pair.settle();
      checkSide(pair.a, pair.b, 'A to B');
      checkSide(pair.b, pair.a, 'B to A');
    } catch (error) {
      error.message = `seed ${seed} (RELIABLE_SEED=${seed} replays it first): ${error.message}`;
      throw error;
    }
  }
});

test('the answering side replays after a break only what the Hello says is missing', () => {
  const pair = new Pair({ ackEvery: 100 });
  pair.apply({ kind: 'open' });
  for (let i = 0; i < 5; i++) pair.apply({ kind: 'pushB' });
  pair.apply({ kind: 'pumpB', data: true }); // B (the offerer) waits for A's hello
  assert.equal(pair.bToA.length, 0, 'the offerer speaks second');
  pair.apply({ kind: 'pumpA', data: true }); // A's hello
  pair.apply({ kind: 'deliverToB', n: 1 });
  pair.apply({ kind: 'pumpB', data: true }); // B's hello, in answer, then five messages
  pair.apply({ kind: 'deliverToA', n: 4 }); // the hello and 3 messages arrive
  pair.apply({ kind: 'break' }); // two messages and every ack are lost
  pair.settle();
  assert.deepEqual(pair.a.received, [1, 2, 3, 4, 5]);
  assert.equal(pair.a.stream.stats.duplicates, 0, "A's Hello told B what A had");
  assert.equal(pair.b.stream.stats.replayed, 2);
  assert.equal(pair.b.confirmed.length, 5);
});

test('the side that says Hello first sends at once and its peer drops what it had', () => {
  const pair = new Pair({ ackEvery: 100 });
  pair.apply({ kind: 'open' });
  for (let i = 0; i < 5; i++) pair.apply({ kind: 'pushA', deadlineMs: null });
  pair.apply({ kind: 'pumpA', data: true }); // A (the answerer): its hello, then five messages
  assert.equal(pair.aToB.length, 6, 'the answerer does not wait for the offerer\'s hello');
  pair.apply({ kind: 'deliverToB', n: 4 }); // the hello and 3 messages arrive
  pair.apply({ kind: 'break' }); // two messages and every ack are lost
  pair.settle();
  assert.deepEqual(pair.b.received, [1, 2, 3, 4, 5]);
  // On the new channel A again sends everything unacknowledged at once, before
  // B's Hello could tell it what B has: B drops the three it had.
  assert.equal(pair.b.stream.stats.duplicates, 3);
  assert.equal(pair.a.stream.stats.replayed, 5);
  assert.equal(pair.a.confirmed.length, 5);
});

test('a duplicate is dropped and acknowledged at once', () => {
  const pair = new Pair({ ackEvery: 100 });
  pair.apply({ kind: 'open' });
  pair.apply({ kind: 'pushA', deadlineMs: null });
  pair.apply({ kind: 'pumpA', data: true }); // A's hello
  pair.apply({ kind: 'deliverToB', n: 1 });
  pair.apply({ kind: 'pumpB', data: true }); // B's hello, in answer
  pair.apply({ kind: 'deliverToA', n: 1 });
  pair.apply({ kind: 'pumpA', data: true });
  pair.apply({ kind: 'deliverToB', n: 1 });
  pair.apply({ kind: 'duplicateToB', index: 1 });
  assert.deepEqual(pair.b.received, [1]);
  assert.equal(pair.b.stream.stats.duplicates, 1);
  const ack = pair.b.stream.pollTransmit(pair.now, true);
  assert.deepEqual(ack, { type: 'ack', delivered: 1n }, 'ack owed at once after a duplicate');
});

test('the offerer says Hello only in answer to the answerer\'s', () => {
  const offerer = new ReliableStream(1n);
  const answerer = new ReliableStream(2n);
  offerer.push(new TextEncoder().encode('x'));
  offerer.channelOpened('after_peer');
  answerer.channelOpened('first');
  assert.equal(offerer.pollTransmit(0, true), null, 'silent until the answerer speaks');
  assert.equal(offerer.repeatHello(), undefined);
  assert.equal(offerer.pollTransmit(0, true), null, 'no repeats of its own');
  const hello = answerer.pollTransmit(0, true);
  assert.equal(hello?.type, 'hello');
  offerer.handleFrame(0, hello);
  assert.equal(offerer.pollTransmit(0, true)?.type, 'hello', 'answers the Hello');
  assert.equal(offerer.pollTransmit(0, true)?.type, 'data', 'then its data');
  offerer.handleFrame(0, hello);
  assert.equal(offerer.pollTransmit(0, true)?.type, 'hello', 'and every repeat of it');
});

test('a full buffer refuses and acks make room', () => {
  const stream = new ReliableStream(1n, { maxBufferedMessages: 2 });
  const now = 0;
  const bytes = (s) => new TextEncoder().encode(s);
  stream.push(bytes('a'));
  stream.push(bytes('b'));
  assert.throws(() => stream.push(bytes('c')), (error) => error instanceof BufferFull && error.messages === 2);
  stream.channelOpened();
  stream.handleFrame(now, { type: 'hello', session: 2n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  while (stream.pollTransmit(now, true)) { /* drain */ }
  stream.handleFrame(now, { type: 'ack', delivered: 1n });
  stream.push(bytes('c'));
  // An ack for what was never sent is a protocol error, and changes nothing.
  assert.throws(() => stream.handleFrame(now, { type: 'ack', delivered: 9n }), (e) => e instanceof StreamError && e.code === 'ack_beyond_sent');
  assert.equal(stream.buffered(), 2);
});

test('only unsent messages with a passed deadline are withdrawn', () => {
  const stream = new ReliableStream(1n);
  const t0 = 0;
  const bytes = (s) => new TextEncoder().encode(s);
  const deadline = t0 + 1000;
  const sent = stream.push(bytes('sent'), deadline);
  stream.channelOpened();
  stream.handleFrame(t0, { type: 'hello', session: 2n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  while (stream.pollTransmit(t0, true)) { /* drain */ }
  stream.channelClosed();
  const patient = stream.push(bytes('no deadline'));
  const unsent = stream.push(bytes('unsent'), deadline);
  const later = stream.push(bytes('later'), t0 + 9000);
  assert.deepEqual(stream.withdrawExpired(t0), [], 'nothing is due yet');
  assert.deepEqual(stream.withdrawExpired(t0 + 1000), [unsent]);
  assert.equal(stream.buffered(), 3);
  assert.deepEqual(stream.unconfirmedSent(), [sent]);
  assert.deepEqual(stream.abandon(), [sent, patient, later]);
});

test('protocol errors leave the stream as it was', () => {
  const stream = new ReliableStream(5n, { maxBufferedMessages: 4 });
  stream.channelOpened();
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  // Further ahead than a sender's replay buffer (4) can be: no sender sends it.
  assert.throws(() => stream.handleFrame(0, { type: 'data', seq: 6n, payload: new Uint8Array() }), (e) => e.code === 'gap');
  stream.handleFrame(0, { type: 'data', seq: 1n, payload: new Uint8Array([7]) });
  assert.deepEqual(stream.pollDelivery(), new Uint8Array([7]));
  assert.equal(stream.pollDelivery(), null);
  assert.equal(stream.delivered, 1n);
  assert.equal(stream.early.size, 0, 'the frame in error was not kept');
});

/** Data frame `seq` carrying the single byte `seq`. @param {number} seq */
function dataFrame(seq) {
  return { type: 'data', seq: BigInt(seq), payload: new Uint8Array([seq]) };
}

/** Everything `stream` delivered so far, as the byte each payload carries. @param {ReliableStream} stream */
function deliveredBytes(stream) {
  const out = [];
  for (let bytes = stream.pollDelivery(); bytes; bytes = stream.pollDelivery()) out.push(bytes[0]);
  return out;
}

test('an unordered channel: frames ahead of a gap wait for it, then go in order, once', () => {
  const stream = new ReliableStream(5n, { ackEvery: 100 });
  stream.channelOpened();
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  stream.handleFrame(0, dataFrame(3));
  stream.handleFrame(0, dataFrame(2));
  assert.deepEqual(deliveredBytes(stream), [], 'nothing before 1');
  assert.equal(stream.delivered, 0n);
  stream.handleFrame(0, dataFrame(3)); // a copy of one that waits: a duplicate
  assert.equal(stream.stats.duplicates, 1);
  stream.handleFrame(0, dataFrame(1));
  assert.deepEqual(deliveredBytes(stream), [1, 2, 3]);
  assert.equal(stream.delivered, 3n);
  stream.handleFrame(0, dataFrame(5));
  stream.handleFrame(0, dataFrame(4));
  assert.deepEqual(deliveredBytes(stream), [4, 5]);
  assert.equal(stream.stats.delivered, 5);
  assert.equal(stream.early.size, 0);
  assert.equal(stream.earlyBytes, 0);
});

test('an unordered channel: the wait is bounded by the replay buffer, in messages and bytes', () => {
  const stream = new ReliableStream(5n, { maxBufferedMessages: 4, maxBufferedBytes: 2 });
  stream.channelOpened();
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  stream.handleFrame(0, dataFrame(4)); // 4 ahead of 0: the most a sender may have out
  assert.throws(() => stream.handleFrame(0, dataFrame(5)), (e) => e instanceof StreamError && e.code === 'gap');
  stream.handleFrame(0, dataFrame(3));
  // Two bytes wait already: a third is more than a sender's buffer holds.
  assert.throws(() => stream.handleFrame(0, dataFrame(2)), (e) => e.code === 'gap');
  stream.handleFrame(0, dataFrame(1));
  stream.handleFrame(0, dataFrame(2));
  assert.deepEqual(deliveredBytes(stream), [1, 2, 3, 4]);
  // Once delivered, the window moves on.
  stream.handleFrame(0, dataFrame(8));
  stream.handleFrame(0, dataFrame(5));
  assert.deepEqual(deliveredBytes(stream), [5]);
});

test('data that overtook the Hello is applied right after it; the wait is bounded', () => {
  const stream = new ReliableStream(5n, { maxBufferedMessages: 3 });
  stream.channelOpened();
  stream.handleFrame(0, dataFrame(3));
  stream.handleFrame(0, dataFrame(2));
  stream.handleFrame(0, dataFrame(2)); // the same again: still one of three
  stream.handleFrame(0, dataFrame(4));
  assert.throws(() => stream.handleFrame(0, dataFrame(5)), (e) => e.code === 'data_before_hello');
  assert.deepEqual(deliveredBytes(stream), []);
  // The Hello resumes at 2: 2, 3 and 4 are delivered in order, 1 never came.
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 2n, peerSession: 0n, delivered: 0n });
  assert.deepEqual(deliveredBytes(stream), [2, 3, 4]);
  assert.equal(stream.delivered, 4n);
  // What overtook the Hello of a channel that closed is not applied on the next one.
  stream.channelClosed();
  stream.channelOpened();
  stream.handleFrame(0, dataFrame(6));
  stream.channelClosed();
  stream.channelOpened();
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 5n, peerSession: 5n, delivered: 0n });
  stream.handleFrame(0, dataFrame(5));
  assert.deepEqual(deliveredBytes(stream), [5]);
  assert.equal(stream.early.size, 0);
});

test('a Hello of a new session drops what waited for a gap of the old one', () => {
  const stream = new ReliableStream(5n);
  stream.channelOpened();
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  stream.handleFrame(0, dataFrame(2));
  stream.channelClosed();
  stream.channelOpened();
  // The peer reloaded: its new stream has a seq 2 of its own.
  stream.handleFrame(0, { type: 'hello', session: 10n, resumeFrom: 1n, peerSession: 5n, delivered: 0n });
  stream.handleFrame(0, { type: 'data', seq: 1n, payload: new Uint8Array([21]) });
  stream.handleFrame(0, { type: 'data', seq: 2n, payload: new Uint8Array([22]) });
  assert.deepEqual(deliveredBytes(stream), [21, 22]);
});

/** Every frame `from` has to send now. @param {ReliableStream} from */
function frames(from) {
  const out = [];
  for (let f = from.pollTransmit(0, true); f; f = from.pollTransmit(0, true)) out.push(f);
  return out;
}

test('after an ICE restart everything unacknowledged goes again, and the receiver drops what it had', () => {
  const a = new ReliableStream(5n, { ackEvery: 100 });
  const b = new ReliableStream(9n, { ackEvery: 100 });
  a.channelOpened();
  b.channelOpened();
  // Nothing to resend before the peer's Hello (the Hello replays anyway).
  a.resendUnacknowledged();
  for (const f of frames(a)) b.handleFrame(0, f);
  for (const f of frames(b)) a.handleFrame(0, f);
  for (let i = 1; i <= 3; i++) a.push(new Uint8Array([i]));
  const first = frames(a);
  assert.deepEqual(first.map((f) => f.type), ['data', 'data', 'data']);
  // Only the first reaches b; the others are lost into the old path.
  b.handleFrame(0, first[0]);
  assert.deepEqual(frames(a), [], 'nothing more to send');
  a.resendUnacknowledged();
  const again = frames(a);
  assert.deepEqual(again.map((f) => f.seq), [1n, 2n, 3n], 'everything unacknowledged, from the first');
  for (const f of again) b.handleFrame(0, f);
  assert.deepEqual(deliveredBytes(b), [1, 2, 3], 'each once');
  assert.equal(b.stats.duplicates, 1);
  assert.equal(a.stats.replayed, 3);
  // The ack b owes now goes at once, and a has nothing left to resend.
  const [ack] = frames(b);
  assert.deepEqual(ack, { type: 'ack', delivered: 3n });
  a.handleFrame(0, ack);
  a.resendUnacknowledged();
  assert.deepEqual(frames(a), []);
});

test('a peer that restarted is a new stream; one that resumed is not', () => {
  const stream = new ReliableStream(5n);
  stream.channelOpened();
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  stream.handleFrame(0, { type: 'data', seq: 1n, payload: new Uint8Array([1]) });
  stream.channelClosed();
  stream.channelOpened();
  // Same session resuming at 1 again: what was delivered stays delivered.
  stream.handleFrame(0, { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 5n, delivered: 0n });
  assert.equal(stream.delivered, 1n);
  stream.channelClosed();
  stream.channelOpened();
  // A new session (the peer's page reloaded) starts where it says.
  stream.handleFrame(0, { type: 'hello', session: 10n, resumeFrom: 4n, peerSession: 5n, delivered: 0n });
  assert.equal(stream.peerSession, 10n);
  assert.equal(stream.delivered, 3n);
});

test('sessions are random, nonzero and u64', () => {
  const seen = new Set();
  for (let i = 0; i < 100; i++) {
    const s = randomSession();
    assert.ok(s > 0n && s < 1n << 64n);
    seen.add(s);
  }
  assert.equal(seen.size, 100);
  assert.throws(() => new ReliableStream(0n), RangeError);
});

test('a lost Hello: the peer keeps data until a repeated Hello, then gets everything once', () => {
  const a = new ReliableStream(5n);
  const b = new ReliableStream(9n);
  a.channelOpened();
  b.channelOpened();
  const helloOfA = frames(a);
  assert.deepEqual(helloOfA.map((f) => f.type), ['hello']); // lost on the way
  for (const f of frames(b)) a.handleFrame(0, f); // b's Hello arrives
  a.push(new Uint8Array([1]));
  a.push(new Uint8Array([2]));
  const early = frames(a);
  assert.deepEqual(early.map((f) => f.type), ['data', 'data']);
  // b never saw a's Hello: it keeps a's data for it, delivers nothing yet
  // (and so sends none of its own).
  b.handleFrame(0, early[0]);
  assert.equal(b.pollDelivery(), null);
  assert.equal(b.pollTransmit(0, true)?.type, undefined);
  a.repeatHello();
  const again = frames(a);
  assert.deepEqual(again.map((f) => f.type), ['hello', 'data', 'data'], 'Hello, then the replay');
  for (const f of again) b.handleFrame(0, f);
  // The second data frame of the first try arrives late: a duplicate, dropped.
  b.handleFrame(0, early[1]);
  assert.deepEqual([b.pollDelivery(), b.pollDelivery(), b.pollDelivery()], [new Uint8Array([1]), new Uint8Array([2]), null]);
  assert.equal(b.stats.duplicates, 2, 'the kept 1 went first: the replayed 1 and the late 2 are copies');
  // A repeated Hello that was not needed changes nothing for the peer.
  a.repeatHello();
  for (const f of frames(a)) b.handleFrame(0, f);
  assert.equal(b.delivered, 2n);
  assert.equal(b.pollDelivery(), null);
  // Nothing to repeat on a closed channel.
  a.channelClosed();
  a.repeatHello();
  assert.equal(a.pollTransmit(0, true), null);
});

test('a lost message goes again after the probe timeout (MESSAGING.md rule 9)', () => {
  const stream = new ReliableStream(1n);
  const ackDelay = stream.config.ackDelayMs;
  const t0 = 1000;
  stream.channelOpened('first');
  stream.handleFrame(t0, { type: 'hello', session: 2n, resumeFrom: 1n, peerSession: 0n, delivered: 0n });
  while (stream.pollTransmit(t0, true)) { /* the Hello */ }
  // One message, acknowledged 100 ms later: the round trip.
  stream.push(new Uint8Array([1]));
  assert.equal(stream.pollTransmit(t0, true)?.seq, 1n);
  const t1 = t0 + 100;
  stream.handleFrame(t1, { type: 'ack', delivered: 1n });
  assert.equal(stream.pollTimeout(), null, 'nothing outstanding, nothing to probe');
  // Three more go out at t1; the peer never acknowledges them.
  for (const byte of [2, 3, 4]) stream.push(new Uint8Array([byte]));
  let sent = 0;
  while (stream.pollTransmit(t1, true)) sent += 1;
  assert.equal(sent, 3);
  const probeAt = t1 + 200 + ackDelay;
  assert.equal(stream.pollTimeout(), probeAt);
  assert.equal(stream.pollTransmit(probeAt - 1, true), null, 'not before the timeout');
  const seqs = [];
  for (let frame = stream.pollTransmit(probeAt, true); frame; frame = stream.pollTransmit(probeAt, true)) {
    if (frame.type === 'data') seqs.push(frame.seq);
  }
  assert.deepEqual(seqs, [2n, 3n], 'the oldest two go again, and nothing else');
  assert.equal(stream.stats.replayed, 2);
  // Unanswered: the next probe waits twice as long.
  const second = probeAt + (200 + ackDelay) * 2;
  assert.equal(stream.pollTimeout(), second);
  // The peer acknowledges everything: no more probes.
  stream.handleFrame(second - 5, { type: 'ack', delivered: 4n });
  assert.equal(stream.pollTransmit(second, true), null);
  assert.equal(stream.pollTimeout(), null);
});

test('a key share for the detour is the session\'s business: the stream ignores it', () => {
  const pair = new Pair({ ackEvery: 100 });
  pair.apply({ kind: 'open' });
  pair.apply({ kind: 'pumpA', data: true }); // A's hello
  pair.apply({ kind: 'deliverToB', n: 1 });
  const before = JSON.stringify(pair.b.stream, (_, v) => (typeof v === 'bigint' ? `${v}` : v));
  const key = decodeFrame(encodeFrame({ type: 'key', publicKey: new Uint8Array(65).fill(4) }));
  pair.b.stream.handleFrame(pair.now, key);
  const after = JSON.stringify(pair.b.stream, (_, v) => (typeof v === 'bigint' ? `${v}` : v));
  assert.equal(after, before);
  assert.deepEqual(pair.b.stream.pollTransmit(pair.now, true)?.type, 'hello', 'B still answers');
});
