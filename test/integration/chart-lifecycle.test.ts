/**
 * The chart's lifecycle against the real API server: an upgrade from a release whose CRDs are
 * older (Helm installs crds/ on first install only and never upgrades them) goes through the
 * documented step, `syncgov crds apply`, then `helm upgrade`; `helm uninstall` removes the release
 * and keeps the CRDs and the users' objects.
 *
 * The older CRDs are this version's without the SyncRun status fields added since 0.1.0 was first
 * released (status.policy and status.traceContext): with them, the API server prunes what the
 * scheduler records at admission, which is why the step matters.
 */

import { join } from "node:path";
import type { KubernetesObject } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyManifests } from "../../controller/kube/apply.ts";
import { currentCrds } from "../../controller/kube/crds.ts";
import { SYNCRUNS } from "../../controller/kube/resource.ts";
import { patchStatus } from "../../controller/kube/status.ts";
import { execFileAsync } from "../env/services/process.ts";
import { kubeConfig, testEnv, uniqueName } from "../support/env.ts";
import { type Helm, obtainHelm } from "../support/helm.ts";
import { kubeClients } from "../support/kube.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";
import { baseJob, repoPath } from "../support/manifests.ts";

const CHART = repoPath("charts/syncgov");
const release = uniqueName("life").slice(0, 30);
const namespace = uniqueName("life-system");
const tenant = uniqueName("life-tenant");
const { custom } = kubeClients();
let helm: Helm;

/** This version's CRDs as 0.1.0 first shipped them: SyncRun status without policy and traceContext. */
function olderCrds(): KubernetesObject[] {
  return currentCrds().map((crd) => {
    const copy = structuredClone(crd) as KubernetesObject & {
      spec: {
        versions: {
          schema: { openAPIV3Schema: { properties: { status: { properties: Record<string, unknown> } } } };
        }[];
      };
    };
    if (copy.metadata?.name === "syncruns.syncgov.io") {
      for (const v of copy.spec.versions) {
        delete v.schema.openAPIV3Schema.properties.status.properties.policy;
        delete v.schema.openAPIV3Schema.properties.status.properties.traceContext;
      }
    }
    return copy;
  });
}

async function servedRunStatusFields(): Promise<string[]> {
  const crd = JSON.parse(await kubectlOk(["get", "crd", "syncruns.syncgov.io", "-o", "json"])) as {
    spec: { versions: { schema: { openAPIV3Schema: { properties: { status: { properties: object } } } } }[] };
  };
  return Object.keys(crd.spec.versions[0]!.schema.openAPIV3Schema.properties.status.properties);
}

/** Records an admission's policy on a fresh run and reads back what the API server kept. */
async function recordedPolicy(): Promise<unknown> {
  const name = uniqueName("run");
  await custom.createNamespacedCustomObject({
    ...SYNCRUNS,
    namespace: tenant,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncRun",
      metadata: { name },
      spec: { jobName: "orders" },
    },
  });
  const policy = {
    policies: ["baseline"],
    requiredMasking: [],
    breaker: { slowCallDurationThresholdMs: 300 },
  };
  await patchStatus(custom, { resource: SYNCRUNS, namespace: tenant, name }, { policy });
  const run = (await custom.getNamespacedCustomObject({ ...SYNCRUNS, namespace: tenant, name })) as {
    status?: { policy?: unknown };
  };
  return run.status?.policy;
}

beforeAll(async () => {
  helm = await obtainHelm(join(testEnv().runDir, `chart-lifecycle-${release}`));
  for (const ns of [namespace, tenant]) await kubectlOk(["create", "namespace", ns]);
}, 30 * 60_000);

afterAll(async () => {
  // Whatever happened, the shared API server serves this version's CRDs again.
  await installCrds();
  await helm?.run(["uninstall", release, "--namespace", namespace]);
  for (const ns of [namespace, tenant]) await kubectl(["delete", "namespace", ns, "--wait=false"]);
});

describe("the chart's lifecycle", () => {
  it("upgrades a release with older CRDs through `syncgov crds apply` and `helm upgrade`, and uninstalls keeping CRDs and objects", async () => {
    // A release installed when the CRDs were older.
    await applyManifests(kubeConfig(), olderCrds(), { fieldManager: "syncgov-crds" });
    await kubectlOk(["wait", "--for=condition=Established", "--timeout=60s", "crd/syncruns.syncgov.io"]);
    expect(await servedRunStatusFields()).not.toContain("policy");
    await helm.ok(["install", release, CHART, "--namespace", namespace, "--set", "controller.workers=2"]);
    const job = baseJob() as KubernetesObject;
    job.metadata = { name: "orders", namespace: tenant };
    await custom.createNamespacedCustomObject({
      group: "syncgov.io",
      version: "v1alpha1",
      plural: "syncjobs",
      namespace: tenant,
      body: job,
    });
    // The older schema prunes what admission records: the runner would refuse every run.
    await expect.poll(recordedPolicy, { timeout: 15_000 }).toBeUndefined();

    // The documented upgrade: this version's CRDs first, then the chart.
    const { stdout } = await execFileAsync(process.execPath, [
      repoPath("controller/cli.ts"),
      "crds",
      "apply",
      "--kubeconfig",
      testEnv().kubeconfig,
    ]);
    expect(stdout).toContain("customresourcedefinition.apiextensions.k8s.io/syncruns.syncgov.io applied");
    expect(await servedRunStatusFields()).toEqual(expect.arrayContaining(["policy", "traceContext"]));
    await expect
      .poll(recordedPolicy, { timeout: 15_000 })
      .toMatchObject({ breaker: { slowCallDurationThresholdMs: 300 } });
    await helm.ok(["upgrade", release, CHART, "--namespace", namespace, "--set", "controller.workers=6"]);
    const deployment = JSON.parse(
      await kubectlOk([
        "get",
        "deployment",
        "-n",
        namespace,
        "-l",
        `app.kubernetes.io/instance=${release}`,
        "-o",
        "json",
      ]),
    ) as { items: { spec: { template: { spec: { containers: { args: string[] }[] } } } }[] };
    expect(deployment.items).toHaveLength(1);
    expect(deployment.items[0]!.spec.template.spec.containers[0]!.args).toContain("--workers=6");
    expect(await helm.ok(["history", release, "--namespace", namespace, "-o", "json"])).toMatch(
      /"revision":2/,
    );

    // Uninstall: the release's objects go; CRDs (Helm never deletes crds/) and the users' SyncJobs stay.
    await helm.ok(["uninstall", release, "--namespace", namespace]);
    const left = await kubectlOk([
      "get",
      "deployment,serviceaccount,role,rolebinding",
      "-n",
      namespace,
      "-l",
      `app.kubernetes.io/instance=${release}`,
      "-o",
      "name",
    ]);
    expect(left.trim()).toBe("");
    const clusterLeft = await kubectlOk([
      "get",
      "clusterrole,clusterrolebinding",
      "-l",
      `app.kubernetes.io/instance=${release}`,
      "-o",
      "name",
    ]);
    expect(clusterLeft.trim()).toBe("");
    expect(
      await kubectlOk([
        "get",
        "crd",
        "syncjobs.syncgov.io",
        "syncruns.syncgov.io",
        "syncpolicies.syncgov.io",
        "-o",
        "name",
      ]),
    ).toMatch(/syncpolicies/);
    expect(await kubectlOk(["get", "syncjob", "orders", "-n", tenant, "-o", "name"])).toContain(
      "syncjob.syncgov.io/orders",
    );
  }, 240_000);
});
