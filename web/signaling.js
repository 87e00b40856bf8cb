// A browser client of the tether signaling protocol, v1 (docs/PROTOCOL.md):
// JSON text frames over a WebSocket at /ws.
//
// Like the Rust client, every connection attempt registers with the same
// `session` (this page's instance id) and a larger `generation`, so a slow,
// superseded attempt can never displace a newer one at the server, and a late
// event of an old socket is never taken for one of the current socket
// (every handler checks that its socket is still the current one).
//
// Browsers cannot send WebSocket pings, so liveness uses the protocol's
// `ping` message: one every `pingIntervalMs`; a socket that received nothing
// for `deadAfterMs` is declared dead and replaced. Lost sockets are
// reconnected with backoff (250 ms doubling to 8 s, ±20 % jitter); refusals
// that a retry cannot fix (token refused, version, replaced by another
// connection of this peer id) stop the client.

export const PROTOCOL_VERSION = 1;

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSES = new Map([
  [4000, 'replaced by a newer connection of this peer id'],
  [4001, 'token refused'],
  [4002, 'protocol version not supported'],
]);

/** Relayed message types (PROTOCOL.md §3). */
export const RELAY_TYPES = new Set(['offer', 'answer', 'candidate', 'ice_restart', 'bye', 'detour']);

/**
 * Checks a relayed message's payload fields; returns a reason or null.
 * @param {any} msg
 */
function relayProblem(msg) {
  if (typeof msg.from !== 'string' || msg.from === '') return 'no from';
  switch (msg.type) {
    case 'offer':
    case 'answer':
      return typeof msg.sdp === 'string' && msg.sdp !== '' ? null : 'no sdp';
    case 'candidate':
      if (msg.candidate != null && typeof msg.candidate !== 'string') return 'bad candidate';
      if (msg.sdp_mid != null && typeof msg.sdp_mid !== 'string') return 'bad sdp_mid';
      if (msg.sdp_mline_index != null && !Number.isInteger(msg.sdp_mline_index)) return 'bad sdp_mline_index';
      return null;
    case 'detour':
      return typeof msg.sealed === 'string' && msg.sealed !== '' ? null : 'no sealed';
    default:
      return null;
  }
}

/** A random instance id for `session`. */
function randomInstanceId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Events (CustomEvent `detail`):
 * - `state`      {state, error?}: 'idle' | 'connecting' | 'registered' | 'reconnecting' | 'stopped'
 * - `registered` {generation, peers, replaced, maxFrameBytes, iceServers, iceRestart, detour}
 * - `lost`       {generation, code, reason}: the registered socket went away
 * - `relay`      a relayed message (offer, answer, candidate, ice_restart, bye) with `from`
 * - `presence`   {type: 'peer_joined' | 'peer_left', peerId}
 * - `error`      the server's `error` frame (not followed by a close we act on)
 */
/**
 * The ICE servers a `registered` hands out (PROTOCOL.md), keeping only
 * well-formed entries: `urls` a non-empty array of strings, `username` and
 * `credential` strings when present.
 * @param {unknown} value
 * @returns {RTCIceServer[]}
 */
export function grantedIceServers(value) {
  if (!Array.isArray(value)) return [];
  /** @type {RTCIceServer[]} */
  const servers = [];
  for (const entry of value.slice(0, 8)) {
    if (entry === null || typeof entry !== 'object') continue;
    const { urls, username, credential } = /** @type {Record<string, unknown>} */ (entry);
    if (!Array.isArray(urls) || urls.length === 0 || !urls.every((url) => typeof url === 'string')) continue;
    /** @type {RTCIceServer} */
    const server = { urls: /** @type {string[]} */ (urls) };
    if (typeof username === 'string') server.username = username;
    if (typeof credential === 'string') server.credential = credential;
    servers.push(server);
  }
  return servers;
}

export class SignalingClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.url]         ws://host:port/ws (or wss://)
   * @param {string[]} [options.urls]      several servers of one deployment, instead of `url`:
   *   an attempt that fails moves on to the next at once; backoff starts only
   *   once every server failed in a row
   * @param {string} options.peerId
   * @param {() => Promise<string>} options.getToken  called for every attempt
   * @param {string} [options.room]
   * @param {(line: string) => void} [options.log]
   * @param {number} [options.pingIntervalMs]
   * @param {number} [options.deadAfterMs]
   * @param {number} [options.connectTimeoutMs]
   * @param {typeof WebSocket} [options.WebSocketImpl]
   * @param {() => string[]} [options.restartOnRegister]  asked on every attempt: the peers
   *   whose ICE restart its `register` asks for (PROTOCOL.md §3, `ice_restart`); the server
   *   sends them `ice_restart` right after `registered`, whose `iceRestart` lists them
   */
  constructor(options) {
    super();
    /** @type {string[]} */
    this.urls = options.urls && options.urls.length > 0 ? [...options.urls] : [options.url ?? ''];
    if (this.urls.some((url) => !/^wss?:\/\//.test(url))) throw new Error(`signaling URLs must be ws:// or wss://: ${this.urls.join(', ')}`);
    /** Index in `urls` of the server the next attempt uses. */
    this.urlIndex = 0;
    /** Attempts that failed in a row since the last registration, each on the next server. */
    this.failedInRow = 0;
    this.peerId = options.peerId;
    this.getToken = options.getToken;
    this.room = options.room ?? null;
    this.log = options.log ?? (() => {});
    this.pingIntervalMs = options.pingIntervalMs ?? 5000;
    this.deadAfterMs = options.deadAfterMs ?? 10000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    this.WebSocketImpl = options.WebSocketImpl ?? globalThis.WebSocket;
    this.restartOnRegister = options.restartOnRegister ?? (() => []);
    this.session = randomInstanceId();
    this.generation = 0;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.state = 'idle';
    this.registered = false;
    this.failures = 0;
    this.lastInbound = 0;
    this.nonce = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.connectTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.pingTimer = null;
    this.counters = { attempts: 0, registrations: 0, lost: 0, sent: 0, received: 0, dropped: 0 };
  }

  /** The server the current (or next) attempt uses. */
  get url() {
    return this.urls[this.urlIndex];
  }

  /** Starts connecting (and reconnecting) until stop(). */
  start() {
    if (this.state !== 'idle') return;
    this.attempt();
  }

  /** Closes for good. */
  stop() {
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    this.registered = false;
    if (ws) ws.close(1000, 'bye');
    this.setState('stopped');
  }

  /**
   * Test hook: drops the current socket as a network loss would, then
   * reconnects like after any loss.
   */
  kill() {
    if (!this.ws) return false;
    this.log('signaling: socket killed on purpose');
    this.abandon(this.ws, 'killed');
    this.scheduleRetry(true);
    return true;
  }

  /**
   * Sends one message to the server when registered.
   * @param {object} message
   * @returns {boolean} whether it went out
   */
  send(message) {
    if (!this.ws || !this.registered || this.ws.readyState !== 1) {
      this.counters.dropped += 1;
      return false;
    }
    this.ws.send(JSON.stringify(message));
    this.counters.sent += 1;
    return true;
  }

  /**
   * Relays `payload` ({type, ...fields}) to peer `to`.
   * @param {string} to @param {{type: string} & Record<string, unknown>} payload
   */
  relay(to, payload) {
    return this.send({ ...payload, to });
  }

  // ----- internals --------------------------------------------------------

  /** @param {string} state @param {string} [error] */
  setState(state, error) {
    if (this.state === state && !error) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, error } }));
  }

  clearTimers() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.retryTimer = this.connectTimer = this.pingTimer = null;
  }

  async attempt() {
    this.clearTimers();
    this.generation += 1;
    const generation = this.generation;
    this.counters.attempts += 1;
    this.setState(this.counters.registrations === 0 ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await this.getToken();
    } catch (error) {
      if (generation !== this.generation || this.state === 'stopped') return;
      this.log(`signaling: no token: ${/** @type {Error} */ (error).message}`);
      this.scheduleRetry();
      return;
    }
    if (generation !== this.generation || this.state === 'stopped') return;
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (error) {
      this.log(`signaling: cannot open ${this.url}: ${/** @type {Error} */ (error).message}`);
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.registered = false;
    this.lastInbound = Date.now();
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && !this.registered) {
        this.log(`signaling: attempt ${generation} timed out`);
        this.abandon(ws, 'connect timeout');
        this.scheduleRetry();
      }
    }, this.connectTimeoutMs);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      /** @type {Record<string, unknown>} */
      const register = {
        type: 'register',
        version: PROTOCOL_VERSION,
        peer_id: this.peerId,
        token,
        session: this.session,
        generation,
      };
      if (this.room) register.room = this.room;
      const restart = this.restartOnRegister().slice(0, 64);
      if (restart.length > 0) register.ice_restart = restart;
      ws.send(JSON.stringify(register));
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastInbound = Date.now();
      this.onFrame(ws, generation, event.data);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.onClosed(ws, generation, event.code, event.reason);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
  }

  /**
   * @param {WebSocket} ws @param {number} generation @param {unknown} data
   */
  onFrame(ws, generation, data) {
    if (typeof data !== 'string') {
      this.log('signaling: dropped a binary frame');
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.log('signaling: dropped a frame that is not JSON');
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
      this.log('signaling: dropped a frame without a type');
      return;
    }
    this.counters.received += 1;
    switch (msg.type) {
      case 'registered': {
        if (this.registered) return;
        this.registered = true;
        this.failures = 0;
        this.failedInRow = 0;
        this.counters.registrations += 1;
        if (this.connectTimer) clearTimeout(this.connectTimer);
        this.connectTimer = null;
        this.startPings(ws);
        this.setState('registered');
        const peers = Array.isArray(msg.peers) ? msg.peers.filter((p) => typeof p === 'string') : [];
        this.log(`signaling: registered as ${this.peerId} (attempt ${generation}${msg.replaced ? ', replaced an older connection' : ''}); room has [${peers.join(', ')}]`);
        this.dispatchEvent(new CustomEvent('registered', {
          detail: {
            generation, peers, replaced: msg.replaced === true, maxFrameBytes: msg.max_frame_bytes,
            iceServers: grantedIceServers(msg.ice_servers),
            // The peers the server asks for an ICE restart for us (absent from an older server).
            iceRestart: Array.isArray(msg.ice_restart) ? msg.ice_restart.filter((p) => typeof p === 'string') : [],
            // Whether the server relays `detour` (MESSAGING.md rule 10; absent from an older server).
            detour: Array.isArray(msg.features) && msg.features.includes('detour'),
          },
        }));
        return;
      }
      case 'pong':
        return;
      case 'peer_joined':
      case 'peer_left':
        if (typeof msg.peer_id !== 'string') {
          this.log(`signaling: dropped ${msg.type} without peer_id`);
          return;
        }
        this.dispatchEvent(new CustomEvent('presence', { detail: { type: msg.type, peerId: msg.peer_id } }));
        return;
      case 'error':
        this.log(`signaling: server error ${msg.code}: ${msg.message ?? ''}`);
        this.dispatchEvent(new CustomEvent('error', { detail: msg }));
        return;
      default:
        if (!RELAY_TYPES.has(msg.type)) {
          this.log(`signaling: dropped unknown message type ${JSON.stringify(msg.type).slice(0, 40)}`);
          return;
        }
        {
          const problem = relayProblem(msg);
          if (problem) {
            this.log(`signaling: dropped malformed ${msg.type}: ${problem}`);
            return;
          }
        }
        this.dispatchEvent(new CustomEvent('relay', { detail: msg }));
    }
  }

  /** @param {WebSocket} ws */
  startPings(ws) {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.ws !== ws) return;
      if (Date.now() - this.lastInbound > this.deadAfterMs) {
        this.log(`signaling: nothing heard for ${this.deadAfterMs} ms, socket declared dead`);
        this.abandon(ws, 'dead');
        this.scheduleRetry(true);
        return;
      }
      this.nonce += 1;
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: 'ping', nonce: `p${this.nonce}` }));
    }, this.pingIntervalMs);
  }

  /**
   * @param {WebSocket} ws @param {number} generation @param {number} code @param {string} reason
   */
  onClosed(ws, generation, code, reason) {
    const wasRegistered = this.registered;
    this.ws = null;
    this.registered = false;
    this.clearTimers();
    this.log(`signaling: socket closed (${code}${reason ? ` ${reason}` : ''})`);
    if (wasRegistered) {
      this.counters.lost += 1;
      this.dispatchEvent(new CustomEvent('lost', { detail: { generation, code, reason } }));
    }
    const fatal = FATAL_CLOSES.get(code);
    if (fatal) {
      this.log(`signaling: stopped: ${fatal}`);
      this.setState('stopped', fatal);
      return;
    }
    this.scheduleRetry(wasRegistered);
  }

  /**
   * Forgets `ws` (its late events are ignored) and closes it.
   * @param {WebSocket} ws @param {string} why
   */
  abandon(ws, why) {
    const wasRegistered = this.registered && this.ws === ws;
    if (this.ws === ws) {
      this.ws = null;
      this.registered = false;
    }
    this.clearTimers();
    try {
      ws.close(1000, why);
    } catch {
      // Already closing.
    }
    if (wasRegistered) {
      this.counters.lost += 1;
      this.dispatchEvent(new CustomEvent('lost', { detail: { generation: this.generation, code: 0, reason: why } }));
    }
  }

  /**
   * @param {boolean} [immediately] the first retry after losing a working socket runs at once;
   *   otherwise the attempt failed: the next one uses the next server, at once
   *   while some server has not failed in this row, else after a backoff
   */
  scheduleRetry(immediately = false) {
    if (this.state === 'stopped') return;
    this.setState('reconnecting');
    if (this.retryTimer) clearTimeout(this.retryTimer);
    let delay = 0;
    if (!immediately) {
      this.failedInRow += 1;
      this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      if (this.failedInRow % this.urls.length === 0) {
        this.failures += 1;
        const base = Math.min(250 * 2 ** (this.failures - 1), 8000);
        delay = base * (0.8 + 0.4 * Math.random());
      } else {
        this.log(`signaling: trying ${this.url}`);
      }
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.attempt();
    }, delay);
  }
}
