// The page served over https:// signals over wss:// to `tether serve
// --tls-cert/--tls-key`, and a Rust node (`tether chat --signal wss://… --ca`)
// talks to it: messages both ways, also across a signaling loss that forces
// both to reconnect over TLS; and again with relay-only ICE on both sides,
// through a real TURN server (coturn) whose credentials the signaling server
// hands out in `registered`.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  launchChromium, openPeer, received, send, startChat, startCoturn, startServe, status, waitReady, waitReceived,
} from './harness.js';

/** @type {Awaited<ReturnType<typeof startServe>>} */
let server;
/** @type {Awaited<ReturnType<typeof launchChromium>>} */
let browser;
/** @type {Awaited<ReturnType<typeof startCoturn>>} */
let coturn;

before(async () => {
  coturn = await startCoturn('tls-coturn');
  server = await startServe('tls-serve', { tls: true, turn: { url: coturn.url, secret: coturn.secret } });
  browser = await launchChromium({ ignoreCertificateErrors: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  coturn?.stop();
});

test('a page over https and a node over wss exchange messages, also after a signaling loss', async () => {
  assert.match(server.base, /^https:\/\/localhost:\d+$/);
  const room = 'room-tls';
  const page = await openPeer(browser.context, server.base, { peer: 'a-page', to: 'node', room });
  const chat = await startChat(server.base, { peer: 'node', to: 'a-page', room, ca: server.ca });
  try {
    await waitReady(page);
    const signalUrl = await page.page.evaluate(() => /** @type {any} */ (window).tether.signalUrl());
    assert.match(signalUrl, /^wss:\/\/localhost:\d+\/ws$/);

    await send(page, ['over tls 1']);
    await chat.waitFor('the page\'s message', () => chat.received().includes('over tls 1'));
    chat.write(['over tls 2']);
    await waitReceived(page, 1);
    assert.deepEqual(await received(page), ['over tls 2']);

    // The node's signaling socket dies; it reconnects over wss:// and the
    // pair keeps talking.
    chat.write(['/sever']);
    await chat.waitFor('a restore after the sever', (events) =>
      events.some((e) => e.event === 'action' && e.kind === 'restore' && e.outcome === 'ok'), 20000);
    chat.write(['over tls 3']);
    await waitReceived(page, 2);
    await send(page, ['over tls 4']);
    await chat.waitFor('the page\'s second message', () => chat.received().includes('over tls 4'));
    assert.equal(page.errors.length, 0, page.errors.join('\n'));
    assert.equal((await status(page)).signaling.state, 'registered', 'the page is still registered');
  } finally {
    await chat.stop();
    await page.page.close();
  }
});

test('relay-only on both sides: the page and the node talk through TURN with credentials from registered', async () => {
  const room = 'room-turn';
  const page = await openPeer(browser.context, server.base, { peer: 'a-page-turn', to: 'node-turn', room, relay_only: '1' });
  const chat = await startChat(server.base, { peer: 'node-turn', to: 'a-page-turn', room, ca: server.ca, relayOnly: true });
  try {
    await waitReady(page, 30000);
    await send(page, ['through turn 1']);
    await chat.waitFor('the page\'s message through the relay', () => chat.received().includes('through turn 1'), 30000);
    chat.write(['through turn 2']);
    await waitReceived(page, 1, 30000);
    assert.deepEqual(await received(page), ['through turn 2']);
    assert.ok(coturn.allocations() >= 2, `each side allocated a relay (${coturn.allocations()} seen)`);
    assert.equal(page.errors.length, 0, page.errors.join('\n'));
  } finally {
    await chat.stop();
    await page.page.close();
  }
});
