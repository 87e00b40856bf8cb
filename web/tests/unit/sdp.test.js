// The tether SDP attributes, with the same cases as crates/rtc/src/negotiation.rs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  classifyOffer, parseOrigin, rejection, roleBetween, tagAnswer, tagOffer, untag,
} from '../../sdp.js';

const ANSWER = 'v=0\r\no=- 42 3 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n'
  + 'a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n';

// What Chromium's createOffer gives for one data channel (trimmed).
const CHROME_OFFER = 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n'
  + 'a=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n'
  + 'm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n'
  + 'a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\n'
  + 'a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n'
  + 'a=max-message-size:262144\r\n';

test('the smaller id offers, in byte order', () => {
  assert.equal(roleBetween('alice', 'bob'), 'offerer');
  assert.equal(roleBetween('bob', 'alice'), 'answerer');
  assert.equal(roleBetween('a', 'a'), null);
  assert.equal(roleBetween('Zed', 'abe'), 'offerer'); // upper case sorts first
  assert.equal(roleBetween('ab', 'abc'), 'offerer'); // a prefix sorts first
  assert.equal(roleBetween('node', 'web'), 'offerer');
  assert.equal(roleBetween('web', 'node'), 'answerer');
});

test('origins parse, and garbage is refused', () => {
  assert.deepEqual(parseOrigin(ANSWER), { id: '42', version: 3n });
  assert.deepEqual(parseOrigin(CHROME_OFFER), { id: '4611731400430051336', version: 2n });
  for (const bad of ['', 'v=0\r\no=\r\n', 'o=- 1\r\n', 'o=- 1 x IN IP4 0.0.0.0\r\n']) {
    assert.throws(() => parseOrigin(bad), Error, JSON.stringify(bad));
  }
});

test('offers are classified by session and number', () => {
  const offer = (/** @type {string} */ id, /** @type {bigint} */ version, /** @type {bigint | null} */ seq) => ({ origin: { id, version }, seq });
  const current = offer('7', 900n, 2n);
  assert.equal(classifyOffer(null, offer('7', 1n, 1n)), 'new-session');
  assert.equal(classifyOffer(current, offer('8', 1n, 3n)), 'new-session');
  assert.equal(classifyOffer(current, offer('7', 5n, 3n)), 'renegotiation'); // versions may go down
  assert.equal(classifyOffer(current, offer('7', 900n, 2n)), 'duplicate');
  assert.equal(classifyOffer(current, offer('7', 950n, 1n)), 'stale');
  const plain = offer('7', 900n, null);
  assert.equal(classifyOffer(plain, offer('7', 900n, null)), 'duplicate');
  assert.equal(classifyOffer(plain, offer('7', 3n, null)), 'renegotiation');
});

test('the answer tag round-trips and stays session-level', () => {
  const origin = { id: '99', version: 5n };
  const tagged = tagAnswer(ANSWER, origin);
  assert.ok(tagged.indexOf('a=x-tether-offer:') < tagged.indexOf('m='));
  const { tags, sdp } = untag(tagged);
  assert.deepEqual(tags.answers, origin);
  assert.equal(tags.iceRestart, false);
  assert.equal(sdp, ANSWER);
  // Exactly the text the Rust side produces.
  assert.equal(tagged, ANSWER.replace('m=application', 'a=x-tether-offer:99 5\r\nm=application'));
});

test('offers are numbered and restarts marked, in the Rust order', () => {
  const tagged = tagOffer(ANSWER, 4n, true);
  assert.equal(tagged, ANSWER.replace('m=application', 'a=x-tether-seq:4\r\na=x-tether-ice-restart\r\nm=application'));
  let { tags, sdp } = untag(tagged);
  assert.equal(tags.iceRestart, true);
  assert.equal(tags.seq, 4n);
  assert.equal(tags.answers, null);
  assert.equal(sdp, ANSWER);
  ({ tags } = untag(tagOffer(CHROME_OFFER, 5, false)));
  assert.equal(tags.iceRestart, false);
  assert.equal(tags.seq, 5n);
  assert.equal(untag(tagOffer(CHROME_OFFER, 5, false)).sdp, CHROME_OFFER);
});

test('rejections name their offer', () => {
  const origin = { id: '12', version: 3n };
  assert.equal(rejection(origin, 'unknown-session'), 'a=x-tether-offer:12 3\r\na=x-tether-reject:unknown-session\r\n');
  let { tags, sdp } = untag(rejection(origin, 'unknown-session'));
  assert.deepEqual(tags.answers, origin);
  assert.equal(tags.rejected, 'unknown-session');
  assert.equal(sdp, '');
  ({ tags } = untag(rejection(origin, 'failed')));
  assert.equal(tags.rejected, 'failed');
  ({ tags } = untag('a=x-tether-offer:1 1\r\na=x-tether-reject:something-new\r\n'));
  assert.equal(tags.rejected, 'failed'); // unknown reasons are failures
});

test('untagged or garbled answers name nothing', () => {
  assert.deepEqual(untag(ANSWER), { tags: { answers: null, iceRestart: false, seq: null, rejected: null }, sdp: ANSWER });
  const garbled = `a=x-tether-offer:only-id\r\n${ANSWER}`;
  assert.deepEqual(untag(garbled).tags.answers, null);
  assert.equal(untag(garbled).sdp, ANSWER);
  assert.equal(tagAnswer('v=0', { id: '1', version: 1n }), 'v=0\r\na=x-tether-offer:1 1\r\n');
  assert.equal(untag('a=x-tether-seq:nope\r\n').tags.seq, null);
});
