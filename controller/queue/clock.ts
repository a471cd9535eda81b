/** An opaque timer handle, whatever the clock hands out. */
export type TimerHandle = unknown;

/**
 * The time source and timers the queue and its rate limiters use. Injectable so that tests drive
 * time by hand instead of sleeping; production code uses `systemClock`.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale (only differences are meaningful). */
  now(): number;
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
