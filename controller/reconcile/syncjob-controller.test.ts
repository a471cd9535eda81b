import type { KubernetesObject } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { cacheOf, FakeKubeWrites } from "../../test/support/fake-kube.ts";
import { baseJob } from "../../test/support/manifests.ts";
import type { ShadowActions } from "./syncjob-controller.ts";
import { SyncJobController } from "./syncjob-controller.ts";

const NOW = new Date("2026-11-22T12:00:00Z");

type Obj = KubernetesObject & { spec?: Record<string, unknown>; status?: Record<string, unknown> };

function job(
  over: { spec?: Record<string, unknown>; status?: Record<string, unknown>; name?: string } = {},
): Obj {
  const j = baseJob() as Obj;
  j.metadata = {
    name: over.name ?? "customers",
    namespace: "crm",
    uid: "uid-1",
    generation: 1,
    resourceVersion: "1",
    creationTimestamp: "2026-11-22T11:00:00Z" as never,
  };
  Object.assign(j.spec!, over.spec ?? {});
  if (over.status) j.status = over.status;
  return j;
}

function run(name: string, phase: string, over: Record<string, unknown> = {}): Obj {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncRun",
    metadata: {
      name,
      namespace: "crm",
      resourceVersion: "5",
      creationTimestamp: "2026-11-22T10:00:00Z" as never,
    },
    spec: { jobName: "customers", type: "Batch", trigger: "Manual" },
    status: { phase, completionTime: "2026-11-22T10:30:00Z", ...over },
  };
}

const namespace = (phase?: string): Obj => ({
  apiVersion: "v1",
  kind: "Namespace",
  metadata: { name: "crm", labels: { team: "crm" } },
  ...(phase ? { status: { phase } } : {}),
});

const noShadow: ShadowActions = { perform: async () => undefined };

async function reconcile(objects: Obj[], shadow: ShadowActions = noShadow) {
  const kube = new FakeKubeWrites(objects);
  const cache = cacheOf(objects);
  const controller = new SyncJobController({ cache, kube, shadow, now: () => NOW });
  const result = await controller.reconcile({ kind: "SyncJob", namespace: "crm", name: "customers" });
  return { kube, cache, result, controller };
}

describe("SyncJobController", () => {
  it.each([
    {
      name: "a new valid job gets its conditions, one event, and a requeue for its next fire",
      objects: [namespace(), job()],
      created: [],
      deleted: [],
      events: ["SpecValid"],
      phase: "Idle",
      requeue: true,
    },
    {
      name: "an invalid job is told which field, once",
      objects: [namespace(), job({ spec: { schedule: "61 2 * * *" } })],
      created: [],
      deleted: [],
      events: ["InvalidSpec"],
      phase: "Invalid",
      requeue: false,
    },
    {
      name: "a realtime job starts its session, owned by the job",
      objects: [
        namespace(),
        job({ spec: { mode: "realtime", schedule: undefined, source: { kafka: { topic: "orders" } } } }),
      ],
      created: [`customers-rt${Math.floor(NOW.getTime() / 1000).toString(36)}`],
      deleted: [],
      events: ["RunCreated", "SpecValid"],
      phase: "Idle",
      requeue: false,
    },
    {
      name: "finished runs beyond the history limit are deleted",
      objects: [
        namespace(),
        job({ spec: { successfulRunsHistoryLimit: 1, ttlSecondsAfterFinished: undefined } }),
        run("r1", "Succeeded"),
        run("r2", "Succeeded"),
      ],
      created: [],
      deleted: ["crm/r1"],
      events: ["SpecValid"],
      phase: "Idle",
      requeue: true,
    },
    {
      name: "a due schedule starts a run",
      objects: [namespace(), job({ spec: { schedule: "30 11 * * *", timeZone: "UTC" } })],
      created: [`customers-s${Math.floor(Date.parse("2026-11-22T11:30:00Z") / 1000).toString(36)}`],
      deleted: [],
      events: ["RunCreated", "SpecValid"],
      phase: "Idle",
      requeue: true,
    },
  ])("$name", async (c) => {
    const { kube, result } = await reconcile(c.objects);
    expect(kube.created.map((r) => r.metadata?.name)).toEqual(c.created);
    for (const r of kube.created) {
      expect(r.metadata?.ownerReferences?.[0]).toMatchObject({
        kind: "SyncJob",
        name: "customers",
        controller: true,
      });
      expect(r.metadata?.labels).toEqual({ "syncgov.io/job": "customers" });
    }
    expect(kube.deleted).toEqual(c.deleted);
    expect(kube.events.map((e) => e.event.reason)).toEqual(c.events);
    expect(kube.statusOf("SyncJob", "crm", "customers")?.phase).toBe(c.phase);
    expect(result?.requeueAfter !== undefined).toBe(c.requeue);
  });

  it("is idempotent: a second reconcile of what it wrote writes nothing and records nothing", async () => {
    const first = await reconcile([namespace(), job()]);
    const written = first.kube.objects.get("SyncJob/crm/customers")! as Obj;
    const again = await reconcile([namespace(), written]);
    expect(again.kube.statusWrites).toEqual([]);
    expect(again.kube.events).toEqual([]);
    expect(again.kube.created).toEqual([]);
  });

  it("creates no duplicate when the run exists already (an earlier attempt made it)", async () => {
    const name = `customers-s${Math.floor(Date.parse("2026-11-22T11:30:00Z") / 1000).toString(36)}`;
    const objects = [namespace(), job({ spec: { schedule: "30 11 * * *", timeZone: "UTC" } })];
    const kube = new FakeKubeWrites([...objects, { ...run(name, "Pending"), status: undefined } as Obj]);
    // The cache has not seen the run yet: the create answers 409.
    const controller = new SyncJobController({
      cache: cacheOf(objects),
      kube,
      shadow: noShadow,
      now: () => NOW,
    });
    await controller.reconcile({ kind: "SyncJob", namespace: "crm", name: "customers" });
    expect(kube.created).toEqual([]);
    expect(kube.events.map((e) => e.event.reason)).toEqual(["SpecValid"]);
  });

  it.each([
    ["the job is gone", [namespace()]],
    ["its namespace is being deleted", [namespace("Terminating"), job()]],
  ])("does nothing when %s", async (_, objects) => {
    const { kube, result } = await reconcile(objects);
    expect([kube.created, kube.deleted, kube.statusWrites, kube.events]).toEqual([[], [], [], []]);
    expect(result).toBeUndefined();
  });

  it("leaves the status as it is when a shadow step fails, so the step is decided again", async () => {
    const failing: ShadowActions = { perform: async () => new Error("shadow CreateShadow failed: denied") };
    const validation = {
      result: "Failed",
      sourceRows: 2,
      targetRows: 1,
      sourceChecksum: "a",
      targetChecksum: "b",
    };
    // Three failed validations in a row make the shadow machine act (create the shadow table first).
    const objects = [
      namespace(),
      job({ spec: { shadow: { enabled: true } } }),
      run("v1", "Succeeded", { validation }),
      run("v2", "Succeeded", { validation }),
      run("v3", "Succeeded", { validation }),
    ];
    const kube = new FakeKubeWrites(objects);
    const cache = cacheOf(objects);
    const controller = new SyncJobController({ cache, kube, shadow: failing, now: () => NOW });
    await expect(
      controller.reconcile({ kind: "SyncJob", namespace: "crm", name: "customers" }),
    ).rejects.toThrow("CreateShadow failed");
    expect(kube.statusWrites).toEqual([]);
  });
});
