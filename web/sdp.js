// tether's SDP attributes: the negotiation rules of crates/rtc/src/negotiation.rs,
// so that a browser and a Rust node understand each other's offers and answers.
//
// - Roles: the peer with the byte-wise smaller id offers (and creates the data
//   channel "tether"); the other answers and asks for offers with `ice_restart`.
// - An offer carries `a=x-tether-seq:<n>` (n grows with every offer of the
//   sender) and, when it restarts ICE, `a=x-tether-ice-restart`.
// - An answer carries `a=x-tether-offer:<id> <version>`, copied from the o= line
//   of the offer it answers, so a late answer to a superseded offer is dropped.
// - A rejection is an `answer` whose SDP is only `a=x-tether-offer:...` and
//   `a=x-tether-reject:<why>` (`unknown-session`: an ICE restart of a session
//   the answerer does not have; `failed`: it could not take the offer).
// Every `a=x-tether-` line is removed before the browser's RTCPeerConnection
// sees the SDP.

const TAG_PREFIX = 'a=x-tether-';
const OFFER_TAG = 'a=x-tether-offer:';
const RESTART_TAG = 'a=x-tether-ice-restart';
const SEQ_TAG = 'a=x-tether-seq:';
const REJECT_TAG = 'a=x-tether-reject:';

/** @typedef {{id: string, version: bigint}} SessionOrigin */
/** @typedef {{origin: SessionOrigin, seq: bigint | null}} OfferId */
/** @typedef {'unknown-session' | 'failed'} Rejection */
/**
 * @typedef {object} Tags
 * @property {SessionOrigin | null} answers  an answer: the offer it answers
 * @property {boolean} iceRestart            an offer: it restarts ICE of an existing session
 * @property {bigint | null} seq             an offer: its number among the offerer's offers
 * @property {Rejection | null} rejected     an answer: the offer was refused, and why
 */

/**
 * Who offers between `local` and `remote` (byte order of UTF-8, like Rust's
 * `str` ordering), or null for the same id.
 * @param {string} local @param {string} remote
 * @returns {'offerer' | 'answerer' | null}
 */
export function roleBetween(local, remote) {
  const a = new TextEncoder().encode(local);
  const b = new TextEncoder().encode(remote);
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? 'offerer' : 'answerer';
  }
  if (a.length === b.length) return null;
  return a.length < b.length ? 'offerer' : 'answerer';
}

/** Lines including their terminator, like Rust's `split_inclusive('\n')`. @param {string} text */
function linesInclusive(text) {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/** @param {string} text */
function isDecimalU64(text) {
  return /^[0-9]+$/.test(text) && BigInt(text) < 1n << 64n;
}

/**
 * Reads the o= line of an SDP text: the session id and version.
 * @param {string} sdp
 * @returns {SessionOrigin}
 * @throws {Error} with the reason when there is no usable o= line
 */
export function parseOrigin(sdp) {
  const line = sdp
    .split('\n')
    .map((l) => l.replace(/\s+$/, ''))
    .find((l) => l.startsWith('o='));
  if (line === undefined) throw new Error('sdp has no o= line');
  const fields = line.slice(2).split(/\s+/).filter(Boolean);
  if (fields.length < 1) throw new Error('o= line is empty');
  if (fields.length < 2) throw new Error('o= line has no session id');
  if (fields.length < 3) throw new Error('o= line has no session version');
  if (!isDecimalU64(fields[2])) throw new Error('o= session version is not a number');
  return { id: fields[1], version: BigInt(fields[2]) };
}

/** @param {SessionOrigin | null | undefined} a @param {SessionOrigin | null | undefined} b */
export function sameOrigin(a, b) {
  return !!a && !!b && a.id === b.id && a.version === b.version;
}

/**
 * How an incoming offer relates to the session the answerer has.
 * @param {OfferId | null} current the offer last applied to the current peer connection
 * @param {OfferId} offer
 * @returns {'new-session' | 'renegotiation' | 'duplicate' | 'stale'}
 */
export function classifyOffer(current, offer) {
  if (!current || current.origin.id !== offer.origin.id) return 'new-session';
  if (current.seq !== null && offer.seq !== null) {
    if (offer.seq > current.seq) return 'renegotiation';
    if (offer.seq === current.seq) return 'duplicate';
    return 'stale';
  }
  // Not numbered (not a tether offerer): only identity is known.
  return current.origin.version === offer.origin.version ? 'duplicate' : 'renegotiation';
}

/**
 * Adds one attribute line as the last session-level line (before the first m=).
 * @param {string} sdp @param {string} attribute
 */
function addSessionAttribute(sdp, attribute) {
  let out = '';
  let added = false;
  for (const line of linesInclusive(sdp)) {
    if (!added && line.startsWith('m=')) {
      out += `${attribute}\r\n`;
      added = true;
    }
    out += line;
  }
  if (!added) {
    if (out.length > 0 && !out.endsWith('\n')) out += '\r\n';
    out += `${attribute}\r\n`;
  }
  return out;
}

/**
 * Numbers an offer, and marks it as an ICE restart when it is one.
 * @param {string} sdp @param {bigint | number} seq @param {boolean} iceRestart
 */
export function tagOffer(sdp, seq, iceRestart) {
  const numbered = addSessionAttribute(sdp, `${SEQ_TAG}${BigInt(seq)}`);
  return iceRestart ? addSessionAttribute(numbered, RESTART_TAG) : numbered;
}

/** Names the offer an answer answers. @param {string} sdp @param {SessionOrigin} offer */
export function tagAnswer(sdp, offer) {
  return addSessionAttribute(sdp, `${OFFER_TAG}${offer.id} ${offer.version}`);
}

/** The SDP text of a rejection of `offer`. @param {SessionOrigin} offer @param {Rejection} why */
export function rejection(offer, why) {
  return `${OFFER_TAG}${offer.id} ${offer.version}\r\n${REJECT_TAG}${why}\r\n`;
}

/**
 * Splits the tether attributes off an SDP: what they said, and the SDP exactly
 * as the remote WebRTC stack produced it.
 * @param {string} sdp
 * @returns {{tags: Tags, sdp: string}}
 */
export function untag(sdp) {
  /** @type {Tags} */
  const tags = { answers: null, iceRestart: false, seq: null, rejected: null };
  let plain = '';
  for (const line of linesInclusive(sdp)) {
    if (!line.startsWith(TAG_PREFIX)) {
      plain += line;
      continue;
    }
    if (line.startsWith(OFFER_TAG)) {
      const fields = line.slice(OFFER_TAG.length).split(/\s+/).filter(Boolean);
      if (fields.length >= 2 && isDecimalU64(fields[1])) {
        tags.answers = { id: fields[0], version: BigInt(fields[1]) };
      }
    } else if (line.startsWith(REJECT_TAG)) {
      const why = line.slice(REJECT_TAG.length).trim();
      tags.rejected = why === 'unknown-session' ? 'unknown-session' : 'failed';
    } else if (line.startsWith(SEQ_TAG)) {
      const value = line.slice(SEQ_TAG.length).trim();
      tags.seq = isDecimalU64(value) ? BigInt(value) : null;
    } else if (line.replace(/\s+$/, '') === RESTART_TAG) {
      tags.iceRestart = true;
    }
  }
  return { tags, sdp: plain };
}
