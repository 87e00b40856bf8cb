// The offer and `ice_restart` budgets of docs/NEGOTIATION.md §13.3 (rule P6):
// per pair and direction, one token bucket per kind, 4 tokens, one regained
// every 2 s. A sender waits for a token instead of sending; a receiver defers
// what arrives beyond the budget. Either way only the newest deferred message
// of a kind is kept, and it takes the first token that comes back. A re-sent
// offer takes no token but goes at most once a second; `bye` is free.
//
// `Budget` is the pure rule on a clock given as an argument (pinned by the
// `budget` vectors of web/tests/vectors/negotiation.json); `Throttle` runs it
// with timers for peer.js, holding the deferred action of each kind.

/** Tokens a full bucket holds. */
export const BUDGET_TOKENS = 4;
/** One token comes back this often (ms) while the bucket is not full. */
export const BUDGET_REFILL_MS = 2000;
/** A re-sent offer goes at most this often (ms). */
export const RESEND_INTERVAL_MS = 1000;

/** @typedef {'offer' | 'ice_restart' | 'bye'} BudgetKind */
/** @typedef {'send' | 'defer' | 'drop'} BudgetDecision */

class Bucket {
  constructor() {
    this.tokens = BUDGET_TOKENS;
    /** @type {number | null} when the running refill period started; null while full */
    this.refillFrom = null;
    this.deferred = false;
    /** the deferred message took a token (at that time) and is due */
    this.released = false;
    /** @type {number | null} when the newest message of this kind last went out */
    this.lastSent = null;
  }

  /** Tokens that came back by `now`; the first goes to a deferred message. @param {number} now */
  advance(now) {
    while (this.refillFrom !== null && now - this.refillFrom >= BUDGET_REFILL_MS) {
      const at = this.refillFrom + BUDGET_REFILL_MS;
      this.tokens += 1;
      this.refillFrom = at;
      if (this.deferred) {
        this.tokens -= 1;
        this.deferred = false;
        this.released = true;
        this.lastSent = at;
      }
      if (this.tokens >= BUDGET_TOKENS) {
        this.tokens = BUDGET_TOKENS;
        this.refillFrom = null;
      }
    }
  }

  /** @param {number} now */
  take(now) {
    this.tokens -= 1;
    if (this.refillFrom === null) this.refillFrom = now;
  }
}

/** The budgets of one direction of a pair, on a clock given as an argument (ms). */
export class Budget {
  constructor() {
    /** @type {Record<'offer' | 'ice_restart', Bucket>} */
    this.buckets = { offer: new Bucket(), ice_restart: new Bucket() };
  }

  /**
   * What to do with a message of `kind` at `now`: send (or, receiving,
   * handle) it now, defer it until a token is back (replacing an older
   * deferred one), or drop it (a re-send within a second of the last copy).
   * @param {number} now @param {BudgetKind} kind @param {boolean} resend a re-sent offer
   * @returns {BudgetDecision}
   */
  decide(now, kind, resend) {
    if (kind === 'bye') return 'send';
    const bucket = this.buckets[kind];
    bucket.advance(now);
    if (resend && kind === 'offer') {
      // The offer itself still waits for a token: it goes out then.
      if (bucket.deferred) return 'drop';
      if (bucket.lastSent !== null && now - bucket.lastSent < RESEND_INTERVAL_MS) return 'drop';
      bucket.lastSent = now;
      return 'send';
    }
    if (bucket.deferred || bucket.tokens < 1) {
      bucket.deferred = true;
      return 'defer';
    }
    bucket.take(now);
    bucket.lastSent = now;
    return 'send';
  }

  /**
   * Whether the deferred message of `kind` took a token by `now` and is due
   * (once: the flag clears).
   * @param {number} now @param {'offer' | 'ice_restart'} kind
   */
  due(now, kind) {
    const bucket = this.buckets[kind];
    bucket.advance(now);
    const released = bucket.released;
    bucket.released = false;
    return released;
  }

  /**
   * When the deferred message of `kind` gets its token, or null when none waits.
   * @param {'offer' | 'ice_restart'} kind
   */
  dueAt(kind) {
    const bucket = this.buckets[kind];
    if (!bucket.deferred || bucket.refillFrom === null) return null;
    return bucket.refillFrom + BUDGET_REFILL_MS;
  }

  /** Forgets the deferred message of `kind` (its token is not spent on it). @param {'offer' | 'ice_restart'} kind */
  cancel(kind) {
    this.buckets[kind].deferred = false;
    this.buckets[kind].released = false;
  }

  /** When a re-sent offer may go next, or null when any time will do. */
  resendAt() {
    const last = this.buckets.offer.lastSent;
    return last === null ? null : last + RESEND_INTERVAL_MS;
  }
}

/**
 * A `Budget` with timers: runs a deferred action when its token comes back.
 * Actions are handed to `run` (peer.js's queue), never called from here directly.
 */
export class Throttle {
  /**
   * @param {object} options
   * @param {(what: string, action: () => unknown) => unknown} options.run
   * @param {() => number} [options.now]
   */
  constructor(options) {
    this.budget = new Budget();
    this.run = options.run;
    this.now = options.now ?? (() => performance.now());
    /** @type {Record<'offer' | 'ice_restart', {action: () => unknown, what: string} | null>} */
    this.waiting = { offer: null, ice_restart: null };
    /** @type {Record<'offer' | 'ice_restart', ReturnType<typeof setTimeout> | null>} */
    this.timers = { offer: null, ice_restart: null };
  }

  /**
   * Decides on a message of `kind`. On `defer`, `action` runs (through `run`)
   * when the token is back, unless a newer deferred action replaced it.
   * @param {BudgetKind} kind @param {boolean} resend @param {string} what @param {() => unknown} action
   * @returns {BudgetDecision}
   */
  pass(kind, resend, what, action) {
    if (kind !== 'bye') this.flush(kind);
    const decision = this.budget.decide(this.now(), kind, resend);
    if (decision === 'defer' && kind !== 'bye') {
      this.waiting[kind] = { action, what };
      this.arm(kind);
    }
    return decision;
  }

  /** Whether an action of `kind` waits for a token. @param {'offer' | 'ice_restart'} kind */
  deferred(kind) {
    return this.waiting[kind] !== null;
  }

  /** Runs the deferred action of `kind` if its token is back. @param {'offer' | 'ice_restart'} kind */
  flush(kind) {
    if (!this.budget.due(this.now(), kind)) return;
    const waiting = this.waiting[kind];
    this.waiting[kind] = null;
    if (waiting) this.run(waiting.what, waiting.action);
  }

  /** @param {'offer' | 'ice_restart'} kind */
  arm(kind) {
    const timer = this.timers[kind];
    if (timer) clearTimeout(timer);
    this.timers[kind] = null;
    const at = this.budget.dueAt(kind);
    if (at === null) return;
    this.timers[kind] = setTimeout(() => {
      this.timers[kind] = null;
      this.flush(kind);
      // A timer that fired a little early: try again.
      if (this.waiting[kind]) this.arm(kind);
    }, Math.max(0, at - this.now()) + 1);
  }

  /** Forgets deferred actions and stops the timers (the budget itself stays). */
  clear() {
    for (const kind of /** @type {const} */ (['offer', 'ice_restart'])) {
      const timer = this.timers[kind];
      if (timer) clearTimeout(timer);
      this.timers[kind] = null;
      this.waiting[kind] = null;
      this.budget.cancel(kind);
    }
  }
}
