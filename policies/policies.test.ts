// The shipped policies' own tests, run as part of the suite: `npm test` fails whenever
// `syncgov policy test policies/` would.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { admissionRules } from "../controller/policy/admission-export.ts";
import { loadPolicies } from "../controller/policy/policy-files.ts";
import { runPolicyTests } from "../controller/policy/policy-tests.ts";

const policiesDir = dirname(fileURLToPath(import.meta.url));
const lines: string[] = [];
const report = runPolicyTests([policiesDir], (line) => lines.push(line));

describe("syncgov policy test policies/", () => {
  it("finds the tests and reports no errors", () => {
    expect(lines.filter((l) => l.startsWith("ERROR"))).toEqual([]);
    expect(report.testFiles).toBeGreaterThan(0);
    expect(report.ok).toBe(true);
  });

  it.each(report.results.map((r) => [`${r.testFile} ${r.job} → ${r.expected}`, r] as const))(
    "%s",
    (_name, r) => {
      expect(r.reasons).toEqual([]);
      expect(r.actual).toBe(r.expected);
    },
  );

  it("has, for every rule of every shipped policy, a case that violates it and a case that satisfies it", () => {
    const { policies, problems } = loadPolicies([policiesDir]);
    expect(problems).toEqual([]);
    const uncovered: string[] = [];
    for (const policy of policies) {
      for (const rule of new Set(admissionRules(policy.spec).map((r) => r.name))) {
        const key = `${policy.name}/${rule}`;
        const matched = report.results.filter((r) => r.policies.includes(policy.name));
        if (!matched.some((r) => r.violations.includes(key))) uncovered.push(`${key}: no failing case`);
        if (!matched.some((r) => !r.violations.includes(key))) uncovered.push(`${key}: no passing case`);
      }
    }
    expect(uncovered).toEqual([]);
  });
});
