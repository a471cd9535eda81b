import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Command } from "commander";
import { afterEach, describe, expect, it, vi } from "vitest";
import { stringify } from "yaml";
import { registerPolicyCommands } from "./cli.ts";
import { runPolicyTests } from "./policy-tests.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Writes files (YAML documents from objects) into a fresh directory and returns its path. */
function workspace(files: Record<string, object | object[] | string>): string {
  const dir = mkdtempSync(join(tmpdir(), "syncgov-policy-test-"));
  dirs.push(dir);
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    const text =
      typeof content === "string"
        ? content
        : (Array.isArray(content) ? content : [content]).map((d) => stringify(d)).join("---\n");
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

function policy(name: string, spec: object): object {
  return { apiVersion: "syncgov.io/v1alpha1", kind: "SyncPolicy", metadata: { name }, spec };
}

const qualifiedTables = policy("qualified-tables", {
  enforcement: "Enforce",
  rules: [
    {
      name: "schema-qualified",
      expression: "object.spec.target.sql.table.contains('.')",
      message: "qualify the table",
    },
  ],
});

function job(namespace: string, name: string, table: string, labels: Record<string, string> = {}): object {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name, namespace, labels },
    spec: {
      source: { kafka: { topic: "orders.cdc" } },
      target: { sql: { connectionSecretRef: { name: "db" }, table, keyColumns: ["id"] } },
      mode: "realtime",
    },
  };
}

function policyTest(fields: object): object {
  return { apiVersion: "cli.syncgov.io/v1alpha1", kind: "PolicyTest", ...fields };
}

function run(dir: string) {
  const lines: string[] = [];
  const report = runPolicyTests([dir], (l) => lines.push(l));
  return { report, lines, text: lines.join("\n") };
}

describe("runPolicyTests", () => {
  it("passes when every case gets its expected verdict and violations, one line per case", () => {
    const dir = workspace({
      "policy.yaml": qualifiedTables,
      "tests/cases.yaml": policyTest({
        policies: ["../policy.yaml"],
        resources: [job("a", "good", "s.orders"), job("a", "bad", "orders")],
        cases: [
          { job: "a/good", expect: "Admit", violations: [] },
          { job: "a/bad", expect: "Block", violations: ["schema-qualified"] },
        ],
      }),
    });
    const { report, lines } = run(dir);
    expect(report).toMatchObject({ ok: true, passed: 2, failed: 0, errors: 0, testFiles: 1 });
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^PASS .*tests\/cases\.yaml a\/good: Admit$/);
    expect(lines[1]).toMatch(/^PASS .* a\/bad: Block \(qualified-tables\/schema-qualified\)$/);
    expect(lines[2]).toBe("PASS: 2 passed, 0 failed, 0 errors in 1 test files");
  });

  it("fails the run on a wrong expected verdict, saying what it got", () => {
    const dir = workspace({
      "policy.yaml": qualifiedTables,
      "test.yaml": policyTest({
        policies: ["policy.yaml"],
        resources: [job("a", "bad", "orders"), job("a", "good", "s.orders")],
        cases: [
          { job: "a/bad", expect: "Admit" },
          { job: "a/good", expect: "Admit" },
        ],
      }),
    });
    const { report, text } = run(dir);
    expect(report).toMatchObject({ ok: false, passed: 1, failed: 1, errors: 0 });
    expect(text).toMatch(/^FAIL .*test\.yaml a\/bad: expected Admit, got Block$/m);
    expect(text).toMatch(/^FAIL: 1 passed, 1 failed, 0 errors in 1 test files$/m);
  });

  it("compares violations as an exact set, by rule or by policy/rule", () => {
    const twoRules = policy("two", {
      enforcement: "Warn",
      rules: [
        { name: "qualified", expression: "object.spec.target.sql.table.contains('.')", message: "qualify" },
        { name: "team", expression: "has(object.metadata.labels.team)", message: "a team label" },
      ],
    });
    const dir = workspace({
      "p.yaml": twoRules,
      "t.yaml": policyTest({
        policies: ["p.yaml"],
        resources: [job("a", "bad", "orders")],
        cases: [
          { job: "a/bad", expect: "Warn", violations: ["qualified"] },
          { job: "a/bad", expect: "Warn", violations: ["two/qualified", "team", "masking"] },
          { job: "a/bad", expect: "Warn", violations: ["two/team", "qualified"] },
        ],
      }),
    });
    const { report, lines } = run(dir);
    expect(report.results.map((r) => r.passed)).toEqual([false, false, true]);
    expect(lines[0]).toContain("unexpected violations: two/team (a team label)");
    expect(lines[1]).toContain("missing violations: masking");
  });

  it("reports a rule that does not compile with its name and position, and fails the run", () => {
    const broken = policy("broken", {
      rules: [
        { name: "fine", expression: "true", message: "never" },
        { name: "half-written", expression: "object.spec.mode ==", message: "unfinished" },
        {
          name: "misspelt",
          expression: "has(object.spec.schedule) || objct.spec.mode == 'realtime'",
          message: "typo",
        },
      ],
    });
    const dir = workspace({
      "p.yaml": broken,
      "t.yaml": policyTest({
        policies: ["p.yaml"],
        resources: [job("a", "j", "s.t")],
        cases: [{ job: "a/j", expect: "Admit" }],
      }),
    });
    const { report, lines } = run(dir);
    expect(report.ok).toBe(false);
    expect(report.results).toEqual([]);
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^ERROR .*p\.yaml#1 SyncPolicy\/broken spec\.rules\[1\]\.expression \(rule half-written\): 1:18: found = but expecting/,
      ),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^ERROR .*p\.yaml#1 SyncPolicy\/broken spec\.rules\[2\]\.expression \(rule misspelt\): 1:30: undeclared reference to 'objct'/,
      ),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/case a\/j: not evaluated, the test's files have errors$/),
    );
    expect(lines.at(-1)).toMatch(/^FAIL: 0 passed, 0 failed, 3 errors/);
  });

  it("validates policies and jobs with the schemas first, naming the file and the field", () => {
    const dir = workspace({
      "p.yaml": policy("bad-policy", { rules: [{ name: "No_Caps", expression: "true", message: "m" }] }),
      "jobs.yaml": [job("a", "ok", "s.t"), job("a", "bad-table", "s.t; drop table x")],
      "t.yaml": policyTest({
        policies: ["p.yaml"],
        resources: ["jobs.yaml", { ...job("a", "inline", "s.t"), spec: { mode: "sometimes" } }],
        cases: [{ job: "a/ok", expect: "Admit" }],
      }),
    });
    const { report, text } = run(dir);
    expect(report.ok).toBe(false);
    expect(text).toMatch(
      /ERROR .*p\.yaml#1 SyncPolicy\/bad-policy: spec\.rules\[0\]\.name: must be a lowercase name/,
    );
    expect(text).toMatch(/ERROR .*jobs\.yaml#2 SyncJob\/bad-table: spec\.target\.sql\.table: must be/);
    expect(text).toMatch(/ERROR .*t\.yaml#1 resources\[1\] SyncJob\/inline: spec\.source: .*spec\.mode: /);
  });

  it("reports an invalid PolicyTest, a case naming no job, and a directory without tests", () => {
    const dir = workspace({
      "p.yaml": qualifiedTables,
      "invalid.yaml": policyTest({
        policies: ["p.yaml"],
        resources: [job("a", "j", "s.t")],
        cases: [{ job: "a/j", expect: "Deny" }],
      }),
      "missing.yaml": policyTest({
        policies: ["p.yaml"],
        resources: [job("a", "j", "s.t")],
        cases: [{ job: "b/j", expect: "Admit" }],
      }),
    });
    writeFileSync(
      join(dir, "unreadable.yaml"),
      stringify(
        policyTest({
          policies: ["p.yaml", "gone.yaml"],
          resources: [job("a", "j", "s.t")],
          cases: [{ job: "a/j", expect: "Admit" }],
        }),
      ),
    );
    const { report, text } = run(dir);
    expect(report).toMatchObject({ ok: false, errors: 4 });
    expect(text).toMatch(/ERROR .*unreadable\.yaml#1 policies\[1\]: gone\.yaml: no such file or directory/);
    expect(text).toMatch(/ERROR .*unreadable\.yaml#1: case a\/j: not evaluated/);
    expect(text).toMatch(/ERROR .*invalid\.yaml#1 PolicyTest: cases\[0\]\.expect: /);
    expect(text).toMatch(/ERROR .*missing\.yaml#1: case b\/j: no SyncJob b\/j among the resources/);

    const empty = workspace({ "p.yaml": qualifiedTables });
    expect(run(empty).report).toMatchObject({ ok: false, testFiles: 0, errors: 1 });
  });

  it("places jobs from files in a namespace, whose labels include the name label the API server sets", () => {
    const inProd = policy("prod-only", {
      match: {
        namespaceSelector: {
          matchLabels: { env: "prod" },
          matchExpressions: [{ key: "kubernetes.io/metadata.name", operator: "In", values: ["payments"] }],
        },
      },
      rules: [{ name: "qualified", expression: "object.spec.target.sql.table.contains('.')", message: "q" }],
    });
    const dir = workspace({
      "p.yaml": inProd,
      "jobs/bad.yaml": { ...job("ignored", "bad", "orders"), metadata: { name: "bad" } },
      "t.yaml": policyTest({
        policies: ["p.yaml"],
        namespaces: [
          { name: "payments", labels: { env: "prod" } },
          { name: "crm", labels: { env: "prod" } },
        ],
        resources: [
          { path: "jobs/bad.yaml", namespace: "payments" },
          { path: "jobs/bad.yaml", namespace: "crm" },
          "jobs/bad.yaml",
        ],
        cases: [
          { job: "payments/bad", expect: "Block" },
          { job: "crm/bad", expect: "Admit" },
          { job: "default/bad", expect: "Admit" },
        ],
      }),
    });
    const { report, text } = run(dir);
    expect(report.ok, text).toBe(true);
    expect(report.results.map((r) => r.policies)).toEqual([["prod-only"], [], []]);
  });
});

describe("syncgov policy test", () => {
  it("sets exit code 1 when a case fails, and 0 when all pass", async () => {
    const pass = workspace({
      "p.yaml": qualifiedTables,
      "t.yaml": policyTest({
        policies: ["p.yaml"],
        resources: [job("a", "j", "s.t")],
        cases: [{ job: "a/j", expect: "Admit" }],
      }),
    });
    const fail = workspace({
      "p.yaml": qualifiedTables,
      "t.yaml": policyTest({
        policies: ["p.yaml"],
        resources: [job("a", "j", "s.t")],
        cases: [{ job: "a/j", expect: "Block" }],
      }),
    });
    const log = vi.spyOn(console, "log").mockImplementation(() => {});
    const before = process.exitCode;
    try {
      const codes: unknown[] = [];
      for (const dir of [pass, fail]) {
        const program = new Command().exitOverride();
        registerPolicyCommands(program);
        await program.parseAsync(["policy", "test", dir], { from: "user" });
        codes.push(process.exitCode);
      }
      expect(codes).toEqual([0, 1]);
      expect(log.mock.calls.map((c) => String(c[0]))).toContainEqual(
        expect.stringMatching(/^FAIL .* a\/j: expected Block, got Admit$/),
      );
    } finally {
      process.exitCode = before;
      log.mockRestore();
    }
  });
});
