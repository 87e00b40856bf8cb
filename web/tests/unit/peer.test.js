// The page's negotiation (peer.js) against a scripted remote, with a fake
// RTCPeerConnection: exactly what a Rust node would see on the wire, and
// what the page does with what a Rust node sends (crates/rtc/src/peer.rs).
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFrame, encodeFrame } from '../../frame.js';
import { PeerLink } from '../../peer.js';
import { parseOrigin, rejection, tagAnswer, tagOffer, untag } from '../../sdp.js';
import { MessageSession } from '../../session.js';

let nextSession = 1000;

class FakeChannel {
  /** @param {string} label @param {any} [init] */
  constructor(label, init = {}) {
    this.label = label;
    this.init = init;
    this.readyState = 'connecting';
    this.binaryType = 'blob';
    this.bufferedAmount = 0;
    /** @type {null | (() => void)} */ this.onopen = null;
    /** @type {null | (() => void)} */ this.onclose = null;
    /** @type {null | ((event: {data: ArrayBuffer}) => void)} */ this.onmessage = null;
    /** @type {Uint8Array[]} what the page put on the channel */
    this.sent = [];
    /** Empty "ready" messages sent. */
    this.readySent = 0;
  }

  /** @param {Uint8Array | ArrayBuffer} bytes */
  send(bytes) {
    if (this.readyState !== 'open') throw new Error('the channel is not open');
    if (bytes instanceof ArrayBuffer) {
      // Only the empty "ready" message is sent as a bare buffer (NEGOTIATION.md §3).
      if (bytes.byteLength !== 0) throw new Error('frames go as Uint8Array');
      this.readySent += 1;
      return;
    }
    this.sent.push(bytes);
  }

  close() { this.readyState = 'closed'; }

  /** The frames the page sent since the last call, decoded. */
  takeFrames() {
    const frames = this.sent.map((bytes) => decodeFrame(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)));
    this.sent = [];
    return frames;
  }

  /** A frame from the remote. @param {import('../../frame.js').Frame} frame */
  receive(frame) {
    const bytes = encodeFrame(frame);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
  }
}

/** Enough of RTCPeerConnection for negotiation; SDP is minimal but shaped like a browser's. */
class FakePC {
  /** @type {FakePC[]} */
  static all = [];

  constructor() {
    this.session = String(nextSession++);
    this.version = 1;
    this.ufrag = 0;
    this.localDescription = null;
    this.remoteDescription = null;
    this.connectionState = 'new';
    this.iceConnectionState = 'new';
    this.signalingState = 'stable';
    /** @type {any[]} */ this.candidates = [];
    /** @type {FakeChannel[]} */ this.channels = [];
    this.closed = false;
    /** @type {any} */ this.ondatachannel = null;
    FakePC.all.push(this);
  }

  /** @param {string} type */
  sdp(type) {
    this.version += 1;
    this.ufrag += 1;
    return {
      type,
      sdp: `v=0\r\no=- ${this.session} ${this.version} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n`
        + `a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:u${this.ufrag}\r\na=mid:0\r\n`,
    };
  }

  /** @param {string} label @param {any} [init] */
  createDataChannel(label, init) {
    const channel = new FakeChannel(label, init);
    this.channels.push(channel);
    return channel;
  }

  async createOffer() { return this.sdp('offer'); }
  async createAnswer() { return this.sdp('answer'); }

  /** @param {any} description */
  async setLocalDescription(description) {
    if (description.type === 'rollback') {
      this.signalingState = 'stable';
      return;
    }
    this.localDescription = description;
    this.signalingState = description.type === 'offer' ? 'have-local-offer' : 'stable';
  }

  /** @param {any} description */
  async setRemoteDescription(description) {
    if (description.sdp.includes('x-tether')) throw new Error('tether attributes reached the browser');
    if (!description.sdp.includes('m=application')) throw new Error('no application section');
    this.remoteDescription = description;
    this.signalingState = description.type === 'offer' ? 'have-remote-offer' : 'stable';
  }

  /** @param {any} candidate */
  async addIceCandidate(candidate) {
    if (!this.remoteDescription) throw new Error('no remote description');
    this.candidates.push(candidate);
  }

  async getStats() { return new Map(); }

  close() { this.closed = true; this.connectionState = 'closed'; }
}

/** @type {any[]} */
let sent;
/** @type {PeerLink[]} */
let links;
/** @type {MessageSession[]} */
let sessions = [];

beforeEach(() => {
  clock = 0;
  sent = [];
  links = [];
  FakePC.all = [];
  /** @type {any} */ (globalThis).RTCPeerConnection = FakePC;
});

afterEach(async () => {
  for (const link of links) await link.close();
  for (const session of sessions) session.close();
  sessions = [];
});

/** The budgets' clock (ms): tests move it forward by hand. */
let clock = 0;

/** A started link, registered, with the remote present. @param {string} local @param {string} remote */
async function link(local, remote) {
  const peer = new PeerLink({
    now: () => clock,
    localId: local,
    remoteId: remote,
    signal: (payload) => {
      sent.push(payload);
      return true;
    },
    connectTimeoutMs: 60000,
    restartTimeoutMs: 60000,
  });
  links.push(peer);
  peer.setSignaling(true);
  peer.setRemotePresent(true);
  peer.start();
  await peer.queue;
  return peer;
}

/** Takes what the page sent since the last call. */
function take() {
  const out = sent;
  sent = [];
  return out;
}

/** The offer id an offer message carries. @param {any} msg */
function offerIdOf(msg) {
  const { tags, sdp } = untag(msg.sdp);
  return { origin: parseOrigin(sdp), seq: tags.seq };
}

/**
 * An answer to an offer message from `pc`, naming it as today's Rust node
 * does (session id and version), or with the seq as well (P1).
 * @param {any} msg @param {FakePC} pc
 */
function answerTo(msg, pc, withSeq = false) {
  const offer = offerIdOf(msg);
  return { type: 'answer', sdp: tagAnswer(pc.sdp('answer').sdp, withSeq ? offer : { ...offer, seq: null }) };
}

/** A remote offer as a Rust node tags it. */
function rustOffer(/** @type {string} */ session, /** @type {number} */ version, /** @type {number} */ seq, restart = false) {
  const sdp = `v=0\r\no=- ${session} ${version} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n`;
  return { type: 'offer', from: 'remote', sdp: tagOffer(sdp, seq, restart) };
}

/** An SDP of the remote's stack with a DTLS fingerprint. @param {string} session @param {number} version @param {string} fingerprint */
function withFingerprint(session, version, fingerprint) {
  return `v=0\r\no=- ${session} ${version} IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n`
    + `m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:x${version}\r\na=fingerprint:sha-256 ${fingerprint}\r\na=mid:0\r\n`;
}

/** Opens the data channel of `pc` on a connected peer connection. @param {FakePC} pc */
function connect(pc) {
  const any = /** @type {any} */ (pc);
  pc.connectionState = 'connected';
  any.onconnectionstatechange?.();
  const channel = pc.channels[0];
  if (channel) {
    channel.readyState = 'open';
    channel.onopen?.();
  }
}

test('offerer: numbered offers, answers matched by name, restarts marked', async () => {
  const peer = await link('a-web', 'node');
  assert.equal(peer.role, 'offerer');
  const [offer] = take();
  assert.equal(offer.type, 'offer');
  const { tags, sdp } = untag(offer.sdp);
  assert.equal(tags.seq, 1n);
  assert.equal(tags.iceRestart, false);
  assert.match(offer.sdp, /a=x-tether-seq:1\r\nm=application/, 'a session-level attribute');
  const origin = parseOrigin(sdp);
  const pc = FakePC.all[0];
  // An answer naming some other offer is dropped: another version without a
  // seq (as today's Rust node names offers), or another seq (P1).
  const answer = pc.sdp('answer').sdp;
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(answer, { origin: { id: origin.id, version: origin.version + 5n }, seq: null }) });
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(answer, { origin, seq: 7n }) });
  assert.equal(pc.remoteDescription, null);
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(answer, { origin, seq: null }) });
  assert.equal(pc.remoteDescription?.sdp, answer, 'applied without the tether attributes');
  // A late duplicate of that answer names no outstanding offer: ignored.
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(answer, { origin, seq: 1n }) });
  await peer.restartIce();
  const [restart] = take();
  const restartTags = untag(restart.sdp).tags;
  assert.equal(restartTags.seq, 2n);
  assert.equal(restartTags.iceRestart, true);
  assert.match(restart.sdp, /a=x-tether-seq:2\r\na=x-tether-ice-restart\r\nm=/);
  // An untagged answer (a peer that is not tether) is matched to the outstanding offer.
  await peer.handleSignal({ type: 'answer', sdp: pc.sdp('answer').sdp });
  assert.equal(peer.counters.restartsApplied, 1);
  assert.equal(peer.status().generation, 1);
});

test('offerer: a refusal of an unknown session builds a new peer connection', async () => {
  const peer = await link('a-web', 'node');
  const [first] = take();
  await peer.handleSignal(answerTo(first, FakePC.all[0]));
  await peer.restartIce();
  const [restart] = take();
  const restartId = offerIdOf(restart);
  // A refusal naming another offer is stale: ignored.
  await peer.handleSignal({ type: 'answer', sdp: rejection({ origin: { id: 'other', version: 1n }, seq: null }, 'unknown-session') });
  assert.equal(peer.status().generation, 1);
  await peer.handleSignal({ type: 'answer', sdp: rejection(restartId, 'unknown-session') });
  assert.ok(FakePC.all[0].closed, 'the old peer connection is closed');
  const [offer] = take();
  assert.equal(peer.status().generation, 2);
  assert.notEqual(offerIdOf(offer).origin.id, restartId.origin.id, 'a new session');
  assert.equal(untag(offer.sdp).tags.iceRestart, false);
  assert.equal(untag(offer.sdp).tags.seq, 3n, 'numbers keep growing across peer connections');
  // A `failed` refusal closes without retrying at once.
  await peer.handleSignal({ type: 'answer', sdp: rejection(offerIdOf(offer), 'failed') });
  assert.ok(FakePC.all[1].closed);
  assert.equal(peer.status().state, 'closed');
});

test('offerer: bye before the first answer is about an older connection; ice_restart re-sends that offer', async () => {
  const peer = await link('a-web', 'node');
  const [offer] = take();
  await peer.handleSignal({ type: 'bye' });
  assert.equal(FakePC.all[0].closed, false);
  // The first offer answers this request: it is re-sent unchanged (P2), not superseded.
  clock = 1500;
  await peer.handleSignal({ type: 'ice_restart' });
  const [again] = take();
  assert.equal(again?.type, 'offer');
  assert.deepEqual(offerIdOf(again), offerIdOf(offer));
  assert.equal(untag(again.sdp).tags.iceRestart, false);
  // Asked again at once: a re-send goes at most once a second.
  await peer.handleSignal({ type: 'ice_restart' });
  assert.deepEqual(take(), []);
  assert.equal(FakePC.all.length, 1);
  await peer.handleSignal(answerTo(offer, FakePC.all[0]));
  await peer.handleSignal({ type: 'bye' });
  assert.ok(FakePC.all[0].closed);
  // Asked again: a new peer connection and its offer.
  await peer.handleSignal({ type: 'ice_restart' });
  const [next] = take();
  assert.equal(next.type, 'offer');
  assert.equal(peer.status().generation, 2);
  assert.equal(peer.counters.offersSent, 2);
});

test('offerer: one outstanding offer; requests while it is out re-send it (P2, P3)', async () => {
  const peer = await link('a-web', 'node');
  const [first] = take();
  // A restart asked for while the first offer is out is that offer: nothing
  // is queued behind it.
  await peer.restartIce();
  assert.deepEqual(take(), [], 'a re-send within a second of the offer waits');
  await peer.handleSignal(answerTo(first, FakePC.all[0], true));
  assert.deepEqual(take(), [], 'no second offer after the answer');
  assert.equal(peer.counters.offersSent, 1);
  // A restart offer, then the answerer asks: the same offer again.
  clock = 5000;
  await peer.restartIce();
  const [restart] = take();
  assert.equal(untag(restart.sdp).tags.seq, 2n);
  clock = 6500;
  await peer.handleSignal({ type: 'ice_restart' });
  const [again] = take();
  assert.deepEqual(offerIdOf(again), offerIdOf(restart));
  assert.equal(untag(again.sdp).tags.iceRestart, true, 'with its marker');
  clock = 8000;
  await peer.restartIce();
  assert.deepEqual(offerIdOf(take()[0]), offerIdOf(restart), 'our own restart request too');
  assert.equal(peer.counters.offersSent, 2);
  // Its answer (naming the seq) ends it; the next request is a new offer.
  await peer.handleSignal(answerTo(restart, FakePC.all[0], true));
  assert.equal(peer.counters.restartsApplied, 1);
  clock = 9500;
  await peer.handleSignal({ type: 'ice_restart' });
  assert.equal(untag(take()[0].sdp).tags.seq, 3n);
});

test('peer_joined re-sends what is outstanding and never starts a new offer (P4)', async () => {
  const offerer = await link('a-web', 'node');
  const [first] = take();
  await offerer.handleSignal(answerTo(first, FakePC.all[0]));
  connect(FakePC.all[0]);
  assert.ok(offerer.healthy());
  offerer.setRemotePresent(true, true);
  await offerer.queue;
  assert.deepEqual(take(), [], 'healthy: nothing');
  clock = 3000;
  await offerer.restartIce();
  const [restart] = take();
  clock = 4500;
  offerer.setRemotePresent(true, true);
  await offerer.queue;
  const [again] = take();
  assert.deepEqual(offerIdOf(again), offerIdOf(restart), 'the outstanding offer, unchanged');
  assert.equal(offerer.counters.offersSent, 2);
  await offerer.close();
  take();

  const answerer = await link('web', 'a-node');
  assert.deepEqual(take().map((m) => m.type), ['bye', 'ice_restart']);
  answerer.setRemotePresent(true, true);
  await answerer.queue;
  // No pc yet: that is a connect (§11.2 first rule), bye and ice_restart again.
  assert.deepEqual(take().map((m) => m.type), ['bye', 'ice_restart']);
  await answerer.handleSignal(rustOffer('40', 1, 1));
  assert.equal(take()[0].type, 'answer');
  // Waiting for the offer of an ICE restart: ask again, no bye.
  await answerer.restartIce();
  assert.deepEqual(take().map((m) => m.type), ['ice_restart']);
  answerer.setRemotePresent(true, true);
  await answerer.queue;
  assert.deepEqual(take().map((m) => m.type), ['ice_restart']);
  await answerer.handleSignal(rustOffer('40', 1, 2, true));
  assert.equal(take()[0].type, 'answer');
  connect(FakePC.all[1]);
  answerer.setRemotePresent(true, true);
  await answerer.queue;
  assert.deepEqual(take(), [], 'an offer applied, nothing outstanding: nothing');
});

test('offer budget: a burst of four, then one per 2 s; the newest deferred offer goes (P6)', async () => {
  const peer = await link('a-web', 'node');
  take();
  for (let i = 0; i < 5; i++) await peer.replace();
  assert.equal(take().filter((m) => m.type === 'offer').length, 3, 'four offers in all, the first one included');
  assert.equal(peer.counters.deferred, 2);
  assert.equal(FakePC.all.length, 4);
  clock = 2000;
  peer.sending.flush('offer');
  await peer.queue;
  const sentNow = take();
  assert.deepEqual(sentNow.map((m) => m.type), ['offer'], 'one deferred offer, not two');
  assert.equal(untag(sentNow[0].sdp).tags.seq, 5n);
  assert.equal(FakePC.all.length, 5);
});

test('answerer: offers beyond the budget wait, duplicates within a second are dropped (P6)', async () => {
  const peer = await link('web', 'a-node');
  take();
  await peer.handleSignal(rustOffer('1', 1, 1));
  // Its duplicate right after the answer: the answer is on the way.
  await peer.handleSignal(rustOffer('1', 1, 1));
  assert.deepEqual(take().map((m) => m.type), ['answer']);
  clock = 1000;
  await peer.handleSignal(rustOffer('1', 1, 1));
  assert.deepEqual(take().map((m) => m.type), ['answer'], 'a second later it is answered again');
  for (const session of ['2', '3', '4', '5', '6']) await peer.handleSignal(rustOffer(session, 1, 1));
  assert.deepEqual(take().map((m) => untag(m.sdp).tags.answers?.origin.id), ['2', '3', '4'], 'four new offers in all');
  clock = 2000;
  peer.receiving.flush('offer');
  await peer.queue;
  assert.deepEqual(take().map((m) => untag(m.sdp).tags.answers?.origin.id), ['6'], 'only the newest deferred offer');
});

test('a restart answered by a new peer connection (another fingerprint) is a replacement (P7)', async () => {
  const peer = await link('a-web', 'node');
  const [first] = take();
  const pc = FakePC.all[0];
  const firstId = offerIdOf(first);
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(withFingerprint('9', 1, 'AA:BB'), firstId) });
  await peer.restartIce();
  const [restart] = take();
  // Same identity, hex in another case: the restart is applied.
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(withFingerprint('9', 2, 'aa:bb'), offerIdOf(restart)) });
  assert.equal(peer.counters.restartsApplied, 1);
  clock = 3000;
  await peer.restartIce();
  const [second] = take();
  await peer.handleSignal({ type: 'answer', sdp: tagAnswer(withFingerprint('10', 1, 'CC:DD'), offerIdOf(second)) });
  assert.equal(peer.counters.restartsApplied, 1, 'not applied');
  assert.ok(pc.closed, 'ours is retired');
  const out = take();
  assert.deepEqual(out.map((m) => m.type), ['offer'], 'a new-session offer, no bye');
  assert.equal(untag(out[0].sdp).tags.iceRestart, false);
  assert.equal(peer.status().generation, 2);
});

test('answerer: a renegotiation with another fingerprint is a new session (P7)', async () => {
  const peer = await link('web', 'a-node');
  take();
  await peer.handleSignal({ type: 'offer', sdp: tagOffer(withFingerprint('70', 1, 'AA:BB'), 1n, false) });
  assert.equal(take()[0].type, 'answer');
  await peer.handleSignal({ type: 'offer', sdp: tagOffer(withFingerprint('70', 2, 'aa:bb'), 2n, true) });
  assert.equal(take()[0].type, 'answer');
  assert.equal(peer.counters.restartsApplied, 1);
  // The same session id with another DTLS identity, marked as a restart:
  // refused as a session this side does not have.
  await peer.handleSignal({ type: 'offer', sdp: tagOffer(withFingerprint('70', 3, 'CC:DD'), 3n, true) });
  assert.deepEqual(take(), [
    { type: 'answer', sdp: 'a=x-tether-offer:70 3 3\r\na=x-tether-reject:unknown-session\r\n' },
    { type: 'ice_restart' },
  ]);
  assert.ok(FakePC.all[0].closed);
});

test('answerer: asks for an offer, answers naming it, classifies the next ones', async () => {
  const peer = await link('web', 'a-node');
  assert.equal(peer.role, 'answerer');
  assert.deepEqual(take().map((m) => m.type), ['bye', 'ice_restart'], 'from scratch: bye, then ask');
  await peer.handleSignal(rustOffer('77', 5, 1));
  const [answer] = take();
  assert.equal(answer.type, 'answer');
  assert.match(answer.sdp, /a=x-tether-offer:77 5 1\r\nm=application/, 'naming the offer with its seq (P1)');
  assert.equal(untag(answer.sdp).tags.answers?.origin.id, '77');
  assert.equal(FakePC.all.length, 1);
  // The same offer again (a retransmission) a second later: the same answer again.
  clock = 1000;
  await peer.handleSignal(rustOffer('77', 5, 1));
  assert.deepEqual(take(), [answer]);
  // An older one: ignored. A newer one of the same session: an ICE restart.
  await peer.handleSignal(rustOffer('77', 4, 0));
  assert.deepEqual(take(), []);
  await peer.handleSignal(rustOffer('77', 3, 2, true)); // versions may go down; the number decides
  const [restartAnswer] = take();
  assert.match(restartAnswer.sdp, /a=x-tether-offer:77 3 2\r\n/);
  assert.equal(peer.counters.restartsApplied, 1);
  assert.equal(FakePC.all.length, 1, 'same peer connection');
  // A new session of the offerer: a new peer connection here too.
  await peer.handleSignal(rustOffer('78', 1, 1));
  assert.equal(FakePC.all.length, 2);
  assert.ok(FakePC.all[0].closed);
  assert.match(take()[0].sdp, /a=x-tether-offer:78 1 1\r\n/);
});

test('answerer: refuses restarts of unknown sessions and offers it cannot take', async () => {
  const peer = await link('web', 'a-node');
  take();
  await peer.handleSignal(rustOffer('90', 2, 7, true));
  assert.deepEqual(take(), [
    { type: 'answer', sdp: 'a=x-tether-offer:90 2 7\r\na=x-tether-reject:unknown-session\r\n' },
    { type: 'ice_restart' },
  ]);
  assert.equal(FakePC.all.length, 0, 'nothing built for it');
  // No o= line: dropped, nothing said.
  await peer.handleSignal({ type: 'offer', sdp: 'not sdp' });
  assert.deepEqual(take(), []);
  // Well-formed origin, unusable body: refused as failed.
  await peer.handleSignal({ type: 'offer', sdp: 'v=0\r\no=- 91 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=x-tether-seq:1\r\n' });
  assert.deepEqual(take(), [{ type: 'answer', sdp: 'a=x-tether-offer:91 1 1\r\na=x-tether-reject:failed\r\n' }]);
  assert.ok(FakePC.all[0].closed);
  // An unnumbered offer (not a tether offerer) is named without a seq.
  await peer.handleSignal({ type: 'offer', sdp: 'v=0\r\no=- 92 4 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n' });
  assert.deepEqual(take(), [{ type: 'answer', sdp: 'a=x-tether-offer:92 4\r\na=x-tether-reject:failed\r\n' }]);
  // Messages for the other role are ignored.
  await peer.handleSignal({ type: 'answer', sdp: 'v=0' });
  await peer.handleSignal({ type: 'ice_restart' });
  assert.deepEqual(take(), []);
});

test('candidates from webrtc-rs (empty mid) use the m-line index', async () => {
  const peer = await link('web', 'a-node');
  take();
  const candidate = 'candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host';
  // Before any offer: they belong to an older peer connection of the remote.
  await peer.handleSignal({ type: 'candidate', candidate: candidate.replace('5000', '4999'), sdp_mid: '', sdp_mline_index: 0 });
  await peer.handleSignal(rustOffer('55', 1, 1));
  await peer.handleSignal({ type: 'candidate', candidate, sdp_mid: '', sdp_mline_index: 0 });
  await peer.handleSignal({ type: 'candidate', candidate: '', sdp_mid: null, sdp_mline_index: null }); // end
  await peer.handleSignal({ type: 'candidate', candidate: candidate.replace('5000', '5001'), sdp_mid: '0', sdp_mline_index: null });
  await peer.handleSignal({ type: 'candidate', candidate: candidate.replace('5000', '5002'), sdp_mid: null, sdp_mline_index: null });
  assert.deepEqual(FakePC.all[0].candidates, [
    { candidate, sdpMid: null, sdpMLineIndex: 0 },
    { candidate: candidate.replace('5000', '5001'), sdpMid: '0', sdpMLineIndex: null },
    { candidate: candidate.replace('5000', '5002'), sdpMid: null, sdpMLineIndex: 0 },
  ]);
});

test('candidates that come before the answer wait for it', async () => {
  const peer = await link('a-web', 'node');
  const [offer] = take();
  const candidate = 'candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host';
  await peer.handleSignal({ type: 'candidate', candidate, sdp_mid: '', sdp_mline_index: 0 });
  await peer.handleSignal({ type: 'candidate', candidate, sdp_mid: '', sdp_mline_index: 0 }); // duplicate
  assert.deepEqual(FakePC.all[0].candidates, []);
  await peer.handleSignal(answerTo(offer, FakePC.all[0]));
  assert.deepEqual(FakePC.all[0].candidates, [{ candidate, sdpMid: null, sdpMLineIndex: 0 }]);
});

test('local candidates go out as the protocol has them, end of candidates once', async () => {
  const peer = await link('a-web', 'node');
  take();
  const pc = /** @type {any} */ (FakePC.all[0]);
  pc.onicecandidate({ candidate: { candidate: 'candidate:9 1 udp 1 192.0.2.2 6000 typ host generation 0 ufrag u1', sdpMid: '0', sdpMLineIndex: 0 } });
  pc.onicecandidate({ candidate: null });
  pc.onicecandidate({ candidate: { candidate: '', sdpMid: '0', sdpMLineIndex: 0 } });
  assert.deepEqual(take(), [
    { type: 'candidate', candidate: 'candidate:9 1 udp 1 192.0.2.2 6000 typ host generation 0 ufrag u1', sdp_mid: '0', sdp_mline_index: 0 },
    { type: 'candidate', candidate: '', sdp_mid: null, sdp_mline_index: null },
  ]);
  assert.equal(peer.counters.candidatesSent, 1);
});

test('answerer: a replacement says bye and asks for a fresh offer', async () => {
  const peer = await link('web', 'a-node');
  take();
  await peer.handleSignal(rustOffer('60', 1, 1));
  take();
  await peer.replace();
  assert.deepEqual(take().map((m) => m.type), ['bye', 'ice_restart']);
  assert.ok(FakePC.all[0].closed);
  // The offerer's restart of the session this side just dropped is refused.
  await peer.handleSignal(rustOffer('60', 2, 2, true));
  assert.equal(take()[0].sdp, 'a=x-tether-offer:60 2 2\r\na=x-tether-reject:unknown-session\r\n');
});

test('answerer: a late copy of a session it retired on its own is stale once a newer session was taken (§6.1)', async () => {
  const peer = await link('web', 'a-node');
  take();
  await peer.handleSignal(rustOffer('60', 1, 1));
  take();
  await peer.replace();
  take();
  // Until another session is taken, the retired one may still be re-sent by
  // an offerer whose answer got lost: it is taken again.
  await peer.handleSignal(rustOffer('60', 1, 1));
  assert.equal(FakePC.all.length, 2);
  take();
  // The offerer's next session replaces it ...
  await peer.handleSignal(rustOffer('61', 1, 2));
  assert.equal(FakePC.all.length, 3);
  take();
  // ... so a copy of the old one arriving late is dropped, not a fourth pc.
  await peer.handleSignal(rustOffer('60', 1, 1));
  assert.deepEqual(take(), []);
  assert.equal(FakePC.all.length, 3);
  assert.ok(!FakePC.all[2].closed, 'the newer peer connection stays');
});

test('both roles create the channel with the pc, negotiated out of band and unordered; in-band ones are closed (§3)', async () => {
  const expected = { negotiated: true, id: 0, ordered: false };
  await link('a-web', 'node');
  const offerPc = FakePC.all[0];
  assert.equal(offerPc.channels.length, 1, 'before the first offer');
  assert.equal(offerPc.channels[0].label, 'tether');
  assert.deepEqual(offerPc.channels[0].init, expected, 'fully reliable: no maxRetransmits nor maxPacketLifeTime');
  const answering = await link('web', 'a-node');
  take();
  await answering.handleSignal(rustOffer('77', 5, 1));
  const answerPc = FakePC.all[1];
  assert.equal(answerPc.channels.length, 1, 'the answerer creates its own');
  assert.deepEqual(answerPc.channels[0].init, expected);
  // A channel announced in-band is not ours, whatever its label: closed, never watched.
  for (const pc of [offerPc, answerPc]) {
    const announced = new FakeChannel('tether');
    announced.readyState = 'open';
    /** @type {any} */ (pc).ondatachannel({ channel: announced });
    assert.equal(announced.readyState, 'closed');
    assert.equal(announced.onopen, null);
  }
  connect(answerPc);
  assert.equal(answering.status().channelOpen, true, 'its own channel opened');
});

/** Polls `condition` every 10 ms until it holds, failing after 5 s. @param {() => boolean} condition @param {string} what */
async function until(condition, what) {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A connected link of `role` with a MessageSession on its channel, the remote's Hello seen. @param {'offerer' | 'answerer'} role */
async function linkWithSession(role) {
  const peer = role === 'offerer' ? await link('a-web', 'node') : await link('web', 'a-node');
  if (role === 'offerer') {
    const [offer] = take();
    await peer.handleSignal(answerTo(offer, FakePC.all[0]));
  } else {
    take();
    await peer.handleSignal(rustOffer('77', 5, 1));
    take();
  }
  const pc = FakePC.all[0];
  const session = new MessageSession({ session: 5n });
  sessions.push(session);
  session.follow(peer);
  connect(pc);
  const channel = pc.channels[0];
  const hello = { type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 5n, delivered: 0n };
  if (role === 'offerer') {
    // The offerer speaks second (MESSAGING.md rule 1).
    assert.equal(channel.readySent, 0);
    assert.deepEqual(channel.takeFrames(), [], 'silent until the answerer says Hello');
    channel.receive(hello);
    assert.deepEqual(channel.takeFrames().map((f) => f.type), ['hello']);
  } else {
    assert.equal(channel.readySent, 1, 'the answerer announces its side first');
    assert.deepEqual(channel.takeFrames().map((f) => f.type), ['hello']);
    channel.receive(hello);
  }
  // The key share for the detour follows the Hello, once WebCrypto made it (MESSAGING.md rule 10).
  await until(() => channel.sent.length > 0, 'the key share');
  const [key] = channel.takeFrames();
  assert.equal(key.type, 'key');
  assert.equal(key.type === 'key' && key.publicKey.length, 65);
  return { peer, pc, session, channel };
}

test('an ICE restart holds data and acks; its completion resends everything unacknowledged', async () => {
  const { peer, pc, session, channel } = await linkWithSession('offerer');
  session.send('one');
  assert.deepEqual(channel.takeFrames().map((f) => f.type), ['data']);
  // The offerer starts a restart: held from the restart offer on.
  await peer.restartIce();
  const [restartOffer] = take();
  assert.equal(untag(restartOffer.sdp).tags.iceRestart, true);
  assert.equal(peer.status().dataHeld, true);
  session.send('two');
  channel.receive({ type: 'data', seq: 1n, payload: new TextEncoder().encode('hi') });
  channel.receive({ type: 'data', seq: 1n, payload: new TextEncoder().encode('hi') }); // a copy: an ack is owed at once
  assert.deepEqual(channel.takeFrames(), [], 'neither data nor acks while held');
  // Answered; ICE connects on the new credentials: released.
  await peer.handleSignal(answerTo(restartOffer, pc));
  assert.equal(peer.status().dataHeld, true, 'still held until ICE works again');
  pc.iceConnectionState = 'connected';
  await until(() => !peer.status().dataHeld, 'the release');
  assert.equal(peer.counters.restartsCompleted, 1);
  const frames = channel.takeFrames();
  assert.deepEqual(frames.map((f) => (f.type === 'data' ? `data ${f.seq}` : f.type)), ['ack', 'data 1', 'data 2'],
    'the owed ack, then everything unacknowledged from the first');
  // Acknowledged: nothing goes again on the next release.
  channel.receive({ type: 'ack', delivered: 2n });
  session.hold(1, true);
  session.hold(1, false);
  assert.deepEqual(channel.takeFrames(), []);
});

test('answerer: applying a restart offer holds data until ICE is connected again; a new pc is not held', async () => {
  const { peer, pc, session, channel } = await linkWithSession('answerer');
  const /** @type {any} */ anyPc = pc;
  await peer.handleSignal(rustOffer('77', 6, 2, true));
  assert.equal(take()[0].type, 'answer');
  assert.equal(peer.status().dataHeld, true);
  session.send('one');
  assert.deepEqual(channel.takeFrames(), []);
  // The pc went through disconnected and is connected again.
  pc.connectionState = 'disconnected';
  anyPc.onconnectionstatechange();
  pc.connectionState = 'connected';
  anyPc.onconnectionstatechange();
  assert.equal(peer.status().dataHeld, false);
  assert.deepEqual(channel.takeFrames().map((f) => f.type), ['data']);
  // Held again, then the offerer starts over with a new session: the new pc's channel is not held.
  await peer.handleSignal(rustOffer('77', 7, 3, true));
  assert.equal(peer.status().dataHeld, true);
  await peer.handleSignal(rustOffer('78', 1, 4));
  assert.equal(peer.status().dataHeld, false);
  const next = FakePC.all[1];
  connect(next);
  next.channels[0].receive({ type: 'hello', session: 9n, resumeFrom: 1n, peerSession: 5n, delivered: 0n });
  assert.deepEqual(next.channels[0].takeFrames().map((f) => f.type), ['hello', 'data'], 'the replay goes on the new channel');
});

test('answerer: a register that asked for the ICE restart sends none itself; the offer it asked for is taken (§11.4)', async () => {
  const { peer, pc } = await linkWithSession('answerer');
  const /** @type {any} */ anyPc = pc;
  take();
  assert.equal(peer.restartToAsk(), false, 'a healthy pc with nothing in flight is left alone');
  // The network changes: signaling goes and the pc with it.
  peer.setSignaling(false);
  pc.connectionState = 'disconnected';
  anyPc.onconnectionstatechange();
  await peer.queue;
  assert.equal(peer.restartToAsk(), true);
  // Registered again, and the server says it asked the offerer: no ice_restart from here.
  peer.setSignaling(true, true);
  await peer.queue;
  assert.deepEqual(take(), []);
  assert.equal(peer.counters.restartRequestsInRegister, 1);
  await peer.handleSignal(rustOffer('77', 6, 2, true));
  assert.equal(take()[0].type, 'answer');
  assert.equal(peer.counters.restartsApplied, 1);
  // A server that did not ask (an older one): the page asks itself.
  peer.setSignaling(false);
  peer.setSignaling(true, false);
  await peer.queue;
  assert.deepEqual(take().map((m) => m.type), ['ice_restart']);
});

test('while a channel is held, two sessions carry the stream on the sealed detour, exactly once (MESSAGING.md rule 10)', async () => {
  const answerer = new MessageSession();
  const offerer = new MessageSession();
  const [toOfferer, toAnswerer] = [new FakeChannel('tether'), new FakeChannel('tether')];
  toOfferer.readyState = 'open';
  toAnswerer.readyState = 'open';
  /** Delivers what each side put on its channel to the other, until both are quiet. */
  const shuttle = () => {
    for (let moved = true; moved;) {
      moved = false;
      for (const [from, to] of [[toOfferer, toAnswerer], [toAnswerer, toOfferer]]) {
        for (const frame of from.takeFrames()) {
          to.receive(frame);
          moved = true;
        }
      }
    }
  };
  /** @type {string[][]} */
  const relayed = [[], []];
  /** @param {number} index */
  const route = (index) => ({ generation: 1, maxFrameBytes: 65536, send: (/** @type {string} */ sealed) => relayed[index].push(sealed) > 0 });
  answerer.setDetourRoute(route(0));
  offerer.setDetourRoute(route(1));
  offerer.attach(/** @type {any} */ (toAnswerer), 1, 'after_peer');
  answerer.attach(/** @type {any} */ (toOfferer), 1, 'first');
  /** @type {string[]} */
  const received = [];
  offerer.addEventListener('message', (event) => received.push(/** @type {CustomEvent} */ (event).detail.text));
  await until(() => {
    shuttle();
    return answerer.keys.agreed() && offerer.keys.agreed();
  }, 'both sides agreed keys');
  assert.deepEqual(relayed, [[], []], 'nothing needs the detour while the channel works');

  // The answerer's path is being replaced: its frames are held, and take the detour.
  answerer.hold(1, true);
  answerer.send('one');
  answerer.send('two');
  await until(() => relayed[0].length > 0, 'a detour batch');
  assert.deepEqual(toOfferer.takeFrames(), [], 'nothing on the held channel');
  for (const sealed of relayed[0].splice(0)) await offerer.onDetour(sealed);
  assert.deepEqual(received, ['one', 'two']);
  assert.equal(answerer.stream.stats.detoured, 2);
  // The offerer heard the answerer's path is down: its acknowledgement takes the detour too.
  await until(() => relayed[1].length > 0, 'the acknowledgement on the detour');
  for (const sealed of relayed[1].splice(0)) await answerer.onDetour(sealed);
  assert.equal(answerer.stream.buffered(), 0, 'acknowledged through the detour');

  // A batch that does not open, or comes from another stream session, is dropped.
  await offerer.onDetour('AAAA');
  assert.equal(offerer.counters.detourDropped, 1);
  assert.equal(offerer.peerDetouring, true, 'the answerer said its path is down');
  // The hold ends: nothing unacknowledged is left to resend, nothing arrives twice, and a last
  // batch on the detour's link says the answerer's path is back (whatever the channel brings first).
  answerer.hold(1, false);
  await until(() => relayed[0].length > 0, 'the path-back batch');
  for (const sealed of relayed[0].splice(0)) await offerer.onDetour(sealed);
  assert.equal(offerer.peerDetouring, false);
  shuttle();
  assert.deepEqual(received, ['one', 'two']);
  answerer.close();
  offerer.close();
});
