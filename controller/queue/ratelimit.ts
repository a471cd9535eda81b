import { type Clock, systemClock } from "./clock.ts";

/**
 * Decides how long a key waits before it is retried (client-go's `RateLimiter`). `when` records a
 * failure and returns the delay in milliseconds; `forget` clears the key's history once it succeeds.
 */
export interface RateLimiter {
  when(key: string): number;
  forget(key: string): void;
  /** Failures recorded for the key since it was last forgotten. */
  retries(key: string): number;
}

/** Per-key exponential backoff: base·2^failures, capped (client-go's ItemExponentialFailureRateLimiter). */
export class ExponentialBackoffLimiter implements RateLimiter {
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #failures = new Map<string, number>();

  constructor(options: { baseMs?: number; maxMs?: number } = {}) {
    this.#baseMs = options.baseMs ?? 5;
    this.#maxMs = options.maxMs ?? 1_000_000;
  }

  when(key: string): number {
    const failures = this.#failures.get(key) ?? 0;
    this.#failures.set(key, failures + 1);
    // 2^failures overflows to Infinity long after the cap is reached; min() keeps it finite.
    return Math.min(this.#baseMs * 2 ** failures, this.#maxMs);
  }

  forget(key: string): void {
    this.#failures.delete(key);
  }

  retries(key: string): number {
    return this.#failures.get(key) ?? 0;
  }
}

/**
 * An overall token bucket shared by all keys (client-go's BucketRateLimiter over x/time/rate):
 * `burst` retries pass at once, then `qps` per second. A caller that finds the bucket empty reserves
 * a future token and is told how long to wait for it, so reservations queue up in order.
 */
export class TokenBucketLimiter implements RateLimiter {
  readonly #qps: number;
  readonly #burst: number;
  readonly #clock: Pick<Clock, "now">;
  #tokens: number;
  #last: number;

  constructor(options: { qps?: number; burst?: number; clock?: Pick<Clock, "now"> } = {}) {
    this.#qps = options.qps ?? 10;
    this.#burst = options.burst ?? 100;
    if (!(this.#qps > 0) || !(this.#burst >= 1)) throw new Error("token bucket needs qps > 0 and burst >= 1");
    this.#clock = options.clock ?? systemClock;
    this.#tokens = this.#burst;
    this.#last = this.#clock.now();
  }

  when(_key: string): number {
    const now = this.#clock.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#qps);
    this.#last = now;
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.#qps) * 1000;
  }

  forget(_key: string): void {}

  retries(_key: string): number {
    return 0;
  }
}

/** The longest delay any of its limiters asks for (client-go's MaxOfRateLimiter). */
export class MaxOfLimiter implements RateLimiter {
  readonly #limiters: readonly RateLimiter[];

  constructor(...limiters: RateLimiter[]) {
    this.#limiters = limiters;
  }

  when(key: string): number {
    // Every limiter must see the failure, so no short-circuit.
    return this.#limiters.reduce((longest, limiter) => Math.max(longest, limiter.when(key)), 0);
  }

  forget(key: string): void {
    for (const limiter of this.#limiters) limiter.forget(key);
  }

  retries(key: string): number {
    return this.#limiters.reduce((most, limiter) => Math.max(most, limiter.retries(key)), 0);
  }
}

/**
 * controller-runtime's default: per key 5 ms doubling to 1000 s, and overall 10 retries per second
 * with a burst of 100.
 */
export function defaultControllerRateLimiter(clock?: Pick<Clock, "now">): RateLimiter {
  return new MaxOfLimiter(
    new ExponentialBackoffLimiter({ baseMs: 5, maxMs: 1_000_000 }),
    new TokenBucketLimiter({ qps: 10, burst: 100, ...(clock ? { clock } : {}) }),
  );
}
