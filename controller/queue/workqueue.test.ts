import { describe, expect, it } from "vitest";
import type { Clock, TimerHandle } from "./clock.ts";
import {
  defaultControllerRateLimiter,
  ExponentialBackoffLimiter,
  MaxOfLimiter,
  TokenBucketLimiter,
} from "./ratelimit.ts";
import { type ReconcileResult, TerminalError, WorkQueue } from "./workqueue.ts";

/** A clock whose time moves only when the test says so. */
class ManualClock implements Clock {
  #now = 0;
  #timers = new Map<number, { at: number; callback: () => void }>();
  #nextId = 1;

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, ms: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + ms, callback });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }

  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Moves time forward, firing due timers in time order. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const due = [...this.#timers.entries()]
        .filter(([, t]) => t.at <= until)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.#now = due[1].at;
      due[1].callback();
    }
    this.#now = until;
  }
}

/** Lets pending promise callbacks and I/O-free continuations run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A promise the test resolves by hand, to hold a reconcile in flight. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {};
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

describe("WorkQueue", () => {
  it("processes a key added several times before it is taken once", async () => {
    const queue = new WorkQueue({ clock: new ManualClock() });
    queue.add("payments/a");
    queue.add("payments/a");
    queue.add("payments/b");
    queue.add("payments/a");
    expect(queue.length).toBe(2);
    expect(await queue.get()).toBe("payments/a");
    expect(await queue.get()).toBe("payments/b");
    expect(queue.length).toBe(0);
  });

  it("holds a key re-added during processing until done, then hands it out again", async () => {
    const queue = new WorkQueue({ clock: new ManualClock() });
    queue.add("a");
    const key = await queue.get();
    queue.add("a");
    queue.add("a");
    expect(queue.length).toBe(0);
    let second: string | undefined;
    void queue.get().then((k) => {
      second = k;
    });
    await settle();
    expect(second).toBeUndefined();
    queue.done(key!);
    await settle();
    expect(second).toBe("a");
    expect(queue.length).toBe(0);
  });

  it("never reconciles one key on two workers at once, and reconciles a re-added key again", async () => {
    const queue = new WorkQueue({ clock: new ManualClock() });
    const active = new Map<string, number>();
    let overlap = 0;
    const runs: string[] = [];
    const inFlight = new Map<string, ReturnType<typeof gate>>();
    const workers = queue.runWorkers(4, async (key) => {
      const n = (active.get(key) ?? 0) + 1;
      active.set(key, n);
      if (n > 1) overlap++;
      runs.push(key);
      const g = gate();
      inFlight.set(key, g);
      await g.promise;
      active.set(key, (active.get(key) ?? 1) - 1);
    });
    queue.add("x");
    queue.add("y");
    await settle();
    expect(runs).toEqual(["x", "y"]);
    // Re-added three times while in flight: one more run, after the first finishes.
    queue.add("x");
    queue.add("x");
    queue.add("x");
    await settle();
    expect(runs).toEqual(["x", "y"]);
    inFlight.get("x")!.open();
    await settle();
    expect(runs).toEqual(["x", "y", "x"]);
    inFlight.get("x")!.open();
    inFlight.get("y")!.open();
    await settle();
    expect(overlap).toBe(0);
    const drained = queue.shutDown();
    await drained;
    await workers;
    expect(runs).toEqual(["x", "y", "x"]);
  });

  it("delays addAfter until its time, and the earlier of two pending times wins", async () => {
    const clock = new ManualClock();
    const queue = new WorkQueue({ clock });
    queue.addAfter("a", 100);
    queue.addAfter("a", 50);
    queue.addAfter("a", 500);
    expect(queue.length).toBe(0);
    clock.advance(49);
    expect(queue.length).toBe(0);
    clock.advance(1);
    expect(queue.length).toBe(1);
    clock.advance(1000);
    expect(queue.length).toBe(1);
    queue.addAfter("b", 0);
    expect(queue.length).toBe(2);
  });

  it("retries a failing key with exponential backoff and forgets it on success", async () => {
    const clock = new ManualClock();
    const queue = new WorkQueue({
      clock,
      rateLimiter: new ExponentialBackoffLimiter({ baseMs: 5, maxMs: 1000 }),
    });
    let attempts = 0;
    const errors: Array<{ key: string; retries: number }> = [];
    const workers = queue.runWorkers(
      1,
      async () => {
        attempts++;
        if (attempts <= 3) throw new Error("target unavailable");
      },
      { onError: (key, _error, retry) => errors.push({ key, retries: retry.retries }) },
    );
    queue.add("a");
    await settle();
    expect(attempts).toBe(1);
    clock.advance(4);
    await settle();
    expect(attempts).toBe(1);
    clock.advance(1); // 5 ms
    await settle();
    expect(attempts).toBe(2);
    clock.advance(9);
    await settle();
    expect(attempts).toBe(2);
    clock.advance(1); // 10 ms
    await settle();
    expect(attempts).toBe(3);
    clock.advance(20);
    await settle();
    expect(attempts).toBe(4);
    expect(errors).toEqual([
      { key: "a", retries: 1 },
      { key: "a", retries: 2 },
      { key: "a", retries: 3 },
    ]);
    expect(queue.retries("a")).toBe(0);
    await queue.shutDown();
    await workers;
  });

  it("requeues after requeueAfter, and drops a TerminalError without retrying", async () => {
    const clock = new ManualClock();
    const queue = new WorkQueue({ clock });
    const runs: string[] = [];
    const errors: Array<{ key: string; terminal: boolean }> = [];
    let scheduled = 0;
    const workers = queue.runWorkers(
      2,
      async (key): Promise<ReconcileResult | undefined> => {
        runs.push(key);
        if (key === "broken") throw new TerminalError("spec.schedule does not parse");
        if (key === "cron" && scheduled++ === 0) return { requeueAfter: 30_000 };
        return undefined;
      },
      { onError: (key, _error, retry) => errors.push({ key, terminal: retry.terminal }) },
    );
    queue.add("cron");
    queue.add("broken");
    await settle();
    expect(runs).toEqual(["cron", "broken"]);
    expect(errors).toEqual([{ key: "broken", terminal: true }]);
    clock.advance(29_999);
    await settle();
    expect(runs).toHaveLength(2);
    clock.advance(1);
    await settle();
    expect(runs).toEqual(["cron", "broken", "cron"]);
    clock.advance(3_600_000);
    await settle();
    expect(runs).toHaveLength(3);
    expect(clock.pendingTimers).toBe(0);
    await queue.shutDown();
    await workers;
  });

  it("shuts down: ignores new keys, hands out nothing more, and drains in-flight work", async () => {
    const clock = new ManualClock();
    const queue = new WorkQueue({ clock });
    const g = gate();
    let finished = false;
    let sawAbort = false;
    const workers = queue.runWorkers(1, async (_key, signal) => {
      await g.promise;
      sawAbort = signal.aborted;
      finished = true;
    });
    queue.add("running");
    queue.add("queued");
    queue.addAfter("delayed", 10);
    await settle();
    let drained = false;
    const drain = queue.shutDown().then(() => {
      drained = true;
    });
    expect(queue.shuttingDown).toBe(true);
    queue.add("late");
    expect(queue.length).toBe(0);
    expect(await queue.get()).toBeUndefined();
    expect(clock.pendingTimers).toBe(0);
    await settle();
    expect(drained).toBe(false);
    g.open();
    await drain;
    await workers;
    expect(finished).toBe(true);
    expect(sawAbort).toBe(true);
    expect(drained).toBe(true);
  });

  it("reports depth, adds, latency, work duration and retries", async () => {
    const clock = new ManualClock();
    const seen = {
      depth: [] as number[],
      added: 0,
      latency: [] as number[],
      work: [] as number[],
      retried: 0,
    };
    const queue = new WorkQueue({
      clock,
      rateLimiter: new ExponentialBackoffLimiter({ baseMs: 5 }),
      metrics: {
        depth: (n) => seen.depth.push(n),
        added: () => seen.added++,
        queueLatency: (s) => seen.latency.push(s),
        workDuration: (s) => seen.work.push(s),
        retried: () => seen.retried++,
      },
    });
    queue.add("a");
    queue.add("a");
    queue.add("b");
    clock.advance(250);
    const a = await queue.get();
    clock.advance(1500);
    queue.done(a!);
    queue.addRateLimited("a");
    expect(seen).toEqual({ depth: [1, 2, 1], added: 2, latency: [0.25], work: [1.5], retried: 1 });
  });
});

describe("rate limiters", () => {
  it("exponential backoff doubles from the base, caps at the maximum and resets on forget", () => {
    const limiter = new ExponentialBackoffLimiter({ baseMs: 5, maxMs: 1_000_000 });
    const delays = Array.from({ length: 20 }, () => limiter.when("k"));
    expect(delays.slice(0, 5)).toEqual([5, 10, 20, 40, 80]);
    expect(delays[17]).toBe(5 * 2 ** 17);
    expect(delays[18]).toBe(1_000_000);
    expect(limiter.retries("k")).toBe(20);
    expect(limiter.when("other")).toBe(5);
    for (let i = 0; i < 2000; i++) limiter.when("k");
    expect(limiter.when("k")).toBe(1_000_000);
    limiter.forget("k");
    expect(limiter.retries("k")).toBe(0);
    expect(limiter.when("k")).toBe(5);
  });

  it("token bucket lets a burst through, then spaces retries at the rate, and refills over time", () => {
    const clock = new ManualClock();
    const bucket = new TokenBucketLimiter({ qps: 2, burst: 3, clock });
    expect([bucket.when("a"), bucket.when("b"), bucket.when("c")]).toEqual([0, 0, 0]);
    expect(bucket.when("d")).toBe(500);
    expect(bucket.when("e")).toBe(1000);
    clock.advance(1000); // two tokens back: the reservations above are now paid for
    expect(bucket.when("f")).toBe(500);
    clock.advance(10_000);
    expect([bucket.when("g"), bucket.when("h"), bucket.when("i"), bucket.when("j")]).toEqual([0, 0, 0, 500]);
  });

  it("max-of takes the longest delay and tells every limiter about the failure", () => {
    const clock = new ManualClock();
    const perKey = new ExponentialBackoffLimiter({ baseMs: 100 });
    const limiter = new MaxOfLimiter(perKey, new TokenBucketLimiter({ qps: 1, burst: 1, clock }));
    expect(limiter.when("a")).toBe(100);
    expect(limiter.when("b")).toBe(1000);
    expect(perKey.retries("b")).toBe(1);
    limiter.forget("b");
    expect(limiter.retries("b")).toBe(0);
  });

  it("the controller default starts at 5 ms per key and allows a burst of 100 overall", () => {
    const clock = new ManualClock();
    const limiter = defaultControllerRateLimiter(clock);
    const first = Array.from({ length: 100 }, (_, i) => limiter.when(`k${i}`));
    expect(new Set(first)).toEqual(new Set([5]));
    expect(limiter.when("k100")).toBe(100);
  });
});
