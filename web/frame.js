// The wire format of reliable messaging on a data channel (docs/MESSAGING.md),
// byte for byte the same as crates/node/src/reliable/frame.rs.
//
// Every data-channel message is one binary frame; integers are big-endian u64
// (BigInt here):
//
// | type | layout after the type byte                                  |
// |------|-------------------------------------------------------------|
// | 1 Hello | version u8, session, resume_from, peer_session, delivered |
// | 2 Data  | seq, payload bytes                                        |
// | 3 Ack   | delivered                                                 |
// | 4 Key   | public_key: 65 bytes (an uncompressed P-256 point)         |

/** The messaging protocol version carried in Hello. */
export const VERSION = 1;

const HELLO = 1;
const DATA = 2;
const ACK = 3;
const KEY = 4;
/** An uncompressed P-256 public key's length (Key frames, MESSAGING.md rule 10). */
export const PUBLIC_KEY_LEN = 65;
const HELLO_LEN = 2 + 4 * 8;
const U64_MAX = (1n << 64n) - 1n;

/**
 * @typedef {{type: 'hello', session: bigint, resumeFrom: bigint, peerSession: bigint, delivered: bigint}} HelloFrame
 * @typedef {{type: 'data', seq: bigint, payload: Uint8Array}} DataFrame
 * @typedef {{type: 'ack', delivered: bigint}} AckFrame
 * @typedef {{type: 'key', publicKey: Uint8Array}} KeyFrame
 * @typedef {HelloFrame | DataFrame | AckFrame | KeyFrame} Frame
 */

/** A frame that cannot be decoded (it is dropped, never applied). */
export class FrameError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'FrameError';
    this.code = code;
  }
}

/** @param {bigint} value @param {string} field */
function checkU64(value, field) {
  if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) {
    throw new RangeError(`${field} must be a u64 BigInt, got ${String(value)}`);
  }
}

/**
 * Encodes one frame.
 * @param {Frame} frame
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function encodeFrame(frame) {
  switch (frame.type) {
    case 'hello': {
      const bytes = new Uint8Array(HELLO_LEN);
      const view = new DataView(bytes.buffer);
      bytes[0] = HELLO;
      bytes[1] = VERSION;
      const fields = [frame.session, frame.resumeFrom, frame.peerSession, frame.delivered];
      const names = ['session', 'resumeFrom', 'peerSession', 'delivered'];
      fields.forEach((value, i) => {
        checkU64(value, names[i]);
        view.setBigUint64(2 + 8 * i, value);
      });
      return bytes;
    }
    case 'data': {
      checkU64(frame.seq, 'seq');
      const bytes = new Uint8Array(9 + frame.payload.length);
      bytes[0] = DATA;
      new DataView(bytes.buffer).setBigUint64(1, frame.seq);
      bytes.set(frame.payload, 9);
      return bytes;
    }
    case 'ack': {
      checkU64(frame.delivered, 'delivered');
      const bytes = new Uint8Array(9);
      bytes[0] = ACK;
      new DataView(bytes.buffer).setBigUint64(1, frame.delivered);
      return bytes;
    }
    case 'key': {
      if (!(frame.publicKey instanceof Uint8Array) || frame.publicKey.length !== PUBLIC_KEY_LEN) {
        throw new RangeError(`publicKey must be ${PUBLIC_KEY_LEN} bytes`);
      }
      const bytes = new Uint8Array(1 + PUBLIC_KEY_LEN);
      bytes[0] = KEY;
      bytes.set(frame.publicKey, 1);
      return bytes;
    }
    default:
      throw new TypeError(`unknown frame type ${String(/** @type {any} */ (frame).type)}`);
  }
}

/**
 * Decodes one frame; never throws anything but FrameError.
 * @param {ArrayBuffer | ArrayBufferView} input
 * @returns {Frame}
 */
export function decodeFrame(input) {
  let bytes;
  if (input instanceof ArrayBuffer) {
    bytes = new Uint8Array(input);
  } else if (ArrayBuffer.isView(input)) {
    bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  } else {
    throw new FrameError('not_binary', 'frame is not binary');
  }
  const len = bytes.length;
  if (len === 0) throw new FrameError('empty', 'empty frame');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = bytes[0];
  const need = (/** @type {string} */ name, /** @type {number} */ n) => {
    if (len - 1 < n) throw new FrameError('truncated', `truncated ${name} frame (${len} bytes)`);
  };
  const exact = (/** @type {string} */ name, /** @type {number} */ used) => {
    if (len > used) {
      throw new FrameError('trailing', `${name} frame has ${len - used} trailing bytes`);
    }
  };
  switch (kind) {
    case HELLO: {
      need('hello', HELLO_LEN - 1);
      const version = bytes[1];
      if (version !== VERSION) {
        throw new FrameError('version', `unsupported messaging version ${version}`);
      }
      exact('hello', HELLO_LEN);
      return {
        type: 'hello',
        session: view.getBigUint64(2),
        resumeFrom: view.getBigUint64(10),
        peerSession: view.getBigUint64(18),
        delivered: view.getBigUint64(26),
      };
    }
    case DATA:
      need('data', 8);
      return { type: 'data', seq: view.getBigUint64(1), payload: bytes.slice(9) };
    case ACK:
      need('ack', 8);
      exact('ack', 9);
      return { type: 'ack', delivered: view.getBigUint64(1) };
    case KEY:
      need('key', PUBLIC_KEY_LEN);
      exact('key', 1 + PUBLIC_KEY_LEN);
      return { type: 'key', publicKey: bytes.slice(1) };
    default:
      throw new FrameError('unknown_type', `unknown frame type ${kind}`);
  }
}
