import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNCJOBS, SYNCPOLICIES, SYNCRUNS } from "../../controller/kube/resource.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig, uniqueName } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { createTenant, deleteTenant, type Tenant } from "../support/tenant.ts";

/**
 * Finding 9 of the security review, its session and annotation parts: realtime sessions bypassed
 * every concurrency limit and a tenant could start extra Realtime SyncRuns of its own; an over-long
 * request annotation made every later status write of the job fail. Here the platform limits the
 * tenant's namespace to one run at a time; the controller leaves admitted runs to an outside runner
 * (`--executor External`), so what is measured is admission alone.
 */
const admin = kubeConfig();
const custom = admin.makeApiClient(CustomObjectsApi);
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
const RUNS = { group: SYNCRUNS.group, version: SYNCRUNS.version, plural: SYNCRUNS.plural };
const POLICIES = { group: SYNCPOLICIES.group, version: SYNCPOLICIES.version, plural: SYNCPOLICIES.plural };
const label = uniqueName("abuse");
const policyName = `sec-${label}`;
let tenant: Tenant;
let controller: RunningController | undefined;

interface Run {
  metadata: { name: string };
  spec: { type?: string };
  status?: { phase?: string; message?: string; queueReason?: string };
}

async function runsOf(job: string): Promise<Run[]> {
  const list = (await custom.listNamespacedCustomObject({
    ...RUNS,
    namespace: tenant.namespace,
    labelSelector: `syncgov.io/job=${job}`,
  })) as { items: Run[] };
  return list.items;
}

async function readRun(name: string): Promise<Run> {
  return (await custom.getNamespacedCustomObject({ ...RUNS, namespace: tenant.namespace, name })) as Run;
}

function tenantApi(): CustomObjectsApi {
  return tenant.kubeConfig.makeApiClient(CustomObjectsApi);
}

const target = { sql: { connectionSecretRef: { name: "db" }, table: "shop.orders", keyColumns: ["id"] } };

beforeAll(async () => {
  await installCrds();
  tenant = await createTenant("sec-abuse", { labels: { "sec-abuse": label } });
  await custom.createClusterCustomObject({
    ...POLICIES,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: policyName },
      spec: {
        enforcement: "Enforce",
        match: { namespaceSelector: { matchLabels: { "sec-abuse": label } } },
        concurrency: { maxRunsPerNamespace: 1 },
      },
    },
  });
  controller = await startController({
    identity: "sec-abuse",
    leaseName: "sec-abuse",
    extraArgs: ["--executor", "External"],
  });
});

afterAll(async () => {
  await controller?.stop();
  await custom.deleteClusterCustomObject({ ...POLICIES, name: policyName }).catch(() => undefined);
  if (tenant) await deleteTenant(tenant);
});

describe("a tenant's realtime job", () => {
  it("streams through one session: extra Realtime runs the tenant creates are skipped", async () => {
    await tenantApi().createNamespacedCustomObject({
      ...JOBS,
      namespace: tenant.namespace,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncJob",
        metadata: { name: "stream" },
        // Skipped runs are kept for the test to read (history keeps one by default).
        spec: {
          mode: "realtime",
          source: { kafka: { topic: "orders.cdc" } },
          target,
          failedRunsHistoryLimit: 10,
        },
      },
    });
    const session = await eventually("the controller's session", async () =>
      (await runsOf("stream")).find((r) => r.spec.type === "Realtime" && r.status?.phase === "Running"),
    );
    for (const name of ["extra-1", "extra-2"]) {
      await tenantApi().createNamespacedCustomObject({
        ...RUNS,
        namespace: tenant.namespace,
        body: {
          apiVersion: "syncgov.io/v1alpha1",
          kind: "SyncRun",
          metadata: { name, labels: { "syncgov.io/job": "stream" } },
          spec: { jobName: "stream", type: "Realtime", trigger: "Stream", priority: 1000 },
        },
      });
    }
    for (const name of ["extra-1", "extra-2"]) {
      const run = await eventually(`${name} decided`, async () => {
        const r = await readRun(name);
        return r.status?.phase && r.status.phase !== "Pending" ? r : undefined;
      });
      expect(run.status).toMatchObject({
        phase: "Skipped",
        message: `job stream already has a realtime session (${tenant.namespace}/${session.metadata.name}); a job streams through one session at a time`,
      });
    }
  });

  it("holds its namespace's slot: a batch run waits behind the session", async () => {
    await tenantApi().createNamespacedCustomObject({
      ...JOBS,
      namespace: tenant.namespace,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncJob",
        metadata: { name: "nightly", annotations: { "syncgov.io/run-now": "1" } },
        spec: {
          mode: "batch",
          schedule: "0 2 * * *",
          source: {
            sql: { connectionSecretRef: { name: "db" }, table: "shop.orders_src", keyColumns: ["id"] },
          },
          target,
        },
      },
    });
    const run = await eventually("the manual run decided", async () =>
      (await runsOf("nightly")).find((r) => r.status?.phase && r.status.phase !== "Pending"),
    );
    expect(run.status).toMatchObject({
      phase: "Queued",
      queueReason: `1/1 running in namespace ${tenant.namespace}`,
    });
  });
});

describe("an over-long request annotation", () => {
  it("starts its run once and never wedges the job's status", async () => {
    const value = "x".repeat(4000);
    await tenantApi().patchNamespacedCustomObject(
      {
        ...JOBS,
        namespace: tenant.namespace,
        name: "nightly",
        body: { metadata: { annotations: { "syncgov.io/run-now": value } } },
      },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    const recorded = await eventually("the request recorded", async () => {
      const job = (await custom.getNamespacedCustomObject({
        ...JOBS,
        namespace: tenant.namespace,
        name: "nightly",
      })) as {
        status?: { lastManualRequest?: string };
      };
      return job.status?.lastManualRequest?.startsWith("sha256:") ? job.status.lastManualRequest : undefined;
    });
    expect(recorded).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((await runsOf("nightly")).length).toBe(2);
    // Later changes still reach the status.
    const patched = (await tenantApi().patchNamespacedCustomObject(
      { ...JOBS, namespace: tenant.namespace, name: "nightly", body: { spec: { schedule: "0 3 * * *" } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    )) as { metadata: { generation: number } };
    await eventually("the new generation observed", async () => {
      const job = (await custom.getNamespacedCustomObject({
        ...JOBS,
        namespace: tenant.namespace,
        name: "nightly",
      })) as {
        status?: { observedGeneration?: number };
      };
      return job.status?.observedGeneration === patched.metadata.generation ? true : undefined;
    });
  });
});
