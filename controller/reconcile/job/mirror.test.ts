import { describe, expect, it } from "vitest";
import { ConditionLedger } from "./ledger.ts";
import { mirrorBreaker, mirrorValidation } from "./mirror.ts";
import type { RunSummary } from "./types.ts";

const now = new Date("2026-11-22T12:00:00Z");
const validation = (result: "Passed" | "Failed") => ({
  result,
  sourceRows: 10,
  targetRows: result === "Passed" ? 10 : 9,
  sourceChecksum: "a",
  targetChecksum: result === "Passed" ? "a" : "b",
});
const run = (name: string, over: Partial<RunSummary>): RunSummary => ({
  name,
  phase: "Succeeded",
  type: "Validation",
  createdAt: 0,
  ...over,
});

describe("mirrorValidation", () => {
  it.each([
    ["no run validated", [run("b1", { type: "Batch" })], undefined, undefined],
    [
      "a running validation does not count yet",
      [run("v1", { phase: "Running", validation: validation("Failed") })],
      undefined,
      undefined,
    ],
    [
      "the newest finished validation wins",
      [run("v1", { validation: validation("Failed") }), run("v2", { validation: validation("Passed") })],
      "Passed",
      "ValidationPassed",
    ],
    [
      "a failure is a warning",
      [run("v1", { validation: validation("Passed") }), run("v2", { validation: validation("Failed") })],
      "Failed",
      "ValidationFailed",
    ],
  ] as const)("%s", (_, runs, result, event) => {
    const ledger = new ConditionLedger(undefined, now);
    const mirrored = mirrorValidation(runs, 1, ledger);
    expect(mirrored?.result).toBe(result);
    expect(ledger.events.map((e) => e.reason)).toEqual(event ? [event] : []);
    if (result)
      expect(ledger.conditions[0]).toMatchObject({
        type: "Validated",
        status: result === "Passed" ? "True" : "False",
      });
  });

  it("records the same result once: a second reconcile adds no event", () => {
    const runs = [run("v1", { validation: validation("Failed") })];
    const first = new ConditionLedger(undefined, now);
    mirrorValidation(runs, 1, first);
    const again = new ConditionLedger(first.conditions, now);
    mirrorValidation(runs, 1, again);
    expect(again.events).toEqual([]);
    expect(again.changed).toBe(false);
  });
});

describe("mirrorBreaker", () => {
  const breaker = { state: "Open", slowCallRate: 80, bufferedRecords: 5 };
  it.each([
    ["no session", [], undefined],
    [
      "a live session's breaker",
      [run("s1", { type: "Realtime", phase: "Running", breaker })],
      { state: "Open", slowCallRate: 80, bufferedRecords: 5 },
    ],
    [
      "a finished session's breaker is not the job's",
      [run("s1", { type: "Realtime", phase: "Cancelled", breaker })],
      undefined,
    ],
    [
      "an unknown state reads as Closed",
      [run("s1", { type: "Realtime", phase: "Running", breaker: { state: "Weird" } })],
      { state: "Closed" },
    ],
  ] as const)("%s", (_, runs, want) => {
    expect(mirrorBreaker(runs as unknown as RunSummary[])).toEqual(want);
  });
});
