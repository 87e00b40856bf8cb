// The tether browser peer: joins a session through the signaling server that
// served this page, connects to one remote peer (a browser or a tether node)
// over a WebRTC data channel, and chats with reliable messaging.
//
// Query parameters:
//   peer    this page's peer id (required)
//   to      the remote peer id (required)
//   room    presence room (default "demo")
//   token   signaling token; without one the page asks `tether serve --demo`
//           for a demo token at /demo/token?peer=ID
//   signal  signaling URL (default: /ws of this page's server)
//
// window.tether is a small API for tests and curious people (see the end).

import { MessageSession } from './session.js';
import { PeerLink } from './peer.js';
import { SignalingClient } from './signaling.js';
import { createSessionView, showJoinForm } from './ui.js';

const NAME = /^[A-Za-z0-9_.:@-]{1,64}$/;

const params = new URLSearchParams(location.search);
const peerId = params.get('peer') ?? '';
const remoteId = params.get('to') ?? '';
const room = params.get('room') || 'demo';

if (!NAME.test(peerId) || !NAME.test(remoteId) || !NAME.test(room) || peerId === remoteId) {
  showJoinForm(params);
} else {
  start();
}

/**
 * ICE servers from the URL: `stun=URL` and `turn=URL` (each repeatable), with
 * `turn_user` and `turn_credential` for the TURN servers.
 * @returns {RTCIceServer[]}
 */
function iceServersFromParams() {
  /** @type {RTCIceServer[]} */
  const servers = [];
  const stun = params.getAll('stun');
  if (stun.length > 0) servers.push({ urls: stun });
  const turn = params.getAll('turn');
  if (turn.length > 0) {
    servers.push({ urls: turn, username: params.get('turn_user') ?? '', credential: params.get('turn_credential') ?? '' });
  }
  return servers;
}

/** `signal=URL` (repeatable, or comma-separated), else this server's `/ws`. */
function signalUrls() {
  const given = params.getAll('signal').flatMap((value) => value.split(',')).map((url) => url.trim()).filter(Boolean);
  return given.length > 0 ? given : [defaultSignalUrl()];
}

function defaultSignalUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

async function getToken() {
  const given = params.get('token');
  if (given) return given;
  const response = await fetch(`/demo/token?peer=${encodeURIComponent(peerId)}`, { cache: 'no-store' });
  if (!response.ok) {
    throw new Error('no token: add ?token=… to the URL (tether serve --mint-token ID), or run tether serve --demo');
  }
  return (await response.text()).trim();
}

function start() {
  /** @type {{dir: 'in' | 'out', text: string, id?: number, status?: string}[]} */
  const messages = [];
  /** @type {string[]} */
  const events = [];
  const view = createSessionView({ onSend: (text) => send(text) });
  const log = (/** @type {string} */ line) => {
    events.push(line);
    if (events.length > 2000) events.splice(0, events.length - 2000);
    view.addEvent(line);
  };

  const signaling = new SignalingClient({
    urls: signalUrls(),
    peerId,
    room,
    getToken,
    log,
    // `peer` exists by the time an attempt opens (start() runs below).
    restartOnRegister: () => (peer.restartToAsk() ? [remoteId] : []),
  });
  const peer = new PeerLink({
    localId: peerId,
    remoteId,
    log,
    signal: (payload) => signaling.relay(remoteId, payload),
    iceServers: iceServersFromParams(),
    iceTransportPolicy: params.get('relay_only') === '1' ? 'relay' : 'all',
  });
  const session = new MessageSession({ log });

  signaling.addEventListener('registered', (event) => {
    const { peers, iceServers, iceRestart, detour, generation, maxFrameBytes } = /** @type {CustomEvent} */ (event).detail;
    peer.setGrantedIceServers(iceServers);
    peer.setSignaling(true, iceRestart.includes(remoteId));
    peer.setRemotePresent(peers.includes(remoteId));
    // MESSAGING.md rule 10: the stream may take the detour through this link.
    session.setDetourRoute(detour ? {
      generation,
      maxFrameBytes: Number.isInteger(maxFrameBytes) ? maxFrameBytes : 65536,
      send: (sealed) => signaling.relay(remoteId, { type: 'detour', sealed }),
    } : null);
  });
  signaling.addEventListener('lost', () => {
    peer.setSignaling(false);
    session.setDetourRoute(null);
  });
  signaling.addEventListener('state', () => render());
  signaling.addEventListener('presence', (event) => {
    const { type, peerId: who } = /** @type {CustomEvent} */ (event).detail;
    if (who !== remoteId) return;
    log(`signaling: ${who} ${type === 'peer_joined' ? 'joined' : 'left'} the room`);
    peer.setRemotePresent(type === 'peer_joined', type === 'peer_joined');
    session.setPeerPresent(type === 'peer_joined');
  });
  signaling.addEventListener('relay', (event) => {
    const msg = /** @type {CustomEvent} */ (event).detail;
    if (msg.from !== remoteId) {
      log(`signaling: ignored ${msg.type} from ${msg.from} (this page talks to ${remoteId})`);
      return;
    }
    if (msg.type === 'detour') {
      session.onDetour(msg.sealed);
      return;
    }
    peer.handleSignal(msg);
  });

  session.follow(peer);
  peer.addEventListener('change', () => render());

  session.addEventListener('message', (event) => {
    const { text } = /** @type {CustomEvent} */ (event).detail;
    messages.push({ dir: 'in', text });
    view.addMessage('in', text);
  });
  session.addEventListener('confirmed', (event) => {
    const { id } = /** @type {CustomEvent} */ (event).detail;
    const message = messages.find((m) => m.dir === 'out' && m.id === id);
    if (message) message.status = 'delivered';
    view.markMessage(id, 'delivered', '✓');
  });
  session.addEventListener('withdrawn', (event) => {
    const { id } = /** @type {CustomEvent} */ (event).detail;
    const message = messages.find((m) => m.dir === 'out' && m.id === id);
    if (message) message.status = 'not delivered';
    view.markMessage(id, 'failed', 'not delivered');
    log(`session: message ${id} not delivered (no connection before its deadline)`);
  });
  session.addEventListener('change', () => render());

  /** @param {string} text */
  function send(text) {
    const id = session.send(text);
    messages.push({ dir: 'out', text, id, status: 'sending' });
    view.addMessage('out', text, id);
    return id;
  }

  let renderQueued = false;
  function render() {
    if (renderQueued) return;
    renderQueued = true;
    queueMicrotask(() => {
      renderQueued = false;
      const p = peer.status();
      const s = session.status();
      view.setStatus({
        me: `${peerId} (${p.role}) in ${room}`,
        peer: `${remoteId}${p.remotePresent === false ? ' (not here)' : ''}`,
        signaling: `${signaling.state}, attempt ${signaling.generation}`,
        pc: `#${p.generation} ${p.state}, ice ${p.iceState ?? '–'}${p.negotiating ? ', negotiating' : ''}`,
        channel: s.ready ? `open on #${s.generation}` : (p.channelOpen ? 'open, waiting for hello' : 'closed'),
        counters: `sent ${s.counters.sent}, confirmed ${s.counters.confirmed}, received ${s.counters.received}, waiting ${s.buffered}`,
      });
      if (signaling.state === 'stopped') view.setBadge('stopped', 'stopped');
      else if (p.healthy && s.ready) view.setBadge('connected', 'connected');
      else if (signaling.state !== 'registered' && !p.healthy) view.setBadge('offline', 'offline, reconnecting…');
      else if (p.remotePresent === false && !p.healthy) view.setBadge('recovering', `waiting for ${remoteId}`);
      else view.setBadge('recovering', 'reconnecting…');
    });
  }

  // The test and inspection API.
  /** @type {any} */ (window).tether = {
    peerId,
    remoteId,
    /** The signaling URL in use (`wss://` when the page came over https). */
    signalUrl: () => signaling.url,
    get ready() {
      return peer.healthy() && session.ready();
    },
    status() {
      return {
        ready: peer.healthy() && session.ready(),
        signaling: { state: signaling.state, generation: signaling.generation, counters: { ...signaling.counters } },
        peer: peer.status(),
        session: session.status(),
      };
    },
    /** @param {string} text */
    send,
    messages: () => messages.map((m) => ({ ...m })),
    received: () => messages.filter((m) => m.dir === 'in').map((m) => m.text),
    sent: () => messages.filter((m) => m.dir === 'out').map((m) => m.text),
    events: () => events.slice(),
    killSignaling: () => signaling.kill(),
    restartIce: () => peer.restartIce(),
    replacePeer: () => peer.replace(),
    /** Test hook: frames this page sends vanish (as on a dying path). @param {boolean} on */
    dropOutgoing: (on) => {
      session.dropOutgoing = on;
    },
    /** ICE candidate pairs of the current peer connection, for diagnosis. */
    icePairs: () => peer.icePairs(),
    /** Test hook: puts raw bytes on the data channel (malformed frames). @param {number[]} bytes */
    sendRawFrame: (bytes) => {
      if (!session.channel || session.channel.readyState !== 'open') return false;
      session.channel.send(new Uint8Array(bytes));
      return true;
    },
  };

  log(`page: ${peerId} → ${remoteId} in room ${room}, stream session ${session.stream.session.toString(16)}`);
  render();
  signaling.start();
  peer.start();
}
