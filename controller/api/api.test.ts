import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  baseJob,
  EXAMPLE_FILES,
  INJECTION_ATTEMPTS,
  INVALID_CASES,
  loadYaml,
} from "../../test/support/manifests.ts";
import { toStructural } from "./crd.ts";
import {
  CHART_CRD_DIR,
  CHART_DIR,
  CHART_POLICY_DIR,
  CRD_DIR,
  generatedFiles,
  renderAdmissionPolicies,
  renderCrds,
  staleFiles,
} from "./generate.ts";
import { quoteIdent, quoteTable } from "./identifiers.ts";
import { validateManifest, validateSyncJob } from "./validate.ts";

describe("examples", () => {
  it.each(EXAMPLE_FILES)("%s is valid", (file) => {
    for (const manifest of loadYaml(file)) {
      const result = validateManifest(manifest);
      expect(result.ok ? [] : result.errors).toEqual([]);
    }
  });

  it("fills defaults the way the API server does", () => {
    const result = validateSyncJob(baseJob());
    if (!result.ok) throw new Error(JSON.stringify(result.errors));
    expect(result.value.spec.priority).toBe(0);
    expect(result.value.spec.successfulRunsHistoryLimit).toBe(3);
    expect(result.value.spec.source.sql?.connectionSecretRef.key).toBe("url");
  });
});

describe("invalid manifests", () => {
  it("the table has at least 20 distinct cases", () => {
    expect(new Set(INVALID_CASES.map((c) => c.name)).size).toBeGreaterThanOrEqual(20);
  });

  it.each(INVALID_CASES.map((c) => [c.name, c] as const))("%s is rejected naming its field", (_name, c) => {
    const result = validateManifest(c.manifest);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors.map((e) => e.field)).toContainEqual(expect.stringContaining(c.field));
  });
});

describe("identifier injection", () => {
  it.each(INJECTION_ATTEMPTS.map((a) => [JSON.stringify(a), a]))("%s is rejected", (_label, attempt) => {
    const asTable = baseJob();
    (asTable.spec as { target: { sql: { table: string } } }).target.sql.table = attempt;
    const asKey = baseJob();
    (asKey.spec as { target: { sql: { keyColumns: string[] } } }).target.sql.keyColumns = [attempt];
    expect(validateSyncJob(asTable).ok).toBe(false);
    expect(validateSyncJob(asKey).ok).toBe(false);
    expect(() => quoteTable(attempt)).toThrow(/invalid SQL table reference/);
    expect(() => quoteIdent(attempt)).toThrow(/invalid SQL identifier/);
  });

  it("quotes what it admits", () => {
    expect(quoteTable("analytics.orders")).toBe('"analytics"."orders"');
    expect(quoteIdent("Order_ID")).toBe('"Order_ID"');
  });
});

describe("CRDs", () => {
  it("committed crds/ match the zod schemas (run 'npm run generate' after changing them)", () => {
    for (const { file, yaml } of renderCrds()) {
      expect(readFileSync(join(CRD_DIR, file), "utf8"), file).toBe(yaml);
    }
  });

  it("the chart's copies of the CRDs and baseline policies are current (run 'npm run generate')", () => {
    const files = generatedFiles();
    expect(files.filter((f) => f.dir === CHART_CRD_DIR).map((f) => f.file)).toEqual([
      ...renderCrds().map((c) => c.file),
      renderAdmissionPolicies().file,
    ]);
    expect(files.filter((f) => f.dir === CHART_POLICY_DIR).length).toBeGreaterThan(0);
    for (const { dir, file, text } of files) {
      const path = join(dir, file);
      expect(existsSync(path) ? readFileSync(path, "utf8") : "(missing)", path).toBe(text);
    }
    expect(staleFiles(files)).toEqual([]);
  });

  it("the chart's appVersion is the package version", () => {
    const pkg = JSON.parse(readFileSync(join(CHART_DIR, "..", "..", "package.json"), "utf8")) as {
      version: string;
    };
    const chart = parse(readFileSync(join(CHART_DIR, "Chart.yaml"), "utf8")) as { appVersion: string };
    expect(chart.appVersion).toBe(pkg.version);
  });

  it("every field of every CRD in crds/ has a description, so that kubectl explain documents it", () => {
    const files = renderCrds().map((c) => c.file);
    expect(files.length).toBeGreaterThan(0);
    let nodes = 0;
    const undescribed: string[] = [];
    for (const file of files) {
      const crd = parse(readFileSync(join(CRD_DIR, file), "utf8")) as {
        spec: { names: { kind: string }; versions: { name: string; schema: { openAPIV3Schema: unknown } }[] };
      };
      for (const version of crd.spec.versions) {
        const root = version.schema.openAPIV3Schema as SchemaNode;
        for (const { path, node } of schemaNodes(root, `${crd.spec.names.kind}/${version.name}`)) {
          nodes++;
          if (typeof node.description !== "string" || node.description.trim() === "") undescribed.push(path);
        }
      }
    }
    expect(
      undescribed,
      `${undescribed.length} of ${nodes} schema nodes have no description; add .describe() in controller/api and run 'npm run generate'`,
    ).toEqual([]);
  });

  it("structural conversion drops closed-object markers and keeps maps", () => {
    const out = toStructural({
      type: "object",
      additionalProperties: false,
      properties: {
        labels: {
          type: "object",
          additionalProperties: { type: "string" },
          propertyNames: { pattern: "^[a-z]+$" },
        },
        n: { type: "integer", minimum: -Number.MAX_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER },
      },
    });
    expect(out).toEqual({
      type: "object",
      properties: {
        labels: {
          type: "object",
          additionalProperties: { type: "string" },
          "x-kubernetes-validations": [
            { rule: 'self.all(k, k.matches("^[a-z]+$"))', message: "keys must match ^[a-z]+$" },
          ],
        },
        n: { type: "integer" },
      },
    });
  });

  it("refuses unions, which a structural schema cannot express", () => {
    expect(() => toStructural({ anyOf: [{ type: "string" }, { type: "integer" }] })).toThrow(/structural/);
  });
});

interface SchemaNode {
  description?: unknown;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  additionalProperties?: SchemaNode | boolean;
}

/**
 * Every node of a CRD's schema with its path: the root, each property, array items (`[*]`) and map
 * values (`{*}`). The root's metadata is left out: the API server rejects a CRD whose metadata schema
 * says anything but `type: object` (plus restrictions on name and generateName), a description
 * included, so kubectl explain takes its documentation from ObjectMeta.
 */
function schemaNodes(root: SchemaNode, rootPath: string): { path: string; node: SchemaNode }[] {
  const out: { path: string; node: SchemaNode }[] = [];
  const walk = (node: SchemaNode, path: string, isRoot: boolean) => {
    out.push({ path, node });
    for (const [name, child] of Object.entries(node.properties ?? {})) {
      if (isRoot && name === "metadata") continue;
      walk(child, `${path}.${name}`, false);
    }
    if (node.items) walk(node.items, `${path}[*]`, false);
    if (typeof node.additionalProperties === "object") walk(node.additionalProperties, `${path}{*}`, false);
  };
  walk(root, rootPath, true);
  return out;
}
