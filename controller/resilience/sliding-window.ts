/**
 * The two sliding windows of resilience4j, aggregating call outcomes so that the totals are read in
 * O(1): a count window keeps the outcomes of the last N calls in a ring, a time window keeps one
 * partial aggregate per second for the last N seconds. Both subtract what they evict.
 */

/** What is known of one completed call. */
export interface CallOutcome {
  failed: boolean;
  slow: boolean;
}

/** Aggregate of the calls a window currently holds. */
export interface WindowTotals {
  calls: number;
  failedCalls: number;
  slowCalls: number;
  slowFailedCalls: number;
}

export interface SlidingWindow {
  /** Records a call that completed at nowMs and returns the totals including it. */
  record(outcome: CallOutcome, nowMs: number): WindowTotals;
  /** The totals as of nowMs (a time window first drops the seconds that have slid out). */
  totals(nowMs: number): WindowTotals;
}

const FAILED = 1;
const SLOW = 2;

function emptyTotals(): WindowTotals {
  return { calls: 0, failedCalls: 0, slowCalls: 0, slowFailedCalls: 0 };
}

function add(totals: WindowTotals, flags: number, sign: 1 | -1): void {
  totals.calls += sign;
  if (flags & FAILED) totals.failedCalls += sign;
  if (flags & SLOW) totals.slowCalls += sign;
  if ((flags & (FAILED | SLOW)) === (FAILED | SLOW)) totals.slowFailedCalls += sign;
}

function flagsOf(outcome: CallOutcome): number {
  return (outcome.failed ? FAILED : 0) | (outcome.slow ? SLOW : 0);
}

/** The last `size` calls, whenever they happened. */
export class CountWindow implements SlidingWindow {
  readonly #ring: Uint8Array;
  readonly #totals = emptyTotals();
  #next = 0;
  #filled = 0;

  constructor(size: number) {
    this.#ring = new Uint8Array(size);
  }

  record(outcome: CallOutcome): WindowTotals {
    if (this.#filled === this.#ring.length) add(this.#totals, this.#ring[this.#next]!, -1);
    else this.#filled++;
    const flags = flagsOf(outcome);
    this.#ring[this.#next] = flags;
    add(this.#totals, flags, 1);
    this.#next = (this.#next + 1) % this.#ring.length;
    return { ...this.#totals };
  }

  totals(): WindowTotals {
    return { ...this.#totals };
  }
}

/**
 * The calls completed in the last `seconds` seconds, including the current one: a call recorded in
 * second s (floor of its completion time) counts until the clock reaches second s + seconds.
 */
export class TimeWindow implements SlidingWindow {
  readonly #buckets: WindowTotals[];
  readonly #totals = emptyTotals();
  /** The newest second the window has been moved to; the clock is never trusted to go backwards. */
  #head: number | undefined;

  constructor(seconds: number) {
    this.#buckets = Array.from({ length: seconds }, emptyTotals);
  }

  record(outcome: CallOutcome, nowMs: number): WindowTotals {
    const bucket = this.#moveTo(Math.floor(nowMs / 1000));
    const flags = flagsOf(outcome);
    add(bucket, flags, 1);
    add(this.#totals, flags, 1);
    return { ...this.#totals };
  }

  totals(nowMs: number): WindowTotals {
    this.#moveTo(Math.floor(nowMs / 1000));
    return { ...this.#totals };
  }

  /** Resets the buckets of the seconds that slid out and returns the bucket of the newest second. */
  #moveTo(second: number): WindowTotals {
    const size = this.#buckets.length;
    if (this.#head === undefined || second - this.#head >= size) {
      for (const bucket of this.#buckets) Object.assign(bucket, emptyTotals());
      Object.assign(this.#totals, emptyTotals());
      this.#head = second;
    } else {
      for (let s = this.#head + 1; s <= second; s++) {
        const bucket = this.#bucketOf(s);
        this.#totals.calls -= bucket.calls;
        this.#totals.failedCalls -= bucket.failedCalls;
        this.#totals.slowCalls -= bucket.slowCalls;
        this.#totals.slowFailedCalls -= bucket.slowFailedCalls;
        Object.assign(bucket, emptyTotals());
      }
      this.#head = Math.max(this.#head, second);
    }
    return this.#bucketOf(this.#head);
  }

  #bucketOf(second: number): WindowTotals {
    const size = this.#buckets.length;
    return this.#buckets[((second % size) + size) % size]!;
  }
}
