import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Decision, decideAdmissions, type PendingRun, type RunningRun } from "./admission.ts";

let seq = 0;
function pending(over: Partial<PendingRun> = {}): PendingRun {
  seq += 1;
  const namespace = over.namespace ?? "payments";
  const name = over.name ?? `run-${seq}`;
  return {
    key: `SyncRun/${namespace}/${name}`,
    namespace,
    name,
    jobName: over.jobName ?? `job-${seq}`,
    target: "warehouse-db/analytics.orders",
    priority: 0,
    createdAt: seq,
    concurrencyPolicy: "Allow",
    limits: {},
    ...over,
  };
}

const kinds = (ds: Decision[]) => ds.map((d) => `${d.run.name}:${d.kind}`);

describe("decideAdmissions", () => {
  it("admits one realtime session per job: a second one, running or pending, is skipped", () => {
    const running: RunningRun[] = [
      {
        key: "SyncRun/payments/orders-rt",
        namespace: "payments",
        jobName: "orders",
        target: "t",
        realtime: true,
      },
    ];
    const extra = pending({ name: "extra", jobName: "orders", realtime: true });
    const ds = decideAdmissions({ pending: [extra], running });
    expect(ds).toEqual([
      {
        kind: "Skip",
        run: extra,
        message:
          "job orders already has a realtime session (SyncRun/payments/orders-rt); a job streams through one session at a time",
      },
    ]);
    // Two pending at once: the first in queue order runs, the second is skipped.
    const a = pending({ name: "a", jobName: "ledger", realtime: true });
    const b = pending({ name: "b", jobName: "ledger", realtime: true });
    expect(kinds(decideAdmissions({ pending: [b, a], running: [] }))).toEqual(["a:Admit", "b:Skip"]);
    // A validation beside the session is not a session.
    const check = pending({ name: "check", jobName: "orders" });
    expect(kinds(decideAdmissions({ pending: [check], running }))).toEqual(["check:Admit"]);
  });

  it("lets a job's own session neither block nor be replaced by its other runs", () => {
    const limits = { maxRunsPerNamespace: 1 };
    const running: RunningRun[] = [
      {
        key: "SyncRun/payments/orders-rt",
        namespace: "payments",
        jobName: "orders",
        target: "t",
        realtime: true,
      },
    ];
    for (const concurrencyPolicy of ["Allow", "Forbid", "Replace"] as const) {
      const compare = pending({
        name: `compare-${concurrencyPolicy}`,
        jobName: "orders",
        target: "t",
        limits,
        concurrencyPolicy,
      });
      expect(decideAdmissions({ pending: [compare], running })).toEqual([{ kind: "Admit", run: compare }]);
    }
  });

  it("counts realtime sessions against the limits", () => {
    const limits = { maxRunsPerNamespace: 1 };
    const running: RunningRun[] = [
      {
        key: "SyncRun/payments/orders-rt",
        namespace: "payments",
        jobName: "orders",
        target: "t",
        realtime: true,
      },
    ];
    const session = pending({ name: "ledger-rt", jobName: "ledger", realtime: true, limits });
    const ds = decideAdmissions({ pending: [session], running });
    expect(ds[0]).toMatchObject({
      kind: "Queue",
      reason: "NamespaceLimit",
      message: "1/1 running in namespace payments",
    });
  });

  it("admits up to the namespace limit and queues the rest with a reason", () => {
    const limits = { maxRunsPerNamespace: 2 };
    const runs = [1, 2, 3].map((i) => pending({ name: `r${i}`, target: `t${i}`, limits }));
    const ds = decideAdmissions({ pending: runs, running: [] });
    expect(kinds(ds)).toEqual(["r1:Admit", "r2:Admit", "r3:Queue"]);
    expect(ds[2]).toMatchObject({ reason: "NamespaceLimit", message: "2/2 running in namespace payments" });
  });

  it("counts runs already running", () => {
    const running: RunningRun[] = [{ key: "k", namespace: "payments", jobName: "other", target: "t" }];
    const ds = decideAdmissions({
      pending: [pending({ target: "t", limits: { maxRunsPerTarget: 1 } })],
      running,
    });
    expect(ds[0]).toMatchObject({ kind: "Queue", reason: "TargetLimit", message: "1/1 running on target t" });
    // a different target is not held back
    const other = pending({ target: "elsewhere", limits: { maxRunsPerTarget: 1 } });
    expect(decideAdmissions({ pending: [other], running })[0]?.kind).toBe("Admit");
  });

  it("orders by priority, then age", () => {
    const limits = { maxRunsGlobal: 1 };
    const old = pending({ name: "old", createdAt: 1, limits });
    const urgent = pending({ name: "urgent", createdAt: 5, priority: 10, limits });
    const ds = decideAdmissions({ pending: [old, urgent], running: [] });
    expect(kinds(ds)).toEqual(["urgent:Admit", "old:Queue"]);
    expect(ds[1]).toMatchObject({ reason: "GlobalLimit", message: "1/1 running in the cluster" });
  });

  it("Forbid skips a run while its job has one; Allow runs both; Replace cancels the running one", () => {
    const running: RunningRun[] = [
      { key: "SyncRun/payments/first", namespace: "payments", jobName: "orders", target: "t" },
    ];
    const forbid = decideAdmissions({
      pending: [pending({ jobName: "orders", concurrencyPolicy: "Forbid" })],
      running,
    });
    expect(forbid[0]?.kind).toBe("Skip");
    const allow = decideAdmissions({
      pending: [pending({ jobName: "orders", concurrencyPolicy: "Allow" })],
      running,
    });
    expect(allow[0]?.kind).toBe("Admit");
    const replace = decideAdmissions({
      pending: [
        pending({
          jobName: "orders",
          concurrencyPolicy: "Replace",
          target: "t",
          limits: { maxRunsPerTarget: 1 },
        }),
      ],
      running,
    });
    expect(replace[0]).toMatchObject({ kind: "Replace", cancel: ["SyncRun/payments/first"] });
  });

  it("Forbid also applies between two pending runs of one job", () => {
    const ds = decideAdmissions({
      pending: [
        pending({ jobName: "j", concurrencyPolicy: "Forbid" }),
        pending({ jobName: "j", concurrencyPolicy: "Forbid" }),
      ],
      running: [],
    });
    expect(ds.map((d) => d.kind)).toEqual(["Admit", "Skip"]);
  });

  it("keeps runs outside their batch window queued", () => {
    const ds = decideAdmissions({
      pending: [pending({ outsideWindow: "batch window 22:00-06:00 UTC is closed" })],
      running: [],
    });
    expect(ds[0]).toMatchObject({ kind: "Queue", reason: "OutsideBatchWindow" });
  });

  it("never exceeds any limit (property)", () => {
    const arbRun = fc.record({
      namespace: fc.constantFrom("a", "b", "c"),
      target: fc.constantFrom("t1", "t2"),
      priority: fc.integer({ min: 0, max: 3 }),
      concurrencyPolicy: fc.constantFrom("Allow" as const, "Forbid" as const, "Replace" as const),
      jobName: fc.constantFrom("j1", "j2", "j3", "j4"),
    });
    fc.assert(
      fc.property(
        fc.array(arbRun, { maxLength: 30 }),
        fc.array(arbRun, { maxLength: 6 }),
        fc.record({
          ns: fc.integer({ min: 0, max: 4 }),
          tgt: fc.integer({ min: 0, max: 4 }),
          glob: fc.integer({ min: 0, max: 8 }),
        }),
        (ps, rs, l) => {
          const limits = { maxRunsPerNamespace: l.ns, maxRunsPerTarget: l.tgt, maxRunsGlobal: l.glob };
          const running = rs.map((r, i) => ({
            key: `run/${i}`,
            namespace: r.namespace,
            jobName: r.jobName,
            target: r.target,
          }));
          const ds = decideAdmissions({ pending: ps.map((p) => pending({ ...p, limits })), running });
          const cancelled = new Set(ds.flatMap((d) => (d.kind === "Replace" ? d.cancel : [])));
          const after = [
            ...running.filter((r) => !cancelled.has(r.key)),
            ...ds
              .filter((d) => (d.kind === "Admit" || d.kind === "Replace") && !cancelled.has(d.run.key))
              .map((d) => d.run),
          ];
          const count = (f: (r: { namespace: string; target: string }) => boolean) => after.filter(f).length;
          const startedNow = ds.some((d) => d.kind === "Admit" || d.kind === "Replace");
          if (!startedNow) return;
          // Each newly admitted run saw room under every limit; so the final counts are within limits
          // unless they were already over before (running runs are never evicted by limits).
          const runningBefore = (f: (r: { namespace: string; target: string }) => boolean) =>
            running.filter(f).length;
          expect(after.length).toBeLessThanOrEqual(
            Math.max(
              l.glob,
              runningBefore(() => true),
            ),
          );
          for (const ns of ["a", "b", "c"]) {
            expect(count((r) => r.namespace === ns)).toBeLessThanOrEqual(
              Math.max(
                l.ns,
                runningBefore((r) => r.namespace === ns),
              ),
            );
          }
          for (const t of ["t1", "t2"]) {
            expect(count((r) => r.target === t)).toBeLessThanOrEqual(
              Math.max(
                l.tgt,
                runningBefore((r) => r.target === t),
              ),
            );
          }
        },
      ),
    );
  });
});
