import { createHash, createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, CustomObjectsApi, EventsV1Api } from "@kubernetes/client-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNCJOBS, SYNCPOLICIES, SYNCRUNS } from "../../controller/kube/resource.ts";
import { syncgovCli } from "../support/cli.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig, testEnv } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { createTenant, deleteTenant, type Tenant } from "../support/tenant.ts";

/**
 * Finding 7 of the security review: masking was weak. `hash` without a salt was plain SHA-256,
 * which a dictionary of every phone number reverses, and no policy could demand better; and
 * `regexReplace` ran a tenant's pattern on a backtracking engine on the controller's event loop,
 * where `(a+)+$` against "aaa…a!" never finishes. Now a SyncPolicy can require keyed hashing
 * (masking.requireHashKey: HMAC-SHA256 with a key from a Secret, spec.maskingKeySecretRef), and
 * patterns run on RE2 (linear time) or, when RE2 cannot run them, make the job Invalid naming the
 * field. The tenant acts with its namespaced Role; the platform's policy is the admin's.
 */
const admin = kubeConfig();
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
const RUNS = { group: SYNCRUNS.group, version: SYNCRUNS.version, plural: SYNCRUNS.plural };
const POLICIES = { group: SYNCPOLICIES.group, version: SYNCPOLICIES.version, plural: SYNCPOLICIES.plural };
const pool = new pg.Pool({ connectionString: testEnv().databaseUrl, max: 2 });
pool.on("error", () => undefined);
const schema = `sec_mask_${Date.now().toString(36)}`;
const key = randomBytes(24).toString("hex");
/** A value on which a backtracking engine runs `(a+)+$` for 2^64 steps; RE2 reads it once. */
const CATASTROPHIC = `${"a".repeat(64)}!`;
let tenant: Tenant;
let policyName: string;
let controller: RunningController | undefined;

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

function job(
  name: string,
  table: string,
  extra: { masking: object[]; maskingKeySecretRef?: object },
  annotations: Record<string, string> = {},
) {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name, annotations },
    spec: {
      mode: "batch",
      schedule: "0 0 29 2 1",
      source: { sql: { connectionSecretRef: { name: "db" }, table: `${schema}.contacts_src` } },
      target: {
        sql: { connectionSecretRef: { name: "db" }, table: `${schema}.${table}`, keyColumns: ["id"] },
      },
      ...extra,
    },
  };
}

async function createAsTenant(body: object): Promise<void> {
  await tenant.kubeConfig
    .makeApiClient(CustomObjectsApi)
    .createNamespacedCustomObject({ ...JOBS, namespace: tenant.namespace, body });
}

async function condition(name: string, type: string): Promise<Condition> {
  return eventually(`the ${type} condition of ${name}`, async () => {
    const object = (await admin.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      ...JOBS,
      namespace: tenant.namespace,
      name,
    })) as { status?: { conditions?: Condition[] } };
    return object.status?.conditions?.find((c) => c.type === type);
  });
}

async function eventsOf(name: string) {
  return (
    await admin
      .makeApiClient(EventsV1Api)
      .listNamespacedEvent({ namespace: tenant.namespace, fieldSelector: `regarding.name=${name}` })
  ).items;
}

async function runsOf(jobName: string) {
  return (
    (await admin.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
      ...RUNS,
      namespace: tenant.namespace,
      labelSelector: `syncgov.io/job=${jobName}`,
    })) as { items: { status?: { phase?: string; message?: string; rowsWritten?: number } }[] }
  ).items;
}

const count = async (table: string) =>
  (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.${table}`)).rows[0]!.n;

beforeAll(async () => {
  await installCrds();
  tenant = await createTenant("sec-mask");
  const core = tenant.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespacedSecret({
    namespace: tenant.namespace,
    body: { metadata: { name: "db" }, stringData: { url: testEnv().databaseUrl } },
  });
  await core.createNamespacedSecret({
    namespace: tenant.namespace,
    body: { metadata: { name: "pii-key" }, stringData: { key } },
  });
  await pool.query(`CREATE SCHEMA ${schema}`);
  await pool.query(`CREATE TABLE ${schema}.contacts_src (id int8 PRIMARY KEY, phone text, note text)`);
  await pool.query(
    `INSERT INTO ${schema}.contacts_src VALUES (1, '+44 20 7946 0958', $1), (2, '+49 30 1234 5678', 'xaaaa')`,
    [CATASTROPHIC],
  );
  for (const t of ["unkeyed", "keyed"]) {
    await pool.query(`CREATE TABLE ${schema}.${t} (id int8 PRIMARY KEY, phone text, note text)`);
  }
  // The platform's policy for the tenant's namespace: phone numbers are hashed, and keyed.
  policyName = `keyed-hash-${tenant.namespace}`;
  await admin.makeApiClient(CustomObjectsApi).createClusterCustomObject({
    ...POLICIES,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: policyName },
      spec: {
        match: { namespaces: [tenant.namespace] },
        enforcement: "Enforce",
        masking: { requiredFor: [{ columnPattern: "phone", transforms: ["hash"] }], requireHashKey: true },
      },
    },
  });
  await admin
    .makeApiClient(CoreV1Api)
    .createNamespace({ body: { metadata: { name: "syncgov-system" } } })
    .catch(() => undefined); // made by an earlier file
  controller = await startController({
    identity: "sec-mask",
    leaseName: "sec-mask",
    extraArgs: ["--executor", "InProcess"],
  });
});

afterAll(async () => {
  await controller?.stop();
  if (tenant) await deleteTenant(tenant);
  await admin
    .makeApiClient(CustomObjectsApi)
    .deleteClusterCustomObject({ ...POLICIES, name: policyName })
    .catch(() => undefined);
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await pool.end();
});

describe("a tenant's hash masking, where policy requires it keyed", () => {
  it("is refused without a key: Blocked, with a condition and an event naming spec.maskingKeySecretRef, and no run", async () => {
    await createAsTenant(
      job(
        "unkeyed",
        "unkeyed",
        { masking: [{ column: "phone", transform: "hash" }] },
        { "syncgov.io/run-now": "1" },
      ),
    );
    const compliant = await condition("unkeyed", "PolicyCompliant");
    expect(compliant).toMatchObject({ status: "False", reason: "Blocked" });
    expect(compliant.message).toContain(
      `${policyName}/masking-key: spec.maskingKeySecretRef: hash masking must be keyed`,
    );
    expect(compliant.message).toContain("spec.masking[0] (column phone) hashes without one");
    // The event follows the status write.
    const blocked = await eventually("the Blocked event", async () =>
      (await eventsOf("unkeyed")).find((e) => e.reason === "Blocked"),
    );
    expect(blocked.note).toContain("spec.maskingKeySecretRef");

    // A run the tenant asks for itself is not admitted either.
    await tenant.kubeConfig.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      ...RUNS,
      namespace: tenant.namespace,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncRun",
        metadata: { name: "unkeyed-by-hand" },
        spec: { jobName: "unkeyed", type: "Batch" },
      },
    });
    const run = await eventually("the run to be held", async () => {
      const r = (await admin.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
        ...RUNS,
        namespace: tenant.namespace,
        name: "unkeyed-by-hand",
      })) as { status?: { phase?: string; queueReason?: string } };
      return r.status?.queueReason ? r.status : undefined;
    });
    expect(run).toMatchObject({ phase: "Queued" });
    expect(run.queueReason).toContain(`blocked by policy: ${policyName}/masking-key`);
    expect(await count("unkeyed")).toBe(0);
  });
});

describe("a tenant's regexReplace pattern", () => {
  it.each([
    { name: "lookahead", pattern: "\\d(?=\\d{4})", construct: "lookaround" },
    { name: "backref", pattern: "(\\d)\\1", construct: "backreferences" },
  ])(
    "that RE2 cannot run is refused at validation, naming the field ($name)",
    async ({ name, pattern, construct }) => {
      const jobName = `re-${name}`;
      await createAsTenant(
        job(
          jobName,
          "keyed",
          {
            masking: [
              { column: "phone", transform: "hash" },
              { column: "note", transform: "regexReplace", pattern },
            ],
            maskingKeySecretRef: { name: "pii-key" },
          },
          { "syncgov.io/run-now": "1" },
        ),
      );
      const valid = await condition(jobName, "Valid");
      expect(valid).toMatchObject({ status: "False", reason: "InvalidSpec" });
      expect(valid.message).toContain(
        `spec.masking[1].pattern: not a pattern RE2 can run: it uses ${construct}`,
      );
      await eventually(`the InvalidSpec event of ${jobName}`, async () =>
        (await eventsOf(jobName)).find((e) => e.reason === "InvalidSpec"),
      );
      expect(await runsOf(jobName)).toEqual([]);
    },
  );

  it("is refused offline by syncgov validate, naming the field", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "syncgov-validate-")), "job.yaml");
    const manifest = job("offline", "keyed", {
      masking: [{ column: "note", transform: "regexReplace", pattern: "a(?!b)" }],
    });
    writeFileSync(
      file,
      JSON.stringify({ ...manifest, metadata: { ...manifest.metadata, namespace: "shop" } }),
    );
    const result = await syncgovCli(["validate", file]);
    expect(result.code).toBe(1);
    expect(result.out).toContain("spec.masking[0].pattern: not a pattern RE2 can run: it uses lookaround");
  });
});

describe("a tenant's keyed job with a pattern that backtracks catastrophically elsewhere", () => {
  it("runs in the controller, which stays responsive, and writes HMAC digests under the tenant's key", {
    timeout: 120_000,
  }, async () => {
    await createAsTenant(
      job(
        "keyed",
        "keyed",
        {
          masking: [
            { column: "phone", transform: "hash" },
            { column: "note", transform: "regexReplace", pattern: "(a+)+$" },
          ],
          maskingKeySecretRef: { name: "pii-key" },
        },
        { "syncgov.io/run-now": "1" },
      ),
    );
    expect(await condition("keyed", "PolicyCompliant")).toMatchObject({ status: "True" });
    // The run executes in the controller's own process (the InProcess executor), on its event loop.
    const run = await eventually(
      "the keyed job's run to finish",
      async () => {
        const status = (await runsOf("keyed"))[0]?.status;
        return status?.phase === "Succeeded" || status?.phase === "Failed" ? status : undefined;
      },
      60_000,
    );
    expect(run.phase, run.message).toBe("Succeeded");
    expect((await fetch(`http://127.0.0.1:${controller!.port}/healthz`)).ok).toBe(true);
    expect(run.message).not.toContain(key);

    const rows = await pool.query<{ id: string; phone: string; note: string }>(
      `SELECT id::text, phone, note FROM ${schema}.keyed ORDER BY id`,
    );
    const hmac = (text: string) => createHmac("sha256", key).update(text).digest("hex");
    expect(rows.rows).toEqual([
      { id: "1", phone: hmac("+44 20 7946 0958"), note: CATASTROPHIC },
      { id: "2", phone: hmac("+49 30 1234 5678"), note: "x***" },
    ]);
    // Not the plain SHA-256 a dictionary of phone numbers reverses.
    expect(rows.rows[0]!.phone).not.toBe(createHash("sha256").update("+44 20 7946 0958").digest("hex"));
  });
});
