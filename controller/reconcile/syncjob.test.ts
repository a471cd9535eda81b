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

/**
 * A job as a long-running controller keeps it: decideJob at every requeue it asks for (and at other
 * moments, as unrelated events would), the status it writes read back, the runs it creates finishing
 * a minute later. Returns the runs each job got, by name.
 */
function runController(
  objects: Record<string, unknown>[],
  from: Date,
  until: Date,
  extraWakeups: readonly Date[] = [],
): Map<string, string[]> {
  type Kept = { object: Record<string, unknown>; runs: RunSummary[]; wakeAt: number };
  const kept: Kept[] = objects.map((object) => ({ object, runs: [], wakeAt: from.getTime() }));
  const wakeups = extraWakeups.map((d) => d.getTime());
  for (let steps = 0; steps < 10_000; steps++) {
    const next = Math.min(...kept.map((k) => k.wakeAt), ...wakeups.filter((w) => w > 0));
    if (next > until.getTime()) break;
    const due = wakeups.indexOf(next);
    if (due >= 0) wakeups[due] = 0;
    for (const k of kept) {
      if (k.wakeAt > next && due < 0) continue;
      const at = new Date(next);
      const runs = k.runs.map((r) =>
        r.createdAt + 60_000 <= next
          ? { ...r, phase: "Succeeded", completionTime: new Date(r.createdAt + 60_000).toISOString() }
          : r,
      );
      const d = decideJob({
        object: k.object as never,
        policies: [],
        namespace: { name: "crm", labels: {} },
        runs,
        now: at,
      });
      if (d.status) k.object = { ...k.object, status: { ...(k.object.status as object), ...d.status } };
      for (const r of d.create) {
        if (!k.runs.some((x) => x.name === r.name))
          k.runs.push({ name: r.name, phase: "Running", type: r.type, createdAt: next });
      }
      k.wakeAt = d.requeueAfterMs === undefined ? Number.POSITIVE_INFINITY : next + d.requeueAfterMs;
    }
  }
  return new Map(
    kept.map((k) => [
      (k.object.metadata as { name: string }).name,
      k.runs.filter((r) => r.type === "Batch").map((r) => r.name),
    ]),
  );
}

function scheduledJob(name: string, spec: Record<string, unknown>, created: string): Record<string, unknown> {
  const object = baseJob() as Record<string, unknown> & { spec: Record<string, unknown> };
  object.metadata = { name, namespace: "crm", generation: 1, creationTimestamp: created };
  Object.assign(object.spec, spec);
  return object;
}

describe("schedules in a long-running controller", () => {
  it("fire every time they are due, for every job sharing the schedule", () => {
    const created = "2026-11-22T11:59:20Z";
    const jobs = [
      scheduledJob("a", { schedule: "* * * * *", timeZone: "UTC" }, created),
      scheduledJob("b", { schedule: "* * * * *", timeZone: "UTC" }, created),
    ];
    // Unrelated events wake the jobs between fires too (a run's status, a policy change).
    const noise = [12_000, 75_500, 130_250].map((ms) => new Date(Date.parse(created) + ms));
    const runs = runController(jobs, new Date(created), new Date("2026-11-22T12:04:30Z"), noise);
    for (const name of ["a", "b"]) {
      const fires = runs.get(name)!;
      // 12:00, 12:01, 12:02, 12:03 and 12:04: one run per minute, none twice.
      expect(fires).toHaveLength(5);
      expect(new Set(fires).size).toBe(5);
    }
  });

  it("the nightly example fires on its second and third nights too", () => {
    const [example] = loadYaml("test/examples/batch-customers.yaml") as Record<string, unknown>[];
    const object = {
      ...example,
      metadata: {
        ...(example!.metadata as object),
        namespace: "crm",
        generation: 1,
        creationTimestamp: "2026-11-20T09:00:00Z",
      },
    };
    const runs = runController([object], new Date("2026-11-20T09:00:00Z"), new Date("2026-11-23T09:00:00Z"), [
      new Date("2026-11-21T13:00:00Z"),
      new Date("2026-11-22T00:30:00Z"),
    ]);
    // 02:00 in Europe/Berlin is 01:00 UTC in November: one run a night, named after the fire time.
    const fires = runs.get("customers-nightly")!;
    const at = (iso: string) => Math.floor(Date.parse(iso) / 1000).toString(36);
    expect(fires).toEqual([
      `customers-nightly-s${at("2026-11-21T01:00:00Z")}`,
      `customers-nightly-s${at("2026-11-22T01:00:00Z")}`,
      `customers-nightly-s${at("2026-11-23T01:00:00Z")}`,
    ]);
  });
});
