import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { SYNCJOBS, SYNCPOLICIES, SYNCRUNS } from "../../controller/kube/resource.ts";
import { syncgovCli } from "../support/cli.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { loadYaml } from "../support/manifests.ts";
import { createTenant, deleteTenant, type Tenant } from "../support/tenant.ts";

/**
 * Finding 3 of the security review: policies could be escaped.
 * (a) The shipped gold policy selected jobs by a label the tenant sets on its own job: dropping
 *     `tier: gold` dropped the required hash masking and shadow fallback.
 * (b) A rule that did not compile was skipped: the policy judged nothing (failed open).
 * (c) CEL had no cost limit and ran on the controller's event loop: nested `.all` at depth 4 over
 *     50 elements took seconds per evaluation, passed `syncgov validate`, and stalled the
 *     controller's readiness and lease.
 * The platform (admin) labels namespaces and applies the SyncPolicies, scoped to this suite's
 * namespaces; each tenant then acts with its namespaced Role against a live controller.
 */
const admin = kubeConfig();
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
const RUNS = { group: SYNCRUNS.group, version: SYNCRUNS.version, plural: SYNCRUNS.plural };
const POLICIES = { group: SYNCPOLICIES.group, version: SYNCPOLICIES.version, plural: SYNCPOLICIES.plural };
const LEASE = "sec-policy";
const IDENTITY = "sec-policy";

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

let gold: Tenant;
let broken: Tenant;
let costly: Tenant;
let controller: RunningController | undefined;
const policyNames: string[] = [];
const suffix = Math.random().toString(36).slice(2, 8);

/** A SQL-to-SQL job; `extra` overrides parts of the spec. */
function job(name: string, extra: Record<string, unknown> = {}, labels?: Record<string, string>) {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name, ...(labels ? { labels } : {}), annotations: { "syncgov.io/run-now": "now" } },
    spec: {
      mode: "batch",
      schedule: "0 2 * * *",
      source: { sql: { connectionSecretRef: { name: "crm-db" }, table: "crm.customers" } },
      target: {
        sql: {
          connectionSecretRef: { name: "warehouse-db" },
          table: "analytics.customers",
          keyColumns: ["customer_id", "email"],
        },
      },
      ...extra,
    },
  };
}

/** The exponential rule of the finding: nested `.all` over the job's masking rules, depth 4. */
const EXPONENTIAL =
  "object.spec.masking.all(a, object.spec.masking.all(b, object.spec.masking.all(c, " +
  "object.spec.masking.all(d, a.column != '' && b.column != '' && c.column != '' && d.column != '' && " +
  "a.transform in ['hash', 'redact'] && b.transform in ['hash', 'redact'] && " +
  "c.transform in ['hash', 'redact'] && d.transform in ['hash', 'redact']))))";

function costlyPolicy() {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncPolicy",
    metadata: { name: `costly-${suffix}` },
    spec: {
      enforcement: "Enforce",
      match: { namespaces: [costly.namespace] },
      rules: [{ name: "exponential", expression: EXPONENTIAL, message: "every masking rule is well formed" }],
    },
  };
}

async function createPolicy(body: { metadata: { name: string } } & Record<string, unknown>): Promise<void> {
  policyNames.push(body.metadata.name);
  await admin.makeApiClient(CustomObjectsApi).createClusterCustomObject({ ...POLICIES, body });
}

async function createAsTenant(tenant: Tenant, body: object): Promise<void> {
  await tenant.kubeConfig
    .makeApiClient(CustomObjectsApi)
    .createNamespacedCustomObject({ ...JOBS, namespace: tenant.namespace, body });
}

async function jobStatus(tenant: Tenant, name: string) {
  return (
    (await tenant.kubeConfig.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      ...JOBS,
      namespace: tenant.namespace,
      name,
    })) as {
      status?: { conditions?: Condition[]; effectivePolicy?: { policies?: string[]; violations?: string[] } };
    }
  ).status;
}

/** The job's PolicyCompliant condition once the controller has judged the job. */
async function compliance(tenant: Tenant, name: string, timeoutMs = 30_000): Promise<Condition> {
  return eventually(
    `the PolicyCompliant condition of ${name}`,
    async () => (await jobStatus(tenant, name))?.conditions?.find((c) => c.type === "PolicyCompliant"),
    timeoutMs,
  );
}

async function policyReady(name: string): Promise<Condition> {
  return eventually(`the Ready condition of SyncPolicy ${name}`, async () => {
    const p = (await admin.makeApiClient(CustomObjectsApi).getClusterCustomObject({ ...POLICIES, name })) as {
      status?: { conditions?: Condition[] };
    };
    return p.status?.conditions?.find((c) => c.type === "Ready");
  });
}

async function eventsOf(namespace: string | undefined, name: string) {
  const events = admin.makeApiClient(EventsV1Api);
  const list = namespace
    ? await events.listNamespacedEvent({ namespace, fieldSelector: `regarding.name=${name}` })
    : await events.listEventForAllNamespaces({ fieldSelector: `regarding.name=${name}` });
  return list.items;
}

async function runPhases(tenant: Tenant, jobName: string): Promise<(string | undefined)[]> {
  const runs = (await admin.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
    ...RUNS,
    namespace: tenant.namespace,
    labelSelector: `syncgov.io/job=${jobName}`,
  })) as { items: { status?: { phase?: string } }[] };
  return runs.items.map((r) => r.status?.phase);
}

/** `syncgov` offline: no cluster to ask. */
const syncgov = (args: string[]) => syncgovCli(args, { KUBECONFIG: "/nonexistent" });

beforeAll(async () => {
  await installCrds();
  // The platform labels the namespaces; a tenant's namespaced Role cannot change them.
  gold = await createTenant("sec-gold", { labels: { tier: "gold" } });
  broken = await createTenant("sec-broken");
  costly = await createTenant("sec-costly");
  await admin
    .makeApiClient(CoreV1Api)
    .createNamespace({ body: { metadata: { name: "syncgov-system" } } })
    .catch(() => undefined); // made by an earlier file

  // The shipped gold policy as it is, kept to this suite's gold namespace.
  const shipped = loadYaml("policies/baseline/gold.yaml")[0] as {
    metadata: { name: string };
    spec: { match?: Record<string, unknown> };
  };
  shipped.metadata = { name: `gold-${suffix}` };
  shipped.spec.match = { ...shipped.spec.match, namespaces: [gold.namespace] };
  await createPolicy(shipped);

  // A Warn policy whose second rule does not compile (a typo the platform team made).
  await createPolicy({
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncPolicy",
    metadata: { name: `broken-${suffix}` },
    spec: {
      enforcement: "Warn",
      match: { namespaces: [broken.namespace] },
      rules: [
        { name: "qualified", expression: "object.spec.target.sql.table.contains('.')", message: "qualify" },
        {
          name: "no-replace",
          expression: "objct.spec.concurrencyPolicy != 'Replace'",
          message: "no Replace",
        },
      ],
    },
  });

  controller = await startController({ identity: IDENTITY, leaseName: LEASE });
}, 120_000);

afterAll(async () => {
  await controller?.stop();
  for (const name of policyNames) {
    await admin
      .makeApiClient(CustomObjectsApi)
      .deleteClusterCustomObject({ ...POLICIES, name })
      .catch(() => undefined);
  }
  for (const t of [gold, broken, costly]) if (t) await deleteTenant(t);
});

describe("a tenant cannot escape the policies", () => {
  it("(a) a job in a gold namespace that drops its tier label still gets the gold requirements", async () => {
    // No tier label, shadow fallback off, an email column unmasked: everything gold forbids.
    await createAsTenant(gold, job("untiered", { shadow: { enabled: false } }));
    const compliant = await compliance(gold, "untiered");
    const status = await jobStatus(gold, "untiered");
    expect(status?.effectivePolicy?.policies).toContain(`gold-${suffix}`);
    expect(compliant).toMatchObject({ status: "False", reason: "Blocked" });
    expect(compliant.message).toContain(`gold-${suffix}/shadow`);
    expect(compliant.message).toContain(`gold-${suffix}/masking`);
    expect(await runPhases(gold, "untiered")).not.toContain("Running");
    expect(await runPhases(gold, "untiered")).not.toContain("Succeeded");
  });

  it("(b) a policy whose rule does not compile blocks the jobs it matches, and says why", async () => {
    const name = `broken-${suffix}`;
    // A job that every compiling rule admits: the broken rule still blocks it (fails closed).
    await createAsTenant(broken, job("innocent"));
    const compliant = await compliance(broken, "innocent");
    expect(compliant).toMatchObject({ status: "False", reason: "Blocked" });
    expect(compliant.message).toContain(`${name}/no-replace`);
    expect(compliant.message).toContain("spec.rules[1].expression");
    const jobEvents = await eventually("the job's Blocked event", async () => {
      const found = (await eventsOf(broken.namespace, "innocent")).filter((e) => e.reason === "Blocked");
      return found.length > 0 ? found : undefined;
    });
    expect(jobEvents[0]?.note).toContain(`${name}/no-replace`);
    expect(jobEvents[0]?.note).toContain("spec.rules[1].expression");
    expect(await runPhases(broken, "innocent")).not.toContain("Running");
    expect(await runPhases(broken, "innocent")).not.toContain("Succeeded");
    const ready = await policyReady(name);
    expect(ready).toMatchObject({ status: "False", reason: "InvalidRule" });
    expect(ready.message).toContain("spec.rules[1].expression (rule no-replace)");
    expect(ready.message).toContain("undeclared reference to 'objct'");
    expect(ready.message).toContain("blocks every job it matches");
    const policyEvents = await eventually("the policy's InvalidRule event", async () => {
      const found = (await eventsOf(undefined, name)).filter((e) => e.reason === "InvalidRule");
      return found.length > 0 ? found : undefined;
    });
    expect(policyEvents[0]?.note).toContain("spec.rules[1].expression");
  });

  it("(c) an exponential rule is refused offline by syncgov validate", async () => {
    const dir = mkdtempSync(join(tmpdir(), "syncgov-sec-policy-"));
    const file = join(dir, "costly.yaml");
    writeFileSync(file, stringify(costlyPolicy()));
    const r = await syncgov(["validate", file]);
    expect(r.code, r.out).toBe(1);
    expect(r.out).toContain("spec.rules[0].expression");
    expect(r.out).toMatch(/estimated cost \d+ exceeds the budget of 1000000 per rule/);
  });

  it("(c) an exponential rule that reaches the controller is rejected while it stays ready and keeps its lease", async () => {
    await createPolicy(costlyPolicy());
    const masking = Array.from({ length: 50 }, (_, i) => ({ column: `col_${i}`, transform: "hash" }));
    await createAsTenant(costly, job("wide", { masking }));

    // Watch the controller while it judges the job: every probe answers within a second, and the
    // lease stays the controller's, renewed.
    const leases = admin.makeApiClient(CoordinationV1Api);
    const renewals = new Set<string>();
    const slow: string[] = [];
    let judged: Condition | undefined;
    const until = Date.now() + 12_000;
    while (Date.now() < until) {
      const started = Date.now();
      const probe = await fetch(`http://127.0.0.1:${controller!.port}/readyz`, {
        signal: AbortSignal.timeout(1_000),
      }).then(
        (res) => (res.ok ? "ok" : `status ${res.status}`),
        (err: unknown) => `no answer: ${String(err)}`,
      );
      if (probe !== "ok") slow.push(`${new Date(started).toISOString()}: ${probe}`);
      const lease = await leases.readNamespacedLease({ namespace: "syncgov-system", name: LEASE });
      expect(lease.spec?.holderIdentity).toBe(IDENTITY);
      renewals.add(String(lease.spec?.renewTime));
      judged ??= (await jobStatus(costly, "wide"))?.conditions?.find((c) => c.type === "PolicyCompliant");
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(slow).toEqual([]);
    expect(renewals.size).toBeGreaterThan(2);

    const ready = await policyReady(`costly-${suffix}`);
    expect(ready).toMatchObject({ status: "False", reason: "InvalidRule" });
    expect(ready.message).toMatch(
      /spec\.rules\[0\]\.expression \(rule exponential\): estimated cost \d+ exceeds the budget of 1000000 per rule/,
    );
    const compliant = judged ?? (await compliance(costly, "wide"));
    expect(compliant).toMatchObject({ status: "False", reason: "Blocked" });
    expect(compliant.message).toContain(`costly-${suffix}/exponential`);
    expect(compliant.message).toContain("spec.rules[0].expression");
  }, 60_000);
});
