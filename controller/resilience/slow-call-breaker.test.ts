import { describe, expect, it } from "vitest";
import type { BreakerConfigInput } from "./breaker-config.ts";
import {
  type BreakerClock,
  type BreakerTransition,
  CallNotPermittedError,
  SlowCallBreaker,
} from "./slow-call-breaker.ts";

/** A clock that moves only when told; scheduled tasks run only on runDue(). */
class ManualClock implements BreakerClock {
  #now = 0;
  readonly #tasks: { at: number; task: () => void; live: boolean }[] = [];

  now(): number {
    return this.#now;
  }

  schedule(delayMs: number, task: () => void): () => void {
    const entry = { at: this.#now + delayMs, task, live: true };
    this.#tasks.push(entry);
    return () => {
      entry.live = false;
    };
  }

  advance(ms: number): void {
    this.#now += ms;
  }

  /** Runs the live tasks that are due, in order; returns how many ran. */
  runDue(): number {
    const due = this.#tasks.filter((t) => t.live && t.at <= this.#now).sort((a, b) => a.at - b.at);
    for (const t of due) {
      t.live = false;
      t.task();
    }
    return due.length;
  }

  get pending(): number {
    return this.#tasks.filter((t) => t.live).length;
  }
}

function setup(config: BreakerConfigInput) {
  const clock = new ManualClock();
  const breaker = new SlowCallBreaker({ name: "payments/orders", config, clock });
  const transitions: BreakerTransition[] = [];
  breaker.onStateTransition((t) => transitions.push(t));
  /** Makes one permitted call that takes durationMs and fails when failed is true. */
  const call = (durationMs: number, failed = false): void => {
    expect(breaker.tryAcquirePermission()).toBe(true);
    breaker.onResult(durationMs, failed ? new Error("target write failed") : undefined);
  };
  return { clock, breaker, transitions, call };
}

const FAST = 10;
const small: BreakerConfigInput = {
  slidingWindowSize: 4,
  minimumNumberOfCalls: 4,
  failureRateThreshold: 50,
  slowCallRateThreshold: 50,
  slowCallDurationThresholdMs: 500,
  waitDurationInOpenStateMs: 1000,
  permittedNumberOfCallsInHalfOpenState: 2,
};

/** Trips a CLOSED breaker with fast failures. */
function trip(s: ReturnType<typeof setup>): void {
  for (let i = 0; i < 1000 && s.breaker.state === "CLOSED"; i++) s.call(FAST, true);
  expect(s.breaker.state).toBe("OPEN");
}

describe("SlowCallBreaker in CLOSED", () => {
  it("computes no rate and never opens before the window holds minimumNumberOfCalls", () => {
    const s = setup(small);
    for (let i = 0; i < 3; i++) s.call(FAST, true);
    expect(s.breaker.state).toBe("CLOSED");
    expect(s.breaker.metrics()).toMatchObject({
      failureRate: null,
      slowCallRate: null,
      bufferedCalls: 3,
      failedCalls: 3,
    });
    s.call(FAST, true);
    expect(s.breaker.state).toBe("OPEN");
    expect(s.transitions).toEqual([
      {
        breaker: "payments/orders",
        from: "CLOSED",
        to: "OPEN",
        reason: "FailureRateExceeded",
        failureRate: 100,
        slowCallRate: 0,
        bufferedCalls: 4,
      },
    ]);
  });

  it("opens when the failure rate reaches the threshold exactly, not below it", () => {
    const s = setup(small);
    for (const failed of [false, false, false, true]) s.call(FAST, failed);
    expect(s.breaker.metrics()).toMatchObject({ state: "CLOSED", failureRate: 25 });
    s.call(FAST, true); // window of 4 now holds S S F F
    expect(s.breaker.state).toBe("OPEN");
    expect(s.transitions[0]).toMatchObject({ reason: "FailureRateExceeded", failureRate: 50 });
  });

  it("slides a count window over the last N calls, evicting the oldest", () => {
    const s = setup({ ...small, slidingWindowSize: 4 });
    s.call(FAST, true);
    for (let i = 0; i < 4; i++) s.call(FAST);
    expect(s.breaker.metrics()).toMatchObject({ bufferedCalls: 4, failedCalls: 0, failureRate: 0 });
    s.call(FAST, true);
    expect(s.breaker.metrics()).toMatchObject({ state: "CLOSED", failedCalls: 1, failureRate: 25 });
  });

  it("caps minimumNumberOfCalls at the size of a count window", () => {
    const s = setup({ ...small, slidingWindowSize: 3, minimumNumberOfCalls: 100 });
    for (let i = 0; i < 3; i++) s.call(FAST, true);
    expect(s.breaker.state).toBe("OPEN");
  });

  it("opens on slow calls that all succeeded", () => {
    const s = setup(small);
    s.call(499);
    s.call(FAST);
    s.call(500);
    expect(s.breaker.metrics()).toMatchObject({ state: "CLOSED", slowCalls: 1, failedCalls: 0 });
    s.call(750);
    expect(s.breaker.state).toBe("OPEN");
    expect(s.transitions).toEqual([
      expect.objectContaining({ reason: "SlowCallRateExceeded", slowCallRate: 50, failureRate: 0 }),
    ]);
  });

  it("counts a slow failure toward both rates", () => {
    const s = setup(small);
    s.call(FAST);
    s.call(FAST);
    s.call(600, true);
    s.call(900, true);
    expect(s.transitions).toEqual([
      expect.objectContaining({
        reason: "FailureAndSlowCallRatesExceeded",
        failureRate: 50,
        slowCallRate: 50,
      }),
    ]);
    expect(s.breaker.metrics()).toMatchObject({ slowCalls: 2, failedCalls: 2, slowFailedCalls: 2 });
  });

  it("judges a time window over the last N seconds, in per-second buckets", () => {
    const s = setup({
      ...small,
      slidingWindowType: "TIME_BASED",
      slidingWindowSize: 10,
      minimumNumberOfCalls: 3,
    });
    s.call(FAST, true);
    s.clock.advance(500);
    s.call(FAST, true); // both in second 0
    s.clock.advance(9499); // t = 9.999 s: second 9, window covers seconds 0..9
    expect(s.breaker.metrics()).toMatchObject({ bufferedCalls: 2, failedCalls: 2 });
    s.clock.advance(1); // t = 10 s: second 0 slides out
    expect(s.breaker.metrics()).toMatchObject({ bufferedCalls: 0, failureRate: null });
    s.call(FAST, true);
    s.call(FAST);
    expect(s.breaker.state).toBe("CLOSED");
    s.clock.advance(9000); // second 19: both calls of second 10 still inside
    s.call(FAST, true);
    expect(s.breaker.state).toBe("OPEN");
    expect(s.transitions[0]).toMatchObject({ bufferedCalls: 3, failureRate: (2 * 100) / 3 });
  });

  it("does not cap minimumNumberOfCalls for a time window", () => {
    const s = setup({
      ...small,
      slidingWindowType: "TIME_BASED",
      slidingWindowSize: 2,
      minimumNumberOfCalls: 5,
    });
    for (let i = 0; i < 4; i++) s.call(FAST, true);
    expect(s.breaker.state).toBe("CLOSED");
    s.call(FAST, true);
    expect(s.breaker.state).toBe("OPEN");
  });

  it("counts an error that isFailure rejects as a success", async () => {
    const clock = new ManualClock();
    const breaker = new SlowCallBreaker({
      name: "payments/orders",
      config: { ...small, minimumNumberOfCalls: 1, slidingWindowSize: 1 },
      clock,
      isFailure: (error) => !(error instanceof TypeError),
    });
    await expect(breaker.execute(() => Promise.reject(new TypeError("bad row")))).rejects.toThrow("bad row");
    expect(breaker.metrics()).toMatchObject({ state: "CLOSED", failedCalls: 0, bufferedCalls: 1 });
    await expect(breaker.execute(() => Promise.reject(new Error("connection reset")))).rejects.toThrow();
    expect(breaker.state).toBe("OPEN");
  });
});

describe("SlowCallBreaker in OPEN", () => {
  it("rejects calls with CallNotPermittedError without calling, and counts them", async () => {
    const s = setup(small);
    trip(s);
    let called = false;
    const rejected = s.breaker.execute(async () => {
      called = true;
    });
    await expect(rejected).rejects.toBeInstanceOf(CallNotPermittedError);
    await expect(rejected).rejects.toMatchObject({ breaker: "payments/orders", state: "OPEN" });
    expect(called).toBe(false);
    expect(s.breaker.tryAcquirePermission()).toBe(false);
    expect(s.breaker.metrics()).toMatchObject({ state: "OPEN", notPermittedCalls: 2, failureRate: 100 });
  });

  it("stays OPEN until the wait has elapsed, then permits a trial call in HALF_OPEN", () => {
    const s = setup(small);
    trip(s);
    s.clock.advance(999);
    expect(s.breaker.tryAcquirePermission()).toBe(false);
    s.clock.advance(1);
    expect(s.breaker.state).toBe("OPEN"); // without automatic transition, only a caller moves it
    expect(s.breaker.tryAcquirePermission()).toBe(true);
    expect(s.breaker.state).toBe("HALF_OPEN");
    expect(s.transitions.map((t) => [t.from, t.to, t.reason])).toEqual([
      ["CLOSED", "OPEN", "FailureRateExceeded"],
      ["OPEN", "HALF_OPEN", "WaitDurationElapsed"],
    ]);
  });

  it("moves to HALF_OPEN on its own when automatic transition is enabled", () => {
    const s = setup({ ...small, automaticTransitionFromOpenToHalfOpenEnabled: true });
    trip(s);
    expect(s.clock.pending).toBe(1);
    s.clock.advance(1000);
    expect(s.clock.runDue()).toBe(1);
    expect(s.breaker.state).toBe("HALF_OPEN");
    expect(s.transitions.map((t) => t.to)).toEqual(["OPEN", "HALF_OPEN"]);
  });

  it("cancels the automatic transition when a caller moved it first, so it fires once", () => {
    const s = setup({ ...small, automaticTransitionFromOpenToHalfOpenEnabled: true });
    trip(s);
    s.clock.advance(1000);
    expect(s.breaker.tryAcquirePermission()).toBe(true);
    expect(s.clock.pending).toBe(0);
    expect(s.clock.runDue()).toBe(0);
    expect(s.transitions.map((t) => t.to)).toEqual(["OPEN", "HALF_OPEN"]);
  });

  it("records calls permitted before it opened without changing state", () => {
    const s = setup({ ...small, slidingWindowSize: 2, minimumNumberOfCalls: 1 });
    expect(s.breaker.tryAcquirePermission()).toBe(true);
    expect(s.breaker.tryAcquirePermission()).toBe(true);
    s.breaker.onResult(FAST, new Error("down"));
    expect(s.breaker.state).toBe("OPEN");
    s.breaker.onResult(FAST);
    expect(s.breaker.metrics()).toMatchObject({ state: "OPEN", bufferedCalls: 2, failureRate: 50 });
    expect(s.transitions).toHaveLength(1);
  });
});

describe("SlowCallBreaker in HALF_OPEN", () => {
  function halfOpen(config: BreakerConfigInput = small) {
    const s = setup(config);
    trip(s);
    s.clock.advance(1000);
    return s;
  }

  it("permits exactly permittedNumberOfCallsInHalfOpenState trial calls", () => {
    const s = halfOpen();
    expect(s.breaker.tryAcquirePermission()).toBe(true);
    expect(s.breaker.tryAcquirePermission()).toBe(true);
    expect(s.breaker.tryAcquirePermission()).toBe(false);
    expect(s.breaker.metrics()).toMatchObject({ state: "HALF_OPEN", notPermittedCalls: 1 });
    s.breaker.releasePermission();
    expect(s.breaker.tryAcquirePermission()).toBe(true);
  });

  it("closes with a fresh window when the trial calls are below both thresholds", () => {
    const s = halfOpen();
    s.call(FAST);
    expect(s.breaker.state).toBe("HALF_OPEN");
    s.call(FAST);
    expect(s.breaker.metrics()).toMatchObject({ state: "CLOSED", bufferedCalls: 0, notPermittedCalls: 0 });
    expect(s.transitions.at(-1)).toEqual({
      breaker: "payments/orders",
      from: "HALF_OPEN",
      to: "CLOSED",
      reason: "RatesBelowThresholds",
      failureRate: 0,
      slowCallRate: 0,
      bufferedCalls: 2,
    });
  });

  it("reopens, with a new wait, when a trial call fails", () => {
    const s = halfOpen();
    s.call(FAST);
    s.call(FAST, true);
    expect(s.breaker.state).toBe("OPEN");
    expect(s.transitions.at(-1)).toMatchObject({
      from: "HALF_OPEN",
      to: "OPEN",
      reason: "FailureRateExceeded",
      failureRate: 50,
    });
    s.clock.advance(999);
    expect(s.breaker.tryAcquirePermission()).toBe(false);
    s.clock.advance(1);
    expect(s.breaker.tryAcquirePermission()).toBe(true);
  });

  it("reopens when the trial calls are slow though successful", () => {
    const s = halfOpen();
    s.call(FAST);
    s.call(800);
    expect(s.transitions.at(-1)).toMatchObject({
      from: "HALF_OPEN",
      to: "OPEN",
      reason: "SlowCallRateExceeded",
    });
  });

  it("decides after min(minimumNumberOfCalls, permitted) trial calls", () => {
    const s = halfOpen({
      ...small,
      minimumNumberOfCalls: 1,
      slidingWindowSize: 1,
      permittedNumberOfCallsInHalfOpenState: 5,
    });
    s.call(FAST);
    expect(s.breaker.state).toBe("CLOSED");
  });

  it("fires each listener once per transition over a full cycle, and stops after unsubscribe", () => {
    const s = setup(small);
    const seen: string[] = [];
    const unsubscribe = s.breaker.onStateTransition((t) => seen.push(`${t.from}->${t.to}`));
    trip(s);
    s.breaker.tryAcquirePermission(); // rejected: no transition
    s.clock.advance(1000);
    s.call(FAST);
    s.call(FAST);
    s.call(FAST);
    expect(seen).toEqual(["CLOSED->OPEN", "OPEN->HALF_OPEN", "HALF_OPEN->CLOSED"]);
    expect(s.transitions).toHaveLength(3);
    unsubscribe();
    trip(s);
    expect(seen).toHaveLength(3);
    expect(s.transitions).toHaveLength(4);
  });
});

describe("SlowCallBreaker.execute", () => {
  it("returns the value and measures the duration with the clock", async () => {
    const s = setup({ ...small, slidingWindowSize: 1, minimumNumberOfCalls: 1, slowCallRateThreshold: 100 });
    const value = await s.breaker.execute(async () => {
      s.clock.advance(500);
      return 42;
    });
    expect(value).toBe(42);
    expect(s.transitions).toEqual([
      expect.objectContaining({ reason: "SlowCallRateExceeded", slowCallRate: 100 }),
    ]);
  });

  it("rethrows the call's error after recording it as a failure", async () => {
    const s = setup(small);
    const failure = new Error("duplicate key");
    await expect(s.breaker.execute(() => Promise.reject(failure))).rejects.toBe(failure);
    expect(s.breaker.metrics()).toMatchObject({ failedCalls: 1, bufferedCalls: 1 });
  });

  it("rejects a negative or non-finite duration from onResult", () => {
    const s = setup(small);
    expect(() => s.breaker.onResult(-1)).toThrow(RangeError);
    expect(() => s.breaker.onResult(Number.NaN)).toThrow(RangeError);
  });
});
