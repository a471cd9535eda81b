import { spawn } from "node:child_process";
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig, testEnv, uniqueName } from "../support/env.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";
import { repoPath } from "../support/manifests.ts";

/**
 * The shadow-table fallback end to end, through the controller: three failed validations (the test
 * writes to the target behind the job's back) put the job in shadow mode, nothing is swapped before
 * approval, `syncgov approve` swaps while readers loop on the table, `syncgov rollback` swaps back.
 */
const kc = kubeConfig();
const core = kc.makeApiClient(CoreV1Api);
const custom = kc.makeApiClient(CustomObjectsApi);
const JOBS = { group: "syncgov.io", version: "v1alpha1", plural: "syncjobs" };
const namespace = uniqueName("shadow");
const schema = `shadow_${Date.now().toString(36)}`;
const pool = new pg.Pool({ connectionString: testEnv().databaseUrl, max: 8 });
let controller: RunningController;

interface Job {
  status?: {
    phase?: string;
    shadow?: { state?: string; table?: string; retiredTable?: string; consecutiveFailedValidations?: number };
    lastValidation?: { result?: string; run?: string };
  };
}

const readJob = async () =>
  (await custom.getNamespacedCustomObject({ ...JOBS, namespace, name: "accounts" })) as Job;
const count = async (table: string) =>
  Number((await pool.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);

function cli(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [
      repoPath("controller/cli.ts"),
      ...args,
      "--kubeconfig",
      testEnv().kubeconfig,
    ]);
    let out = "";
    child.stdout.on("data", (c) => {
      out += c;
    });
    child.stderr.on("data", (c) => {
      out += c;
    });
    child.on("close", (code) => resolve({ code: code ?? -1, out }));
  });
}

async function runNow(token: string): Promise<void> {
  await custom.patchNamespacedCustomObject(
    {
      ...JOBS,
      namespace,
      name: "accounts",
      body: { metadata: { annotations: { "syncgov.io/run-now": token } } },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}

beforeAll(async () => {
  await installCrds();
  await kubectl(["delete", "syncpolicies", "--all"]);
  await core.createNamespace({ body: { metadata: { name: "syncgov-system" } } }).catch(() => undefined);
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  await core.createNamespacedSecret({
    namespace,
    body: { metadata: { name: "db" }, stringData: { url: testEnv().databaseUrl } },
  });
  await pool.query(`CREATE SCHEMA ${schema}`);
  for (const t of ["source", "accounts"]) {
    await pool.query(
      `CREATE TABLE ${schema}.${t} (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL)`,
    );
  }
  await pool.query(
    `INSERT INTO ${schema}.source SELECT g, 'owner ' || g, g * 1.5 FROM generate_series(1, 2000) g`,
  );
  controller = await startController({
    identity: "shadow",
    leaseName: uniqueName("lease"),
    extraArgs: ["--executor", "InProcess"],
  });
  await custom.createNamespacedCustomObject({
    ...JOBS,
    namespace,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncJob",
      metadata: { name: "accounts" },
      spec: {
        source: {
          sql: { connectionSecretRef: { name: "db" }, table: `${schema}.source`, keyColumns: ["id"] },
        },
        target: {
          sql: { connectionSecretRef: { name: "db" }, table: `${schema}.accounts`, keyColumns: ["id"] },
        },
        mode: "batch",
        schedule: "0 0 29 2 1",
        successfulRunsHistoryLimit: 10,
        shadow: { failedValidationsBeforeShadow: 3, retiredTableTtlSeconds: 3600 },
      },
    },
  });
});

afterAll(async () => {
  await controller?.stop();
  await core.deleteNamespace({ name: namespace }).catch(() => undefined);
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await pool.end();
});

describe("shadow-table fallback through the controller", () => {
  it("three failed validations → shadow, approval → atomic swap under readers, rollback", {
    timeout: 180_000,
  }, async () => {
    // Three runs, each after a write behind the job's back: every validation fails.
    for (let i = 1; i <= 3; i++) {
      await pool.query(
        `INSERT INTO ${schema}.accounts VALUES (${100_000 + i}, 'intruder', 0) ON CONFLICT DO NOTHING`,
      );
      await runNow(`fail-${i}`);
      // The third failure switches to shadow mode, which stops counting: either sign will do.
      await eventually(
        `validation ${i} failed`,
        async () => {
          const shadow = (await readJob()).status?.shadow;
          return (shadow?.consecutiveFailedValidations ?? 0) >= i || (shadow?.state ?? "None") !== "None"
            ? true
            : undefined;
        },
        60_000,
      );
    }

    const awaiting = await eventually(
      "AwaitingApproval",
      async () => {
        const job = await readJob();
        return job.status?.shadow?.state === "AwaitingApproval" ? job : undefined;
      },
      90_000,
    );
    const shadowTable = awaiting.status!.shadow!.table!;
    expect(shadowTable).toBe(`${schema}.accounts__shadow`);
    // Nothing is swapped before approval: the target still has the intruders, the shadow is a clean copy.
    expect(await count(`${schema}.accounts`)).toBe(2003);
    expect(await count(shadowTable)).toBe(2000);

    // Readers loop on the target during the swap; none may ever find it missing.
    let reading = true;
    const errors: string[] = [];
    const seen = new Set<number>();
    const readers = Array.from({ length: 4 }, async () => {
      while (reading) {
        try {
          seen.add(await count(`${schema}.accounts`));
        } catch (err) {
          errors.push(String(err));
        }
      }
    });
    const approve = await cli(["approve", `${namespace}/accounts`]);
    expect(approve.code, approve.out).toBe(0);
    const swapped = await eventually(
      "Swapped",
      async () => {
        const job = await readJob();
        return job.status?.shadow?.state === "Swapped" ? job : undefined;
      },
      60_000,
    );
    await new Promise((r) => setTimeout(r, 300));
    reading = false;
    await Promise.all(readers);
    expect(errors).toEqual([]);
    expect([...seen].sort()).toEqual([2000, 2003]);
    expect(await count(`${schema}.accounts`)).toBe(2000);
    const retired = swapped.status!.shadow!.retiredTable!;
    expect(retired).toMatch(/accounts__retired_/);
    expect(await count(retired)).toBe(2003);

    const rollback = await cli(["rollback", `${namespace}/accounts`]);
    expect(rollback.code, rollback.out).toBe(0);
    await eventually(
      "rolled back",
      async () => {
        const job = await readJob();
        return job.status?.shadow?.state === "None" ? job : undefined;
      },
      60_000,
    );
    expect(await count(`${schema}.accounts`)).toBe(2003);

    // kubectl describe tells the story.
    const described = await kubectlOk(["describe", "syncjob", "-n", namespace, "accounts"]);
    for (const reason of ["ValidationFailed", "ShadowFilled", "RunCreated"])
      expect(described).toContain(reason);
    console.log(described.slice(described.indexOf("Events:")));
  });
});
