import { describe, expect, it } from "vitest";
import { baseJob, loadYaml } from "../../test/support/manifests.ts";
import { decideJob, type JobInput, RUN_NOW_ANNOTATION, type RunSummary } from "./syncjob.ts";

const now = new Date("2026-11-22T12:00:00Z");

function input(
  over: Partial<JobInput> & {
    spec?: Record<string, unknown>;
    status?: Record<string, unknown>;
    annotations?: Record<string, string>;
  } = {},
): JobInput {
  const object = baseJob() as Record<string, unknown> & {
    metadata: Record<string, unknown>;
    spec: Record<string, unknown>;
  };
  object.metadata = {
    name: "customers",
    namespace: "crm",
    generation: 2,
    creationTimestamp: "2026-11-22T11:00:00Z",
    annotations: over.annotations,
  };
  Object.assign(object.spec, over.spec ?? {});
  if (over.status) object.status = over.status;
  return {
    object: object as never,
    policies: over.policies ?? [],
    namespace: over.namespace ?? { name: "crm", labels: {} },
    runs: over.runs ?? [],
    now,
  };
}

const withStatus = (object: unknown, status: Record<string, unknown>) =>
  ({ ...(object as object), status }) as never;

const run = (name: string, over: Partial<RunSummary> = {}): RunSummary => ({
  name,
  phase: "Succeeded",
  type: "Batch",
  createdAt: Date.parse("2026-11-22T11:00:00Z") + Number(name.replace(/\D/g, "") || 0) * 1000,
  completionTime: "2026-11-22T11:59:00Z",
  ...over,
});

describe("decideJob", () => {
  it("writes observedGeneration, Valid and PolicyCompliant, once", () => {
    const first = decideJob(input());
    expect(first.status?.observedGeneration).toBe(2);
    expect(first.status?.phase).toBe("Idle");
    expect(first.events.map((e) => e.reason)).toEqual(["SpecValid"]);
    const again = decideJob(input({ status: first.status as Record<string, unknown> }));
    expect(again.status).toBeUndefined();
    expect(again.events).toEqual([]);
  });

  it("an Enforce violation blocks the job; Warn admits with a warning event", () => {
    const rule = {
      name: "qualified",
      expression: "object.spec.target.sql.table.contains('x')",
      message: "needs an x",
    };
    const enforce = decideJob(
      input({ policies: [{ name: "p", spec: { enforcement: "Enforce", rules: [rule] } as never }] }),
    );
    expect(enforce.status?.phase).toBe("Blocked");
    expect(enforce.events.map((e) => e.reason)).toContain("Blocked");
    expect(enforce.create).toEqual([]);
    const warn = decideJob(
      input({ policies: [{ name: "p", spec: { enforcement: "Warn", rules: [rule] } as never }] }),
    );
    expect(warn.status?.phase).toBe("Idle");
    expect(warn.events.find((e) => e.reason === "PolicyWarning")?.type).toBe("Warning");
  });

  it("fires a due cron schedule once, named after the fire time", () => {
    const d = decideJob(input({ spec: { schedule: "30 11 * * *", timeZone: "UTC" } }));
    expect(d.create).toEqual([expect.objectContaining({ type: "Batch", trigger: "Schedule" })]);
    expect(d.status?.lastScheduleTime).toBe("2026-11-22T12:00:00Z");
    expect(d.requeueAfterMs).toBeGreaterThan(23 * 3600_000);
    const after = decideJob(
      input({
        spec: { schedule: "30 11 * * *", timeZone: "UTC" },
        status: { lastScheduleTime: "2026-11-22T12:00:00Z" },
      }),
    );
    expect(after.create).toEqual([]);
  });

  it("starts a run by hand once per annotation value", () => {
    const d = decideJob(input({ annotations: { [RUN_NOW_ANNOTATION]: "1" } }));
    expect(d.create).toHaveLength(1);
    expect(d.status?.lastManualRequest).toBe("1");
    const same = decideJob(
      input({ annotations: { [RUN_NOW_ANNOTATION]: "1" }, status: { lastManualRequest: "1" } }),
    );
    expect(same.create).toEqual([]);
  });

  it("deletes finished runs beyond the history limits and after their TTL", () => {
    const runs = [
      run("r1"),
      run("r2"),
      run("r3"),
      run("r4"),
      run("f1", { phase: "Failed" }),
      run("f2", { phase: "Failed" }),
    ];
    const d = decideJob(input({ runs, spec: { successfulRunsHistoryLimit: 2, failedRunsHistoryLimit: 1 } }));
    expect(d.delete.sort()).toEqual(["f1", "r1", "r2"]);
    const ttl = decideJob(
      input({
        runs: [run("r1", { completionTime: "2026-11-22T11:59:30Z" })],
        spec: { ttlSecondsAfterFinished: 60 },
      }),
    );
    expect(ttl.delete).toEqual([]);
    expect(ttl.requeueAfterMs).toBe(30_000);
  });

  it("records validation results and counts consecutive failures across reconciles", () => {
    const v = (result: "Passed" | "Failed") => ({
      result,
      sourceRows: 10,
      targetRows: result === "Passed" ? 10 : 9,
      sourceChecksum: "a",
      targetChecksum: "b",
    });
    const first = decideJob(input({ runs: [run("v1", { validation: v("Failed") })] }));
    expect(first.status?.lastValidation?.result).toBe("Failed");
    expect(first.status?.shadow?.consecutiveFailedValidations).toBe(1);
    expect(first.events.map((e) => e.reason)).toContain("ValidationFailed");
    // v1 was deleted by now; v2 failed too: the streak continues from the status.
    const second = decideJob(
      input({
        runs: [run("v2", { validation: v("Failed") })],
        status: first.status as Record<string, unknown>,
      }),
    );
    expect(second.status?.shadow?.consecutiveFailedValidations).toBe(2);
    const passed = decideJob(
      input({
        runs: [run("v3", { validation: v("Passed") })],
        status: second.status as Record<string, unknown>,
      }),
    );
    expect(passed.status?.shadow?.consecutiveFailedValidations).toBe(0);
  });

  it("keeps one realtime session and restarts a failing one with backoff", () => {
    const rt = loadYaml("test/examples/realtime-orders.yaml")[0]!;
    const base = input();
    (base.object as unknown as { spec: unknown }).spec = rt.spec;
    const first = decideJob(base);
    expect(first.create).toContainEqual(expect.objectContaining({ type: "Realtime", trigger: "Stream" }));
    // The example compares every 10 minutes: that fire is due too.
    expect(first.create).toContainEqual(expect.objectContaining({ type: "Validation", trigger: "Schedule" }));
    const failedJustNow = {
      ...base,
      runs: [run("s1", { type: "Realtime", phase: "Failed", completionTime: "2026-11-22T11:59:58Z" })],
    };
    const d = decideJob({
      ...failedJustNow,
      object: withStatus(failedJustNow.object, { lastValidationTime: "2026-11-22T12:00:00Z" }),
    });
    expect(d.create).toEqual([]);
    expect(d.requeueAfterMs).toBe(8_000);
  });

  it("starts a compensation run once the breaker closed with records buffered", () => {
    const rt = loadYaml("test/examples/realtime-orders.yaml")[0]!;
    const base = input();
    (base.object as unknown as { spec: unknown }).spec = rt.spec;
    const session = run("s1", {
      type: "Realtime",
      phase: "Running",
      breaker: { state: "Closed", bufferedRecords: 42 },
    });
    // The validation schedule has just fired, so only the compensation is due.
    const quiet = {
      ...base,
      object: withStatus(base.object, { lastValidationTime: "2026-11-22T12:00:00Z" }),
    };
    const d = decideJob({ ...quiet, runs: [session] });
    expect(d.status?.breaker).toMatchObject({ state: "Closed", bufferedRecords: 42 });
    expect(d.create.map((r) => r.type)).toEqual(["Compensation"]);
    const open = decideJob({
      ...quiet,
      runs: [{ ...session, breaker: { state: "Open", bufferedRecords: 42 } }],
    });
    expect(open.create).toEqual([]);
  });
});
