// Byte-exact frame vectors shared with the Rust implementation
// (crates/cli/src/serve/web.rs checks the same file against tether::reliable::Frame).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decodeFrame, encodeFrame, FrameError } from '../../frame.js';

const vectors = JSON.parse(readFileSync(new URL('../vectors/frames.json', import.meta.url), 'utf8'));
const fromHex = (/** @type {string} */ hex) => Uint8Array.from(Buffer.from(hex, 'hex'));

/** @param {Record<string, string>} json */
function frameFromJson(json) {
  switch (json.type) {
    case 'hello':
      return {
        type: 'hello',
        session: BigInt(json.session),
        resumeFrom: BigInt(json.resume_from),
        peerSession: BigInt(json.peer_session),
        delivered: BigInt(json.delivered),
      };
    case 'data':
      return { type: 'data', seq: BigInt(json.seq), payload: fromHex(json.payload) };
    case 'ack':
      return { type: 'ack', delivered: BigInt(json.delivered) };
    case 'key':
      return { type: 'key', publicKey: fromHex(json.public_key) };
    default:
      throw new Error(`unknown vector type ${json.type}`);
  }
}

test('there are vectors of every kind', () => {
  const kinds = new Set(vectors.frames.map((/** @type {any} */ v) => v.frame.type));
  assert.deepEqual([...kinds].sort(), ['ack', 'data', 'hello', 'key']);
  assert.ok(vectors.bad.length >= 10);
});

test('frames encode byte for byte like the Rust Frame::encode', () => {
  for (const vector of vectors.frames) {
    const encoded = Buffer.from(encodeFrame(frameFromJson(vector.frame))).toString('hex');
    assert.equal(encoded, vector.hex, JSON.stringify(vector.frame));
  }
});

test('frames decode to what was encoded', () => {
  for (const vector of vectors.frames) {
    const bytes = fromHex(vector.hex);
    assert.deepEqual(decodeFrame(bytes), frameFromJson(vector.frame));
    // From an ArrayBuffer (what a data channel hands over) and from a view
    // into a larger buffer.
    assert.deepEqual(decodeFrame(bytes.slice().buffer), frameFromJson(vector.frame));
    const padded = new Uint8Array(bytes.length + 5);
    padded.set(bytes, 3);
    assert.deepEqual(decodeFrame(padded.subarray(3, 3 + bytes.length)), frameFromJson(vector.frame));
  }
});

test('bad frames get a FrameError naming the problem, never anything else', () => {
  for (const vector of vectors.bad) {
    assert.throws(
      () => decodeFrame(fromHex(vector.hex)),
      (/** @type {unknown} */ error) => error instanceof FrameError && error.code === vector.error,
      `${vector.hex} should be ${vector.error}`,
    );
  }
  assert.throws(() => decodeFrame(/** @type {any} */ ('text')), FrameError);
  assert.throws(() => decodeFrame(/** @type {any} */ (null)), FrameError);
});

test('random bytes never make the decoder throw anything but FrameError', () => {
  let seed = 12345;
  const next = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  for (let i = 0; i < 5000; i++) {
    const bytes = new Uint8Array(next() % 40);
    for (let j = 0; j < bytes.length; j++) bytes[j] = next() & 0xff;
    if (bytes.length > 0) bytes[0] = next() % 5;
    try {
      decodeFrame(bytes);
    } catch (error) {
      assert.ok(error instanceof FrameError, String(error));
    }
  }
});

test('encoding refuses values that are not u64', () => {
  assert.throws(() => encodeFrame({ type: 'ack', delivered: -1n }), RangeError);
  assert.throws(() => encodeFrame({ type: 'ack', delivered: 1n << 64n }), RangeError);
  assert.throws(() => encodeFrame(/** @type {any} */ ({ type: 'ack', delivered: 1 })), RangeError);
});
