import { CoreV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { z } from "zod";
import { SyncJobSpec } from "../../controller/api/syncjob.ts";
import { validateManifest, validateSyncJob } from "../../controller/api/validate.ts";
import { readManifests } from "../../controller/kube/apply.ts";
import { arbitraryOf } from "../support/arbitrary.ts";
import { kubeConfig, uniqueName } from "../support/env.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";
import {
  baseJob,
  EXAMPLE_FILES,
  INJECTION_ATTEMPTS,
  INVALID_CASES,
  loadYaml,
  repoPath,
} from "../support/manifests.ts";

const namespace = uniqueName("api");
const core = kubeConfig().makeApiClient(CoreV1Api);
const custom = kubeConfig().makeApiClient(CustomObjectsApi);

beforeAll(async () => {
  await installCrds();
  await core.createNamespace({ body: { metadata: { name: namespace } } });
});

afterAll(async () => {
  await kubectl(["delete", "syncpolicy", "--all", "--wait=false"]);
  await core.deleteNamespace({ name: namespace });
});

describe("the CRDs on a real API server", () => {
  it("are Established and every example applies with kubectl apply", async () => {
    const crds = await kubectlOk(["get", "crd", "-o", "jsonpath={.items[*].metadata.name}"]);
    expect(crds.split(" ")).toEqual(
      expect.arrayContaining(["syncjobs.syncgov.io", "syncruns.syncgov.io", "syncpolicies.syncgov.io"]),
    );
    for (const file of EXAMPLE_FILES) {
      const verb = loadYaml(file).some((m) => (m.metadata as { generateName?: string }).generateName)
        ? "create"
        : "apply";
      const out = await kubectlOk([verb, "-n", namespace, "-f", repoPath(file)]);
      expect(out).toMatch(/(created|configured|unchanged)/);
    }
  });

  it("are served exactly as the files in crds/ say, every x-kubernetes-* key included", async () => {
    const files = (readManifests([repoPath("crds")]) as unknown as CrdManifest[]).filter(
      (o) => (o as { kind?: string }).kind === "CustomResourceDefinition",
    );
    expect(files).toHaveLength(3);
    for (const file of files) {
      const served = JSON.parse(
        await kubectlOk(["get", "crd", file.metadata.name, "-o", "json"]),
      ) as CrdManifest;
      expect(served.spec.group).toBe(file.spec.group);
      expect(served.spec.names).toEqual(expect.objectContaining(file.spec.names));
      expect(served.spec.versions).toEqual(file.spec.versions);
      // The rules this hole let through: both are in the files, and the server enforces them.
      expect(xKeys(served.spec.versions)).toEqual(xKeys(file.spec.versions));
    }
    expect(xKeys(files.map((f) => f.spec.versions))).toEqual(
      expect.arrayContaining(["x-kubernetes-validations", "x-kubernetes-list-type"]),
    );
  });

  it("kubectl get shows the printer columns, by name and by short name", async () => {
    const table = await kubectlOk(["get", "syncjobs", "-n", namespace]);
    expect(table.split("\n")[0]).toMatch(/^NAME\s+MODE\s+PHASE\s+CIRCUIT\s+SHADOW\s+VALIDATION\s+AGE/);
    expect(table).toMatch(/orders-to-warehouse\s+realtime/);
    expect(table).toMatch(/customers-nightly\s+batch/);
    expect(await kubectlOk(["get", "sj", "-n", namespace, "-o", "name"])).toContain(
      "syncjob.syncgov.io/ledger-import",
    );
    expect(await kubectlOk(["get", "sr", "-n", namespace, "-o", "wide"])).toMatch(
      /^NAME\s+JOB\s+TYPE\s+PHASE\s+WRITTEN\s+REASON\s+AGE/,
    );
    expect(await kubectlOk(["get", "sp"])).toMatch(
      /^NAME\s+ENFORCEMENT\s+READY\s+MATCHED\s+VIOLATIONS\s+AGE/,
    );
    expect(await kubectlOk(["get", "syncgov", "-n", namespace, "-o", "name"])).toContain(
      "syncrun.syncgov.io/",
    );
  });

  it("kubectl explain shows the field documentation", async () => {
    const out = await kubectlOk(["explain", "syncjob.spec.source"]);
    expect(out).toContain("exactly one of kafka, sql or file");
    expect(out).toMatch(/kafka\s+<Object>/);
    const table = await kubectlOk(["explain", "syncjob.spec.target.sql.table"]);
    expect(table).toContain("'schema.table'");
  });
});

interface CrdManifest {
  metadata: { name: string };
  spec: { group: string; names: Record<string, unknown>; versions: unknown[] };
}

/** Every distinct x-kubernetes-* key anywhere in the value, sorted. */
function xKeys(value: unknown, found = new Set<string>()): string[] {
  if (Array.isArray(value)) for (const v of value) xKeys(v, found);
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (k.startsWith("x-kubernetes-")) found.add(k);
      xKeys(v, found);
    }
  }
  return [...found].sort();
}

describe("invalid manifests", () => {
  it.each(INVALID_CASES.map((c) => [c.name, c] as const))(
    "%s is rejected at apply time naming its field",
    async (_n, c) => {
      const r = await kubectl(["apply", "-n", namespace, "-f", "-"], stringify(c.manifest));
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(c.field);
      const zod = validateManifest(c.manifest);
      expect(zod.ok ? [] : zod.errors.map((e) => e.field)).toContainEqual(expect.stringContaining(c.field));
    },
  );

  it("identifier injection attempts are rejected by the API server", async () => {
    for (const attempt of INJECTION_ATTEMPTS) {
      const manifest = baseJob();
      (manifest.metadata as { name: string }).name = "injection";
      (manifest.spec as { target: { sql: { table: string } } }).target.sql.table = attempt;
      const r = await kubectl(["apply", "-n", namespace, "-f", "-"], JSON.stringify(manifest));
      expect(r.code, `${JSON.stringify(attempt)} was accepted`).not.toBe(0);
      expect(r.stderr).toContain("spec.target.sql.table");
    }
  });
});

describe("the two validators agree", () => {
  const specSchema = z.toJSONSchema(SyncJobSpec, { target: "openapi-3.0", io: "input" });
  const manifests = arbitraryOf(specSchema as never).map((spec) => ({
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name: uniqueName("gen") },
    spec,
  }));

  async function serverAccepts(manifest: object): Promise<string | undefined> {
    try {
      await custom.createNamespacedCustomObject({
        group: "syncgov.io",
        version: "v1alpha1",
        namespace,
        plural: "syncjobs",
        body: manifest,
        dryRun: "All",
      });
      return undefined;
    } catch (err) {
      return String((err as { body?: unknown }).body ?? err);
    }
  }

  it("the API server accepts 200 generated objects that the zod schemas accept", async () => {
    const valid = fc.sample(
      manifests.filter((m) => validateSyncJob(m).ok),
      { numRuns: 200, seed: 20261122 },
    );
    expect(valid).toHaveLength(200);
    const rejected: string[] = [];
    for (let i = 0; i < valid.length; i += 10) {
      const batch = valid.slice(i, i + 10);
      const results = await Promise.all(batch.map(serverAccepts));
      results.forEach((r, j) => {
        if (r) rejected.push(`${JSON.stringify(batch[j])}\n→ ${r}`);
      });
    }
    expect(rejected.slice(0, 3)).toEqual([]);
  });

  it("the API server rejects generated objects that the zod schemas reject", async () => {
    const invalid = fc.sample(
      manifests.filter((m) => !validateSyncJob(m).ok),
      { numRuns: 100, seed: 7 },
    );
    const accepted: string[] = [];
    for (let i = 0; i < invalid.length; i += 10) {
      const batch = invalid.slice(i, i + 10);
      const results = await Promise.all(batch.map(serverAccepts));
      results.forEach((r, j) => {
        if (r === undefined) {
          const errs = validateSyncJob(batch[j]);
          accepted.push(`${JSON.stringify(batch[j])}\nzod: ${errs.ok ? "" : JSON.stringify(errs.errors)}`);
        }
      });
    }
    expect(accepted.slice(0, 3)).toEqual([]);
  });
});
