import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { admissionPoliciesYaml, admissionPolicyFor } from "../../controller/policy/admission-export.ts";
import type { NamedPolicy } from "../../controller/policy/effective.ts";
import { loadPolicies } from "../../controller/policy/policy-files.ts";
import { uniqueName } from "../support/env.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";
import { loadYaml, repoPath } from "../support/manifests.ts";

// The shipped policies, exported as ValidatingAdmissionPolicies and bound to this test's namespace
// only, so that no other test's jobs are judged by them.
const namespace = uniqueName("policy-vap");
const suffix = namespace.slice("policy-vap-".length);

function scoped(policy: NamedPolicy): NamedPolicy {
  return {
    name: `${policy.name}-${suffix}`,
    spec: { ...policy.spec, match: { ...policy.spec.match, namespaces: [namespace] } },
  };
}

const shipped = loadPolicies([repoPath("policies")]);
const policies = shipped.policies.map(scoped);
const admissionNames = policies.map((p) => admissionPolicyFor(p).policy.metadata!.name!);
const admissionName = (policy: string) =>
  admissionPolicyFor(policies.find((p) => p.name.startsWith(`${policy}-`))!).policy.metadata!.name!;

type Manifest = Record<string, unknown> & {
  metadata: Record<string, unknown>;
  spec: Record<string, unknown>;
};

/** The realtime example: compliant with every shipped policy in a prod namespace of team payments. */
function compliantJob(name: string): Manifest {
  const job = structuredClone(loadYaml("test/examples/realtime-orders.yaml")[0]!) as Manifest;
  job.metadata.name = name;
  return job;
}

function targetSql(job: Manifest): Record<string, unknown> {
  return (job.spec.target as { sql: Record<string, unknown> }).sql;
}

const apply = (manifest: object, ...flags: string[]) =>
  kubectl(["apply", "-n", namespace, ...flags, "-f", "-"], stringify(manifest));

/** Retries until `check` holds; the API server compiles a new policy a moment after it is stored. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(250);
  }
}

beforeAll(async () => {
  expect(shipped.problems).toEqual([]);
  await installCrds();
  await kubectlOk(["create", "namespace", namespace]);
  await kubectlOk(["label", "namespace", namespace, "env=prod", "team=payments", "tier=gold"]);
  // A job that violates baseline, stored before the policies exist (as jobs are when a platform
  // team introduces a policy).
  const legacy = compliantJob("legacy");
  targetSql(legacy).table = "orders";
  await kubectlOk(["apply", "-n", namespace, "-f", "-"], stringify(legacy));

  await kubectlOk(["apply", "-f", "-"], admissionPoliciesYaml(policies));
  // Server-side dry runs pass through admission without storing anything, so a fresh request can
  // probe until the policy is in force.
  const probe = compliantJob("probe");
  targetSql(probe).table = "orders";
  await eventually(
    "the baseline policy denies",
    async () => (await apply(probe, "--dry-run=server")).code !== 0,
  );
}, 90_000);

afterAll(async () => {
  await kubectl([
    "delete",
    "validatingadmissionpolicybinding,validatingadmissionpolicy",
    ...admissionNames,
    "--wait=false",
  ]);
  await kubectl(["delete", "namespace", namespace, "--wait=false"]);
});

describe("SyncPolicies exported as ValidatingAdmissionPolicies", () => {
  it("are compiled by the API server when stored, so every shipped rule is valid Kubernetes CEL", async () => {
    // The shipped ones were stored in beforeAll; the same export with a broken rule is refused.
    const broken = scoped({ name: "broken", spec: { enforcement: "Enforce", rules: [] } });
    const { policy } = admissionPolicyFor(broken);
    policy.spec!.validations = [
      { expression: "object.spec.target.sql.table.lowercase() == ''", message: "x" },
    ];
    const r = await kubectl(["apply", "--dry-run=server", "-f", "-"], stringify(policy));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("compilation failed");
    for (const name of admissionNames) {
      expect(await kubectlOk(["get", "validatingadmissionpolicy", name, "-o", "name"])).toContain(name);
    }
  });

  it("reject a violating SyncJob at kubectl apply with the rule's message", async () => {
    const job = compliantJob("unqualified");
    targetSql(job).table = "orders";
    const r = await apply(job);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`ValidatingAdmissionPolicy '${admissionName("baseline")}'`);
    expect(r.stderr).toContain(
      "target-schema-qualified: the target table must be schema-qualified (schema.table)",
    );
    const get = await kubectl(["get", "syncjob", "unqualified", "-n", namespace]);
    expect(get.code).not.toBe(0);
  });

  it("accept a compliant SyncJob", async () => {
    const r = await apply(compliantJob("orders-to-warehouse"));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain("Warning");
    expect(
      await kubectlOk(["get", "syncjob", "orders-to-warehouse", "-n", namespace, "-o", "name"]),
    ).toContain("syncjob.syncgov.io/orders-to-warehouse");
  });

  it("evaluate rules over namespaceObject with the namespace's labels", async () => {
    const job = compliantJob("crm-job");
    (job.metadata.labels as Record<string, string>).team = "crm";
    const r = await apply(job);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("team-matches-namespace: in a namespace labelled with a team");
  });

  it("enforce masking requirements as CEL: gold tier needs hash where baseline accepts redact", async () => {
    const job = compliantJob("redacted-phone");
    job.spec.masking = [{ column: "customer_phone", transform: "redact" }];
    const r = await apply(job);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`ValidatingAdmissionPolicy '${admissionName("gold")}'`);
    expect(r.stderr).toContain("masking: columns matching /(first_?name|");
  });

  it("admit a job that breaks a Warn policy, with the warning", async () => {
    // The tier is the namespace's label (the platform's); without it the tiers policy warns.
    const job = compliantJob("untiered");
    await kubectlOk(["label", "namespace", namespace, "tier-"]);
    try {
      await eventually("the tiers policy warns", async () => {
        const r = await apply(job, "--dry-run=server");
        return r.code === 0 && r.stderr.includes("tier-label");
      });
      const r = await apply(job);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/Warning: .*tier-label: the job's namespace should carry a tier label/);
    } finally {
      await kubectlOk(["label", "namespace", namespace, "tier=gold"]);
    }
  });

  it("leave updates that change neither spec nor labels alone, and judge those that do", async () => {
    // The legacy job violates baseline; the controller must still be able to annotate it and to
    // add and remove its finalizer.
    await kubectlOk(["annotate", "syncjob", "legacy", "-n", namespace, "syncgov.io/note=reviewed"]);
    await kubectlOk([
      "patch",
      "syncjob",
      "legacy",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      '{"metadata":{"finalizers":["syncgov.io/cleanup"]}}',
    ]);
    await kubectlOk([
      "patch",
      "syncjob",
      "legacy",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      '{"metadata":{"finalizers":null}}',
    ]);
    const specChange = await kubectl([
      "patch",
      "syncjob",
      "legacy",
      "-n",
      namespace,
      "--type=merge",
      "-p",
      '{"spec":{"priority":5}}',
    ]);
    expect(specChange.code).not.toBe(0);
    expect(specChange.stderr).toContain("target-schema-qualified");
  });
});
