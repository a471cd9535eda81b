import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { cacheOf, FakeKubeWrites } from "../../test/support/fake-kube.ts";
import { decidePolicyStatus, SyncPolicyController } from "./syncpolicy-controller.ts";

const NOW = new Date("2026-11-22T12:00:00Z");

const policy = (
  rules: { name: string; expression: string; message: string }[],
  status?: object,
): KubernetesObject =>
  ({
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncPolicy",
    metadata: { name: "gold", generation: 2, resourceVersion: "7" },
    spec: { enforcement: "Enforce", rules },
    ...(status ? { status } : {}),
  }) as KubernetesObject;

const job = (name: string, effectivePolicy?: object): KubernetesObject =>
  ({
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name, namespace: "crm" },
    ...(effectivePolicy ? { status: { effectivePolicy } } : {}),
  }) as KubernetesObject;

const good = {
  name: "qualified",
  expression: "object.spec.target.sql.table.contains('.')",
  message: "qualify",
};
const broken = { name: "broken", expression: "object.spec.(", message: "never" };

describe("decidePolicyStatus", () => {
  it.each([
    ["no jobs", [good], [], { ready: "True", matched: 0, violations: 0, event: undefined }],
    [
      "counts the jobs whose status names it, and those violating it",
      [good],
      [
        { policies: ["gold"], violations: [] },
        { policies: ["gold", "silver"], violations: ["gold/qualified: qualify"] },
        { policies: ["silver"], violations: ["silver/x: y"] },
        undefined,
      ],
      { ready: "True", matched: 2, violations: 1, event: undefined },
    ],
    [
      "a rule that does not compile: not Ready, with its position, one event",
      [broken],
      [],
      { ready: "False", matched: 0, violations: 0, event: "InvalidRule" },
    ],
  ] as const)("%s", (_, rules, jobs, want) => {
    const d = decidePolicyStatus(policy([...rules]), jobs, NOW);
    const conditions = d.status?.conditions as { type: string; status: string; message: string }[];
    expect(conditions[0]).toMatchObject({ type: "Ready", status: want.ready });
    expect(d.status).toMatchObject({
      observedGeneration: 2,
      matchedJobs: want.matched,
      violations: want.violations,
    });
    expect(d.event?.reason).toBe(want.event);
    if (want.ready === "False") {
      expect((d.status!.ruleErrors as { rule: string }[])[0]?.rule).toBe("broken");
      expect(conditions[0]!.message).toContain("rule broken");
    }
  });

  it("decides nothing when the stored status is already right", () => {
    const first = decidePolicyStatus(policy([broken]), [], NOW);
    const again = decidePolicyStatus(policy([broken], first.status), [], NOW);
    expect(again).toEqual({});
  });
});

describe("SyncPolicyController", () => {
  it("writes the status once and records the broken rule once", async () => {
    const objects = [policy([broken]), job("a", { policies: ["gold"], violations: [] })];
    const kube = new FakeKubeWrites(objects);
    const cache = cacheOf(objects);
    const controller = new SyncPolicyController({ cache, kube, now: () => NOW });
    await controller.reconcile({ kind: "SyncPolicy", name: "gold" });
    await controller.reconcile({ kind: "SyncPolicy", name: "gold" });
    expect(kube.statusWrites).toHaveLength(1);
    expect(kube.statusOf("SyncPolicy", undefined, "gold")).toMatchObject({ matchedJobs: 1, violations: 0 });
    expect(kube.events.map((e) => e.event.reason)).toEqual(["InvalidRule"]);
  });

  it("does nothing for a policy that is gone", async () => {
    const kube = new FakeKubeWrites([]);
    await new SyncPolicyController({ cache: cacheOf([]), kube }).reconcile({
      kind: "SyncPolicy",
      name: "gold",
    });
    expect(kube.statusWrites).toEqual([]);
  });
});
