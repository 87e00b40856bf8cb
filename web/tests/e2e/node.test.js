// A Rust tether node (`tether chat --json`, a child process) and the browser
// peer in real Chromium, talking through `tether serve --demo`: messages both
// ways, then the node breaks its connections (/reconnect, /sever, /drop,
// /handoff) and the page breaks its own (killSignaling, restartIce,
// replacePeer); after each, traffic keeps flowing, and every message sent
// either way is delivered exactly once, in order (counted on both sides: the
// page's window.tether and the chat's JSON lines).
//
// Both roles: the smaller peer id offers, so "a-node" (node) offers to
// "page", and "a-page" (page) offers to "node".

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifactsDir, batch, launchChromium, openPeer, received, saveLog, send, startChat, startServe, status,
  waitAllConfirmed, waitFor, waitReady, waitReceived,
} from './harness.js';

/** @type {Awaited<ReturnType<typeof startServe>>} */
let server;
/** @type {Awaited<ReturnType<typeof launchChromium>>} */
let browser;

before(async () => {
  server = await startServe('node-serve');
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Who starts first differs too: an offerer node that starts first must not
// offer to a page that is not there yet (see crates/cli/src/chat.rs).
const ROLES = [
  { title: 'the node offers', node: 'a-node', page: 'page', nodeRole: 'offerer', pageRole: 'answerer', pageFirst: false, quit: 'quit' },
  { title: 'the node answers', node: 'node', page: 'a-page', nodeRole: 'answerer', pageRole: 'offerer', pageFirst: true, quit: 'interrupt' },
];

for (const role of ROLES) {
  describe(`a Rust node and a page in Chromium: ${role.title}`, () => {
    const room = `room-${role.node}`;
    const tag = `node-${role.nodeRole}`;
    /** @type {Awaited<ReturnType<typeof openPeer>>} */
    let page;
    /** @type {Awaited<ReturnType<typeof startChat>>} */
    let chat;
    /** What each side sent so far, in order: what the other must have received. */
    const sent = { page: /** @type {string[]} */ ([]), node: /** @type {string[]} */ ([]) };

    /** The page sends `count` numbered messages. */
    async function fromPage(/** @type {number} */ count) {
      const texts = batch('p', sent.page.length + 1, sent.page.length + count);
      assert.equal((await send(page, texts)).length, count);
      sent.page.push(...texts);
    }

    /**
     * The node sends `count` numbered messages (or `lines`, which the page
     * receives as `texts`) and waits until it accepted them.
     */
    async function fromNode(/** @type {number} */ count, lines = batch('n', sent.node.length + 1, sent.node.length + count), texts = lines) {
      chat.write(lines);
      sent.node.push(...texts);
      const total = sent.node.length;
      await chat.waitFor(`${total} lines accepted`, (events) => {
        const all = events.filter((e) => e.event === 'sent');
        const refused = all.find((e) => !e.accepted);
        if (refused) throw new Error(`the node refused a line: ${JSON.stringify(refused)}`);
        return all.length >= total;
      });
    }

    /** How many duplicates the page's stream had dropped, and the node had sent, at the last check. */
    let duplicatesSeen = 0;
    let nodeSentSeen = 0;

    /**
     * Every message sent so far arrived exactly once, in order, both ways. A
     * copy reaches the page's stream (and is dropped) only when the node sent
     * a message again on purpose: everything unacknowledged after an ICE
     * restart (MESSAGING.md rule 8, at most `resent` since the last check),
     * or a probe of a message whose Ack came late (rule 9: not more copies
     * than the node sent messages since the last check).
     */
    async function checkExactlyOnce(resent = 0) {
      await waitReceived(page, sent.node.length);
      await chat.waitFor(`${sent.page.length} messages received`, () => chat.received().length >= sent.page.length);
      await waitAllConfirmed(page);
      assert.deepEqual(await received(page), sent.node, 'the page got every message of the node once, in order');
      assert.deepEqual(chat.received(), sent.page, 'the node got every message of the page once, in order');
      assert.ok(chat.events.filter((e) => e.event === 'received').every((e) => e.from === role.page), 'all from the page');
      const s = await status(page);
      const copies = s.session.stats.duplicates - duplicatesSeen;
      duplicatesSeen = s.session.stats.duplicates;
      const probed = sent.node.length - nodeSentSeen;
      nodeSentSeen = sent.node.length;
      assert.ok(copies <= resent + probed, `${copies} duplicates reached the page's stream; at most ${resent + probed} could (resent after an ICE restart, or probed)`);
      assert.equal(s.session.counters.withdrawn, 0, 'nothing withdrawn');
      assert.equal(s.session.counters.badFrames + s.session.counters.protocolErrors, 0, 'every frame of the node was well-formed');
      assert.deepEqual(page.errors, [], 'no page errors');
    }

    /**
     * Traffic both ways before, during and after `disruption`, then waits
     * for `recovered` and checks every message.
     * @param {() => Promise<void>} disruption @param {() => Promise<void>} recovered
     */
    async function across(disruption, recovered) {
      const before = await status(page);
      await fromPage(5);
      await fromNode(5);
      await disruption();
      await fromPage(5);
      await fromNode(5);
      await recovered();
      await waitReady(page, 20000);
      // After an ICE restart the node resends what the page had not
      // acknowledged yet: at most the ten it sent before the page recovered.
      const restarted = (await status(page)).peer.counters.restartsApplied > before.peer.counters.restartsApplied;
      await fromPage(5);
      await fromNode(5);
      await checkExactlyOnce(restarted ? 10 : 0);
    }

    /** Waits for a chat event after `mark` (an index into its events) matching `match`. */
    function chatEvent(/** @type {number} */ mark, /** @type {string} */ what, /** @type {(e: any) => boolean} */ match, timeout = 20000) {
      return chat.waitFor(what, (events) => events.slice(mark).find(match), timeout);
    }

    /** The page applied and completed an ICE restart after `before`, or built a new peer connection. */
    async function pageRestartedOrReplaced(/** @type {any} */ before) {
      await waitFor(page, 'an ICE restart or a new peer connection', (b) => {
        const p = /** @type {any} */ (window).tether.status().peer;
        return p.generation > b.generation || p.counters.restartsCompleted > b.counters.restartsCompleted;
      }, before.peer, 20000);
    }

    after(async () => {
      if (page) await saveLog(page, tag);
      await page?.page.close().catch(() => {});
      if (chat?.alive) await chat.stop();
    });

    test('the node and the page connect and exchange messages both ways', async () => {
      const open = () => openPeer(browser.context, server.base, { peer: role.page, to: role.node, room });
      const start = () => startChat(server.base, { peer: role.node, to: role.page, room }, `${tag}-chat`);
      if (role.pageFirst) {
        page = await open();
        chat = await start();
      } else {
        chat = await start();
        page = await open();
      }
      await waitReady(page, 20000);
      await chat.waitFor('the page connected', (events) => events.find((e) => e.event === 'peer' && e.connected));
      await chat.waitFor('online', (events) => events.find((e) => e.event === 'command' && e.command === 'online' && e.ok));
      const s = await status(page);
      assert.equal(s.peer.role, role.pageRole);
      await fromPage(10);
      await fromNode(10);
      await checkExactlyOnce();
      assert.equal(await page.page.textContent('#badge'), 'connected');
    });

    test('node: /reconnect (new signaling socket and peer connection)', async () => {
      const before = await status(page);
      const mark = chat.events.length;
      await across(async () => chat.write(['/reconnect']), async () => {
        await chatEvent(mark, 'the reconnect to succeed', (e) => e.event === 'command' && e.command === 'reconnect');
        const result = chat.events.slice(mark).find((e) => e.event === 'command' && e.command === 'reconnect');
        assert.equal(result.ok, true, `reconnect: ${JSON.stringify(result)}`);
        assert.equal(result.action, 'reconnect');
      });
      assert.ok((await status(page)).peer.generation > before.peer.generation, 'a new peer connection');
    });

    test('node: /sever (its signaling socket dies; restore with an ICE restart)', async () => {
      const before = await status(page);
      const mark = chat.events.length;
      await across(async () => chat.write(['/sever']), async () => {
        await chatEvent(mark, 'the sever', (e) => e.event === 'command' && e.command === 'sever' && e.ok);
        await chatEvent(mark, 'a successful restore', (e) => e.event === 'action' && e.kind === 'restore' && e.outcome === 'ok');
        await pageRestartedOrReplaced(before);
      });
    });

    test('node: /drop (its peer connection torn down)', async () => {
      const before = await status(page);
      const mark = chat.events.length;
      await across(async () => chat.write(['/drop']), async () => {
        await chatEvent(mark, 'the drop', (e) => e.event === 'command' && e.command === 'drop' && e.ok);
        await waitFor(page, 'a new peer connection', (g) => /** @type {any} */ (window).tether.status().peer.generation > g, before.peer.generation, 20000);
      });
      // The node's lines after the drop had no channel: they took the sealed detour through the
      // server (MESSAGING.md rule 10), which the page opened with the keys both agreed.
      const after = await status(page);
      assert.ok(after.session.counters.detourBatchesIn > before.session.counters.detourBatchesIn, 'detour batches from the node');
      assert.equal(after.session.counters.detourDropped, 0, 'every batch of the node opened');
    });

    test('node: /handoff (Wi-Fi to cellular: restore with an ICE restart)', async () => {
      const before = await status(page);
      const mark = chat.events.length;
      await across(async () => chat.write(['/handoff']), async () => {
        await chatEvent(mark, 'the handoff\'s restore', (e) => e.event === 'command' && e.command === 'handoff');
        const result = chat.events.slice(mark).find((e) => e.event === 'command' && e.command === 'handoff');
        assert.equal(result.ok, true, `handoff: ${JSON.stringify(result)}`);
        assert.equal(result.action, 'restore');
        await pageRestartedOrReplaced(before);
      });
    });

    test('page: signaling loss', async () => {
      const before = await status(page);
      await across(async () => {
        assert.equal(await page.page.evaluate(() => /** @type {any} */ (window).tether.killSignaling()), true);
      }, async () => {
        await waitFor(page, 'a new registration', (n) => {
          const s = /** @type {any} */ (window).tether.status().signaling;
          return s.state === 'registered' && s.counters.registrations > n;
        }, before.signaling.counters.registrations);
      });
    });

    test('page: ICE restart', async () => {
      const before = await status(page);
      await across(async () => page.page.evaluate(() => /** @type {any} */ (window).tether.restartIce()), async () => {
        await waitFor(page, 'the restart completed', (k) => /** @type {any} */ (window).tether.status().peer.counters.restartsCompleted > k, before.peer.counters.restartsCompleted, 20000);
      });
      assert.equal((await status(page)).peer.generation, before.peer.generation, 'the page kept its peer connection');
    });

    test('page: new peer connection', async () => {
      const before = await status(page);
      await across(async () => page.page.evaluate(() => /** @type {any} */ (window).tether.replacePeer()), async () => {
        await waitFor(page, 'a new peer connection', (g) => /** @type {any} */ (window).tether.status().peer.generation > g, before.peer.generation, 20000);
      });
      // The page after recovery, for people to look at.
      await page.page.screenshot({ path: path.join(artifactsDir, `${tag}-page-after-recovery.png`), fullPage: true });
    });

    test('the chat survives malformed input and shuts down cleanly', async () => {
      let mark = chat.events.length;
      chat.write(['/nope']);
      await chatEvent(mark, 'an unknown-command error', (e) => e.event === 'error' && /unknown command \/nope/.test(e.error));
      mark = chat.events.length;
      chat.write(['x'.repeat(70 * 1024)]);
      await chatEvent(mark, 'an overlong-line error', (e) => e.event === 'error' && /discarded/.test(e.error));
      // Invalid UTF-8 is sent with replacement characters; "//" escapes a slash.
      chat.writeRaw(Buffer.from([0x62, 0x61, 0x64, 0x20, 0xff, 0xfe, 0x0a]));
      sent.node.push('bad \uFFFD\uFFFD');
      await fromNode(1, ['//not a command'], ['/not a command']);
      await fromPage(3);
      await checkExactlyOnce();

      const quit = role.quit === 'quit' ? await chat.stop() : (await chat.interrupt(), chat.events.find((e) => e.event === 'quit'));
      assert.ok(quit, 'the chat said goodbye');
      assert.equal(quit.reason, role.quit);
      assert.equal(quit.unacknowledged, 0, 'every message of the node was acknowledged by the page');
      // Nothing arrived twice, even late.
      assert.deepEqual(chat.received(), sent.page);
      assert.deepEqual(await received(page), sent.node);
    });
  });
}

test('a reloaded page (a new stream session) chats with the same node again', async () => {
  const room = 'room-reload';
  const chat = await startChat(server.base, { peer: 'a-node', to: 'page', room }, 'reload-chat');
  /** @type {Awaited<ReturnType<typeof openPeer>> | undefined} */
  let page;
  try {
    page = await openPeer(browser.context, server.base, { peer: 'page', to: 'a-node', room });
    await waitReady(page, 20000);
    await send(page, ['before-1']);
    chat.write(['node-before-1']);
    await waitReceived(page, 1);
    await chat.waitFor('the first page', () => chat.received().includes('before-1'));
    const before = (await status(page)).session.session;
    await page.page.reload();
    await page.page.waitForFunction(() => 'tether' in window, null, { timeout: 5000 });
    await waitReady(page, 20000);
    assert.notEqual((await status(page)).session.session, before, 'a new stream session');
    await send(page, ['after-1', 'after-2']);
    chat.write(['node-after-1', 'node-after-2']);
    await chat.waitFor('the reloaded page\'s messages', () => chat.received().includes('after-2'));
    await waitFor(page, 'the node\'s messages', () => /** @type {any} */ (window).tether.received().includes('node-after-2'));
    assert.deepEqual(chat.received(), ['before-1', 'after-1', 'after-2'], 'the node got each page message once');
    const got = await received(page);
    assert.deepEqual(got.slice(-2), ['node-after-1', 'node-after-2'], 'in order, after whatever the old page had not acknowledged');
    assert.deepEqual(page.errors, []);
  } finally {
    if (page) await saveLog(page, 'reload');
    await page?.page.close().catch(() => {});
    await chat.stop();
  }
});
