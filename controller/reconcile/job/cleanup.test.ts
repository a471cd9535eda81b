import { describe, expect, it } from "vitest";
import { decideCleanup } from "./cleanup.ts";
import type { RunSummary } from "./types.ts";

const now = new Date("2026-11-22T12:00:00Z");
const run = (name: string, phase: string, completionTime = "2026-11-22T11:00:00Z"): RunSummary => ({
  name,
  phase,
  type: "Batch",
  createdAt: 0,
  completionTime,
});
const limits = {
  successfulRunsHistoryLimit: 2,
  failedRunsHistoryLimit: 1,
  ttlSecondsAfterFinished: undefined,
};

describe("decideCleanup", () => {
  it.each([
    ["nothing finished", [run("r1", "Running")], limits, [], undefined],
    ["within the limits", [run("r1", "Succeeded"), run("f1", "Failed")], limits, [], undefined],
    [
      "the oldest beyond the history limits",
      [
        run("r1", "Succeeded"),
        run("r2", "Succeeded"),
        run("r3", "Succeeded"),
        run("f1", "Failed"),
        run("f2", "Cancelled"),
      ],
      limits,
      ["f1", "r1"],
      undefined,
    ],
    [
      "a run still waiting is never deleted",
      [run("q1", "Queued"), run("q2", "Pending")],
      { ...limits, successfulRunsHistoryLimit: 0, failedRunsHistoryLimit: 0 },
      [],
      undefined,
    ],
    [
      "past its TTL",
      [run("r1", "Succeeded", "2026-11-22T11:58:00Z")],
      { ...limits, ttlSecondsAfterFinished: 60 },
      ["r1"],
      undefined,
    ],
    [
      "before its TTL: look again when it expires",
      [run("r1", "Succeeded", "2026-11-22T11:59:30Z")],
      { ...limits, ttlSecondsAfterFinished: 60 },
      [],
      30_000,
    ],
    [
      "no completion time: kept",
      [run("r1", "Succeeded", "")],
      { ...limits, ttlSecondsAfterFinished: 0 },
      [],
      undefined,
    ],
  ] as const)("%s", (_, runs, policy, deleted, requeue) => {
    const d = decideCleanup(runs, policy, now);
    expect(d.delete.sort()).toEqual([...deleted]);
    expect(d.requeueAfterMs).toBe(requeue);
  });
});
