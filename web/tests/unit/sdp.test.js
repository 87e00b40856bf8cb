// The negotiation rules of docs/NEGOTIATION.md against the vectors shared
// with the Rust implementation (web/tests/vectors/negotiation.json, also read
// by crates/rtc/src/negotiation.rs). A vector marked `pending` for "web" is
// a planned rule the page does not follow yet: it must fail here, and once it
// passes this test fails until the flag is removed from the file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  classifyOffer, compareFingerprints, matchAnswer, parseOrigin, rejection, roleBetween, tagAnswer, tagOffer, untag,
} from '../../sdp.js';
import { Budget } from '../../budget.js';

const vectors = JSON.parse(readFileSync(new URL('../vectors/negotiation.json', import.meta.url), 'utf8'));

/** @param {string | null} text */
const u64 = (text) => (text === null ? null : BigInt(text));
/** @param {bigint | null} value */
const dec = (value) => (value === null ? null : String(value));
/** An OfferId from the file's {origin: {id, version}, seq}. @param {any} json */
const offerId = (json) => json && { origin: { id: json.origin.id, version: BigInt(json.origin.version) }, seq: u64(json.seq) };
/** An OfferId from the file's flat {id, version, seq} (what an answer names). @param {any} json */
const named = (json) => json && { origin: { id: json.id, version: BigInt(json.version) }, seq: u64(json.seq) };
/** @param {import('../../sdp.js').OfferId | null} offer */
const namedJson = (offer) => offer && { id: offer.origin.id, version: String(offer.origin.version), seq: dec(offer.seq) };

/** What each section's vector checks: throws (an assertion) when the page does not follow it. */
const CHECKS = {
  roles: (/** @type {any} */ v) => assert.equal(roleBetween(v.local, v.remote), v.role),
  origins: (/** @type {any} */ v) => {
    if (v.error) {
      assert.throws(() => parseOrigin(v.sdp), Error);
    } else {
      const origin = parseOrigin(v.sdp);
      assert.deepEqual({ id: origin.id, version: String(origin.version) }, v.origin);
    }
  },
  tag_offer: (/** @type {any} */ v) => assert.equal(tagOffer(v.sdp, BigInt(v.seq), v.ice_restart), v.tagged),
  tag_answer: (/** @type {any} */ v) => assert.equal(tagAnswer(v.sdp, named(v.offer)), v.tagged),
  rejection: (/** @type {any} */ v) => assert.equal(rejection(named(v.offer), v.why), v.text),
  untag: (/** @type {any} */ v) => {
    const { tags, sdp } = untag(v.tagged);
    const got = { answers: namedJson(tags.answers), seq: dec(tags.seq), ice_restart: tags.iceRestart, rejected: tags.rejected };
    assert.deepEqual(got, v.tags);
    assert.equal(sdp, v.sdp);
  },
  classify_offer: (/** @type {any} */ v) => assert.equal(classifyOffer(offerId(v.current), offerId(v.offer)), v.kind),
  match_answer: (/** @type {any} */ v) => {
    const answer = { answers: named(v.answer.answers), rejected: v.answer.rejected };
    assert.equal(matchAnswer(offerId(v.outstanding), answer), v.result);
  },
  fingerprints: (/** @type {any} */ v) => assert.equal(compareFingerprints(v.previous, v.answer), v.result),
  budget: (/** @type {any} */ v) => {
    const budget = new Budget();
    const got = v.items.map((/** @type {any} */ item) => budget.decide(item.t_ms, item.kind, item.resend));
    assert.deepEqual(got, v.results);
  },
};

/** Sections and the fewest vectors each must have: an emptied or renamed section fails. */
const MINIMUM = {
  roles: 10, origins: 15, tag_offer: 10, tag_answer: 5, rejection: 4, untag: 30, classify_offer: 15,
  match_answer: 15, fingerprints: 8, budget: 10,
};

test('every section has vectors, with unique names', () => {
  assert.deepEqual(Object.keys(CHECKS).sort(), Object.keys(MINIMUM).sort());
  for (const [section, minimum] of Object.entries(MINIMUM)) {
    const list = vectors[section];
    assert.ok(Array.isArray(list) && list.length >= minimum, `${section}: at least ${minimum} vectors`);
    const names = list.map((/** @type {any} */ v) => v.name);
    assert.equal(new Set(names).size, names.length, `${section}: unique names`);
    for (const v of list) {
      if (v.pending === undefined) continue;
      assert.ok(v.pending.every((/** @type {string} */ who) => who === 'rust' || who === 'web'), `${section}/${v.name}: pending is rust and/or web`);
      assert.match(v.rule ?? '', /^P\d+$/, `${section}/${v.name}: a pending vector names its planned rule`);
    }
  }
});

for (const [section, check] of Object.entries(CHECKS)) {
  test(`negotiation vectors: ${section}`, () => {
    const problems = [];
    for (const vector of vectors[section]) {
      const pending = (vector.pending ?? []).includes('web');
      let failure = null;
      try {
        check(vector);
      } catch (error) {
        failure = /** @type {Error} */ (error).message;
      }
      if (pending && failure === null) {
        problems.push(`${section}/${vector.name}: passes now; remove "web" from its pending list (${vector.rule})`);
      } else if (!pending && failure !== null) {
        problems.push(`${section}/${vector.name}: ${failure}`);
      }
    }
    assert.deepEqual(problems, []);
  });
}

// Implementation properties the vectors do not state.

test('untagging what was tagged gives the stack its SDP back', () => {
  const sdp = vectors.tag_offer[0].sdp;
  for (const restart of [false, true]) {
    const { tags, sdp: plain } = untag(tagOffer(sdp, 12n, restart));
    assert.equal(plain, sdp);
    assert.equal(tags.seq, 12n);
    assert.equal(tags.iceRestart, restart);
  }
  const offer = { origin: { id: '5', version: 6n }, seq: 7n };
  assert.deepEqual(untag(tagAnswer(sdp, offer)), { tags: { answers: offer, seq: null, iceRestart: false, rejected: null }, sdp });
  assert.deepEqual(untag(rejection(offer, 'failed')).tags.answers, offer);
});

test('arbitrary input never throws anything but a parse error', () => {
  const pieces = ['v=0', 'o=', 'o=- 1 2', ' ', '\r', '\n', '\r\n', 'a=x-tether-', 'seq:', 'offer:', 'reject:', 'ice-restart',
    'm=', '9', '+', '-', '18446744073709551616', 'a=fingerprint:', 'sha-256 AB:CD', '\t', 'é'];
  let state = 7;
  const next = () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state;
  };
  for (let i = 0; i < 2000; i++) {
    let text = '';
    const n = next() % 12;
    for (let j = 0; j < n; j++) text += pieces[next() % pieces.length];
    untag(text);
    compareFingerprints(text, text);
    try {
      parseOrigin(text);
    } catch (error) {
      assert.ok(error instanceof Error, JSON.stringify(text));
    }
  }
});
