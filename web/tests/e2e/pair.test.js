// Two browser peers in real Chromium, talking through `tether serve`:
// connect, exchange messages both ways, then break things (signaling loss,
// ICE restarts and new peer connections from either side, frames lost in
// flight, malformed input) and check that every message arrives exactly
// once, in order.
//
// "alice" < "bob": alice offers, bob answers (both create the data channel,
// negotiated out of band).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifactsDir, batch, launchChromium, openPeer, received, saveLog, send, startServe, status, waitAllConfirmed,
  waitFor, waitReady, waitReceived,
} from './harness.js';

/** @type {Awaited<ReturnType<typeof startServe>>} */
let server;
/** @type {Awaited<ReturnType<typeof launchChromium>>} */
let browser;
/** @type {Awaited<ReturnType<typeof openPeer>>} */
let alice;
/** @type {Awaited<ReturnType<typeof openPeer>>} */
let bob;
/** What each side sent so far, in order: what the other must have received. */
const sentBy = { alice: /** @type {string[]} */ ([]), bob: /** @type {string[]} */ ([]) };

/** Sends from `who`, remembering what went out. */
async function say(/** @type {'alice' | 'bob'} */ who, /** @type {string[]} */ texts) {
  const peer = who === 'alice' ? alice : bob;
  const ids = await send(peer, texts);
  assert.equal(ids.length, texts.length);
  sentBy[who].push(...texts);
}

/** Each page's stream counters at the last check. */
const seen = { alice: { duplicates: 0, replayed: 0, detoured: 0 }, bob: { duplicates: 0, replayed: 0, detoured: 0 } };

/**
 * Every message sent so far arrived exactly once, in order, both ways, and
 * was confirmed. A copy reaches a stream (and is dropped) only when the
 * other side sent a message again on purpose: after an ICE restart (rule 8),
 * on a new channel, or as a probe (rule 9), or on the detour through
 * signaling as well as a channel (rule 10). So each page drops at most as
 * many copies, since the last check, as the other page sent again or detoured.
 */
async function checkExactlyOnce() {
  await waitReceived(bob, sentBy.alice.length);
  await waitReceived(alice, sentBy.bob.length);
  await waitAllConfirmed(alice);
  await waitAllConfirmed(bob);
  assert.deepEqual(await received(bob), sentBy.alice, 'bob got every message of alice once, in order');
  assert.deepEqual(await received(alice), sentBy.bob, 'alice got every message of bob once, in order');
  const stats = { alice: (await status(alice)).session, bob: (await status(bob)).session };
  for (const [name, other] of /** @type {const} */ ([['alice', 'bob'], ['bob', 'alice']])) {
    const copies = stats[name].stats.duplicates - seen[name].duplicates;
    const allowed = stats[other].stats.replayed + stats[other].stats.detoured - seen[other].replayed - seen[other].detoured;
    assert.ok(copies <= allowed, `${name}: ${copies} duplicates reached the stream; ${other} sent only ${allowed} again or detoured`);
    assert.equal(stats[name].counters.withdrawn, 0, `${name}: nothing withdrawn`);
  }
  for (const name of /** @type {const} */ (['alice', 'bob'])) {
    seen[name] = { duplicates: stats[name].stats.duplicates, replayed: stats[name].stats.replayed, detoured: stats[name].stats.detoured };
  }
}

function noPageErrors() {
  assert.deepEqual(alice.errors, [], 'alice: no page errors');
  assert.deepEqual(bob.errors, [], 'bob: no page errors');
}

before(async () => {
  server = await startServe('pair-serve');
  browser = await launchChromium();
});

after(async () => {
  for (const peer of [alice, bob]) if (peer) await saveLog(peer, 'pair');
  await browser?.close();
  await server?.stop();
});

test('tether serve serves the page, its modules and demo tokens next to /ws', async () => {
  const index = await fetch(`${server.base}/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(await index.text(), /<script type="module" src="app.js">/);
  for (const module of [
    'app.js', 'signaling.js', 'peer.js', 'offerer.js', 'answerer.js', 'connection.js', 'budget.js', 'sdp.js',
    'reliable.js', 'frame.js', 'session.js', 'ui.js',
  ]) {
    const response = await fetch(`${server.base}/${module}`);
    assert.equal(response.status, 200, module);
    assert.match(response.headers.get('content-type') ?? '', /^text\/javascript/, module);
  }
  const token = await fetch(`${server.base}/demo/token?peer=alice`);
  assert.equal(token.status, 200);
  assert.match(await token.text(), /^v1\.[\w-]+\.[\w-]+$/);
  assert.equal((await fetch(`${server.base}/demo/token?peer=not%20valid`)).status, 400);
  assert.equal((await fetch(`${server.base}/nope.js`)).status, 404);
  assert.equal((await fetch(`${server.base}/healthz`)).status, 200);
});

test('two pages connect and exchange messages both ways', async () => {
  alice = await openPeer(browser.context, server.base, { peer: 'alice', to: 'bob', room: 'pair' });
  bob = await openPeer(browser.context, server.base, { peer: 'bob', to: 'alice', room: 'pair' });
  await waitReady(alice);
  await waitReady(bob);
  const [a, b] = [await status(alice), await status(bob)];
  assert.equal(a.peer.role, 'offerer');
  assert.equal(b.peer.role, 'answerer');
  await say('alice', batch('a', 1, 20));
  await say('bob', batch('b', 1, 20));
  await checkExactlyOnce();
  // The page shows it: the badge, and the messages in the log.
  assert.equal(await alice.page.textContent('#badge'), 'connected');
  assert.equal(await bob.page.locator('#messages li.in').count(), 20);
  noPageErrors();
});

test('signaling loss: messages keep flowing, the socket comes back', async () => {
  const before = await status(alice);
  await say('alice', batch('a', 21, 30));
  assert.equal(await alice.page.evaluate(() => /** @type {any} */ (window).tether.killSignaling()), true);
  await say('alice', batch('a', 31, 40));
  await say('bob', batch('b', 21, 40));
  await waitFor(alice, 'a new registration', (n) => {
    const s = /** @type {any} */ (window).tether.status().signaling;
    return s.state === 'registered' && s.counters.registrations > n;
  }, before.signaling.counters.registrations);
  await checkExactlyOnce();
  const after = await status(alice);
  assert.equal(after.peer.generation, before.peer.generation, 'the peer connection was not touched');
  assert.ok(after.signaling.generation > before.signaling.generation, 'a new, larger generation registered');
  noPageErrors();
});

for (const who of /** @type {const} */ (['alice', 'bob'])) {
  test(`ICE restart asked by ${who} (${who === 'alice' ? 'offerer' : 'answerer'}), messages in flight`, async () => {
    const peer = who === 'alice' ? alice : bob;
    const [a0, b0] = [await status(alice), await status(bob)];
    const n = sentBy[who].length;
    await say(who, batch(who[0], n + 1, n + 10));
    await peer.page.evaluate(() => /** @type {any} */ (window).tether.restartIce());
    await say(who, batch(who[0], n + 11, n + 20));
    // Both sides applied the restart (the offerer its answer, the answerer
    // its offer) and ICE selected a pair of the new ICE generation.
    for (const [peer, before] of /** @type {const} */ ([[alice, a0], [bob, b0]])) {
      await waitFor(peer, 'the restart applied', (k) => /** @type {any} */ (window).tether.status().peer.counters.restartsApplied > k, before.peer.counters.restartsApplied);
      await waitFor(peer, 'the restart completed', (k) => /** @type {any} */ (window).tether.status().peer.counters.restartsCompleted > k, before.peer.counters.restartsCompleted);
    }
    await waitReady(alice);
    await waitReady(bob);
    // The other side may get copies of what it had but had not acknowledged when the restart began.
    await checkExactlyOnce();
    const [a1, b1] = [await status(alice), await status(bob)];
    assert.equal(a1.peer.generation, a0.peer.generation, 'alice kept her peer connection');
    assert.equal(b1.peer.generation, b0.peer.generation, 'bob kept his peer connection');
    noPageErrors();
  });
}

for (const who of /** @type {const} */ (['alice', 'bob'])) {
  test(`new peer connection from ${who}, after frames were lost in flight`, async () => {
    const peer = who === 'alice' ? alice : bob;
    const other = who === 'alice' ? bob : alice;
    const [mine0, theirs0] = [await status(peer), await status(other)];
    const n = sentBy[who].length;
    // The path dies: what this side puts on the channel now is lost.
    await peer.page.evaluate(() => /** @type {any} */ (window).tether.dropOutgoing(true));
    await say(who, batch(who[0], n + 1, n + 10));
    await waitFor(peer, '10 messages on the wire, unconfirmed', () => /** @type {any} */ (window).tether.status().session.unconfirmedSent >= 10);
    assert.equal((await received(other)).length, sentBy[who].length - 10, 'the lost ones did not arrive');
    await peer.page.evaluate(() => {
      const t = /** @type {any} */ (window).tether;
      t.dropOutgoing(false);
      return t.replacePeer();
    });
    await say(who, batch(who[0], n + 11, n + 15));
    await waitFor(other, 'a new peer connection', (g) => /** @type {any} */ (window).tether.status().peer.generation > g, theirs0.peer.generation);
    await waitReady(peer);
    await waitReady(other);
    await checkExactlyOnce();
    const mine1 = await status(peer);
    assert.ok(mine1.peer.generation > mine0.peer.generation, 'a new peer connection was built');
    // Sent again on the new channel, or on the detour while there was none (MESSAGING.md rule 10).
    const again = mine1.session.stats.replayed + mine1.session.stats.detoured - mine0.session.stats.replayed - mine0.session.stats.detoured;
    assert.ok(again >= 10, `the lost messages were sent again (${again})`);
    noPageErrors();
  });
}

test('malformed data-channel frames are dropped and logged, the stream goes on', async () => {
  const b0 = await status(bob);
  // The last is well-formed Data, but with a seq (2^62) further ahead than any
  // sender's replay buffer can be: a gap, dropped (a nearer one would wait for its turn).
  // (An empty message is not here: it is the channel's own "ready", dropped unseen.)
  const bad = [[9, 0, 0], [2, 0, 0], [3, 0, 0, 0, 0, 0, 0, 0, 1, 5], [1, 9], [2, 64, 0, 0, 0, 0, 0, 0, 0, 65]];
  for (const bytes of bad) {
    assert.equal(await alice.page.evaluate((b) => /** @type {any} */ (window).tether.sendRawFrame(b), bytes), true);
  }
  await waitFor(bob, 'bad frames counted', (k) => {
    const c = /** @type {any} */ (window).tether.status().session.counters;
    return c.badFrames + c.protocolErrors >= k;
  }, b0.session.counters.badFrames + b0.session.counters.protocolErrors + bad.length - 1);
  const n = sentBy.alice.length;
  await say('alice', batch('a', n + 1, n + 5));
  await checkExactlyOnce();
  const b1 = await status(bob);
  assert.ok(b1.session.counters.badFrames >= b0.session.counters.badFrames + 4, 'malformed frames counted');
  assert.ok(b1.session.counters.protocolErrors >= b0.session.counters.protocolErrors + 1, 'the gap counted');
  noPageErrors();
});

test('everything at once: signaling loss during restarts and replacements', async () => {
  for (let round = 1; round <= 3; round++) {
    const a = sentBy.alice.length;
    const b = sentBy.bob.length;
    await say('alice', batch('a', a + 1, a + 5));
    await bob.page.evaluate(() => /** @type {any} */ (window).tether.killSignaling());
    await alice.page.evaluate((r) => {
      const t = /** @type {any} */ (window).tether;
      return r % 2 === 1 ? t.restartIce() : t.replacePeer();
    }, round);
    await say('bob', batch('b', b + 1, b + 5));
    await alice.page.evaluate(() => /** @type {any} */ (window).tether.killSignaling());
    await bob.page.evaluate(() => /** @type {any} */ (window).tether.replacePeer());
    await say('alice', batch('a', a + 6, a + 10));
    await say('bob', batch('b', b + 6, b + 10));
    await waitReady(alice, 30000);
    await waitReady(bob, 30000);
    // Restarts (asked for, or after a signaling loss) may resend what was not acknowledged.
    await checkExactlyOnce();
  }
  noPageErrors();
  // The page after recovery, for people to look at.
  await alice.page.screenshot({ path: path.join(artifactsDir, 'pair-alice-after-recovery.png'), fullPage: true });
  await bob.page.screenshot({ path: path.join(artifactsDir, 'pair-bob-after-recovery.png'), fullPage: true });
});

test('a malformed or unusable offer is refused with a tether rejection, the page survives', async () => {
  // carol is a raw signaling client (a WebSocket in a page), dave a browser
  // peer talking to her: carol < dave, so carol offers.
  const dave = await openPeer(browser.context, server.base, { peer: 'dave', to: 'carol', room: 'raw' });
  const carol = await browser.context.newPage();
  await carol.goto(`${server.base}/healthz`);
  const replies = await carol.evaluate(async (base) => {
    const token = await (await fetch(`${base}/demo/token?peer=carol`)).text();
    const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`);
    /** @type {any[]} */
    const inbox = [];
    ws.onmessage = (event) => inbox.push(JSON.parse(event.data));
    await new Promise((resolve) => { ws.onopen = resolve; });
    ws.send(JSON.stringify({ type: 'register', version: 1, peer_id: 'carol', token, room: 'raw' }));
    const until = async (/** @type {(m: any) => boolean} */ match, /** @type {number} */ ms) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        const found = inbox.find(match);
        if (found) return found;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return null;
    };
    await until((m) => m.type === 'registered', 5000);
    // dave joins or is there: it asks carol (the offerer) for an offer.
    const asked = await until((m) => m.type === 'ice_restart' && m.from === 'dave', 10000);
    const relay = (/** @type {any} */ m) => ws.send(JSON.stringify({ ...m, to: 'dave' }));
    relay({ type: 'offer', sdp: 'not sdp at all' }); // no o= line: dropped
    relay({ type: 'answer', sdp: 'v=0' }); // dave answers, never takes answers
    relay({ type: 'candidate', candidate: 'candidate:garbage', sdp_mid: '7', sdp_mline_index: 9 });
    relay({ type: 'candidate', candidate: 42 }); // wrong type: the server refuses it
    relay({ type: 'bye' });
    // A well-formed origin on an SDP no browser can apply: refused with a
    // rejection naming this offer.
    relay({ type: 'offer', sdp: 'v=0\r\no=- 777 3 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=x-tether-seq:1\r\nm=bogus\r\n' });
    const refused = await until((m) => m.type === 'answer' && m.from === 'dave' && m.sdp.includes('777'), 10000);
    // An ICE restart of a session dave never had: refused as unknown-session.
    relay({ type: 'offer', sdp: 'v=0\r\no=- 888 5 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=x-tether-seq:2\r\na=x-tether-ice-restart\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n' });
    const unknown = await until((m) => m.type === 'answer' && m.from === 'dave' && m.sdp.includes('888'), 10000);
    ws.close();
    return { asked: !!asked, refused: refused?.sdp ?? null, unknown: unknown?.sdp ?? null };
  }, server.base);
  assert.ok(replies.asked, 'the answerer asked for an offer');
  // Naming the offer with its seq (NEGOTIATION.md P1).
  assert.equal(replies.refused, 'a=x-tether-offer:777 3 1\r\na=x-tether-reject:failed\r\n');
  assert.equal(replies.unknown, 'a=x-tether-offer:888 5 2\r\na=x-tether-reject:unknown-session\r\n');
  // The page is alive and says what it dropped.
  const events = await dave.page.evaluate(() => /** @type {any} */ (window).tether.events().join('\n'));
  assert.match(events, /dropped an offer: sdp has no o= line/);
  assert.match(events, /ignored an answer: this side answers/);
  assert.match(events, /refused an ICE restart of a session this side does not have/);
  assert.deepEqual(dave.errors, [], 'dave: no page errors');
  await carol.close();
  await dave.page.close();
});
