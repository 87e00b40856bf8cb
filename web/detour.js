// The detour through signaling (docs/MESSAGING.md rule 10): reliable-messaging
// frames sealed end to end with WebCrypto, byte for byte what
// crates/node/src/reliable/detour.rs does (web/tests/vectors/detour.json pins it).
//
// Each side sends a fresh ephemeral P-256 key share on every data channel (a
// Key frame); from the two shares both derive one AES-256-GCM key per
// direction: HKDF-SHA256, salt `tether-detour-v1`, the ECDH shared secret as
// input, the sender's then the receiver's public key as info. A sealed batch is
// sender_session u64 | receiver_session u64 | counter u64 (the associated
// data), then AES-GCM (nonce: 4 zero bytes, counter) of `flags: u8` and the
// frames, each `len: u32` then the frame, with the tag appended.

import { decodeFrame, PUBLIC_KEY_LEN } from './frame.js';

const SALT = new TextEncoder().encode('tether-detour-v1');
export const HEADER_LEN = 24;
const TAG_LEN = 16;
/** Bytes a sealed batch adds to its frames, besides each frame's 4-byte length. */
export const SEAL_OVERHEAD = HEADER_LEN + 1 + TAG_LEN;
export const FRAME_OVERHEAD = 4;
const PATH_DOWN = 1;

/** A detour batch that could not be opened or read. */
export class DetourError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'DetourError';
  }
}

/** @param {Uint8Array} bytes */
function copy(bytes) {
  return new Uint8Array(bytes);
}

/** @param {bigint} counter */
function nonce(counter) {
  const bytes = new Uint8Array(12);
  new DataView(bytes.buffer).setBigUint64(4, counter);
  return bytes;
}

/**
 * The AES-256-GCM key of the direction `from` -> `to`.
 * @param {Uint8Array} shared @param {Uint8Array} from @param {Uint8Array} to
 */
async function directionKey(shared, from, to) {
  const ikm = await crypto.subtle.importKey('raw', copy(shared), 'HKDF', false, ['deriveKey']);
  const info = new Uint8Array(from.length + to.length);
  info.set(from, 0);
  info.set(to, from.length);
  return crypto.subtle.deriveKey(
    { name: 'HKDF', hash: 'SHA-256', salt: SALT, info },
    ikm,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/** The two keys of one agreement: sealing towards the peer, opening from it. */
export class DetourKeys {
  /**
   * @param {CryptoKey} seal @param {CryptoKey} open @param {Uint8Array} peerPublic
   */
  constructor(seal, open, peerPublic) {
    this.sealKey = seal;
    this.openKey = open;
    this.peerPublic = peerPublic;
    /** The next nonce counter of the sealing key. */
    this.counter = 0n;
  }

  /**
   * The keys for the ECDH output `shared` between `own` and `peer` public keys.
   * @param {Uint8Array} shared @param {Uint8Array} own @param {Uint8Array} peer
   */
  static async derive(shared, own, peer) {
    const [seal, open] = await Promise.all([directionKey(shared, own, peer), directionKey(shared, peer, own)]);
    return new DetourKeys(seal, open, copy(peer));
  }

  /**
   * Seals encoded frames; the counter is taken before the first await, so
   * batches sealed concurrently never share a nonce.
   * @param {bigint} senderSession @param {bigint} receiverSession @param {boolean} pathDown
   * @param {Uint8Array[]} frames
   */
  async seal(senderSession, receiverSession, pathDown, frames) {
    const counter = this.counter;
    this.counter += 1n;
    const header = new Uint8Array(HEADER_LEN);
    const view = new DataView(header.buffer);
    view.setBigUint64(0, senderSession);
    view.setBigUint64(8, receiverSession);
    view.setBigUint64(16, counter);
    const body = new Uint8Array(1 + frames.reduce((sum, f) => sum + FRAME_OVERHEAD + f.length, 0));
    const bodyView = new DataView(body.buffer);
    body[0] = pathDown ? PATH_DOWN : 0;
    let at = 1;
    for (const frame of frames) {
      bodyView.setUint32(at, frame.length);
      body.set(frame, at + FRAME_OVERHEAD);
      at += FRAME_OVERHEAD + frame.length;
    }
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: 'AES-GCM', iv: nonce(counter), additionalData: header, tagLength: 128 },
        this.sealKey,
        body,
      ),
    );
    const out = new Uint8Array(HEADER_LEN + sealed.length);
    out.set(header, 0);
    out.set(sealed, HEADER_LEN);
    return out;
  }

  /**
   * Opens a batch the peer sealed.
   * @param {Uint8Array} sealed
   * @returns {Promise<{senderSession: bigint, receiverSession: bigint, pathDown: boolean, frames: import('./frame.js').Frame[]}>}
   * @throws {DetourError} when it does not open or does not read
   */
  async open(sealed) {
    if (sealed.length < SEAL_OVERHEAD) throw new DetourError(`sealed batch too short (${sealed.length} bytes)`);
    const header = sealed.slice(0, HEADER_LEN);
    const view = new DataView(header.buffer);
    let plain;
    try {
      plain = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: 'AES-GCM', iv: nonce(view.getBigUint64(16)), additionalData: header, tagLength: 128 },
          this.openKey,
          sealed.slice(HEADER_LEN),
        ),
      );
    } catch {
      throw new DetourError('sealed batch does not open');
    }
    if (plain.length < 1) throw new DetourError('batch without its flags');
    const plainView = new DataView(plain.buffer);
    const frames = [];
    let at = 1;
    while (at < plain.length) {
      if (plain.length - at < FRAME_OVERHEAD) throw new DetourError('batch frame length runs past the batch');
      const length = plainView.getUint32(at);
      at += FRAME_OVERHEAD;
      if (length > plain.length - at) throw new DetourError('batch frame length runs past the batch');
      try {
        frames.push(decodeFrame(plain.subarray(at, at + length)));
      } catch (error) {
        throw new DetourError(`batch frame: ${/** @type {Error} */ (error).message}`);
      }
      at += length;
    }
    return {
      senderSession: view.getBigUint64(0),
      receiverSession: view.getBigUint64(8),
      pathDown: (plain[0] & PATH_DOWN) !== 0,
      frames,
    };
  }
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function equal(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * One peer's detour keys: this channel's share until the peer's arrives, the
 * newest agreement (seals and opens) and the one before it (opens only).
 */
export class PeerKeys {
  constructor() {
    /** @type {CryptoKeyPair | null} */
    this.share = null;
    /** @type {Uint8Array | null} */
    this.public = null;
    /** @type {DetourKeys | null} */
    this.current = null;
    /** @type {DetourKeys | null} */
    this.previous = null;
    /** Settles once the current channel's share exists (or failed). @type {Promise<void>} */
    this.ready = Promise.resolve();
  }

  /** A new channel: a fresh share, whose public key goes out after each Hello. */
  channelOpened() {
    this.share = null;
    this.public = null;
    this.ready = (async () => {
      const pair = /** @type {CryptoKeyPair} */ (
        await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits'])
      );
      this.public = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
      this.share = pair;
    })();
    return this.ready;
  }

  /**
   * The peer's share arrived on the current channel; resolves whether new keys
   * were agreed. A repeat of the share already agreed with changes nothing.
   * @param {Uint8Array} peerPublic
   */
  async peerShare(peerPublic) {
    if (peerPublic.length !== PUBLIC_KEY_LEN) return false;
    // The peer's share may come before WebCrypto made ours: wait for it.
    await this.ready.catch(() => {});
    if (this.current && equal(this.current.peerPublic, peerPublic)) return false;
    const share = this.share;
    const own = this.public;
    if (!share || !own) return false;
    this.share = null;
    try {
      const peerKey = await crypto.subtle.importKey('raw', copy(peerPublic), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
      const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: 'ECDH', public: peerKey }, share.privateKey, 256));
      const keys = await DetourKeys.derive(shared, own, peerPublic);
      this.previous = this.current;
      this.current = keys;
      return true;
    } catch {
      return false;
    }
  }

  agreed() {
    return this.current !== null;
  }

  /**
   * Opens a batch with the newest keys, or the ones before.
   * @param {Uint8Array} sealed
   */
  async open(sealed) {
    let last = new DetourError('no keys agreed');
    for (const keys of [this.current, this.previous]) {
      if (!keys) continue;
      try {
        return await keys.open(sealed);
      } catch (error) {
        last = /** @type {DetourError} */ (error);
      }
    }
    throw last;
  }
}

/** Standard base64 of bytes. @param {Uint8Array} bytes */
export function toBase64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

/** Bytes of standard base64, or null. @param {string} text */
export function fromBase64(text) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
