import { describe, expect, it } from "vitest";
import { BreakerConfig, strictestBreakerBounds, strictestBreakerConfig } from "./breaker-config.ts";

describe("BreakerConfig", () => {
  it("fills resilience4j's defaults, with a 500 ms slow-call duration", () => {
    expect(BreakerConfig.parse({})).toEqual({
      slidingWindowType: "COUNT_BASED",
      slidingWindowSize: 100,
      minimumNumberOfCalls: 100,
      failureRateThreshold: 50,
      slowCallRateThreshold: 100,
      slowCallDurationThresholdMs: 500,
      waitDurationInOpenStateMs: 60_000,
      permittedNumberOfCallsInHalfOpenState: 10,
      automaticTransitionFromOpenToHalfOpenEnabled: false,
    });
  });

  it.each([
    [{ failureRateThreshold: 0 }, "failureRateThreshold"],
    [{ failureRateThreshold: 101 }, "failureRateThreshold"],
    [{ slowCallRateThreshold: 0.5 }, "slowCallRateThreshold"],
    [{ slowCallDurationThresholdMs: 0 }, "slowCallDurationThresholdMs"],
    [{ waitDurationInOpenStateMs: -1 }, "waitDurationInOpenStateMs"],
    [{ waitDurationInOpenStateMs: 2 ** 31 }, "waitDurationInOpenStateMs"],
    [{ slidingWindowSize: 2.5 }, "slidingWindowSize"],
    [{ minimumNumberOfCalls: 0 }, "minimumNumberOfCalls"],
    [{ permittedNumberOfCallsInHalfOpenState: 0 }, "permittedNumberOfCallsInHalfOpenState"],
    [{ slidingWindowType: "SESSION_BASED" }, "slidingWindowType"],
    [{ slowCallDuration: 500 }, ""],
  ])("rejects %o, naming the path", (input, path) => {
    const result = BreakerConfig.safeParse(input);
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path.join(".")).toBe(path);
  });

  it("accepts the bounds of each range", () => {
    expect(() =>
      BreakerConfig.parse({
        failureRateThreshold: 1,
        slowCallRateThreshold: 100,
        waitDurationInOpenStateMs: 2 ** 31 - 1,
      }),
    ).not.toThrow();
  });
});

describe("strictestBreakerConfig", () => {
  it("takes defaults when no input sets anything", () => {
    expect(strictestBreakerConfig([])).toEqual(BreakerConfig.parse({}));
    expect(strictestBreakerConfig([{}, {}])).toEqual(BreakerConfig.parse({}));
  });

  it("takes the lowest thresholds and counts, and the longest wait", () => {
    const combined = strictestBreakerConfig([
      {
        failureRateThreshold: 30,
        slowCallRateThreshold: 90,
        slowCallDurationThresholdMs: 800,
        minimumNumberOfCalls: 20,
        waitDurationInOpenStateMs: 5_000,
        permittedNumberOfCallsInHalfOpenState: 4,
      },
      {
        failureRateThreshold: 60,
        slowCallRateThreshold: 40,
        slowCallDurationThresholdMs: 200,
        minimumNumberOfCalls: 50,
        waitDurationInOpenStateMs: 120_000,
        permittedNumberOfCallsInHalfOpenState: 8,
      },
    ]);
    expect(combined).toMatchObject({
      failureRateThreshold: 30,
      slowCallRateThreshold: 40,
      slowCallDurationThresholdMs: 200,
      minimumNumberOfCalls: 20,
      waitDurationInOpenStateMs: 120_000,
      permittedNumberOfCallsInHalfOpenState: 4,
    });
  });

  it("lets an input that is silent on a field neither loosen nor tighten it", () => {
    const combined = strictestBreakerConfig([
      { waitDurationInOpenStateMs: 10_000 },
      { failureRateThreshold: 80 },
    ]);
    expect(combined.waitDurationInOpenStateMs).toBe(10_000); // not the 60 s default of the second input
    expect(combined.failureRateThreshold).toBe(80); // not the 50 % default of the first input
  });

  it("enables the automatic transition only when every input that sets it does", () => {
    const on = { automaticTransitionFromOpenToHalfOpenEnabled: true };
    const off = { automaticTransitionFromOpenToHalfOpenEnabled: false };
    expect(strictestBreakerConfig([on, {}]).automaticTransitionFromOpenToHalfOpenEnabled).toBe(true);
    expect(strictestBreakerConfig([on, off]).automaticTransitionFromOpenToHalfOpenEnabled).toBe(false);
  });

  it("prefers a count window to a time window, then the smallest window of that type", () => {
    expect(
      strictestBreakerConfig([
        { slidingWindowType: "TIME_BASED", slidingWindowSize: 5 },
        { slidingWindowType: "COUNT_BASED", slidingWindowSize: 50 },
        { slidingWindowSize: 20 }, // COUNT_BASED by default
      ]),
    ).toMatchObject({ slidingWindowType: "COUNT_BASED", slidingWindowSize: 20 });
    expect(
      strictestBreakerConfig([
        { slidingWindowType: "TIME_BASED", slidingWindowSize: 30 },
        { slidingWindowType: "TIME_BASED", slidingWindowSize: 10 },
        { failureRateThreshold: 20 },
      ]),
    ).toMatchObject({ slidingWindowType: "TIME_BASED", slidingWindowSize: 10 });
  });

  it("rejects an invalid input rather than ignoring it", () => {
    expect(() => strictestBreakerConfig([{ failureRateThreshold: 20 }, { failureRateThreshold: 0 }])).toThrow(
      /failureRateThreshold/,
    );
  });
});

describe("strictestBreakerBounds", () => {
  const inputs = [
    { failureRateThreshold: 40, slidingWindowType: "TIME_BASED" as const, slidingWindowSize: 30 },
    { slowCallDurationThresholdMs: 200, waitDurationInOpenStateMs: 90_000, slidingWindowSize: 20 },
    { automaticTransitionFromOpenToHalfOpenEnabled: true },
    {},
  ];

  it("keeps only what some input sets", () => {
    const bounds = strictestBreakerBounds(inputs);
    expect(Object.keys(bounds).sort()).toEqual(
      [
        "automaticTransitionFromOpenToHalfOpenEnabled",
        "failureRateThreshold",
        "slidingWindowSize",
        "slidingWindowType",
        "slowCallDurationThresholdMs",
        "waitDurationInOpenStateMs",
      ].sort(),
    );
    expect(strictestBreakerBounds([{}, {}])).toEqual({});
  });

  it("bounds a job as every input would: combining once at admission changes nothing", () => {
    const jobs = [
      {},
      { failureRateThreshold: 20, slidingWindowType: "TIME_BASED" as const, slidingWindowSize: 5 },
      { slowCallDurationThresholdMs: 1000, waitDurationInOpenStateMs: 1000, minimumNumberOfCalls: 3 },
      { automaticTransitionFromOpenToHalfOpenEnabled: false, slidingWindowSize: 50 },
      { slidingWindowType: "COUNT_BASED" as const, slidingWindowSize: 7 },
    ];
    for (const job of jobs) {
      expect(strictestBreakerConfig([job, strictestBreakerBounds(inputs)])).toEqual(
        strictestBreakerConfig([job, ...inputs]),
      );
    }
  });
});
