/**
 * A circuit breaker with resilience4j's CircuitBreaker semantics, tripping on slow calls as well as on
 * failed ones.
 *
 * Written here rather than taken from npm: opossum trips on errors and on calls it times out (and
 * rejects), never on a rate of slow calls that still succeed; cockatiel's breakers (consecutive,
 * sampling, count) judge failures only. mollitia's sliding breakers do count slow calls, but a slow
 * call that fails counts only as a failure, a threshold of 100 % switches the check off, time comes
 * from Date.now() with no clock to inject, and there is no permission/result pair for a caller that
 * must divert instead of throwing. The state machine below is small enough to own.
 *
 * Contract (as resilience4j, differences noted):
 * - A call is recorded when it completes, into the window of the current state. It is slow when its
 *   duration is at least slowCallDurationThresholdMs (resilience4j: strictly more), whether it
 *   succeeded or failed; a slow failure counts toward both rates.
 * - No rate is computed until the window holds minimumNumberOfCalls calls (capped at the window size
 *   for COUNT_BASED). CLOSED → OPEN when the failure rate or the slow-call rate reaches its threshold.
 * - OPEN rejects every call (CallNotPermittedError, or false from tryAcquirePermission) until
 *   waitDurationInOpenStateMs has elapsed; then the next request for permission, or the timer if
 *   automatic transition is on, moves it to HALF_OPEN. OPEN keeps the window that tripped it, so the
 *   metrics show why it opened; calls that were permitted before it opened are still recorded there.
 * - HALF_OPEN permits permittedNumberOfCallsInHalfOpenState trial calls into a fresh count window of
 *   that size. Once min(minimumNumberOfCalls, permitted) trials completed, either rate at or above its
 *   threshold sends it back to OPEN (a new wait), otherwise it closes with a fresh window.
 * - Node runs this on one thread, so every method is atomic; listeners run after the state changed,
 *   exactly once per transition.
 */
import { BreakerConfig, type BreakerConfigInput } from "./breaker-config.ts";
import { CountWindow, type SlidingWindow, TimeWindow, type WindowTotals } from "./sliding-window.ts";

export const BREAKER_STATES = ["CLOSED", "OPEN", "HALF_OPEN"] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

/**
 * Why a transition happened, as CamelCase words a script can match in events and conditions:
 * the rates that tripped it (from CLOSED or HALF_OPEN to OPEN), the end of the wait (OPEN to
 * HALF_OPEN), or trial calls below both thresholds (HALF_OPEN to CLOSED).
 */
export type BreakerTransitionReason =
  | "FailureRateExceeded"
  | "SlowCallRateExceeded"
  | "FailureAndSlowCallRatesExceeded"
  | "WaitDurationElapsed"
  | "RatesBelowThresholds";

export interface BreakerTransition {
  breaker: string;
  from: BreakerState;
  to: BreakerState;
  reason: BreakerTransitionReason;
  /** Rates (percent) of the window that decided, null while it holds fewer than the minimum calls. */
  failureRate: number | null;
  slowCallRate: number | null;
  bufferedCalls: number;
}

export type BreakerTransitionListener = (transition: BreakerTransition) => void;

/** A point-in-time view for status, events and metrics. */
export interface BreakerMetrics {
  state: BreakerState;
  /** Percent of buffered calls that failed; null while fewer than the minimum calls are buffered. */
  failureRate: number | null;
  /** Percent of buffered calls that were slow; null while fewer than the minimum calls are buffered. */
  slowCallRate: number | null;
  bufferedCalls: number;
  failedCalls: number;
  slowCalls: number;
  slowFailedCalls: number;
  /** Calls rejected since the window was last replaced (on entering CLOSED or HALF_OPEN). */
  notPermittedCalls: number;
}

/** Time as the breaker sees it; injected so tests decide when the wait and the window move. */
export interface BreakerClock {
  /** Milliseconds on a monotonic scale; only differences and whole seconds are used. */
  now(): number;
  /** Runs task once after delayMs unless the returned function is called first. */
  schedule(delayMs: number, task: () => void): () => void;
}

export const systemClock: BreakerClock = {
  now: () => performance.now(),
  schedule(delayMs, task) {
    // Unreferenced: a pending move to HALF_OPEN must not keep the process alive.
    const timer = setTimeout(task, delayMs).unref();
    return () => clearTimeout(timer);
  },
};

/** Thrown by execute() when the breaker does not permit the call; the call was not made. */
export class CallNotPermittedError extends Error {
  override readonly name = "CallNotPermittedError";
  readonly breaker: string;
  readonly state: BreakerState;

  constructor(breaker: string, state: BreakerState) {
    super(`circuit breaker ${breaker} is ${state} and does not permit further calls`);
    this.breaker = breaker;
    this.state = state;
  }
}

export interface SlowCallBreakerOptions {
  /** Names the breaker in errors and transitions, e.g. the job's namespace/name. */
  name: string;
  /** Validated with the BreakerConfig schema; a ZodError on invalid settings. */
  config?: BreakerConfigInput;
  clock?: BreakerClock;
  /**
   * Whether an error counts as a failure; one that does not counts as a success (its duration still
   * counts toward slowness). Default: every error is a failure.
   */
  isFailure?: (error: unknown) => boolean;
}

/** The window of one state, with the thresholds that judge it. */
class CallMetrics {
  readonly #window: SlidingWindow;
  readonly #minimumNumberOfCalls: number;
  notPermittedCalls = 0;

  constructor(window: SlidingWindow, minimumNumberOfCalls: number) {
    this.#window = window;
    this.#minimumNumberOfCalls = minimumNumberOfCalls;
  }

  record(failed: boolean, slow: boolean, nowMs: number): WindowTotals {
    return this.#window.record({ failed, slow }, nowMs);
  }

  totals(nowMs: number): WindowTotals {
    return this.#window.totals(nowMs);
  }

  rates(totals: WindowTotals): { failureRate: number | null; slowCallRate: number | null } {
    if (totals.calls === 0 || totals.calls < this.#minimumNumberOfCalls) {
      return { failureRate: null, slowCallRate: null };
    }
    return {
      failureRate: (totals.failedCalls * 100) / totals.calls,
      slowCallRate: (totals.slowCalls * 100) / totals.calls,
    };
  }
}

interface OpenPhase {
  state: "OPEN";
  metrics: CallMetrics;
  openUntil: number;
  cancelTimer: (() => void) | undefined;
}
type Phase =
  | { state: "CLOSED"; metrics: CallMetrics }
  | OpenPhase
  | { state: "HALF_OPEN"; metrics: CallMetrics; permitsLeft: number };

export class SlowCallBreaker {
  readonly name: string;
  readonly config: BreakerConfig;
  readonly #clock: BreakerClock;
  readonly #isFailure: (error: unknown) => boolean;
  readonly #listeners = new Set<BreakerTransitionListener>();
  #phase: Phase;

  constructor(options: SlowCallBreakerOptions) {
    this.name = options.name;
    this.config = BreakerConfig.parse(options.config ?? {});
    this.#clock = options.clock ?? systemClock;
    this.#isFailure = options.isFailure ?? (() => true);
    this.#phase = { state: "CLOSED", metrics: this.#closedMetrics() };
  }

  get state(): BreakerState {
    return this.#phase.state;
  }

  /**
   * Asks to make one call. True: make it, then report it with onResult (or give the permission back
   * with releasePermission). False: the breaker is OPEN, or HALF_OPEN with every trial call taken;
   * do not call the target.
   */
  tryAcquirePermission(): boolean {
    const phase = this.#phase;
    switch (phase.state) {
      case "CLOSED":
        return true;
      case "OPEN":
        if (this.#clock.now() >= phase.openUntil) {
          this.#transition("HALF_OPEN", "WaitDurationElapsed");
          return this.tryAcquirePermission();
        }
        phase.metrics.notPermittedCalls++;
        return false;
      case "HALF_OPEN":
        if (phase.permitsLeft > 0) {
          phase.permitsLeft--;
          return true;
        }
        phase.metrics.notPermittedCalls++;
        return false;
    }
  }

  /** Gives back a permission whose call was not made, so that a HALF_OPEN trial slot is not lost. */
  releasePermission(): void {
    const phase = this.#phase;
    if (
      phase.state === "HALF_OPEN" &&
      phase.permitsLeft < this.config.permittedNumberOfCallsInHalfOpenState
    ) {
      phase.permitsLeft++;
    }
  }

  /**
   * Records a permitted call that completed after durationMs: a success when error is undefined,
   * otherwise a failure (unless isFailure says it is not). May change the state.
   */
  onResult(durationMs: number, error?: unknown): void {
    this.#record(durationMs, error !== undefined && this.#isFailure(error));
  }

  /** Runs fn if permitted, records its outcome and duration, and returns or rethrows its result. */
  async execute<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.tryAcquirePermission()) throw new CallNotPermittedError(this.name, this.#phase.state);
    const started = this.#clock.now();
    let value: T;
    try {
      value = await fn();
    } catch (error) {
      this.#record(this.#clock.now() - started, this.#isFailure(error));
      throw error;
    }
    this.#record(this.#clock.now() - started, false);
    return value;
  }

  metrics(): BreakerMetrics {
    const { state, metrics } = this.#phase;
    const totals = metrics.totals(this.#clock.now());
    return {
      state,
      ...metrics.rates(totals),
      bufferedCalls: totals.calls,
      failedCalls: totals.failedCalls,
      slowCalls: totals.slowCalls,
      slowFailedCalls: totals.slowFailedCalls,
      notPermittedCalls: metrics.notPermittedCalls,
    };
  }

  /** Calls listener after every state transition; returns the function that unsubscribes it. */
  onStateTransition(listener: BreakerTransitionListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #record(durationMs: number, failed: boolean): void {
    if (!Number.isFinite(durationMs) || durationMs < 0) {
      throw new RangeError(`call duration must be a finite number of milliseconds >= 0, got ${durationMs}`);
    }
    const phase = this.#phase;
    const now = this.#clock.now();
    const totals = phase.metrics.record(failed, durationMs >= this.config.slowCallDurationThresholdMs, now);
    if (phase.state === "OPEN") return;
    const { failureRate, slowCallRate } = phase.metrics.rates(totals);
    if (failureRate === null || slowCallRate === null) return;
    const failureExceeded = failureRate >= this.config.failureRateThreshold;
    const slowExceeded = slowCallRate >= this.config.slowCallRateThreshold;
    if (failureExceeded && slowExceeded) this.#transition("OPEN", "FailureAndSlowCallRatesExceeded");
    else if (failureExceeded) this.#transition("OPEN", "FailureRateExceeded");
    else if (slowExceeded) this.#transition("OPEN", "SlowCallRateExceeded");
    else if (phase.state === "HALF_OPEN") this.#transition("CLOSED", "RatesBelowThresholds");
  }

  #transition(to: BreakerState, reason: BreakerTransitionReason): void {
    const previous = this.#phase;
    const now = this.#clock.now();
    const totals = previous.metrics.totals(now);
    const event: BreakerTransition = {
      breaker: this.name,
      from: previous.state,
      to,
      reason,
      ...previous.metrics.rates(totals),
      bufferedCalls: totals.calls,
    };
    if (previous.state === "OPEN") previous.cancelTimer?.();

    if (to === "CLOSED") {
      this.#phase = { state: "CLOSED", metrics: this.#closedMetrics() };
    } else if (to === "HALF_OPEN") {
      const permitted = this.config.permittedNumberOfCallsInHalfOpenState;
      const metrics = new CallMetrics(
        new CountWindow(permitted),
        Math.min(this.config.minimumNumberOfCalls, permitted),
      );
      this.#phase = { state: "HALF_OPEN", metrics, permitsLeft: permitted };
    } else {
      const wait = this.config.waitDurationInOpenStateMs;
      const open: OpenPhase = {
        state: "OPEN",
        metrics: previous.metrics,
        openUntil: now + wait,
        cancelTimer: undefined,
      };
      if (this.config.automaticTransitionFromOpenToHalfOpenEnabled) {
        open.cancelTimer = this.#clock.schedule(wait, () => {
          if (this.#phase === open) this.#transition("HALF_OPEN", "WaitDurationElapsed");
        });
      }
      this.#phase = open;
    }

    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (error) {
        // A broken listener must neither undo the transition nor turn the caller's result into its
        // error; it surfaces as an uncaught exception, as a throwing event handler would.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  #closedMetrics(): CallMetrics {
    const { slidingWindowType, slidingWindowSize, minimumNumberOfCalls } = this.config;
    return slidingWindowType === "COUNT_BASED"
      ? new CallMetrics(new CountWindow(slidingWindowSize), Math.min(minimumNumberOfCalls, slidingWindowSize))
      : new CallMetrics(new TimeWindow(slidingWindowSize), minimumNumberOfCalls);
  }
}
