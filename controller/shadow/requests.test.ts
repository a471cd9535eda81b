import { describe, expect, it } from "vitest";
import { retiredTableName } from "./names.ts";
import { planApproval, planRollback, requestPatch, shadowJobView } from "./requests.ts";
import { APPROVE_SWAP_ANNOTATION, REQUESTED_BY_ANNOTATION, ROLLBACK_ANNOTATION } from "./state.ts";

const swappedAt = new Date("2024-03-01T00:00:00Z");
const retired = retiredTableName("analytics.orders", swappedAt);

function job(shadow: Record<string, unknown> | undefined, ttl?: number) {
  return shadowJobView({
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { namespace: "payments", name: "orders", resourceVersion: "42" },
    spec: {
      target: { sql: { table: "analytics.orders" } },
      ...(ttl === undefined ? {} : { shadow: { retiredTableTtlSeconds: ttl } }),
    },
    ...(shadow ? { status: { shadow } } : {}),
  } as never);
}

describe("shadowJobView", () => {
  it("reads target, TTL (default 7 days) and shadow status; ignores an unknown state", () => {
    expect(job({ state: "AwaitingApproval", table: "analytics.orders__shadow" })).toMatchObject({
      namespace: "payments",
      name: "orders",
      resourceVersion: "42",
      target: "analytics.orders",
      retiredTableTtlSeconds: 604_800,
      shadow: { state: "AwaitingApproval", table: "analytics.orders__shadow" },
    });
    expect(job({ state: "Exploded" }).shadow).toBeUndefined();
    expect(job(undefined, 60).retiredTableTtlSeconds).toBe(60);
  });

  it("refuses an object without a valid target table", () => {
    expect(() =>
      shadowJobView({
        metadata: { namespace: "a", name: "b" },
        spec: { target: { sql: { table: "x;y" } } },
      } as never),
    ).toThrow("SyncJob a/b has no valid spec.target.sql.table");
  });
});

describe("planApproval", () => {
  it("describes the swap in AwaitingApproval, including the previous retired table it drops", () => {
    const plan = planApproval(
      job({ state: "AwaitingApproval", table: "analytics.orders__shadow", retiredTable: retired }, 86_400),
    );
    expect(plan.allowed).toBe(true);
    if (!plan.allowed) return;
    expect(plan.annotation).toBe(APPROVE_SWAP_ANNOTATION);
    expect(plan.plan[0]).toContain("analytics.orders__shadow to analytics.orders");
    expect(plan.plan[1]).toContain("for 1 day (");
    expect(plan.plan.at(-1)).toBe(`${retired}, retired by the previous swap, is dropped.`);
  });

  it("refuses outside AwaitingApproval, saying why", () => {
    expect(planApproval(job({ state: "Filling", table: "analytics.orders__shadow" }))).toEqual({
      allowed: false,
      refusal:
        "shadow table analytics.orders__shadow is still being filled; approve once the job is AwaitingApproval",
    });
    expect(planApproval(job(undefined))).toMatchObject({ allowed: false });
  });
});

describe("planRollback", () => {
  it("describes the rollback while the retired table is kept, and refuses after its TTL", () => {
    const view = job({ state: "Swapped", retiredTable: retired }, 3600);
    const within = planRollback(view, new Date("2024-03-01T00:59:59Z"));
    expect(within).toMatchObject({ allowed: true, annotation: ROLLBACK_ANNOTATION });
    const after = planRollback(view, new Date("2024-03-01T01:00:00Z"));
    expect(after).toEqual({
      allowed: false,
      refusal: `retired table ${retired} expired at 2024-03-01T01:00:00Z (retiredTableTtlSeconds=3600) and is dropped; there is nothing to roll back to`,
    });
  });

  it("refuses without a retired table", () => {
    expect(planRollback(job({ state: "None" }), swappedAt)).toMatchObject({
      allowed: false,
      refusal: "there is no retired table to roll back to (shadow state None)",
    });
  });
});

describe("requestPatch", () => {
  it("sets the request and its requester only, guarded by the resourceVersion the plan was made from", () => {
    expect(requestPatch(job(undefined), APPROVE_SWAP_ANNOTATION, "tok", "ann")).toEqual({
      metadata: {
        resourceVersion: "42",
        annotations: { [APPROVE_SWAP_ANNOTATION]: "tok", [REQUESTED_BY_ANNOTATION]: "ann" },
      },
    });
  });
});
