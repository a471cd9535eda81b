import { z } from "zod";

/**
 * Settings of a SlowCallBreaker, named and defaulted as resilience4j's CircuitBreakerConfig except
 * where noted: durations carry their unit in the name (Kubernetes API convention), and the slow-call
 * duration defaults to 500 ms rather than 60 s because a target write that takes half a second is
 * already a sick target for a sync.
 */
export const BreakerConfig = z
  .strictObject({
    slidingWindowType: z
      .enum(["COUNT_BASED", "TIME_BASED"])
      .default("COUNT_BASED")
      .describe(
        "COUNT_BASED judges the last slidingWindowSize calls; TIME_BASED the last slidingWindowSize seconds.",
      ),
    slidingWindowSize: z
      .int()
      .min(1)
      .max(100_000)
      .default(100)
      .describe("Calls (COUNT_BASED) or seconds (TIME_BASED) the rates are computed over. Default: 100."),
    minimumNumberOfCalls: z
      .int()
      .min(1)
      .max(100_000)
      .default(100)
      .describe(
        "Calls the window must hold before any rate is computed; capped at slidingWindowSize when COUNT_BASED. Default: 100.",
      ),
    failureRateThreshold: z
      .number()
      .min(1)
      .max(100)
      .default(50)
      .describe("Percentage of failed calls at or above which the breaker opens. Default: 50."),
    slowCallRateThreshold: z
      .number()
      .min(1)
      .max(100)
      .default(100)
      .describe("Percentage of slow calls at or above which the breaker opens. Default: 100."),
    slowCallDurationThresholdMs: z
      .int()
      .min(1)
      .max(Number.MAX_SAFE_INTEGER)
      .default(500)
      .describe(
        "A call that takes at least this many milliseconds is slow, whether it succeeded or not. Default: 500.",
      ),
    // Capped at the largest delay a Node timer honours; a longer one would fire at once.
    waitDurationInOpenStateMs: z
      .int()
      .min(1)
      .max(2_147_483_647)
      .default(60_000)
      .describe(
        "Milliseconds the breaker stays OPEN, rejecting calls, before it permits trial calls. Default: 60000.",
      ),
    permittedNumberOfCallsInHalfOpenState: z
      .int()
      .min(1)
      .max(10_000)
      .default(10)
      .describe("Trial calls permitted in HALF_OPEN; their rates decide CLOSED or OPEN again. Default: 10."),
    automaticTransitionFromOpenToHalfOpenEnabled: z
      .boolean()
      .default(false)
      .describe(
        "Move to HALF_OPEN as soon as the wait has elapsed, instead of on the first call asking for permission after it. Default: false.",
      ),
  })
  .describe(
    "Circuit breaker around target writes: trips on the rate of failed calls and on the rate of slow calls.",
  );
export type BreakerConfig = z.infer<typeof BreakerConfig>;
export type BreakerConfigInput = z.input<typeof BreakerConfig>;
export type SlidingWindowType = BreakerConfig["slidingWindowType"];

/**
 * Combines the breaker settings of several policies (and the job itself) into the strictest one: the
 * configuration that protects the target soonest and longest. Each input is validated; a field counts
 * only where an input sets it, so a policy that is silent on a field neither loosens nor tightens it,
 * and a field no input sets takes its default. Per field:
 *
 * - failureRateThreshold, slowCallRateThreshold, slowCallDurationThresholdMs: the lowest (trips on
 *   fewer failures, on fewer slow calls, and counts more calls as slow).
 * - minimumNumberOfCalls: the lowest (judges on less evidence, so it can trip sooner).
 * - waitDurationInOpenStateMs: the longest (leaves a sick target alone longer).
 * - permittedNumberOfCallsInHalfOpenState: the lowest (fewer trial calls reach a target that may still
 *   be sick, and each failed trial weighs more toward reopening).
 * - automaticTransitionFromOpenToHalfOpenEnabled: true only if every input that sets it says true (the
 *   breaker leaves OPEN on its own only when all agree).
 * - the window (type and size together, since the size's unit depends on the type): COUNT_BASED wins
 *   over TIME_BASED, because a count window always reaches its minimum calls, while a time window at
 *   low traffic may never hold enough calls to trip at all; within the winning type, the smallest size
 *   (recent calls weigh more, so a new burst of failures trips sooner).
 */
export function strictestBreakerConfig(inputs: readonly BreakerConfigInput[]): BreakerConfig {
  const parsed = inputs.map((input) => ({ input, config: BreakerConfig.parse(input) }));
  const set = <K extends keyof BreakerConfig>(key: K): BreakerConfig[K][] =>
    parsed.filter(({ input }) => input[key] !== undefined).map(({ config }) => config[key]);
  const lowest = (values: number[]): number | undefined => (values.length ? Math.min(...values) : undefined);
  const highest = (values: number[]): number | undefined => (values.length ? Math.max(...values) : undefined);

  const windows = parsed
    .filter(({ input }) => input.slidingWindowType !== undefined || input.slidingWindowSize !== undefined)
    .map(({ config }) => ({ type: config.slidingWindowType, size: config.slidingWindowSize }));
  const windowType: SlidingWindowType | undefined = windows.length
    ? windows.some((w) => w.type === "COUNT_BASED")
      ? "COUNT_BASED"
      : "TIME_BASED"
    : undefined;
  const automatic = set("automaticTransitionFromOpenToHalfOpenEnabled");

  return BreakerConfig.parse({
    slidingWindowType: windowType,
    slidingWindowSize: lowest(windows.filter((w) => w.type === windowType).map((w) => w.size)),
    minimumNumberOfCalls: lowest(set("minimumNumberOfCalls")),
    failureRateThreshold: lowest(set("failureRateThreshold")),
    slowCallRateThreshold: lowest(set("slowCallRateThreshold")),
    slowCallDurationThresholdMs: lowest(set("slowCallDurationThresholdMs")),
    waitDurationInOpenStateMs: highest(set("waitDurationInOpenStateMs")),
    permittedNumberOfCallsInHalfOpenState: lowest(set("permittedNumberOfCallsInHalfOpenState")),
    automaticTransitionFromOpenToHalfOpenEnabled: automatic.length ? automatic.every(Boolean) : undefined,
  });
}

/**
 * The strictest combination of the inputs as bounds: only the fields some input sets, combined as
 * strictestBreakerConfig does. Combining a job's settings with these bounds gives the same
 * configuration as combining it with every input (each field's rule is associative), so policies'
 * breaker settings can be combined once, at admission, and applied later by the runner.
 */
export function strictestBreakerBounds(inputs: readonly BreakerConfigInput[]): BreakerConfigInput {
  const combined = strictestBreakerConfig(inputs);
  const bounds: Record<string, unknown> = {};
  for (const key of Object.keys(combined) as (keyof BreakerConfig)[]) {
    const setBySome = inputs.some((input) => input[key] !== undefined);
    // The window's type and size go together: a size alone implies its type's unit.
    const windowPart =
      (key === "slidingWindowType" || key === "slidingWindowSize") &&
      inputs.some((input) => input.slidingWindowType !== undefined || input.slidingWindowSize !== undefined);
    if (setBySome || windowPart) bounds[key] = combined[key];
  }
  return bounds as BreakerConfigInput;
}
