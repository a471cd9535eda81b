import { describe, expect, it } from "vitest";
import { loadYaml } from "../../test/support/manifests.ts";
import { SyncJob } from "../api/syncjob.ts";
import { SyncPolicySpec } from "../api/syncpolicy.ts";
import { decidePolicyStatus } from "../reconcile/syncpolicy-controller.ts";
import { describeRuleProblem, effectivePolicy, type NamedPolicy, ruleProblems } from "./effective.ts";

// A rule that cannot judge (it does not compile, or costs more than the budget) blocks every job
// its policy matches, whatever the policy's enforcement: skipping it would fail open.

const job = SyncJob.parse({
  ...loadYaml("test/examples/batch-customers.yaml")[0],
  metadata: { name: "customers-nightly", namespace: "crm", labels: { team: "crm" } },
});
const subject = { namespace: "crm", name: job.metadata.name!, labels: {}, spec: job.spec, object: job };
const ns = { name: "crm", labels: { "kubernetes.io/metadata.name": "crm" } };
const good = { name: "qualified", expression: "object.spec.target.sql.table.contains('.')", message: "q" };
const typo = { name: "typo", expression: "objct.spec.mode == 'batch'", message: "t" };
const exponential = {
  name: "exponential",
  expression:
    "object.spec.masking.all(a, object.spec.masking.all(b, object.spec.masking.all(c, object.spec.masking.all(d, a.column != d.column || a == d))))",
  message: "e",
};
const policy = (enforcement: string, rules: object[]): NamedPolicy => ({
  name: "p",
  spec: SyncPolicySpec.parse({ enforcement, match: { namespaces: ["crm"] }, rules }),
});

describe("ruleProblems", () => {
  it("names each rule that cannot judge by its field, with the reason", () => {
    const problems = ruleProblems(policy("Enforce", [good, typo, exponential]).spec);
    expect(problems.map((p) => p.field)).toEqual(["spec.rules[1].expression", "spec.rules[2].expression"]);
    expect(describeRuleProblem(problems[0]!)).toMatch(
      /^spec\.rules\[1\]\.expression \(rule typo\): 1:1: undeclared reference to 'objct'/,
    );
    expect(describeRuleProblem(problems[1]!)).toMatch(
      /^spec\.rules\[2\]\.expression \(rule exponential\): estimated cost \d+ exceeds the budget of 1000000 per rule/,
    );
  });

  it("holds the rules of one policy to a budget together", () => {
    // Each of these costs about 2 × 10^5 (two nested comprehensions over 512 file fields and 64 masking rules).
    const dear = {
      name: "dear",
      expression:
        "!has(object.spec.source.file) || object.spec.source.file.fields.all(f, object.spec.masking.all(m, f.name != m.column || m.transform == 'hash'))",
      message: "d",
    };
    const rules = Array.from({ length: 64 }, (_, i) => ({ ...dear, name: `dear-${i}` }));
    const problems = ruleProblems(policy("Audit", rules).spec);
    expect(problems).toHaveLength(1);
    expect(problems[0]!.reason).toMatch(/over the budget of 10000000 per policy/);
  });
});

describe("effectivePolicy fails closed", () => {
  it.each(["Enforce", "Warn", "Audit"])(
    "blocks a matching job when a rule of a %s policy does not compile",
    (e) => {
      const effective = effectivePolicy([policy(e, [good, typo])], subject, ns);
      expect(effective.verdict).toBe("Block");
      expect(effective.violations).toEqual([
        {
          policy: "p",
          rule: "typo",
          enforcement: "Enforce",
          message: expect.stringMatching(
            /^SyncPolicy p cannot judge: spec\.rules\[1\]\.expression \(rule typo\): .*; it blocks every job it matches until fixed$/,
          ),
        },
      ]);
    },
  );

  it("blocks a matching job when a rule's estimated cost is over the budget, without running it", () => {
    const started = performance.now();
    const effective = effectivePolicy([policy("Enforce", [exponential])], subject, ns);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(effective.verdict).toBe("Block");
    expect(effective.violations[0]?.message).toContain(
      "spec.rules[0].expression (rule exponential): estimated cost",
    );
  });

  it("leaves jobs the policy does not match alone", () => {
    const elsewhere = { ...subject, namespace: "other" };
    expect(
      effectivePolicy([policy("Enforce", [typo])], elsewhere, { name: "other", labels: {} }).verdict,
    ).toBe("Admit");
  });
});

describe("the policy's status", () => {
  it("is not Ready, naming the field and the reason, with a Warning event", () => {
    const object = {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncPolicy",
      metadata: { name: "p", generation: 1 },
      spec: { enforcement: "Audit", rules: [good, exponential] },
    };
    const d = decidePolicyStatus(object, [], new Date("2025-01-01T00:00:00Z"));
    const conditions = d.status!.conditions as {
      type: string;
      status: string;
      reason: string;
      message: string;
    }[];
    const ready = conditions[0];
    expect(ready).toMatchObject({ type: "Ready", status: "False", reason: "InvalidRule" });
    expect(ready!.message).toMatch(
      /^spec\.rules\[1\]\.expression \(rule exponential\): estimated cost \d+ exceeds the budget .*\. The policy blocks every job it matches until fixed\.$/,
    );
    expect(d.event).toMatchObject({ type: "Warning", reason: "InvalidRule" });
    expect(d.event?.note).toContain("spec.rules[1].expression");
  });
});
