// tether's SDP attributes and the pure negotiation rules of
// docs/NEGOTIATION.md, the same as crates/rtc/src/negotiation.rs, so that a
// browser and a Rust node understand each other's offers and answers.
// Both are pinned by web/tests/vectors/negotiation.json.
//
// - Roles (§2): the peer with the byte-wise smaller id offers; the other
//   answers and asks for offers with `ice_restart` (both create the data
//   channel "tether", negotiated out of band: connection.js).
// - An offer carries `a=x-tether-seq:<n>` (§4.2) and, when it restarts ICE,
//   `a=x-tether-ice-restart` (§4.3).
// - An answer carries `a=x-tether-offer:<id> <version> [<seq>]` (§4.4), copied
//   from the offer it answers; the offerer applies it only when it names the
//   outstanding offer (§6.2).
// - A rejection (§10) is an `answer` whose SDP is only `a=x-tether-offer:...`
//   and `a=x-tether-reject:<why>`.
// - An answer to an in-place restart whose DTLS fingerprints changed comes
//   from a replaced peer connection (§9.3).
// Every `a=x-tether-` line is removed before the browser's RTCPeerConnection
// sees the SDP.

const TAG_PREFIX = 'a=x-tether-';
const OFFER_TAG = 'a=x-tether-offer:';
const RESTART_TAG = 'a=x-tether-ice-restart';
const SEQ_TAG = 'a=x-tether-seq:';
const REJECT_TAG = 'a=x-tether-reject:';
const FINGERPRINT = 'a=fingerprint:';

/** @typedef {{id: string, version: bigint}} SessionOrigin */
/** @typedef {{origin: SessionOrigin, seq: bigint | null}} OfferId */
/** @typedef {'unknown-session' | 'failed'} Rejection */
/**
 * @typedef {object} Tags
 * @property {OfferId | null} answers        an answer: the offer it answers (seq null when not named)
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

/**
 * Whether an answer naming `named` answers `offer` (§4.4, §6.2): the same
 * session and, when both carry a seq, the same seq, else the same version.
 * @param {OfferId} named @param {OfferId} offer
 */
export function namesOffer(named, offer) {
  if (named.origin.id !== offer.origin.id) return false;
  if (named.seq !== null && offer.seq !== null) return named.seq === offer.seq;
  return named.origin.version === offer.origin.version;
}

/**
 * What the offerer does with an answer (§6.2, §10).
 * @param {OfferId | null} outstanding the offer waiting for its answer, if any
 * @param {{answers: OfferId | null, rejected: Rejection | null}} answer what the answer's tags said
 * @returns {'apply' | 'superseded' | 'no-offer' | 'refused:unknown-session' | 'refused:failed'}
 */
export function matchAnswer(outstanding, answer) {
  if (!outstanding) return 'no-offer';
  if (answer.answers && !namesOffer(answer.answers, outstanding)) return 'superseded';
  if (answer.rejected) return `refused:${answer.rejected}`;
  return 'apply';
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

/** The answer attribute naming `offer` (with its seq when it had one). @param {OfferId} offer */
function offerTag(offer) {
  const seq = offer.seq === null ? '' : ` ${offer.seq}`;
  return `${OFFER_TAG}${offer.origin.id} ${offer.origin.version}${seq}`;
}

/** Names the offer an answer answers. @param {string} sdp @param {OfferId} offer */
export function tagAnswer(sdp, offer) {
  return addSessionAttribute(sdp, offerTag(offer));
}

/** The SDP text of a rejection of `offer`. @param {OfferId} offer @param {Rejection} why */
export function rejection(offer, why) {
  return `${offerTag(offer)}\r\n${REJECT_TAG}${why}\r\n`;
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
      // <id> <version> [<seq>]; a malformed number makes the attribute
      // absent (§4.1); fields after these are for later versions.
      const fields = line.slice(OFFER_TAG.length).split(/\s+/).filter(Boolean);
      const seqOk = fields.length < 3 || isDecimalU64(fields[2]);
      if (fields.length >= 2 && isDecimalU64(fields[1]) && seqOk) {
        tags.answers = {
          origin: { id: fields[0], version: BigInt(fields[1]) },
          seq: fields.length >= 3 ? BigInt(fields[2]) : null,
        };
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

/**
 * The DTLS fingerprints of an SDP, session and media level, as
 * "algorithm value" in lower case (hex compares case-insensitively).
 * @param {string} sdp
 */
function fingerprints(sdp) {
  const out = new Set();
  for (const line of sdp.split('\n')) {
    if (!line.startsWith(FINGERPRINT)) continue;
    const fields = line.slice(FINGERPRINT.length).trim().split(/\s+/).filter(Boolean);
    if (fields.length >= 2) out.add(`${fields[0]} ${fields[1]}`.toLowerCase());
  }
  return out;
}

/**
 * Whether `next` (an answer to an in-place restart, or a renegotiation offer)
 * has the DTLS identity of `previous`, the remote description already
 * applied (§9.3): the same set of fingerprints, or a changed one (the remote
 * replaced its peer connection).
 * @param {string} previous @param {string} next
 * @returns {'same' | 'changed'}
 */
export function compareFingerprints(previous, next) {
  const a = fingerprints(previous);
  const b = fingerprints(next);
  if (a.size !== b.size) return 'changed';
  for (const f of a) if (!b.has(f)) return 'changed';
  return 'same';
}
