import {
  CustomObjectsApi,
  EventsV1Api,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { requestShadowChange } from "../../controller/cli/approve.ts";
import { SYNCJOBS } from "../../controller/kube/resource.ts";
import { patchStatus } from "../../controller/kube/status.ts";
import { retiredTableName } from "../../controller/shadow/names.ts";
import {
  APPROVE_SWAP_ANNOTATION,
  REQUESTED_BY_ANNOTATION,
  ROLLBACK_ANNOTATION,
} from "../../controller/shadow/state.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig } from "../support/env.ts";
import { installCrds, kubectl } from "../support/kubectl.ts";
import { baseJob } from "../support/manifests.ts";
import { actingAs, createTenant, deleteTenant, type Tenant } from "../support/tenant.ts";

/**
 * Finding 2 of the security review: an application team could approve its own shadow-table swap
 * (and roll it back) by setting an annotation, since approval was any edit of the SyncJob. Now the
 * API server admits a request only from a user holding the RBAC verb approve (rollback) on the job,
 * who names themself in syncgov.io/requested-by; the controller records that user in the event and
 * the status. The tenant ("dev") holds the usual app-team Role (edit syncjobs); the data owner
 * ("owner") in the same namespace also holds approve and rollback, as the chart's
 * syncgov-shadow-approver ClusterRole grants them.
 */
const admin = kubeConfig();
const custom = admin.makeApiClient(CustomObjectsApi);
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
let tenant: Tenant;
let owner: Tenant["kubeConfig"];
let ownerName: string;
let controller: RunningController | undefined;

const FORBIDDEN_APPROVE =
  /syncgov\.io\/approve-swap approves a shadow-table swap: it needs the RBAC verb 'approve'/;
const FORBIDDEN_ROLLBACK = /syncgov\.io\/rollback rolls a swap back: it needs the RBAC verb 'rollback'/;

interface JobObject {
  metadata: { annotations?: Record<string, string> };
  status?: { shadow?: Record<string, unknown> };
}

async function readJob(name: string): Promise<JobObject> {
  return (await custom.getNamespacedCustomObject({
    ...JOBS,
    namespace: tenant.namespace,
    name,
  })) as JobObject;
}

/** A job in the state the controller leaves after a shadow fill (status written as the controller). */
async function jobIn(name: string, shadow: Record<string, unknown>): Promise<void> {
  const job = baseJob() as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
  job.metadata = { name };
  job.spec.shadow = { retiredTableTtlSeconds: 3600 };
  await custom.createNamespacedCustomObject({ ...JOBS, namespace: tenant.namespace, body: job });
  await patchStatus(custom, { resource: SYNCJOBS, namespace: tenant.namespace, name }, { shadow });
}

async function eventsOf(name: string): Promise<{ reason: string; note: string }[]> {
  const list = await admin
    .makeApiClient(EventsV1Api)
    .listNamespacedEvent({ namespace: tenant.namespace, fieldSelector: `regarding.name=${name}` });
  return list.items.map((e) => ({ reason: e.reason ?? "", note: e.note ?? "" }));
}

beforeAll(async () => {
  await installCrds();
  tenant = await createTenant("sec-approval");
  // The data owner: same namespace, the app team's Role plus the approver verbs.
  ownerName = `${tenant.namespace}-owner`;
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  await rbac.createNamespacedRole({
    namespace: tenant.namespace,
    body: {
      metadata: { name: "shadow-approver" },
      rules: [
        {
          apiGroups: ["syncgov.io"],
          resources: ["syncjobs"],
          verbs: ["get", "patch", "approve", "rollback"],
        },
      ],
    },
  });
  await rbac.createNamespacedRoleBinding({
    namespace: tenant.namespace,
    body: {
      metadata: { name: "owner-approves" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "shadow-approver" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: ownerName }],
    },
  });
  owner = actingAs(ownerName).kubeConfig;

  await jobIn("awaiting", { state: "AwaitingApproval", table: "analytics.customers__shadow" });
  await jobIn("swapped", {
    state: "Swapped",
    retiredTable: retiredTableName("analytics.customers", new Date()),
  });
  controller = await startController({ identity: "sec-approval", leaseName: "sec-approval" });
});

afterAll(async () => {
  await controller?.stop();
  if (tenant) await deleteTenant(tenant);
});

describe("a tenant who may edit a SyncJob", () => {
  it("cannot approve its swap with `syncgov approve`: the API server refuses, naming the verb", async () => {
    const result = await requestShadowChange(
      "approve",
      { namespace: tenant.namespace, name: "awaiting" },
      { kubeConfig: tenant.kubeConfig },
    );
    expect(result.accepted).toBe(false);
    expect(result.lines.at(-1)).toMatch(FORBIDDEN_APPROVE);
    expect((await readJob("awaiting")).metadata.annotations ?? {}).not.toHaveProperty(
      APPROVE_SWAP_ANNOTATION,
    );
  });

  it("cannot approve with kubectl annotate, naming itself or anyone else", async () => {
    for (const by of [tenant.user, ownerName]) {
      const r = await kubectl([
        "--kubeconfig",
        tenant.kubeconfigPath,
        "annotate",
        "-n",
        tenant.namespace,
        "syncjob/awaiting",
        `${APPROVE_SWAP_ANNOTATION}=sneaky-${by}`,
        `${REQUESTED_BY_ANNOTATION}=${by}`,
      ]);
      expect(r.code, r.stdout).not.toBe(0);
      expect(r.stderr).toMatch(FORBIDDEN_APPROVE);
    }
  });

  it("cannot create a job that carries an approval in advance", async () => {
    const job = baseJob() as { metadata: Record<string, unknown> };
    job.metadata = {
      name: "preapproved",
      annotations: { [APPROVE_SWAP_ANNOTATION]: "in-advance", [REQUESTED_BY_ANNOTATION]: tenant.user },
    };
    const api = tenant.kubeConfig.makeApiClient(CustomObjectsApi);
    await expect(
      api.createNamespacedCustomObject({ ...JOBS, namespace: tenant.namespace, body: job }),
    ).rejects.toThrow(FORBIDDEN_APPROVE);
  });

  it("cannot roll a swap back, by the CLI or by annotation", async () => {
    const result = await requestShadowChange(
      "rollback",
      { namespace: tenant.namespace, name: "swapped" },
      { kubeConfig: tenant.kubeConfig },
    );
    expect(result.accepted).toBe(false);
    expect(result.lines.at(-1)).toMatch(FORBIDDEN_ROLLBACK);
    const r = await kubectl([
      "--kubeconfig",
      tenant.kubeconfigPath,
      "annotate",
      "-n",
      tenant.namespace,
      "syncjob/swapped",
      `${ROLLBACK_ANNOTATION}=sneaky`,
      `${REQUESTED_BY_ANNOTATION}=${tenant.user}`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(FORBIDDEN_ROLLBACK);
  });

  it("can still edit the job, and cannot rewrite who approved", async () => {
    const edit = await kubectl([
      "--kubeconfig",
      tenant.kubeconfigPath,
      "label",
      "-n",
      tenant.namespace,
      "syncjob/awaiting",
      "team=payments",
    ]);
    expect(edit.code, edit.stderr).toBe(0);
    const forged = await kubectl([
      "--kubeconfig",
      tenant.kubeconfigPath,
      "annotate",
      "-n",
      tenant.namespace,
      "syncjob/awaiting",
      `${REQUESTED_BY_ANNOTATION}=${ownerName}`,
    ]);
    expect(forged.code).not.toBe(0);
    expect(forged.stderr).toContain(
      `syncgov.io/requested-by must name the user making the request (${tenant.user})`,
    );
  });
});

describe("the data owner, who holds the approve verb", () => {
  it("cannot approve in another user's name", async () => {
    const api = owner.makeApiClient(CustomObjectsApi);
    await expect(
      api.patchNamespacedCustomObject(
        {
          ...JOBS,
          namespace: tenant.namespace,
          name: "awaiting",
          body: {
            metadata: {
              annotations: { [APPROVE_SWAP_ANNOTATION]: "t", [REQUESTED_BY_ANNOTATION]: tenant.user },
            },
          },
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      ),
    ).rejects.toThrow(/syncgov\.io\/requested-by must name the user making the request/);
  });

  it("approves with `syncgov approve`; the live controller records who, in the event and the status", async () => {
    const result = await requestShadowChange(
      "approve",
      { namespace: tenant.namespace, name: "awaiting" },
      { kubeConfig: owner },
    );
    expect(result.accepted, result.lines.join("\n")).toBe(true);
    expect((await readJob("awaiting")).metadata.annotations).toMatchObject({
      [APPROVE_SWAP_ANNOTATION]: result.token,
      [REQUESTED_BY_ANNOTATION]: ownerName,
    });
    const status = await eventually(
      "the approval handled",
      async () => {
        const shadow = (await readJob("awaiting")).status?.shadow;
        return shadow?.handledApproval === result.token ? shadow : undefined;
      },
      30_000,
    );
    expect(status, JSON.stringify(await eventsOf("awaiting"))).toMatchObject({ approvedBy: ownerName });
    expect(["Swapping", "Swapped"]).toContain(status.state);
    const approved = await eventually("the SwapApproved event", async () =>
      (await eventsOf("awaiting")).find((e) => e.reason === "SwapApproved"),
    );
    expect(approved.note).toContain(`Swap approved by ${ownerName}:`);
  });
});
