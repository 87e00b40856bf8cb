// The page's signaling client with several servers: a failed attempt moves
// on to the next server at once, backoff starts only after every server
// failed in a row, and a registered server keeps being used. A fake
// WebSocket stands in for the browser's; mock timers stand in for time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignalingClient } from '../../signaling.js';

class FakeSocket {
  /** @type {FakeSocket[]} */
  static opened = [];

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    /** @type {string[]} */ this.sent = [];
    this.closed = false;
    /** @type {any} */ this.onopen = null;
    /** @type {any} */ this.onmessage = null;
    /** @type {any} */ this.onclose = null;
    /** @type {any} */ this.onerror = null;
    FakeSocket.opened.push(this);
  }

  /** @param {string} text */
  send(text) {
    this.sent.push(text);
  }

  close() {
    this.closed = true;
  }

  /** The server accepts the connection and answers `register`. */
  accept() {
    this.onopen?.();
    const register = JSON.parse(this.sent[0]);
    this.onmessage?.({ data: JSON.stringify({ type: 'registered', peer_id: register.peer_id, peers: [], max_frame_bytes: 65536 }) });
  }

  /** The connection fails (refused, or the server died) with `code`. */
  fail(code = 1006) {
    this.onclose?.({ code, reason: '' });
  }
}

/** Lets the client's awaited token promise settle. */
async function settle() {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
}

function client() {
  FakeSocket.opened = [];
  const signaling = new SignalingClient({
    urls: ['wss://a.example/ws', 'wss://b.example/ws', 'wss://c.example/ws'],
    peerId: 'page',
    getToken: async () => 'token',
    WebSocketImpl: /** @type {any} */ (FakeSocket),
  });
  return signaling;
}

test('a failed attempt moves on to the next server at once; backoff only after all failed', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  const signaling = client();
  signaling.start();
  await settle();
  assert.deepEqual(FakeSocket.opened.map((s) => s.url), ['wss://a.example/ws']);

  FakeSocket.opened[0].fail();
  t.mock.timers.tick(0);
  await settle();
  assert.deepEqual(FakeSocket.opened.map((s) => s.url), ['wss://a.example/ws', 'wss://b.example/ws'], 'b at once');

  FakeSocket.opened[1].fail();
  t.mock.timers.tick(0);
  await settle();
  assert.equal(FakeSocket.opened.at(-1)?.url, 'wss://c.example/ws', 'c at once');

  // All three failed: the next attempt (on a again) waits for a backoff.
  FakeSocket.opened[2].fail();
  t.mock.timers.tick(0);
  await settle();
  assert.equal(FakeSocket.opened.length, 3, 'no attempt before the backoff');
  t.mock.timers.tick(400);
  await settle();
  assert.equal(FakeSocket.opened.length, 4);
  assert.equal(FakeSocket.opened[3].url, 'wss://a.example/ws');
  signaling.stop();
});

test('a connect timeout also moves on, and the server that registered is kept after a loss', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  const signaling = client();
  signaling.start();
  await settle();
  // a swallows the handshake: after the connect timeout, b is tried.
  t.mock.timers.tick(signaling.connectTimeoutMs);
  t.mock.timers.tick(0);
  await settle();
  assert.equal(FakeSocket.opened.at(-1)?.url, 'wss://b.example/ws');
  FakeSocket.opened.at(-1)?.accept();
  assert.equal(signaling.state, 'registered');

  // The registered socket is lost: the retry goes to b again, at once.
  FakeSocket.opened.at(-1)?.fail();
  t.mock.timers.tick(0);
  await settle();
  assert.equal(FakeSocket.opened.at(-1)?.url, 'wss://b.example/ws');
  signaling.stop();
});

test('URLs other than ws:// and wss:// are refused', () => {
  assert.throws(
    () => new SignalingClient({ urls: ['http://a.example/ws'], peerId: 'page', getToken: async () => 't' }),
    /must be ws:\/\/ or wss:\/\//,
  );
});

test('ice servers handed out in registered reach the registered event, malformed entries dropped', async () => {
  FakeSocket.opened = [];
  const signaling = new SignalingClient({
    url: 'wss://a.example/ws',
    peerId: 'page',
    getToken: async () => 'token',
    WebSocketImpl: /** @type {any} */ (FakeSocket),
  });
  /** @type {any} */
  let detail = null;
  signaling.addEventListener('registered', (event) => {
    detail = /** @type {CustomEvent} */ (event).detail;
  });
  signaling.start();
  await settle();
  const socket = FakeSocket.opened[0];
  socket.onopen?.();
  const turn = { urls: ['turn:t.example:3478?transport=udp'], username: '1764700000:page', credential: 'c2VjcmV0' };
  socket.onmessage?.({
    data: JSON.stringify({
      type: 'registered', peer_id: 'page', peers: [], max_frame_bytes: 65536,
      ice_servers: [{ urls: ['stun:s.example:3478'] }, turn, { urls: [] }, { urls: 'turn:x' }, null],
    }),
  });
  assert.deepEqual(detail.iceServers, [{ urls: ['stun:s.example:3478'] }, turn]);
  signaling.stop();
});

test('register names the peers to ask for an ICE restart; registered says which ones the server asks', async () => {
  let ask = ['node'];
  /** @type {any[]} */
  const registered = [];
  const started = () => {
    FakeSocket.opened = [];
    const client = new SignalingClient({
      url: 'wss://a.example/ws',
      peerId: 'page',
      getToken: async () => 'token',
      WebSocketImpl: /** @type {any} */ (FakeSocket),
      restartOnRegister: () => ask,
    });
    client.addEventListener('registered', (event) => registered.push(/** @type {CustomEvent} */ (event).detail));
    client.start();
    return client;
  };
  const signaling = started();
  await settle();
  const socket = FakeSocket.opened[0];
  socket.onopen?.();
  assert.deepEqual(JSON.parse(socket.sent[0]).ice_restart, ['node']);
  socket.onmessage?.({
    data: JSON.stringify({ type: 'registered', peer_id: 'page', peers: ['node'], max_frame_bytes: 65536, ice_restart: ['node', 7] }),
  });
  assert.deepEqual(registered[0].iceRestart, ['node'], 'names only');
  signaling.stop();

  // Nobody to ask: no field; an older server's registered: nobody asked.
  ask = [];
  const again = started();
  await settle();
  const next = FakeSocket.opened[0];
  next.onopen?.();
  assert.equal('ice_restart' in JSON.parse(next.sent[0]), false);
  next.onmessage?.({ data: JSON.stringify({ type: 'registered', peer_id: 'page', peers: [], max_frame_bytes: 65536 }) });
  assert.deepEqual(registered[1].iceRestart, []);
  again.stop();
});
