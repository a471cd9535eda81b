import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { cacheOf, FakeKubeWrites } from "../../test/support/fake-kube.ts";
import { baseJob } from "../../test/support/manifests.ts";
import { RunLauncher } from "../launcher/run-launcher.ts";
import type { RunExecutor } from "../runner/executors.ts";
import { logger } from "../telemetry/logger.ts";
import { AdmissionScheduler } from "./scheduler.ts";

const NOW = new Date("2026-11-22T12:00:00Z");

function job(name: string, over: Record<string, unknown> = {}): KubernetesObject {
  const j = baseJob() as unknown as KubernetesObject & { spec: Record<string, unknown> };
  j.metadata = { name, namespace: "crm", resourceVersion: "1" };
  (j.spec.target as { sql: { table: string } }).sql.table = `analytics.${name}`;
  Object.assign(j.spec, { concurrencyPolicy: "Allow", ...over });
  return j;
}

function run(name: string, jobName: string, phase?: string, created = 0): KubernetesObject {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncRun",
    metadata: {
      name,
      namespace: "crm",
      resourceVersion: "5",
      creationTimestamp: new Date(Date.parse("2026-11-22T11:00:00Z") + created * 1000).toISOString() as never,
    },
    spec: { jobName, type: "Batch", trigger: "Manual" },
    ...(phase ? { status: { phase } } : {}),
  } as KubernetesObject;
}

const limit = (maxRunsGlobal: number): KubernetesObject =>
  ({
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncPolicy",
    metadata: { name: "limits", resourceVersion: "3" },
    spec: { enforcement: "Enforce", concurrency: { maxRunsGlobal } },
  }) as KubernetesObject;

const namespace: KubernetesObject = { apiVersion: "v1", kind: "Namespace", metadata: { name: "crm" } };

/** An executor that only records what it was asked to start. */
function recordingExecutor(): RunExecutor & { started: string[] } {
  const started: string[] = [];
  return {
    kind: "InProcess",
    started,
    start: async (ref) => {
      started.push(`${ref.namespace}/${ref.name}`);
      return { executor: { kind: "InProcess" }, done: new Promise(() => {}), cancel: async () => {} };
    },
  } as RunExecutor & { started: string[] };
}

async function pass(objects: KubernetesObject[], kube = new FakeKubeWrites(objects)) {
  const cache = cacheOf(objects);
  const executor = recordingExecutor();
  let requeued = 0;
  const scheduler = new AdmissionScheduler({
    cache,
    kube,
    launcher: new RunLauncher({ executor, kube, log: logger }),
    requeue: () => requeued++,
    now: () => NOW,
  });
  const result = await scheduler.reconcile(new AbortController().signal);
  await new Promise((resolve) => setImmediate(resolve));
  return { kube, cache, executor, result, requeued: () => requeued, scheduler };
}

describe("AdmissionScheduler", () => {
  it("admits up to the global limit, oldest first, queues the rest with the reason, and starts the admitted", async () => {
    const { kube, executor } = await pass([
      namespace,
      limit(2),
      job("a"),
      job("b"),
      job("c"),
      run("a-1", "a", undefined, 1),
      run("b-1", "b", undefined, 2),
      run("c-1", "c", undefined, 3),
    ]);
    const phase = (name: string) => kube.statusOf("SyncRun", "crm", name)?.phase;
    expect([phase("a-1"), phase("b-1"), phase("c-1")]).toEqual(["Running", "Running", "Queued"]);
    expect(String(kube.statusOf("SyncRun", "crm", "c-1")?.queueReason)).toContain("2/2");
    // Admissions are conditional on the version decided on; queueing is not.
    const conditional = kube.statusWrites.filter((w) => w.resourceVersion !== undefined).map((w) => w.name);
    expect(conditional.sort()).toEqual(["a-1", "b-1"]);
    expect(kube.events.map((e) => e.event.reason)).toEqual(["Queued"]);
    expect(executor.started.sort()).toEqual(["crm/a-1", "crm/b-1"]);
  });

  it("records the job's effective policy on the admitted run: required masking of Enforce policies, breaker bounds", async () => {
    const pii = (name: string, enforcement: string, breaker: object): KubernetesObject =>
      ({
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncPolicy",
        metadata: { name, resourceVersion: "3" },
        spec: {
          enforcement,
          masking: { requiredFor: [{ columnPattern: "e_?mail", transforms: ["hash"] }] },
          breaker,
        },
      }) as KubernetesObject;
    // The job masks email as required, so neither policy blocks it.
    const masked = job("a", { masking: [{ column: "email", transform: "hash" }] });
    const { kube } = await pass([
      namespace,
      pii("enforced", "Enforce", { slowCallDurationThresholdMs: 300 }),
      pii("audited", "Audit", { failureRateThreshold: 20 }),
      masked,
      run("a-1", "a"),
    ]);
    expect(kube.statusOf("SyncRun", "crm", "a-1")).toMatchObject({
      phase: "Running",
      policy: {
        policies: ["audited", "enforced"],
        requiredMasking: [{ policy: "enforced", columnPattern: "e_?mail", transforms: ["hash"] }],
        breaker: { slowCallDurationThresholdMs: 300, failureRateThreshold: 20 },
      },
    });
  });

  it.each([
    ["an invalid job", job("a", { schedule: "61 2 * * *" }), "JobNotAdmissible", "invalid"],
    ["a suspended job", job("a", { suspend: true }), "JobNotAdmissible", "suspended"],
  ])("refuses the runs of %s with a warning", async (_, j, reason, words) => {
    const { kube, executor } = await pass([namespace, j, run("a-1", "a")]);
    expect(kube.statusOf("SyncRun", "crm", "a-1")?.phase).toBe("Queued");
    expect(kube.events.map((e) => [e.event.type, e.event.reason])).toEqual([["Warning", reason]]);
    expect(String(kube.statusOf("SyncRun", "crm", "a-1")?.queueReason)).toContain(words);
    expect(executor.started).toEqual([]);
  });

  it("records the policy of a run a previous version admitted without it, so the runner will run it", async () => {
    const legacy = run("a-1", "a", "Running");
    const { kube, executor } = await pass([namespace, limit(5), job("a"), legacy]);
    expect(kube.statusOf("SyncRun", "crm", "a-1")).toMatchObject({
      phase: "Running",
      policy: { policies: ["limits"], requiredMasking: [] },
    });
    expect(executor.started).toEqual(["crm/a-1"]);
  });

  it("admits nothing while a SyncPolicy that requires masking is invalid (fails closed)", async () => {
    const broken = {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: "pii", resourceVersion: "3" },
      spec: {
        enforcement: "Enforce",
        masking: { requiredFor: [{ columnPattern: "email", transforms: ["rot13"] }] },
      },
    } as KubernetesObject;
    const { kube, executor } = await pass([namespace, broken, job("a"), run("a-1", "a")]);
    expect(kube.statusOf("SyncRun", "crm", "a-1")?.phase).toBe("Queued");
    expect(String(kube.statusOf("SyncRun", "crm", "a-1")?.queueReason)).toContain(
      "SyncPolicy pii is invalid and requires masking",
    );
    expect(executor.started).toEqual([]);
  });

  it("refuses a run whose job does not exist", async () => {
    const { kube } = await pass([namespace, run("ghost-1", "ghost")]);
    expect(kube.events.map((e) => e.event.reason)).toEqual(["JobNotFound"]);
  });

  it("asks for another pass when a run changed since it was decided on (409), and starts nothing it did not admit", async () => {
    const objects = [namespace, job("a"), run("a-1", "a")];
    const kube = new FakeKubeWrites(objects);
    // The API server holds a newer version than the cache decided on.
    await kube.patchStatus({
      resource: { group: "syncgov.io", version: "v1alpha1", plural: "syncruns", namespaced: true },
      namespace: "crm",
      name: "a-1",
      status: { message: "touched" },
    });
    const writesBefore = kube.statusWrites.length;
    const { requeued, executor } = await pass(objects, kube);
    expect(requeued()).toBe(1);
    expect(kube.statusWrites.length).toBe(writesBefore);
    expect(kube.statusOf("SyncRun", "crm", "a-1")?.phase).toBeUndefined();
    expect(executor.started).toEqual([]);
  });

  it("writes no decision on a pass over decisions already written", async () => {
    const first = await pass([
      namespace,
      limit(1),
      job("a"),
      job("b"),
      run("a-1", "a", undefined, 1),
      run("b-1", "b", undefined, 2),
    ]);
    const written = [...first.kube.objects.values()];
    const again = await pass(written);
    // Only the runner's start is recorded again: a new launcher restarts runs left Running (idempotent).
    expect(again.kube.statusWrites.map((w) => Object.keys(w.status))).toEqual([["executor"]]);
    expect(again.kube.events).toEqual([]);
  });
});
