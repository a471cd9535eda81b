import { describe, expect, it } from "vitest";
import { decideLostRun, RUN_BACKOFF_LIMIT, retryBackoffMs, staleHeartbeat } from "./lost-run.ts";

const now = new Date("2026-03-01T12:00:00.000Z");
const ago = (s: number) => new Date(now.getTime() - s * 1000).toISOString();

describe("staleHeartbeat", () => {
  it("takes a runner silent for longer than 60 s for gone, and says for how long", () => {
    const stale = staleHeartbeat({ phase: "Running", heartbeatTime: ago(75) }, now);
    expect(stale).toEqual({
      loss: {
        reason: "RunnerUnresponsive",
        message: expect.stringContaining("no heartbeat from the runner for 75 s"),
      },
    });
  });

  it("looks again when a live runner's heartbeat would go stale", () => {
    expect(staleHeartbeat({ phase: "Running", heartbeatTime: ago(20) }, now)).toEqual({
      checkAt: now.getTime() + 40_000,
    });
  });

  it("leaves runs without a heartbeat yet, and runs not Running, to their executor", () => {
    expect(staleHeartbeat({ phase: "Running" }, now)).toBeUndefined();
    expect(staleHeartbeat({ phase: "Succeeded", heartbeatTime: ago(600) }, now)).toBeUndefined();
    expect(staleHeartbeat(undefined, now)).toBeUndefined();
  });
});

describe("retryBackoffMs", () => {
  it("doubles from 10 s up to 6 min, as a Job's pod backoff", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 10].map(retryBackoffMs)).toEqual([
      10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 360_000, 360_000,
    ]);
  });
});

describe("decideLostRun", () => {
  const loss = { reason: "RunnerPodFailed", message: "runner pod p-1 was OOMKilled (exit 137)" };

  it("queues a batch run again with a backoff, freeing its slot and naming what happened", () => {
    const d = decideLostRun({ type: "Batch", status: { phase: "Running", attempts: 1 } }, loss, now);
    expect(d.retried).toBe(true);
    expect(d.status).toMatchObject({
      phase: "Queued",
      runnerFailures: 1,
      nextAttemptTime: new Date(now.getTime() + 10_000).toISOString(),
      heartbeatTime: null,
      executor: null,
    });
    expect(String(d.status.message)).toContain("runner pod p-1 was OOMKilled (exit 137)");
    expect(d.status.conditions).toEqual([
      expect.objectContaining({ type: "RunnerLost", status: "True", reason: "RunnerPodFailed" }),
    ]);
    expect(d.event).toMatchObject({ type: "Warning", reason: "RunnerLost" });
  });

  it("backs off exponentially per lost runner", () => {
    const d = decideLostRun({ type: "Batch", status: { phase: "Running", runnerFailures: 3 } }, loss, now);
    expect(d.status.nextAttemptTime).toBe(new Date(now.getTime() + 80_000).toISOString());
  });

  it("fails the run for good once lost runners exceed the backoff limit", () => {
    const d = decideLostRun(
      { type: "Validation", status: { phase: "Running", runnerFailures: RUN_BACKOFF_LIMIT, attempts: 7 } },
      loss,
      now,
    );
    expect(d.retried).toBe(false);
    expect(d.status).toMatchObject({
      phase: "Failed",
      runnerFailures: RUN_BACKOFF_LIMIT + 1,
      nextAttemptTime: null,
    });
    expect(d.status.completionTime).toBe(now.toISOString());
    expect(d.status.conditions).toContainEqual(
      expect.objectContaining({ type: "Failed", reason: "BackoffLimitExceeded" }),
    );
    expect(String(d.status.message)).toContain("exceed the backoff limit of 6");
  });

  it("attempts are bounded: a run that keeps losing its runner ends Failed after limit + 1 runners", () => {
    let status: Record<string, unknown> = { phase: "Running" };
    let runners = 0;
    for (; runners < 100; runners++) {
      const d = decideLostRun({ type: "Batch", status: status as never }, loss, now);
      status = { ...status, ...d.status, phase: d.retried ? "Running" : d.status.phase };
      if (!d.retried) break;
    }
    expect(runners + 1).toBe(RUN_BACKOFF_LIMIT + 1);
    expect(status.phase).toBe("Failed");
  });

  it("fails a realtime session at once with the loss as its reason: the job starts a new session", () => {
    const d = decideLostRun(
      { type: "Realtime", status: { phase: "Running", attempts: 1, conditions: [] } },
      { reason: "RunnerExited", message: "runner process 42 was killed by SIGKILL (exit 137)" },
      now,
    );
    expect(d.retried).toBe(false);
    expect(d.status.phase).toBe("Failed");
    expect(d.status.conditions).toContainEqual(
      expect.objectContaining({ type: "Failed", reason: "RunnerExited" }),
    );
    expect(String(d.status.message)).toContain("killed by SIGKILL (exit 137)");
  });

  it("fails a silent runner's run with the heartbeat's age as its reason", () => {
    const stale = staleHeartbeat({ phase: "Running", heartbeatTime: ago(61) }, now);
    if (!stale || !("loss" in stale)) throw new Error("expected a loss");
    const d = decideLostRun({ type: "Realtime", status: { phase: "Running" } }, stale.loss, now);
    expect(d.status.conditions).toContainEqual(
      expect.objectContaining({ type: "Failed", reason: "RunnerUnresponsive" }),
    );
    expect(String(d.status.message)).toContain("no heartbeat from the runner for 61 s");
  });
});
