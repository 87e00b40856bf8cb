// The detour's sealing (docs/MESSAGING.md rule 10) against the vectors the Rust
// implementation checks too (crates/node/src/reliable/detour.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DetourKeys, PeerKeys, fromBase64, toBase64 } from '../../detour.js';
import { encodeFrame } from '../../frame.js';

const vectors = JSON.parse(readFileSync(new URL('../vectors/detour.json', import.meta.url), 'utf8'));
const fromHex = (/** @type {string} */ hex) => Uint8Array.from(Buffer.from(hex, 'hex'));
const toHex = (/** @type {Uint8Array} */ bytes) => Buffer.from(bytes).toString('hex');

test('batches seal and open byte for byte like the Rust implementation', async () => {
  const shared = fromHex(vectors.shared_secret);
  const [a, b] = [fromHex(vectors.public_a), fromHex(vectors.public_b)];
  const keysA = await DetourKeys.derive(shared, a, b);
  const keysB = await DetourKeys.derive(shared, b, a);
  assert.ok(vectors.batches.length >= 3);
  for (const batch of vectors.batches) {
    const [sealer, opener] = batch.from === 'a' ? [keysA, keysB] : [keysB, keysA];
    assert.equal(sealer.counter, BigInt(batch.counter));
    const frames = batch.frames.map(fromHex);
    const sealed = await sealer.seal(BigInt(batch.sender_session), BigInt(batch.receiver_session), batch.path_down, frames);
    assert.equal(toHex(sealed), batch.sealed);
    const opened = await opener.open(sealed);
    assert.equal(opened.pathDown, batch.path_down);
    assert.equal(opened.senderSession, BigInt(batch.sender_session));
    assert.deepEqual(opened.frames.map((f) => toHex(encodeFrame(f))), batch.frames);
  }
  for (const bad of vectors.bad) {
    await assert.rejects(keysB.open(fromHex(bad.sealed)), bad.why);
  }
});

test('two sides agree on a channel and a repeated share changes nothing', async () => {
  const [alice, bob] = [new PeerKeys(), new PeerKeys()];
  alice.channelOpened();
  bob.channelOpened();
  await alice.ready;
  const aliceShare = /** @type {Uint8Array} */ (alice.public);
  assert.equal(aliceShare.length, 65);
  // Bob's own share may not exist yet: the agreement waits for it.
  assert.equal(await bob.peerShare(aliceShare), true);
  const bobShare = /** @type {Uint8Array} */ (bob.public);
  assert.equal(await alice.peerShare(bobShare), true);
  assert.equal(await alice.peerShare(bobShare), false, 'a repeat');
  const frame = encodeFrame({ type: 'ack', delivered: 4n });
  const sealed = await /** @type {DetourKeys} */ (alice.current).seal(1n, 2n, true, [frame]);
  const opened = await bob.open(fromBase64(toBase64(sealed)) ?? new Uint8Array());
  assert.deepEqual(opened.frames, [{ type: 'ack', delivered: 4n }]);
  // A new channel: until both agreed again, the previous keys still open.
  await Promise.all([alice.channelOpened(), bob.channelOpened()]);
  assert.equal(await alice.peerShare(/** @type {Uint8Array} */ (bob.public)), true);
  const early = await /** @type {DetourKeys} */ (alice.current).seal(1n, 2n, false, [frame]);
  await assert.rejects(bob.open(early), 'bob has not agreed the new keys yet');
  assert.equal(await bob.peerShare(/** @type {Uint8Array} */ (alice.public)), true);
  assert.equal((await bob.open(early)).pathDown, false);
  assert.equal(fromBase64('not base64!'), null);
});
