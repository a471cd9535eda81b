import { type Clock, systemClock, type TimerHandle } from "./clock.ts";
import { defaultControllerRateLimiter, type RateLimiter } from "./ratelimit.ts";

/**
 * What a reconciler asks of the queue (controller-runtime's `reconcile.Result`). Returning nothing
 * means the key is done and its backoff is forgotten; `requeueAfter` (ms) means "look again later"
 * and also forgets the backoff. Throwing means "retry with backoff", unless the error is a
 * `TerminalError`.
 */
export interface ReconcileResult {
  requeueAfter?: number;
}

/**
 * Reconciles the object a key names. Level-based: the key carries only the object's identity, the
 * reconciler reads the current state itself, and the same key is never reconciled twice at once.
 * `signal` is aborted when the queue shuts down; the reconciler may use it to stop early, and the
 * queue waits for it either way.
 */
export type Reconciler = (
  key: string,
  signal: AbortSignal,
  // biome-ignore lint/suspicious/noConfusingVoidType: so that an async reconciler that returns nothing type-checks
) => Promise<ReconcileResult | void>;

/** An error that retrying cannot fix (bad spec, missing permission): the key is not requeued. */
export class TerminalError extends Error {
  override readonly name = "TerminalError";
}

/**
 * Observations for the queue's metrics, the ones client-go's workqueue exports. Each is optional;
 * times are in seconds, as Prometheus expects.
 */
export interface WorkQueueMetrics {
  /** Keys waiting to be processed (queued, or re-added while being processed). */
  depth?(keys: number): void;
  /** A key became waiting (adds of a key that is already waiting are not counted). */
  added?(): void;
  /** How long a key waited between being added and handed to a worker. */
  queueLatency?(seconds: number): void;
  /** How long a worker held a key. */
  workDuration?(seconds: number): void;
  /** A key was re-added with backoff after a failure. */
  retried?(): void;
}

export interface WorkQueueOptions {
  rateLimiter?: RateLimiter;
  clock?: Clock;
  metrics?: WorkQueueMetrics;
}

export interface RunWorkersOptions {
  /** Called with every failed reconcile, after the key has been rescheduled (or dropped if terminal). */
  onError?(key: string, error: unknown, retry: { terminal: boolean; retries: number }): void;
}

/** A FIFO of keys with O(1) shift (Array.shift is O(n)). */
class KeyFifo {
  #items: string[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(key: string): void {
    this.#items.push(key);
  }

  shift(): string | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const key = this.#items[this.#head];
    this.#head += 1;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return key;
  }

  clear(): void {
    this.#items = [];
    this.#head = 0;
  }
}

/**
 * A key-based work queue with client-go's guarantees:
 * - de-duplicating: a key added several times before a worker takes it is processed once;
 * - exclusive: a key is handed to at most one worker at a time; a key re-added while being processed
 *   is queued again only when that worker calls `done`;
 * - delaying: `addAfter` holds a key until its time (the earliest pending time wins);
 * - rate-limited: `addRateLimited` delays a key by the rate limiter (per-key exponential backoff and
 *   an overall token bucket by default) until `forget` resets it.
 *
 * Unlike client-go, after `shutDown` workers get no further keys, not even those already queued:
 * reconciles are level-based, so whoever runs next rebuilds the queue from the informers.
 */
export class WorkQueue {
  readonly #rateLimiter: RateLimiter;
  readonly #clock: Clock;
  readonly #metrics: WorkQueueMetrics;

  readonly #queue = new KeyFifo();
  /** Keys that need processing: queued, or re-added while being processed. */
  readonly #dirty = new Set<string>();
  /** Keys held by a worker, with the time they were handed out. */
  readonly #processing = new Map<string, number>();
  /** When each dirty key was added, for the queue-latency metric. */
  readonly #addedAt = new Map<string, number>();
  /** Delayed keys and when they become ready. */
  readonly #waiting = new Map<string, { readyAt: number; timer: TimerHandle }>();
  readonly #getters: Array<(key: string | undefined) => void> = [];

  readonly #shutdown = new AbortController();
  #drained: Promise<void> | undefined;
  #resolveDrained: (() => void) | undefined;

  constructor(options: WorkQueueOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#rateLimiter = options.rateLimiter ?? defaultControllerRateLimiter(this.#clock);
    this.#metrics = options.metrics ?? {};
  }

  /** Keys queued and ready for a worker (not counting delayed or in-flight keys). */
  get length(): number {
    return this.#queue.length;
  }

  get shuttingDown(): boolean {
    return this.#shutdown.signal.aborted;
  }

  /** Aborted when `shutDown` is called. */
  get signal(): AbortSignal {
    return this.#shutdown.signal;
  }

  add(key: string): void {
    if (this.shuttingDown || this.#dirty.has(key)) return;
    this.#dirty.add(key);
    this.#addedAt.set(key, this.#clock.now());
    this.#metrics.added?.();
    this.#metrics.depth?.(this.#dirty.size);
    if (this.#processing.has(key)) return;
    this.#queue.push(key);
    this.#handOut();
  }

  /** Adds the key after `ms` milliseconds; if it is already waiting, the earlier time wins. */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (!(ms > 0)) {
      this.add(key);
      return;
    }
    const readyAt = this.#clock.now() + ms;
    const pending = this.#waiting.get(key);
    if (pending) {
      if (pending.readyAt <= readyAt) return;
      this.#clock.clearTimeout(pending.timer);
    }
    const timer = this.#clock.setTimeout(() => {
      this.#waiting.delete(key);
      this.add(key);
    }, ms);
    this.#waiting.set(key, { readyAt, timer });
  }

  /** Adds the key once the rate limiter allows, recording one more failure for it. */
  addRateLimited(key: string): void {
    if (this.shuttingDown) return;
    this.#metrics.retried?.();
    this.addAfter(key, this.#rateLimiter.when(key));
  }

  /** Clears the key's failure history, so its next backoff starts from the base delay. */
  forget(key: string): void {
    this.#rateLimiter.forget(key);
  }

  retries(key: string): number {
    return this.#rateLimiter.retries(key);
  }

  /**
   * Waits for a key and marks it as being processed; the caller must call `done(key)` afterwards.
   * Resolves to undefined once the queue is shutting down.
   */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.#take();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.#getters.push(resolve));
  }

  /** Ends processing of a key; if it was added meanwhile, it is queued again now. */
  done(key: string): void {
    const startedAt = this.#processing.get(key);
    if (startedAt === undefined) return;
    this.#processing.delete(key);
    this.#metrics.workDuration?.((this.#clock.now() - startedAt) / 1000);
    if (this.shuttingDown) {
      if (this.#processing.size === 0) this.#resolveDrained?.();
      return;
    }
    if (this.#dirty.has(key)) {
      this.#queue.push(key);
      this.#handOut();
    }
  }

  /**
   * Stops handing out keys and accepting new ones, drops queued and delayed keys, and resolves once
   * every key being processed is done.
   */
  shutDown(): Promise<void> {
    if (!this.#drained) {
      this.#drained = new Promise((resolve) => {
        this.#resolveDrained = resolve;
      });
      this.#shutdown.abort();
      for (const { timer } of this.#waiting.values()) this.#clock.clearTimeout(timer);
      this.#waiting.clear();
      this.#queue.clear();
      this.#dirty.clear();
      this.#addedAt.clear();
      this.#metrics.depth?.(0);
      for (const resolve of this.#getters.splice(0)) resolve(undefined);
      if (this.#processing.size === 0) this.#resolveDrained?.();
    }
    return this.#drained;
  }

  /**
   * Runs `workers` loops that take keys and reconcile them until the queue shuts down; resolves when
   * the last in-flight reconcile has finished. An error means retry with backoff (except a
   * TerminalError), `requeueAfter` means add again after that delay, success forgets the backoff.
   */
  async runWorkers(workers: number, reconcile: Reconciler, options: RunWorkersOptions = {}): Promise<void> {
    const loop = async () => {
      for (;;) {
        const key = await this.get();
        if (key === undefined) return;
        await this.#reconcileOne(key, reconcile, options);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, workers) }, loop));
  }

  async #reconcileOne(key: string, reconcile: Reconciler, options: RunWorkersOptions): Promise<void> {
    try {
      const result = await reconcile(key, this.#shutdown.signal);
      this.forget(key);
      const after = result ? result.requeueAfter : undefined;
      if (after !== undefined && after > 0) this.addAfter(key, after);
    } catch (error) {
      const terminal = error instanceof TerminalError;
      if (terminal) this.forget(key);
      else this.addRateLimited(key);
      try {
        options.onError?.(key, error, { terminal, retries: this.retries(key) });
      } catch {
        // A failing error hook must not stop the worker.
      }
    } finally {
      this.done(key);
    }
  }

  #take(): string | undefined {
    const key = this.#queue.shift();
    if (key === undefined) return undefined;
    const now = this.#clock.now();
    this.#processing.set(key, now);
    this.#dirty.delete(key);
    const addedAt = this.#addedAt.get(key);
    this.#addedAt.delete(key);
    if (addedAt !== undefined) this.#metrics.queueLatency?.((now - addedAt) / 1000);
    this.#metrics.depth?.(this.#dirty.size);
    return key;
  }

  #handOut(): void {
    while (this.#getters.length > 0 && this.#queue.length > 0) {
      const key = this.#take();
      const resolve = this.#getters.shift();
      if (key !== undefined && resolve) resolve(key);
    }
  }
}
