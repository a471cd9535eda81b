import { CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNCJOBS } from "../../controller/kube/resource.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { baseJob } from "../support/manifests.ts";
import { readerHeaders } from "../support/reader-token.ts";
import { createTenant, deleteTenant, TENANT_RULES, type Tenant } from "../support/tenant.ts";

/**
 * Finding 5 of the security review, its exposure part: /api/registry and /metrics listed every
 * namespace's jobs and target tables to anyone who could reach the controller's port. Now each
 * caller presents a Kubernetes bearer token; the controller checks it with a TokenReview and each
 * access with a SubjectAccessReview (controller/http/auth.ts), and the registry shows a caller only
 * the objects it may list. A tenant here holds a ServiceAccount token of its own namespace with the
 * app-team Role; the platform's reader may list everything and get /metrics.
 */
const admin = kubeConfig();
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
let tenantA: Tenant;
let tenantB: Tenant;
let tokenA: string;
let controller: RunningController | undefined;

interface Registry {
  objects: { kind: string; namespace?: string; name: string; target?: string }[];
}

/** A token of a ServiceAccount in the tenant's namespace, bound to the tenant's Role there. */
async function tenantToken(tenant: Tenant): Promise<string> {
  const core = admin.makeApiClient(CoreV1Api);
  await core.createNamespacedServiceAccount({
    namespace: tenant.namespace,
    body: { metadata: { name: "ci" } },
  });
  await admin.makeApiClient(RbacAuthorizationV1Api).createNamespacedRoleBinding({
    namespace: tenant.namespace,
    body: {
      metadata: { name: "ci-app-team" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "app-team" },
      subjects: [{ kind: "ServiceAccount", name: "ci", namespace: tenant.namespace }],
    },
  });
  const request = await core.createNamespacedServiceAccountToken({
    namespace: tenant.namespace,
    name: "ci",
    body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 3600 } },
  });
  return request.status!.token!;
}

async function get(
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${controller!.port}${path}`, { headers });
  return { status: res.status, body: await res.text() };
}

beforeAll(async () => {
  await installCrds();
  tenantA = await createTenant("sec-http-a", { rules: TENANT_RULES });
  tenantB = await createTenant("sec-http-b");
  tokenA = await tenantToken(tenantA);
  for (const [tenant, table] of [
    [tenantA, "shop.orders"],
    [tenantB, "payroll.salaries"],
  ] as const) {
    const job = baseJob() as {
      metadata: Record<string, unknown>;
      spec: { target: { sql: { table: string } } };
    };
    job.metadata = { name: "sync" };
    job.spec.target.sql.table = table;
    await admin
      .makeApiClient(CustomObjectsApi)
      .createNamespacedCustomObject({ ...JOBS, namespace: tenant.namespace, body: job });
  }
  controller = await startController({
    identity: "sec-http",
    leaseName: "sec-http",
    extraArgs: ["--executor", "External"],
  });
});

afterAll(async () => {
  await controller?.stop();
  for (const t of [tenantA, tenantB]) if (t) await deleteTenant(t);
});

describe("the controller's HTTP API", () => {
  it("answers probes to anyone, and /metrics and /api/registry to no one without a token", async () => {
    expect((await get("/healthz")).status).toBe(200);
    for (const path of ["/metrics", "/api/registry"]) {
      const r = await get(path);
      expect(r.status, path).toBe(401);
      expect(r.body).toContain("a bearer token is required");
      expect(r.body).not.toContain("payroll");
      const forged = await get(path, { authorization: "Bearer not-a-token" });
      expect(forged.status, path).toBe(401);
    }
  });

  it("shows a tenant only its own namespace's objects, and not /metrics", async () => {
    const headers = { authorization: `Bearer ${tokenA}` };
    const view = await eventually("tenant A's job in the registry", async () => {
      const r = await get("/api/registry", headers);
      expect(r.status).toBe(200);
      const v = JSON.parse(r.body) as Registry;
      return v.objects.some((o) => o.namespace === tenantA.namespace && o.kind === "SyncJob") ? v : undefined;
    });
    expect(new Set(view.objects.map((o) => o.namespace))).toEqual(new Set([tenantA.namespace]));
    expect(JSON.stringify(view)).not.toContain("payroll.salaries");
    const metrics = await get("/metrics", headers);
    expect(metrics.status).toBe(403);
    expect(metrics.body).toContain(
      `forbidden: system:serviceaccount:${tenantA.namespace}:ci may not get /metrics`,
    );
  });

  it("shows the platform's reader every namespace, and /metrics", async () => {
    const headers = await readerHeaders();
    const view = await eventually("both tenants' jobs in the registry", async () => {
      const v = JSON.parse((await get("/api/registry", headers)).body) as Registry;
      const namespaces = new Set(v.objects.map((o) => o.namespace));
      return namespaces.has(tenantA.namespace) && namespaces.has(tenantB.namespace) ? v : undefined;
    });
    expect(view.objects.some((o) => o.kind === "Namespace")).toBe(true);
    const metrics = await get("/metrics", headers);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain("syncgov_");
  });
});
