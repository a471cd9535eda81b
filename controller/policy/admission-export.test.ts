import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseAllDocuments, stringify } from "yaml";
import type { LabelSelector } from "../api/common.ts";
import type { SyncPolicySpec } from "../api/syncpolicy.ts";
import { admissionPoliciesYaml, admissionPolicyFor, admissionRules } from "./admission-export.ts";
import { compileRule } from "./cel.ts";
import { registerPolicyCommands } from "./cli.ts";
import { effectivePolicy } from "./effective.ts";
import { loadPolicies } from "./policy-files.ts";
import { findPolicyTests, jobSubject, loadPolicyTest } from "./policy-tests.ts";
import { selectorMatches } from "./selector.ts";

const policiesDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "policies");

function spec(fields: Partial<SyncPolicySpec>): SyncPolicySpec {
  return { enforcement: "Enforce", ...fields };
}

describe("admissionPolicyFor", () => {
  it("matches SyncJob creates and updates, and skips updates that change neither spec nor labels", () => {
    const { policy, binding } = admissionPolicyFor({ name: "p", spec: spec({}) });
    expect(policy.metadata?.name).toBe("syncgov-p");
    expect(policy.spec?.failurePolicy).toBe("Fail");
    expect(policy.spec?.matchConstraints?.resourceRules).toEqual([
      {
        apiGroups: ["syncgov.io"],
        apiVersions: ["v1alpha1"],
        operations: ["CREATE", "UPDATE"],
        resources: ["syncjobs"],
      },
    ]);
    expect(policy.spec?.matchConditions?.[0]?.expression).toContain("object.spec != oldObject.spec");
    expect(binding.spec).toEqual({ policyName: "syncgov-p", validationActions: ["Deny"] });
  });

  it("maps enforcement to validation actions", () => {
    const actions = (["Enforce", "Warn", "Audit"] as const).map(
      (enforcement) =>
        admissionPolicyFor({ name: "p", spec: spec({ enforcement }) }).binding.spec?.validationActions,
    );
    expect(actions).toEqual([["Deny"], ["Warn"], ["Audit"]]);
  });

  it("maps the namespace list and selector onto the namespace selector, the job selector onto the object selector", () => {
    const { binding } = admissionPolicyFor({
      name: "p",
      spec: spec({
        match: {
          namespaces: ["payments", "crm"],
          namespaceSelector: {
            matchLabels: { env: "prod" },
            matchExpressions: [{ key: "region", operator: "Exists" }],
          },
          jobSelector: { matchLabels: { tier: "gold" } },
        },
      }),
    });
    expect(binding.spec?.matchResources).toEqual({
      namespaceSelector: {
        matchLabels: { env: "prod" },
        matchExpressions: [
          { key: "region", operator: "Exists" },
          { key: "kubernetes.io/metadata.name", operator: "In", values: ["payments", "crm"] },
        ],
      },
      objectSelector: { matchLabels: { tier: "gold" } },
    });
  });

  it("carries each rule with its name in a one-line message, then masking and shadow requirements", () => {
    const { policy } = admissionPolicyFor({
      name: "p",
      spec: spec({
        rules: [
          {
            name: "qualified",
            expression: "object.spec.target.sql.table.contains('.')",
            message: "qualify\nthe table ",
          },
        ],
        masking: { requiredFor: [{ columnPattern: "(phone|mail)", transforms: ["hash"] }] },
        shadow: { required: true },
      }),
    });
    expect(policy.spec?.validations?.map((v) => v.message)).toEqual([
      "qualified: qualify the table",
      "masking: columns matching /(phone|mail)/ must be masked with hash",
      "shadow: the shadow-table fallback must stay enabled",
    ]);
    expect(policy.spec?.validations?.[0]?.expression).toBe("object.spec.target.sql.table.contains('.')");
  });

  it("exports a required hash key as a rule the API server judges as effectivePolicy() does", () => {
    const rules = admissionRules(spec({ masking: { requireHashKey: true } }));
    expect(rules.map((r) => `${r.name}: ${r.message}`)).toEqual([
      "masking-key: spec.maskingKeySecretRef: hash masking must be keyed (HMAC-SHA256 with a key from a Secret)",
    ]);
    const compiled = compileRule(rules[0]!.expression);
    if (!compiled.ok) throw new Error(compiled.reason);
    const job = (spec: Record<string, unknown>) => ({
      spec: { target: { sql: { keyColumns: ["id"] } }, ...spec },
    });
    const holds = (spec: Record<string, unknown>) =>
      compiled.evaluate({ object: job(spec), namespaceObject: { metadata: { name: "crm" } } });
    expect(holds({ masking: [{ column: "phone", transform: "hash" }] })).toEqual({ holds: false });
    expect(
      holds({
        masking: [{ column: "phone", transform: "hash" }],
        maskingKeySecretRef: { name: "k", key: "key" },
      }),
    ).toEqual({ holds: true });
    expect(holds({ masking: [{ column: "phone", transform: "redact" }] })).toEqual({ holds: true });
    expect(holds({})).toEqual({ holds: true });
  });

  it("writes two YAML documents per policy", () => {
    const yaml = admissionPoliciesYaml([
      { name: "a", spec: spec({}) },
      { name: "b", spec: spec({ enforcement: "Audit" }) },
    ]);
    const docs = parseAllDocuments(yaml).map((d) => d.toJS() as { kind: string; metadata: { name: string } });
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`)).toEqual([
      "ValidatingAdmissionPolicy/syncgov-a",
      "ValidatingAdmissionPolicyBinding/syncgov-a",
      "ValidatingAdmissionPolicy/syncgov-b",
      "ValidatingAdmissionPolicyBinding/syncgov-b",
    ]);
  });
});

describe("the exported policies judge as the controller does", () => {
  // Every case of the shipped tests, judged twice: by effectivePolicy(), and by the exported
  // bindings' selectors and validations (evaluated with the same CEL library the API server's
  // semantics are modelled on). Both must name the same violated rules.
  const cases = findPolicyTests([policiesDir], (line) => {
    throw new Error(line);
  }).flatMap((doc) => {
    const loaded = loadPolicyTest(doc);
    if ("invalid" in loaded) throw new Error(loaded.invalid);
    return loaded.test.cases.map((c) => ({
      loaded,
      c,
      name: `${doc.file.slice(policiesDir.length + 1)} ${c.job}`,
    }));
  });

  it("has cases to compare", () => {
    expect(cases.length).toBeGreaterThan(20);
  });

  it.each(cases.map((x) => [x.name, x] as const))("%s", (_name, { loaded, c }) => {
    const job = loaded.jobs.get(c.job)!;
    const ns = loaded.namespaceOf(job.namespace);
    const controller = effectivePolicy(loaded.policies, jobSubject(job), ns).violations.map(
      (v) => `${v.policy}/${v.rule}`,
    );

    const apiServer: string[] = [];
    const namespaceObject = { metadata: { name: ns.name, labels: ns.labels } };
    for (const policy of loaded.policies) {
      const match = admissionPolicyFor(policy).binding.spec?.matchResources;
      const matches =
        selectorMatches(match?.namespaceSelector as LabelSelector | undefined, ns.labels) &&
        selectorMatches(match?.objectSelector as LabelSelector | undefined, job.job.metadata.labels ?? {});
      if (!matches) continue;
      for (const rule of admissionRules(policy.spec)) {
        // The exported masking check spans every written column, so its estimated cost passes the
        // controller's per-rule budget; in the API server it is the API server's budget that applies.
        const compiled = compileRule(rule.expression, { estimated: Number.POSITIVE_INFINITY });
        if (!compiled.ok) throw new Error(`${policy.name}/${rule.name}: ${compiled.reason}`);
        const outcome = compiled.evaluate({ object: job.job, namespaceObject });
        if (!("holds" in outcome) || !outcome.holds) apiServer.push(`${policy.name}/${rule.name}`);
      }
    }
    // effectivePolicy() reports masking once per column; a validation once per requirement.
    expect([...new Set(apiServer)].sort()).toEqual([...new Set(controller)].sort());
  });
});

describe("syncgov policy export", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  async function exportCli(args: string[]) {
    const out = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    const err = vi.spyOn(console, "error").mockImplementation(() => {});
    const before = process.exitCode;
    try {
      process.exitCode = 0;
      const program = new Command().exitOverride();
      registerPolicyCommands(program);
      await program.parseAsync(["policy", "export", ...args], { from: "user" });
      return {
        code: process.exitCode,
        stdout: out.mock.calls.map((c) => String(c[0])).join(""),
        stderr: err.mock.calls.map((c) => String(c[0])).join("\n"),
      };
    } finally {
      process.exitCode = before;
      out.mockRestore();
      err.mockRestore();
    }
  }

  it("exports every shipped policy from the policies directory, to stdout or to a file", async () => {
    const shipped = loadPolicies([policiesDir]);
    expect(shipped.problems).toEqual([]);
    const toStdout = await exportCli([policiesDir]);
    expect(toStdout.code).toBe(0);
    expect(toStdout.stdout).toBe(admissionPoliciesYaml(shipped.policies));
    expect(parseAllDocuments(toStdout.stdout)).toHaveLength(shipped.policies.length * 2);

    const dir = mkdtempSync(join(tmpdir(), "syncgov-export-"));
    dirs.push(dir);
    const file = join(dir, "vap.yaml");
    const toFile = await exportCli([join(policiesDir, "baseline", "baseline.yaml"), "--output", file]);
    expect(toFile.code).toBe(0);
    expect(readFileSync(file, "utf8")).toContain("name: syncgov-baseline");
  });

  it("refuses policies whose rules do not compile, naming the rule and position", async () => {
    const dir = mkdtempSync(join(tmpdir(), "syncgov-export-"));
    dirs.push(dir);
    const file = join(dir, "p.yaml");
    writeFileSync(
      file,
      stringify({
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncPolicy",
        metadata: { name: "broken" },
        spec: { rules: [{ name: "typo", expression: "object.spec.mode = 'batch'", message: "m" }] },
      }),
    );
    const r = await exportCli([file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(
      /ERROR .*p\.yaml#1 SyncPolicy\/broken spec\.rules\[0\]\.expression \(rule typo\): 1:\d+: /,
    );
  });
});
