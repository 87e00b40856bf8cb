// What the browser tests share: a `tether serve` process, a headless
// Chromium from Debian's package driven by playwright-core, pages of the
// browser peer, and waits on page state with deadlines (never sleeps).

import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Where screenshots and logs go: $WEB_ARTIFACTS, or web-artifacts/ in the cargo target dir. */
export const artifactsDir = process.env.WEB_ARTIFACTS
  ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, 'target'), 'web-artifacts');
mkdirSync(artifactsDir, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** The flags the browser tests run Chromium with (the issue's, plus what WebRTC on one host needs). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-quic',
  '--disable-sync',
  // Pages without camera/microphone permission hide their host addresses
  // behind random mDNS names (`….local`). Resolving those needs multicast on
  // the network, which these tests must not send, and webrtc-rs here has mDNS
  // off: real host candidates keep every ICE check on this machine.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

export function tetherBinary() {
  if (process.env.TETHER_BIN) return process.env.TETHER_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repoRoot, 'target');
  return path.join(target, 'debug', 'tether');
}

/**
 * Starts `tether serve --demo` on a free loopback port. It serves the page
 * built into the binary; with WEB_DIR=path (e.g. WEB_DIR=web) it serves that
 * folder instead (`--static-dir`), so page edits need no rebuild while
 * developing.
 * @param {string} name  log file name under the artifacts folder
 * @param {{tls?: boolean, turn?: {url: string, secret: string}}} [options]  tls: serve
 *   https:// and wss:// with a certificate from a throw-away CA (its PEM is the
 *   result's `ca`); turn: hand registered clients this TURN server with
 *   credentials minted from its secret
 */
export async function startServe(name = 'serve', options = {}) {
  const binary = tetherBinary();
  if (!existsSync(binary)) throw new Error(`${binary} is missing: cargo build -p tether-cli (or set TETHER_BIN)`);
  const logPath = path.join(artifactsDir, `${name}.log`);
  const log = createWriteStream(logPath);
  const args = ['serve', '--listen', '127.0.0.1:0', '--demo'];
  const tls = options.tls ? makeCertificates(name) : null;
  if (tls) args.push('--tls-cert', tls.cert, '--tls-key', tls.key);
  if (options.turn) args.push('--turn-url', options.turn.url, '--turn-secret', options.turn.secret);
  if (process.env.WEB_DIR) args.push('--static-dir', path.resolve(process.env.WEB_DIR));
  const child = spawn(binary, args, {
    env: { ...process.env, TETHER_SECRET: '', RUST_LOG: process.env.RUST_LOG ?? 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log, { end: false });
  // However this process ends, the server goes with it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const base = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`tether serve did not start in 15 s; see ${logPath}`)), 15000);
    child.stderr.on('data', (chunk) => {
      log.write(chunk);
      seen += chunk;
      const match = /signaling on (wss?):\/\/([^/\s]+)\/ws/.exec(seen);
      if (match) {
        clearTimeout(timer);
        // With TLS the certificate names localhost (not the IP address).
        resolve(match[1] === 'wss' ? `https://localhost:${match[2].split(':').pop()}` : `http://${match[2]}`);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tether serve exited with ${code}; see ${logPath}`));
    });
  });
  return {
    base,
    logPath,
    /** With TLS: the PEM file of the CA that signed the server's certificate. */
    ca: tls?.ca,
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      log.end();
    },
  };
}

/**
 * A throw-away CA and a certificate it signs for localhost and 127.0.0.1,
 * made with the openssl command; returns the PEM files' paths.
 * @param {string} name
 */
function makeCertificates(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `tether-${name}-tls-`));
  const file = (/** @type {string} */ leaf) => path.join(dir, leaf);
  const openssl = (/** @type {string[]} */ args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', `/CN=tether ${name} test ca`]);
  openssl(['req', ...ec, '-keyout', file('key.pem'), '-out', file('cert.csr'), '-subj', '/CN=localhost']);
  writeFileSync(file('san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl(['x509', '-req', '-in', file('cert.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-out', file('cert.pem'), '-days', '2', '-extfile', file('san.ext')]);
  return { ca: file('ca.pem'), cert: file('cert.pem'), key: file('key.pem') };
}

/**
 * Launches Chromium with a fresh profile; `close()` also removes the profile.
 * @param {{mdns?: boolean, ignoreCertificateErrors?: boolean}} [options] mdns: keep Chromium's
 *   default of hiding host addresses behind mDNS names, as a person's browser does;
 *   ignoreCertificateErrors: accept the test CA's certificates (pages served over https)
 */
export async function launchChromium(options = {}) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  const profile = mkdtempSync(path.join(tmpdir(), 'tether-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    // A test CA signs the TLS server's certificate: the browser is not told
    // to trust it, so certificate errors are waived for the test pages.
    ignoreHTTPSErrors: Boolean(options.ignoreCertificateErrors),
    args: options.mdns ? CHROMIUM_ARGS.filter((arg) => !arg.includes('WebRtcHideLocalIpsWithMdns')) : CHROMIUM_ARGS,
    viewport: { width: 1100, height: 760 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A page of the browser peer. Console lines and page errors are collected;
 * `errors` must stay empty.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} base
 * @param {Record<string, string>} params  peer, to, room, …
 */
export async function openPeer(context, base, params) {
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  await page.goto(`${base}/?${new URLSearchParams(params)}`);
  await page.waitForFunction(() => 'tether' in window, null, { timeout: 5000 });
  return { page, errors, name: params.peer };
}

/**
 * Waits until `predicate(arg)` is true in the page, or fails with the page's
 * status and last log lines.
 * @template T
 * @param {{page: import('playwright-core').Page, name: string}} peer
 * @param {string} what
 * @param {(arg: T) => boolean} predicate
 * @param {T} [arg]
 * @param {number} [timeout]
 */
export async function waitFor(peer, what, predicate, arg, timeout = 15000) {
  try {
    await peer.page.waitForFunction(predicate, arg, { timeout, polling: 50 });
  } catch (error) {
    const state = await describe(peer).catch((e) => `(page unreadable: ${e})`);
    throw new Error(`${peer.name}: timed out after ${timeout} ms waiting for ${what}\n${state}`, { cause: error });
  }
}

/** @param {{page: import('playwright-core').Page}} peer */
export async function describe(peer) {
  return peer.page.evaluate(async () => {
    const t = /** @type {any} */ (window).tether;
    const pairs = await t.icePairs().catch(() => []);
    return `${JSON.stringify(t.status(), null, 1)}\nICE pairs:\n  ${pairs.join('\n  ')}\nlast events:\n  ${t.events().slice(-25).join('\n  ')}`;
  });
}

/**
 * Writes the page's event log and status to the artifacts folder (kept for
 * a failed CI run to be read).
 * @param {{page: import('playwright-core').Page, name: string, errors: string[]}} peer @param {string} prefix
 */
export async function saveLog(peer, prefix) {
  if (peer.page.isClosed()) return;
  const text = await describeAll(peer).catch((error) => `(page unreadable: ${error})`);
  writeFileSync(path.join(artifactsDir, `${prefix}-${peer.name}.log`), `${text}\npage errors: ${JSON.stringify(peer.errors)}\n`);
}

/** @param {{page: import('playwright-core').Page}} peer */
function describeAll(peer) {
  return peer.page.evaluate(() => {
    const t = /** @type {any} */ (window).tether;
    return `${JSON.stringify(t.status(), null, 1)}\nevents:\n  ${t.events().join('\n  ')}`;
  });
}

/** @param {{page: import('playwright-core').Page}} peer */
export function status(peer) {
  return peer.page.evaluate(() => /** @type {any} */ (window).tether.status());
}

/** @param {{page: import('playwright-core').Page}} peer @param {string[]} texts */
export function send(peer, texts) {
  return peer.page.evaluate((list) => list.map((text) => /** @type {any} */ (window).tether.send(text)), texts);
}

/** @param {{page: import('playwright-core').Page}} peer @returns {Promise<string[]>} */
export function received(peer) {
  return peer.page.evaluate(() => /** @type {any} */ (window).tether.received());
}

/** Waits until `peer` received exactly `count` messages in total. */
export function waitReceived(/** @type {any} */ peer, /** @type {number} */ count, timeout = 15000) {
  return waitFor(peer, `${count} messages received`, (n) => /** @type {any} */ (window).tether.received().length >= n, count, timeout);
}

/** Waits until every message `peer` sent is confirmed by the other side. */
export function waitAllConfirmed(/** @type {any} */ peer, timeout = 15000) {
  return waitFor(peer, 'every sent message confirmed', () => {
    const s = /** @type {any} */ (window).tether.status().session;
    return s.counters.confirmed === s.counters.sent && s.buffered === 0;
  }, undefined, timeout);
}

export function waitReady(/** @type {any} */ peer, timeout = 15000) {
  return waitFor(peer, 'the session to be ready', () => /** @type {any} */ (window).tether.ready, undefined, timeout);
}

/** Numbered messages `prefix-from..to` (inclusive). */
export function batch(/** @type {string} */ prefix, /** @type {number} */ from, /** @type {number} */ to) {
  return Array.from({ length: to - from + 1 }, (_, i) => `${prefix}-${from + i}`);
}

/**
 * A `tether chat --json` child process: one Rust tether node talking to
 * `args.to`. It runs in its own process group, killed by `stop()` and when
 * this process exits; its stdin is a pipe, so it also quits on its own (EOF)
 * if this process dies. Every JSON line it prints is kept in `events`.
 * @param {string} base  the `tether serve --demo` base URL (http://host:port)
 * @param {{peer: string, to: string, room: string, ca?: string, relayOnly?: boolean}} args  ca: a CA
 *   PEM for wss://; relayOnly: TURN candidates only
 * @param {string} name  log file name under the artifacts folder
 */
export async function startChat(base, args, name = `chat-${args.peer}`) {
  const binary = tetherBinary();
  if (!existsSync(binary)) throw new Error(`${binary} is missing: cargo build -p tether-cli (or set TETHER_BIN)`);
  const logPath = path.join(artifactsDir, `${name}.log`);
  const log = createWriteStream(logPath);
  const child = spawn(binary, [
    'chat', '--json',
    '--signal', `${base.replace(/^http/, 'ws')}/ws`,
    '--token-url', `${base}/demo/token`,
    '--peer-id', args.peer, '--to', args.to, '--room', args.room,
    ...(args.ca ? ['--ca', args.ca] : []),
    ...(args.relayOnly ? ['--relay-only'] : []),
  ], {
    env: {
      ...process.env,
      TETHER_SECRET: '',
      RUST_LOG: process.env.RUST_LOG ?? 'warn,tether=info,tether_rtc=info,tether_signal=info',
    },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  const pid = /** @type {number} */ (child.pid);
  const killGroup = () => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', killGroup);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  child.stderr.pipe(log, { end: false });
  // A chat that quit (or was killed) must not turn a later write into an
  // unhandled error: `say` checks `alive` and fails with a clear message.
  child.stdin.on('error', () => {});

  /** @type {any[]} */
  const events = [];
  /** @type {Set<() => void>} */
  const waiters = new Set();
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (/** @type {string} */ chunk) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line) continue;
      log.write(`stdout: ${line}\n`);
      try {
        events.push(JSON.parse(line));
      } catch {
        events.push({ event: 'unparsable', line });
      }
    }
    for (const wake of waiters) wake();
  });
  child.once('exit', () => {
    for (const wake of waiters) wake();
  });

  const chat = {
    name: args.peer,
    events,
    logPath,
    get alive() {
      return child.exitCode === null && child.signalCode === null;
    },
    /** Writes lines to the chat's stdin (messages, or /commands). @param {string[]} lines */
    write(lines) {
      if (!chat.alive) throw new Error(`${args.peer}: tether chat is not running; see ${logPath}`);
      child.stdin.write(lines.map((line) => `${line}\n`).join(''));
    },
    /** Writes raw bytes to the chat's stdin. @param {Buffer} bytes */
    writeRaw(bytes) {
      if (!chat.alive) throw new Error(`${args.peer}: tether chat is not running; see ${logPath}`);
      child.stdin.write(bytes);
    },
    /**
     * Waits until `predicate(events)` holds (checked on every new line), or
     * fails with the chat's last lines.
     * @template T
     * @param {string} what
     * @param {(events: any[]) => T | undefined | false} predicate
     * @param {number} [timeout]
     * @returns {Promise<T>}
     */
    waitFor(what, predicate, timeout = 15000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = predicate(events);
          if (found) {
            done();
            resolve(found);
          } else if (!chat.alive) {
            done();
            reject(new Error(`${args.peer}: tether chat exited (${child.exitCode ?? child.signalCode}) while waiting for ${what}\n${tail()}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${args.peer}: timed out after ${timeout} ms waiting for ${what}\n${tail()}`));
        }, timeout);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    /** The texts received, in order. */
    received: () => events.filter((e) => e.event === 'received').map((e) => e.text),
    /** Quits with /quit and waits for the exit (SIGKILL after 10 s); returns the `quit` event. */
    async stop() {
      if (chat.alive) {
        child.stdin.end('/quit\n');
        const timer = setTimeout(killGroup, 10000);
        await exited;
        clearTimeout(timer);
      }
      killGroup();
      process.removeListener('exit', killGroup);
      log.end();
      return events.find((e) => e.event === 'quit');
    },
    /** Sends SIGINT to the chat (as Ctrl-C would) and waits for it to exit (SIGKILL after 10 s). */
    async interrupt() {
      if (chat.alive) child.kill('SIGINT');
      const timer = setTimeout(killGroup, 10000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
  const tail = () => events.slice(-15).map((e) => `  ${JSON.stringify(e)}`).join('\n');
  await chat.waitFor('the chat to start', (all) => all.some((e) => e.event === 'started'), 10000);
  return chat;
}

/**
 * Starts Debian's coturn (`turnserver`) on a free loopback port with the
 * shared-secret scheme, and waits until it answers STUN. `stop()` kills it;
 * `allocations()` counts the relay allocations it granted (from its log).
 * @param {string} name  log file name under the artifacts folder
 */
export async function startCoturn(name = 'coturn') {
  const dgram = await import('node:dgram');
  const { readFileSync } = await import('node:fs');
  const probe = dgram.createSocket('udp4');
  await new Promise((resolve) => probe.bind(0, '127.0.0.1', () => resolve(undefined)));
  const port = probe.address().port;
  probe.close();
  const dir = mkdtempSync(path.join(tmpdir(), `tether-${name}-`));
  const logPath = path.join(artifactsDir, `${name}.log`);
  const secret = 'web-turn-test-secret-0123456789';
  const child = spawn('turnserver', [
    '-n', '--verbose', '--no-cli', '--no-tls', '--no-dtls', '--simple-log', '--log-file=stdout',
    '--listening-ip=127.0.0.1', '--relay-ip=127.0.0.1', '--allow-loopback-peers', `--listening-port=${port}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=tether.test',
    `--pidfile=${path.join(dir, 'turnserver.pid')}`, `--userdb=${path.join(dir, 'turndb')}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = createWriteStream(logPath);
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  // Ready when a STUN binding request is answered (bounded).
  const socket = dgram.createSocket('udp4');
  const request = Buffer.concat([Buffer.from([0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]), Buffer.from('tether-ready')]);
  await new Promise((resolve, reject) => {
    const deadline = setTimeout(() => { clearInterval(timer); socket.close(); reject(new Error(`coturn did not answer STUN in 15 s; see ${logPath}`)); }, 15000);
    const timer = setInterval(() => socket.send(request, port, '127.0.0.1'), 100);
    socket.on('message', (message) => {
      if (message.length >= 20 && message[0] === 0x01 && message[1] === 0x01) {
        clearTimeout(deadline);
        clearInterval(timer);
        socket.close();
        resolve(undefined);
      }
    });
    child.once('exit', (code) => { clearTimeout(deadline); clearInterval(timer); reject(new Error(`turnserver exited with ${code}; see ${logPath}`)); });
  });
  return {
    url: `turn:127.0.0.1:${port}?transport=udp`,
    secret,
    allocations: () => readFileSync(logPath, 'utf8').split('\n').filter((line) => line.includes('ALLOCATE processed, success')).length,
    stop() {
      process.removeListener('exit', killOnExit);
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
