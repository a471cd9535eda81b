import { describe, expect, it } from "vitest";
import { retiredTableName } from "./names.ts";
import {
  APPROVE_SWAP_ANNOTATION,
  AWAITING_APPROVAL_CONDITION,
  approvalRefusal,
  decideShadow,
  REQUESTED_BY_ANNOTATION,
  ROLLBACK_ANNOTATION,
  rollbackRefusal,
  SHADOW_MODE_CONDITION,
  type ShadowDecision,
  type ShadowInput,
  type ShadowStatus,
  shadowActionFailed,
  shadowStatusPatch,
  type ValidationOutcome,
} from "./state.ts";

const TARGET = "analytics.orders";
const SHADOW = "analytics.orders__shadow";
const T0 = Date.parse("2024-03-01T00:00:00Z");
const DAY = 86_400_000;
const at = (ms: number) => new Date(T0 + ms);
const iso = (ms: number) => `${at(ms).toISOString().slice(0, 19)}Z`;

/**
 * A decision's input. Requests come from "ann" through an installed guard (the API server's
 * admission policy) unless a test says otherwise.
 */
function input(overrides: Partial<ShadowInput> = {}): ShadowInput {
  const annotations = overrides.annotations ?? {};
  const requested = APPROVE_SWAP_ANNOTATION in annotations || ROLLBACK_ANNOTATION in annotations;
  return {
    job: { namespace: "payments", name: "orders", generation: 4 },
    target: TARGET,
    settings: { enabled: true, failedValidationsBeforeShadow: 3, retiredTableTtlSeconds: 86_400 },
    status: undefined,
    validations: [],
    now: at(0),
    requestGuard: { installed: true },
    ...overrides,
    annotations:
      requested && !(REQUESTED_BY_ANNOTATION in annotations)
        ? { ...annotations, [REQUESTED_BY_ANNOTATION]: "ann" }
        : annotations,
  };
}

function validation(n: number, result: "Passed" | "Failed", ms = n * 60_000): ValidationOutcome {
  return { run: `orders-v${n}`, result, finishedAt: iso(ms) };
}

const condition = (d: ShadowDecision, type: string) => d.conditions.find((c) => c.type === type)!;

/** A job in Filling after three failed validations at minutes 1..3. */
function filling(): { status: ShadowStatus; validations: ValidationOutcome[]; run: string } {
  const validations = [1, 2, 3].map((n) => validation(n, "Failed"));
  const d = decideShadow(input({ validations, now: at(4 * 60_000) }));
  expect(d.status.state).toBe("Filling");
  return { status: d.status, validations, run: d.status.fillRun! };
}

function awaiting(): { status: ShadowStatus; validations: ValidationOutcome[] } {
  const f = filling();
  const d = decideShadow(
    input({
      status: f.status,
      validations: f.validations,
      fillRun: {
        name: f.run,
        phase: "Succeeded",
        completionTime: iso(10 * 60_000),
        message: "copied 5 rows.",
      },
      now: at(10 * 60_000),
    }),
  );
  expect(d.status.state).toBe("AwaitingApproval");
  return { status: d.status, validations: f.validations };
}

/** Approved at `approvedAt` and swapped a minute later. */
function swapped(approvedAt = 20 * 60_000): { status: ShadowStatus; retired: string } {
  const a = awaiting();
  const approve = decideShadow(
    input({ status: a.status, annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" }, now: at(approvedAt) }),
  );
  const swap = decideShadow(
    input({
      status: approve.status,
      annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" },
      now: at(approvedAt + 60_000),
    }),
  );
  expect(swap.status.state).toBe("Swapped");
  return { status: swap.status, retired: swap.status.retiredTable! };
}

describe("decideShadow: counting validations in None", () => {
  it("starts a new job in None writing to the target, with both conditions False", () => {
    const d = decideShadow(input());
    expect(d.status).toEqual({ state: "None", consecutiveFailedValidations: 0 });
    expect(d.changed).toBe(true);
    expect(d.actions).toEqual([]);
    expect(d.events).toEqual([]);
    expect(d.writeTable).toBe(TARGET);
    expect(condition(d, SHADOW_MODE_CONDITION)).toMatchObject({
      status: "False",
      reason: "TargetActive",
      observedGeneration: 4,
    });
    expect(condition(d, AWAITING_APPROVAL_CONDITION)).toMatchObject({
      status: "False",
      reason: "NoShadowTable",
    });
  });

  it("counts consecutive failures, resets on a pass, and never counts a validation twice", () => {
    const validations = [validation(1, "Failed"), validation(2, "Failed")];
    const first = decideShadow(input({ validations }));
    expect(first.status.consecutiveFailedValidations).toBe(2);
    expect(first.status.countedThrough).toEqual({ run: "orders-v2", finishedAt: iso(120_000) });

    const again = decideShadow(input({ status: first.status, validations }));
    expect(again.status.consecutiveFailedValidations).toBe(2);
    expect(again.changed).toBe(false);

    const passed = decideShadow(
      input({ status: first.status, validations: [...validations, validation(3, "Passed")] }),
    );
    expect(passed.status.consecutiveFailedValidations).toBe(0);
    expect(passed.status.state).toBe("None");
  });

  it("orders validations by completion time, then run name, whatever the input order", () => {
    const sameSecond = [
      { run: "orders-b", result: "Failed" as const, finishedAt: iso(0) },
      { run: "orders-a", result: "Passed" as const, finishedAt: iso(0) },
    ];
    const d = decideShadow(input({ validations: sameSecond }));
    // a (Passed) then b (Failed): one failure.
    expect(d.status.consecutiveFailedValidations).toBe(1);
    expect(d.status.countedThrough?.run).toBe("orders-b");
  });

  it("switches to Filling at the N-th consecutive failure: shadow created, writes redirected, fill started", () => {
    const validations = [1, 2, 3].map((n) => validation(n, "Failed"));
    const d = decideShadow(input({ validations }));
    expect(d.status.state).toBe("Filling");
    expect(d.status.table).toBe(SHADOW);
    expect(d.status.fillAttempt).toBe(1);
    expect(d.actions.map((a) => a.kind)).toEqual(["CreateShadow", "RedirectWrites", "StartShadowFill"]);
    expect(d.actions[0]).toEqual({ kind: "CreateShadow", target: TARGET, shadow: SHADOW });
    expect(d.actions[1]).toEqual({ kind: "RedirectWrites", from: TARGET, to: SHADOW });
    expect(d.actions[2]).toEqual({ kind: "StartShadowFill", run: d.status.fillRun, shadow: SHADOW });
    expect(d.writeTable).toBe(SHADOW);
    expect(d.events).toHaveLength(1);
    expect(d.events[0]).toMatchObject({ type: "Warning", reason: "ShadowModeStarted" });
    expect(d.events[0]!.note).toContain("3 consecutive validations failed (latest: run orders-v3)");
    expect(condition(d, SHADOW_MODE_CONDITION)).toMatchObject({ status: "True", reason: "ShadowFilling" });
    // The same input again names the same run: a repeated reconcile creates no second one.
    expect(decideShadow(input({ validations })).status.fillRun).toBe(d.status.fillRun);
  });

  it("takes N from the effective policy", () => {
    const one = { enabled: true, failedValidationsBeforeShadow: 1, retiredTableTtlSeconds: 60 };
    expect(decideShadow(input({ settings: one, validations: [validation(1, "Failed")] })).status.state).toBe(
      "Filling",
    );
    const five = { ...one, failedValidationsBeforeShadow: 5 };
    const four = [1, 2, 3, 4].map((n) => validation(n, "Failed"));
    expect(decideShadow(input({ settings: five, validations: four })).status.state).toBe("None");
  });

  it("stays in None when the fallback is disabled, and says so", () => {
    const settings = { enabled: false, failedValidationsBeforeShadow: 3, retiredTableTtlSeconds: 60 };
    const d = decideShadow(
      input({ settings, validations: [1, 2, 3, 4].map((n) => validation(n, "Failed")) }),
    );
    expect(d.status).toMatchObject({ state: "None", consecutiveFailedValidations: 4 });
    expect(d.actions).toEqual([]);
    expect(condition(d, SHADOW_MODE_CONDITION).reason).toBe("ShadowDisabled");
  });
});

describe("decideShadow: Filling", () => {
  it("creates the fill run again (same name) when it is not observed, without an event", () => {
    const f = filling();
    const d = decideShadow(input({ status: f.status, validations: f.validations, now: at(5 * 60_000) }));
    expect(d.status.state).toBe("Filling");
    expect(d.actions).toEqual([{ kind: "StartShadowFill", run: f.run, shadow: SHADOW }]);
    expect(d.events).toEqual([]);
    expect(d.changed).toBe(false);
  });

  it("waits while the fill runs, and does not count validations of the half-filled shadow", () => {
    const f = filling();
    const validations = [...f.validations, validation(5, "Failed"), validation(6, "Failed")];
    const d = decideShadow(
      input({
        status: f.status,
        validations,
        fillRun: { name: f.run, phase: "Running" },
        now: at(7 * 60_000),
      }),
    );
    expect(d.status.state).toBe("Filling");
    expect(d.actions).toEqual([]);
    expect(d.events).toEqual([]);
    expect(d.status.consecutiveFailedValidations).toBe(3);
    expect(d.status.countedThrough?.run).toBe("orders-v6");
    expect(d.writeTable).toBe(SHADOW);
  });

  it("moves to AwaitingApproval when the fill run succeeds, with one event and the approval condition", () => {
    const f = filling();
    const d = decideShadow(
      input({
        status: f.status,
        validations: f.validations,
        fillRun: { name: f.run, phase: "Succeeded", message: "copied 5 rows; validation passed." },
        now: at(10 * 60_000),
      }),
    );
    expect(d.status.state).toBe("AwaitingApproval");
    expect(d.actions).toEqual([]);
    expect(d.events).toHaveLength(1);
    expect(d.events[0]).toMatchObject({ type: "Normal", reason: "ShadowFilled" });
    expect(d.events[0]!.note).toContain("syncgov approve payments/orders");
    expect(d.writeTable).toBe(SHADOW);
    expect(condition(d, AWAITING_APPROVAL_CONDITION)).toMatchObject({
      status: "True",
      reason: "SwapApprovalRequired",
    });
    expect(condition(d, AWAITING_APPROVAL_CONDITION).message).toContain(APPROVE_SWAP_ANNOTATION);
  });

  it("retries a failed fill after a backoff, under a new run name, with one event", () => {
    const f = filling();
    const failed = {
      name: f.run,
      phase: "Failed",
      completionTime: iso(6 * 60_000),
      message: "connection refused",
    };
    const early = decideShadow(input({ status: f.status, fillRun: failed, now: at(6 * 60_000 + 10_000) }));
    expect(early.status.state).toBe("Filling");
    expect(early.actions).toEqual([]);
    expect(early.events).toEqual([]);
    expect(early.requeueAfterMs).toBe(20_000); // 30 s after the failure
    expect(condition(early, SHADOW_MODE_CONDITION)).toMatchObject({
      status: "True",
      reason: "ShadowFillFailed",
    });
    expect(condition(early, SHADOW_MODE_CONDITION).message).toContain("connection refused");

    const due = decideShadow(input({ status: f.status, fillRun: failed, now: at(6 * 60_000 + 30_000) }));
    expect(due.status.fillAttempt).toBe(2);
    expect(due.status.fillRun).not.toBe(f.run);
    expect(due.actions).toEqual([{ kind: "StartShadowFill", run: due.status.fillRun, shadow: SHADOW }]);
    expect(due.events).toHaveLength(1);
    expect(due.events[0]).toMatchObject({ type: "Warning", reason: "ShadowFillRetried" });

    // The second attempt waits twice as long after failing.
    const failedAgain = {
      name: due.status.fillRun!,
      phase: "Failed",
      completionTime: iso(8 * 60_000),
    };
    const wait = decideShadow(input({ status: due.status, fillRun: failedAgain, now: at(8 * 60_000) }));
    expect(wait.requeueAfterMs).toBe(60_000);
  });

  it("ignores an approval that arrives before the fill completes, and does not act on it later", () => {
    const f = filling();
    const early = decideShadow(
      input({ status: f.status, annotations: { [APPROVE_SWAP_ANNOTATION]: "early" }, now: at(5 * 60_000) }),
    );
    expect(early.status.state).toBe("Filling");
    expect(early.status.handledApproval).toBe("early");
    expect(early.events).toEqual([expect.objectContaining({ type: "Warning", reason: "ApprovalIgnored" })]);
    expect(early.events[0]!.note).toContain("still being filled");

    const filled = decideShadow(
      input({
        status: early.status,
        annotations: { [APPROVE_SWAP_ANNOTATION]: "early" },
        fillRun: { name: f.run, phase: "Succeeded" },
        now: at(10 * 60_000),
      }),
    );
    expect(filled.status.state).toBe("AwaitingApproval");
    const still = decideShadow(
      input({
        status: filled.status,
        annotations: { [APPROVE_SWAP_ANNOTATION]: "early" },
        now: at(11 * 60_000),
      }),
    );
    expect(still.status.state).toBe("AwaitingApproval");
    expect(still.events).toEqual([]);
    expect(still.changed).toBe(false);

    const approved = decideShadow(
      input({
        status: filled.status,
        annotations: { [APPROVE_SWAP_ANNOTATION]: "later" },
        now: at(12 * 60_000),
      }),
    );
    expect(approved.status.state).toBe("Swapping");
  });

  it("abandons the cycle when the fallback is disabled: writes back to the target, shadow dropped", () => {
    const a = awaiting();
    const settings = { enabled: false, failedValidationsBeforeShadow: 3, retiredTableTtlSeconds: 60 };
    const d = decideShadow(input({ status: a.status, settings, now: at(15 * 60_000) }));
    expect(d.status.state).toBe("None");
    expect(d.status.table).toBeUndefined();
    expect(d.actions).toEqual([
      { kind: "RedirectWrites", from: SHADOW, to: TARGET },
      { kind: "DropShadow", table: SHADOW },
    ]);
    expect(d.events).toHaveLength(1);
    expect(d.events[0]).toMatchObject({ reason: "ShadowAbandoned" });
    expect(d.writeTable).toBe(TARGET);
  });

  it("abandons the cycle when the target table changes, and starts counting afresh", () => {
    const f = filling();
    const d = decideShadow(input({ status: f.status, target: "analytics.orders_v2", now: at(5 * 60_000) }));
    expect(d.status).toMatchObject({ state: "None", consecutiveFailedValidations: 0 });
    expect(d.actions).toContainEqual({ kind: "DropShadow", table: SHADOW });
    expect(d.events[0]!.note).toContain("target changed to analytics.orders_v2");
  });
});

describe("decideShadow: approval and swap", () => {
  it("moves to Swapping on a new approval token, fixing the retired name; writes still go to the shadow", () => {
    const a = awaiting();
    const d = decideShadow(
      input({ status: a.status, annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" }, now: at(20 * 60_000) }),
    );
    expect(d.status.state).toBe("Swapping");
    expect(d.status.handledApproval).toBe("t1");
    expect(d.status.retiredTable).toBe(retiredTableName(TARGET, at(20 * 60_000)));
    expect(d.actions).toEqual([]);
    expect(d.events).toHaveLength(1);
    expect(d.events[0]).toMatchObject({ type: "Normal", reason: "SwapApproved" });
    expect(d.events[0]!.note).toMatch(/^Swap approved by ann: /);
    expect(d.status.approvedBy).toBe("ann");
    expect(d.writeTable).toBe(SHADOW);
    expect(condition(d, AWAITING_APPROVAL_CONDITION)).toMatchObject({
      status: "False",
      reason: "SwapApproved",
    });
  });

  it("records an approval token too long for the status by its digest, and acts on it once", () => {
    const a = awaiting();
    const token = "t".repeat(3000);
    const d = decideShadow(
      input({ status: a.status, annotations: { [APPROVE_SWAP_ANNOTATION]: token }, now: at(20 * 60_000) }),
    );
    expect(d.status.state).toBe("Swapping");
    expect(d.status.handledApproval).toMatch(/^sha256:[0-9a-f]{64}$/);
    const again = decideShadow(
      input({ status: d.status, annotations: { [APPROVE_SWAP_ANNOTATION]: token }, now: at(21 * 60_000) }),
    );
    expect(again.events.map((e) => e.reason)).not.toContain("ApprovalIgnored");
  });

  it.each([
    {
      name: "the API server's guard is not installed",
      guard: {
        installed: false as const,
        reason: "ValidatingAdmissionPolicy syncgov-shadow-requests is not installed",
      },
      annotations: { [APPROVE_SWAP_ANNOTATION]: "t1", [REQUESTED_BY_ANNOTATION]: "ann" },
      why: "ValidatingAdmissionPolicy syncgov-shadow-requests is not installed",
    },
    {
      name: "the controller never learnt whether the guard is installed",
      guard: undefined,
      annotations: { [APPROVE_SWAP_ANNOTATION]: "t1", [REQUESTED_BY_ANNOTATION]: "ann" },
      why: "the controller has not verified that the API server guards shadow requests",
    },
    {
      name: "no requester is named",
      guard: { installed: true as const },
      annotations: { [APPROVE_SWAP_ANNOTATION]: "t1", [REQUESTED_BY_ANNOTATION]: "" },
      why: "syncgov.io/requested-by does not name who made it",
    },
  ])("refuses an approval, once and for good, when $name", ({ guard, annotations, why }) => {
    const a = awaiting();
    const d = decideShadow({
      ...input({ status: a.status, annotations, now: at(20 * 60_000) }),
      requestGuard: guard,
    });
    expect(d.status.state).toBe("AwaitingApproval");
    expect(d.status.handledApproval).toBe("t1");
    expect(d.status.approvedBy).toBeUndefined();
    expect(d.actions).toEqual([]);
    expect(d.events).toEqual([
      expect.objectContaining({
        type: "Warning",
        reason: "ApprovalRefused",
        note: expect.stringContaining(why),
      }),
    ]);
    // The same token is never acted on later, even once the guard is there.
    const later = decideShadow(input({ status: d.status, annotations, now: at(21 * 60_000) }));
    expect(later.status.state).toBe("AwaitingApproval");
    expect(later.events).toEqual([]);
  });

  it("swaps in Swapping and lands in Swapped: writes back to the target name, counting restarts", () => {
    const a = awaiting();
    const approve = decideShadow(
      input({ status: a.status, annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" }, now: at(20 * 60_000) }),
    );
    const retired = approve.status.retiredTable!;
    const d = decideShadow(
      input({
        status: approve.status,
        annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" },
        now: at(21 * 60_000),
      }),
    );
    expect(d.actions).toEqual([
      { kind: "Swap", target: TARGET, shadow: SHADOW, retired },
      { kind: "RedirectWrites", from: SHADOW, to: TARGET },
    ]);
    expect(d.status).toMatchObject({
      state: "Swapped",
      retiredTable: retired,
      consecutiveFailedValidations: 0,
    });
    expect(d.status.table).toBeUndefined();
    expect(d.status.fillRun).toBeUndefined();
    expect(d.events).toHaveLength(1);
    expect(d.events[0]).toMatchObject({ reason: "ShadowSwapped" });
    expect(d.writeTable).toBe(TARGET);
    // Retired at minute 20 with a one-day TTL; now is minute 21.
    expect(d.requeueAfterMs).toBe(DAY - 60_000);
    expect(condition(d, SHADOW_MODE_CONDITION)).toMatchObject({ status: "False", reason: "ShadowSwappedIn" });
  });

  it("ignores a second approval token after the swap, once", () => {
    const s = swapped();
    const second = decideShadow(
      input({ status: s.status, annotations: { [APPROVE_SWAP_ANNOTATION]: "t2" }, now: at(30 * 60_000) }),
    );
    expect(second.status.state).toBe("Swapped");
    expect(second.actions).toEqual([]);
    expect(second.events).toEqual([expect.objectContaining({ reason: "ApprovalIgnored" })]);
    expect(second.events[0]!.note).toContain("already swapped in");
    const repeated = decideShadow(
      input({
        status: second.status,
        annotations: { [APPROVE_SWAP_ANNOTATION]: "t2" },
        now: at(31 * 60_000),
      }),
    );
    expect(repeated.events).toEqual([]);
    expect(repeated.changed).toBe(false);
  });

  it("records the failure of a swap, keeps Swapping, and decides the same swap again", () => {
    const a = awaiting();
    const approve = decideShadow(
      input({ status: a.status, annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" }, now: at(20 * 60_000) }),
    );
    const attempt = input({
      status: approve.status,
      annotations: { [APPROVE_SWAP_ANNOTATION]: "t1" },
      now: at(21 * 60_000),
    });
    const d = decideShadow(attempt);
    const failed = shadowActionFailed(attempt, d, d.actions[0]!, "canceling statement due to lock timeout");
    expect(failed.status).toEqual(approve.status);
    expect(failed.changed).toBe(false);
    expect(failed.actions).toEqual([]);
    expect(failed.events).toEqual([expect.objectContaining({ type: "Warning", reason: "SwapFailed" })]);
    expect(condition(failed, SHADOW_MODE_CONDITION)).toMatchObject({ status: "True", reason: "SwapFailed" });
    expect(condition(failed, SHADOW_MODE_CONDITION).message).toContain("lock timeout");
    expect(failed.writeTable).toBe(SHADOW);
    expect(decideShadow({ ...attempt, now: at(22 * 60_000) }).actions[0]).toEqual(d.actions[0]);
  });
});

describe("decideShadow: the retired table, rollback and a new cycle", () => {
  it("rolls back on a new token while the retired table is kept", () => {
    const s = swapped();
    const d = decideShadow(
      input({ status: s.status, annotations: { [ROLLBACK_ANNOTATION]: "r1" }, now: at(40 * 60_000) }),
    );
    expect(d.actions).toEqual([{ kind: "Rollback", target: TARGET, retired: s.retired, displaced: SHADOW }]);
    expect(d.status).toMatchObject({ state: "None", handledRollback: "r1", consecutiveFailedValidations: 0 });
    expect(d.status.retiredTable).toBeUndefined();
    expect(d.events).toEqual([expect.objectContaining({ type: "Normal", reason: "RolledBack" })]);
    expect(d.writeTable).toBe(TARGET);
  });

  it("refuses a rollback after the TTL with a clear message, and drops the retired table", () => {
    const s = swapped(20 * 60_000);
    const d = decideShadow(
      input({
        status: s.status,
        annotations: { [ROLLBACK_ANNOTATION]: "r1" },
        now: at(20 * 60_000 + DAY + 1000),
      }),
    );
    expect(d.actions).toEqual([{ kind: "DropRetired", table: s.retired }]);
    expect(d.status.state).toBe("None");
    expect(d.status.handledRollback).toBe("r1");
    expect(d.events.map((e) => e.reason)).toEqual(["RollbackRefused", "RetiredTableDropped"]);
    expect(d.events[0]!.note).toBe(
      `Rollback of payments/orders refused: retired table ${s.retired} expired at 2024-03-02T00:20:00Z (retiredTableTtlSeconds=86400) and is dropped; there is nothing to roll back to.`,
    );
  });

  it("refuses a rollback when there is no retired table", () => {
    const d = decideShadow(input({ annotations: { [ROLLBACK_ANNOTATION]: "r1" } }));
    expect(d.actions).toEqual([]);
    expect(d.status.state).toBe("None");
    expect(d.events).toEqual([expect.objectContaining({ type: "Warning", reason: "RollbackRefused" })]);
    expect(d.events[0]!.note).toContain("no retired table to roll back to (shadow state None)");
  });

  it("drops the retired table when its TTL passes and returns to None", () => {
    const s = swapped(20 * 60_000);
    const before = decideShadow(input({ status: s.status, now: at(20 * 60_000 + DAY - 5000) }));
    expect(before.actions).toEqual([]);
    expect(before.requeueAfterMs).toBe(5000);
    const after = decideShadow(input({ status: s.status, now: at(20 * 60_000 + DAY) }));
    expect(after.actions).toEqual([{ kind: "DropRetired", table: s.retired }]);
    expect(after.status.state).toBe("None");
    expect(after.status.retiredTable).toBeUndefined();
    expect(after.events).toEqual([expect.objectContaining({ reason: "RetiredTableDropped" })]);
  });

  it("starts a new cycle from Swapped keeping the retired table, and drops it when the next swap is approved", () => {
    const s = swapped(20 * 60_000);
    const validations = [31, 32, 33].map((n) => validation(n, "Failed"));
    const cycle = decideShadow(input({ status: s.status, validations, now: at(34 * 60_000) }));
    expect(cycle.status).toMatchObject({ state: "Filling", retiredTable: s.retired, table: SHADOW });
    expect(cycle.actions.map((a) => a.kind)).toEqual(["CreateShadow", "RedirectWrites", "StartShadowFill"]);
    // No rollback to the older table while a new cycle runs.
    expect(rollbackRefusal(cycle.status, TARGET, 86_400, at(35 * 60_000))).toContain("new shadow cycle");

    const filled = decideShadow(
      input({
        status: cycle.status,
        validations,
        fillRun: { name: cycle.status.fillRun!, phase: "Succeeded" },
        now: at(40 * 60_000),
      }),
    );
    const approve = decideShadow(
      input({
        status: filled.status,
        validations,
        annotations: { [APPROVE_SWAP_ANNOTATION]: "t-second-cycle" },
        now: at(50 * 60_000),
      }),
    );
    expect(approve.status.state).toBe("Swapping");
    expect(approve.actions).toEqual([{ kind: "DropRetired", table: s.retired }]);
    expect(approve.status.retiredTable).toBe(retiredTableName(TARGET, at(50 * 60_000)));
    expect(approve.events[0]!.note).toContain(`${s.retired}, retired by the previous swap, is dropped`);
  });

  it("returns to Swapped, not None, when a cycle started from Swapped is abandoned", () => {
    const s = swapped(20 * 60_000);
    const validations = [31, 32, 33].map((n) => validation(n, "Failed"));
    const cycle = decideShadow(input({ status: s.status, validations, now: at(34 * 60_000) }));
    const settings = { enabled: false, failedValidationsBeforeShadow: 3, retiredTableTtlSeconds: 86_400 };
    const d = decideShadow(input({ status: cycle.status, validations, settings, now: at(35 * 60_000) }));
    expect(d.status).toMatchObject({ state: "Swapped", retiredTable: s.retired });
    expect(rollbackRefusal(d.status, TARGET, 86_400, at(36 * 60_000))).toBeUndefined();
  });
});

describe("one event per transition over a whole cycle", () => {
  it("records exactly one event at each state change and none in between", () => {
    const validations: ValidationOutcome[] = [];
    let status: ShadowStatus | undefined;
    let annotations: Record<string, string> = {};
    let fillRun: ShadowInput["fillRun"];
    const trace: string[] = [];
    const step = (minute: number) => {
      const d = decideShadow(input({ status, validations, annotations, fillRun, now: at(minute * 60_000) }));
      const before = status?.state ?? "None";
      if (d.status.state !== before) expect(d.events).toHaveLength(1);
      else expect(d.events).toHaveLength(0);
      if (d.status.state !== before) trace.push(`${before}->${d.status.state}:${d.events[0]!.reason}`);
      status = d.status;
      return d;
    };
    step(0);
    for (let n = 1; n <= 3; n++) {
      validations.push(validation(n, "Failed"));
      step(n);
      step(n); // a repeated reconcile changes nothing
    }
    fillRun = { name: status!.fillRun!, phase: "Running" };
    step(5);
    fillRun = { ...fillRun, phase: "Succeeded" };
    step(6);
    step(7);
    annotations = { [APPROVE_SWAP_ANNOTATION]: "go" };
    step(8);
    step(9);
    step(10);
    validations.push(validation(11, "Passed"));
    step(11);
    expect(trace).toEqual([
      "None->Filling:ShadowModeStarted",
      "Filling->AwaitingApproval:ShadowFilled",
      "AwaitingApproval->Swapping:SwapApproved",
      "Swapping->Swapped:ShadowSwapped",
    ]);
  });
});

describe("request refusals shared with the command line", () => {
  it("name the state when no approval is possible", () => {
    expect(approvalRefusal(undefined)).toContain("no shadow table awaits approval");
    expect(approvalRefusal({ state: "Filling", table: SHADOW, fillRun: "orders-sf1" })).toContain(
      "still being filled by run orders-sf1",
    );
    expect(approvalRefusal({ state: "Swapping" })).toContain("already approved");
    expect(approvalRefusal({ state: "AwaitingApproval", table: SHADOW })).toBeUndefined();
  });

  it("refuse a rollback to a table retired from another target", () => {
    const status: ShadowStatus = {
      state: "Swapped",
      retiredTable: retiredTableName("analytics.other", at(0)),
    };
    expect(rollbackRefusal(status, TARGET, 86_400, at(1000))).toContain(
      "not retired from the job's current target",
    );
  });
});

describe("shadowStatusPatch", () => {
  it("sends every field, absent ones as null, so that a merge patch deletes them", () => {
    const patch = shadowStatusPatch({ state: "Swapped", retiredTable: "a.b__retired_20240301000000" });
    expect(patch).toMatchObject({
      state: "Swapped",
      retiredTable: "a.b__retired_20240301000000",
      table: null,
    });
    expect(Object.values(patch).filter((v) => v === null)).toHaveLength(9);
  });
});
