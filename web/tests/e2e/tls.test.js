// The page served over https:// signals over wss:// to `tether serve
// --tls-cert/--tls-key`, and a Rust node (`tether chat --signal wss://… --ca`)
// talks to it: messages both ways, also across a signaling loss that forces
// both to reconnect over TLS.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium, openPeer, received, send, startChat, startServe, status, waitReady, waitReceived } from './harness.js';

/** @type {Awaited<ReturnType<typeof startServe>>} */
let server;
/** @type {Awaited<ReturnType<typeof launchChromium>>} */
let browser;

before(async () => {
  server = await startServe('tls-serve', { tls: true });
  browser = await launchChromium({ ignoreCertificateErrors: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
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
