import { mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, CustomObjectsApi, EventsV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNCJOBS, SYNCRUNS } from "../../controller/kube/resource.ts";
import { syncgovCli } from "../support/cli.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig, testEnv } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { createTenant, deleteTenant, type Tenant } from "../support/tenant.ts";

/**
 * Finding 1 of the security review: `source.file.path` accepted any absolute path, and runs execute
 * in the controller's pod, so a tenant could load the controller's own credentials into a table it
 * owns. Here the suite grants the OS temporary directory to file sources (SYNCGOV_FILE_ROOTS, as the
 * chart's fileSources.roots would grant a volume); the controller's kubeconfig — the credentials a
 * hostile tenant wants — lies outside it. The tenant tries it by path, by `..`, through /proc, and
 * through a symlink placed in granted storage.
 */
const admin = kubeConfig();
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
const RUNS = { group: SYNCRUNS.group, version: SYNCRUNS.version, plural: SYNCRUNS.plural };
const granted = tmpdir();
const secretFile = testEnv().kubeconfig; // the controller's credentials
const FIELDS = [{ name: "line", start: 0, length: 200 }];
let tenant: Tenant;
let controller: RunningController | undefined;
let workDir: string;

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

function jobManifest(name: string, path: string, annotations?: Record<string, string>) {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name, ...(annotations ? { annotations } : {}) },
    spec: {
      mode: "batch",
      schedule: "0 2 * * *",
      source: { file: { path, fields: FIELDS } },
      target: { sql: { connectionSecretRef: { name: "db" }, table: "loot.stolen", keyColumns: ["line"] } },
    },
  };
}

async function createAsTenant(body: object): Promise<void> {
  await tenant.kubeConfig
    .makeApiClient(CustomObjectsApi)
    .createNamespacedCustomObject({ ...JOBS, namespace: tenant.namespace, body });
}

async function validCondition(name: string): Promise<Condition> {
  return eventually(`the Valid condition of ${name}`, async () => {
    const job = (await admin.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      ...JOBS,
      namespace: tenant.namespace,
      name,
    })) as { status?: { conditions?: Condition[] } };
    return job.status?.conditions?.find((c) => c.type === "Valid");
  });
}

/** `syncgov` offline: the granted roots come from --file-root or the default (/data). */
const syncgov = (args: string[]) => syncgovCli(args, { SYNCGOV_FILE_ROOTS: "" });

beforeAll(async () => {
  await installCrds();
  tenant = await createTenant("sec-file");
  await tenant.kubeConfig.makeApiClient(CoreV1Api).createNamespacedSecret({
    namespace: tenant.namespace,
    body: { metadata: { name: "db" }, stringData: { url: testEnv().databaseUrl } },
  });
  workDir = mkdtempSync(join(granted, "syncgov-sec-file-"));
  controller = await startController({
    identity: "sec-file",
    leaseName: "sec-file",
    env: { SYNCGOV_FILE_ROOTS: granted },
  });
});

afterAll(async () => {
  await controller?.stop();
  if (tenant) await deleteTenant(tenant);
});

describe("a tenant's file source", () => {
  it.each([
    { name: "direct", path: () => secretFile, reason: /outside the storage the platform granted/ },
    {
      name: "escape",
      path: () => `${granted}/../${secretFile.slice(1)}`,
      reason: /must not contain '\.' or '\.\.' segments/,
    },
    { name: "proc", path: () => "/proc/self/environ", reason: /outside the storage the platform granted/ },
  ])(
    "is refused by the live controller when it names the controller's files ($name)",
    async ({ name, path, reason }) => {
      const jobName = `steal-${name}`;
      await createAsTenant(jobManifest(jobName, path(), { "syncgov.io/run-now": "now" }));
      const valid = await validCondition(jobName);
      expect(valid).toMatchObject({ status: "False", reason: "InvalidSpec" });
      expect(valid.message).toContain("spec.source.file.path");
      expect(valid.message).toMatch(reason);
      // The event follows the status write.
      await eventually(`the InvalidSpec event of ${jobName}`, async () => {
        const events = await admin
          .makeApiClient(EventsV1Api)
          .listNamespacedEvent({ namespace: tenant.namespace, fieldSelector: `regarding.name=${jobName}` });
        return events.items.some((e) => e.reason === "InvalidSpec") ? true : undefined;
      });
      // An invalid job gets no run, the manual request included.
      const runs = await admin.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
        ...RUNS,
        namespace: tenant.namespace,
        labelSelector: `syncgov.io/job=${jobName}`,
      });
      expect((runs as { items: unknown[] }).items).toEqual([]);
    },
  );

  it("is refused at run time when a symlink in granted storage points outside it", async () => {
    const link = join(workDir, "innocent.dat");
    symlinkSync(secretFile, link);
    await createAsTenant(jobManifest("steal-link", link, { "syncgov.io/run-now": "now" }));
    expect(await validCondition("steal-link")).toMatchObject({ status: "True" });
    const run = await eventually(
      "the run of steal-link to finish",
      async () => {
        const list = (await admin.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
          ...RUNS,
          namespace: tenant.namespace,
          labelSelector: "syncgov.io/job=steal-link",
        })) as { items: { status?: { phase?: string; message?: string; rowsRead?: number } }[] };
        const status = list.items[0]?.status;
        return status?.phase === "Failed" || status?.phase === "Succeeded" ? status : undefined;
      },
      60_000,
    );
    expect(run.phase).toBe("Failed");
    expect(run.message).toContain(`spec.source.file.path ${link}: resolves to`);
    expect(run.message).toContain("outside the storage the platform granted");
    expect(run.rowsRead ?? 0).toBe(0);
  });

  it("is read when it lies in granted storage", async () => {
    const file = join(workDir, "fine.dat");
    writeFileSync(file, "hello\n");
    await createAsTenant(jobManifest("fine", file));
    expect(await validCondition("fine")).toMatchObject({ status: "True" });
  });
});

describe("syncgov validate, offline", () => {
  it("refuses a file path outside the granted storage, naming the field", async () => {
    const dir = mkdtempSync(join(tmpdir(), "syncgov-validate-"));
    const outside = join(dir, "outside.yaml");
    writeFileSync(
      outside,
      JSON.stringify(jobManifest("steal", "/var/run/secrets/kubernetes.io/serviceaccount/token")),
    );
    const byDefault = await syncgov(["validate", outside]);
    expect(byDefault.code).toBe(1);
    expect(byDefault.out).toMatch(
      /spec\.source\.file\.path: is outside the storage the platform granted for file sources \(\/data\)/,
    );

    const inside = join(dir, "inside.yaml");
    writeFileSync(inside, JSON.stringify(jobManifest("ledger", "/srv/exports/ledger.dat")));
    const granted = await syncgov(["validate", "--file-root", "/srv/exports", inside]);
    expect(granted.code, granted.out).toBe(0);
    const notGranted = await syncgov(["validate", "--file-root", "/srv/other", inside]);
    expect(notGranted.code).toBe(1);
    expect(notGranted.out).toContain("spec.source.file.path");
  });
});
