import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { z } from "zod";
import { objectName } from "../api/common.ts";
import { fieldPath } from "../api/validate.ts";
import {
  type EffectivePolicy,
  effectivePolicy,
  type JobSubject,
  type NamespaceSubject,
} from "./effective.ts";
import {
  displayPath,
  documentLabel,
  kindOf,
  type LoadedJob,
  type LoadedPolicy,
  loadPolicies,
  type ManifestDocument,
  readDocuments,
  toJob,
  yamlFilesUnder,
} from "./policy-files.ts";

/**
 * `syncgov policy test`: test cases kept beside the policies, in the spirit of `kyverno test`. A
 * PolicyTest names the policy files it exercises, the namespaces (with labels) and the SyncJobs of
 * its cases, and the verdict and violations each job must get from effectivePolicy().
 */

export const POLICY_TEST_API_VERSION = "cli.syncgov.io/v1alpha1";

export const Verdict = z.enum(["Admit", "Warn", "Audit", "Block"]);
export type Verdict = z.infer<typeof Verdict>;

const labels = z.record(z.string(), z.string());

const ResourceRef = z.union([
  z.string().min(1).describe("A file of SyncJobs, relative to the test file."),
  z.strictObject({
    path: z.string().min(1).describe("A file of SyncJobs, relative to the test file."),
    namespace: objectName.optional().describe("Namespace the file's jobs are placed in."),
  }),
  z
    .looseObject({ apiVersion: z.string(), kind: z.string() })
    .describe("An inline SyncJob manifest; its metadata.namespace places it, default 'default'."),
]);

export const PolicyTestCase = z.strictObject({
  job: z
    .string()
    .regex(/^[^/]+\/[^/]+$/, { message: "must be <namespace>/<name>" })
    .describe("The SyncJob the case evaluates."),
  description: z.string().optional(),
  expect: Verdict.describe("Admit, Warn, Audit or Block."),
  violations: z
    .array(z.string().min(1))
    .optional()
    .describe(
      "The exact set of violated rules, each 'rule' or 'policy/rule'; masking and shadow requirements are rules named masking and shadow. Omitted: not checked.",
    ),
});
export type PolicyTestCase = z.infer<typeof PolicyTestCase>;

export const PolicyTest = z.strictObject({
  apiVersion: z.literal(POLICY_TEST_API_VERSION),
  kind: z.literal("PolicyTest"),
  metadata: z.looseObject({ name: z.string().optional() }).optional(),
  policies: z
    .array(z.string().min(1))
    .min(1)
    .describe("SyncPolicy files or directories, relative to the test file."),
  namespaces: z
    .array(z.strictObject({ name: objectName, labels: labels.optional() }))
    .optional()
    .describe("Namespaces and their labels; a namespace not listed has no labels of its own."),
  resources: z.array(ResourceRef).min(1).describe("The SyncJobs the cases refer to."),
  cases: z.array(PolicyTestCase).min(1),
});
export type PolicyTest = z.infer<typeof PolicyTest>;

/** The label the API server puts on every namespace, which namespace selectors may use. */
const NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name";

export interface CaseResult {
  testFile: string;
  job: string;
  expected: Verdict;
  actual: Verdict;
  /** The policies that match the job. */
  policies: string[];
  /** Violated rules as `policy/rule`. */
  violations: string[];
  passed: boolean;
  /** Why the case failed; empty when it passed. */
  reasons: string[];
}

export interface PolicyTestReport {
  testFiles: number;
  passed: number;
  failed: number;
  /** Invalid files, policies whose rules do not compile, cases that name no job. */
  errors: number;
  results: CaseResult[];
  ok: boolean;
}

/** A PolicyTest with everything it refers to read and validated. */
export interface LoadedPolicyTest {
  file: string;
  test: PolicyTest;
  policies: LoadedPolicy[];
  /** By `<namespace>/<name>`. */
  jobs: Map<string, LoadedJob>;
  namespaceOf: (name: string) => NamespaceSubject;
  /** Invalid or unreadable files, rules that do not compile, jobs defined twice. */
  problems: string[];
}

/**
 * Runs every PolicyTest found in the given files and directories (any YAML document with kind
 * PolicyTest), printing one line per case, one per error and a summary. The report is ok only when
 * every case passed and there were no errors, including when no test was found.
 */
export function runPolicyTests(paths: readonly string[], print: (line: string) => void): PolicyTestReport {
  const report: PolicyTestReport = { testFiles: 0, passed: 0, failed: 0, errors: 0, results: [], ok: false };
  const error = (line: string) => {
    report.errors++;
    print(`ERROR ${line}`);
  };
  // A policy file shared by several tests is reported once.
  const reported = new Set<string>();
  for (const doc of findPolicyTests(paths, error)) {
    report.testFiles++;
    const loaded = loadPolicyTest(doc);
    if ("invalid" in loaded) {
      error(loaded.invalid);
      continue;
    }
    for (const problem of loaded.problems.filter((p) => !reported.has(p))) {
      reported.add(problem);
      error(problem);
    }
    for (const c of loaded.test.cases) {
      const where = `${documentLabel(doc)}: case ${c.job}`;
      if (loaded.problems.length > 0) {
        // Verdicts from a partly loaded or uncompilable policy set would mislead; the errors say why.
        error(`${where}: not evaluated, the test's files have errors`);
      } else if (!loaded.jobs.has(c.job)) {
        error(`${where}: no SyncJob ${c.job} among the resources`);
      } else {
        const result = judgeCase(loaded, c);
        report.results.push(result);
        if (result.passed) report.passed++;
        else report.failed++;
        print(describeResult(result));
      }
    }
  }
  if (report.testFiles === 0) error(`no PolicyTest found in ${paths.join(", ")}`);
  report.ok = report.failed === 0 && report.errors === 0;
  print(
    `${report.ok ? "PASS" : "FAIL"}: ${report.passed} passed, ${report.failed} failed, ${report.errors} errors in ${report.testFiles} test files`,
  );
  return report;
}

/** The PolicyTest documents in the given files and directories, in a stable order. */
export function findPolicyTests(paths: readonly string[], error: (line: string) => void): ManifestDocument[] {
  const files: string[] = [];
  for (const path of paths) {
    try {
      files.push(...yamlFilesUnder(resolve(path)));
    } catch (err) {
      error(`${path}: ${(err as Error).message}`);
    }
  }
  const tests: ManifestDocument[] = [];
  for (const file of new Set(files)) {
    const { documents, problems } = readDocuments(file);
    for (const p of problems) error(p);
    tests.push(...documents.filter((d) => kindOf(d.manifest) === "PolicyTest"));
  }
  return tests;
}

/** Validates a PolicyTest document and reads the policies and jobs it names, relative to its file. */
export function loadPolicyTest(doc: ManifestDocument): LoadedPolicyTest | { invalid: string } {
  const label = documentLabel(doc);
  const parsed = PolicyTest.safeParse(doc.manifest);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`).join("; ");
    return { invalid: `${label} PolicyTest: ${issues}` };
  }
  const test = parsed.data;
  const base = dirname(doc.file);
  const problems: string[] = [];
  const policyPaths = test.policies.map((ref) => resolve(base, ref));
  policyPaths.forEach((path, i) => {
    if (!existsSync(path))
      problems.push(`${label} policies[${i}]: ${test.policies[i]}: no such file or directory`);
  });
  const policySet = loadPolicies(policyPaths.filter((path) => existsSync(path)));
  problems.push(...policySet.problems);

  const jobs = new Map<string, LoadedJob>();
  const addJob = (d: ManifestDocument, namespace: string | undefined) => {
    const loaded = toJob(d, namespace);
    if ("problem" in loaded) {
      problems.push(loaded.problem);
      return;
    }
    const key = `${loaded.job.namespace}/${loaded.job.name}`;
    if (jobs.has(key)) problems.push(`${documentLabel(d)}: SyncJob ${key} is defined twice in ${label}`);
    jobs.set(key, loaded.job);
  };
  test.resources.forEach((ref, i) => {
    const file = typeof ref === "string" ? { path: ref } : isFileRef(ref) ? ref : undefined;
    if (file) {
      const read = readDocuments(resolve(base, file.path));
      problems.push(...read.problems.map((p) => `${label} resources[${i}]: ${p}`));
      for (const d of read.documents) addJob(d, file.namespace);
    } else {
      addJob(
        { file: doc.file, index: doc.index, manifest: ref, label: `${label} resources[${i}]` },
        undefined,
      );
    }
  });

  const namespaces = new Map<string, NamespaceSubject>();
  for (const ns of test.namespaces ?? []) {
    namespaces.set(ns.name, { name: ns.name, labels: { ...ns.labels, [NAMESPACE_NAME_LABEL]: ns.name } });
  }
  const namespaceOf = (name: string): NamespaceSubject =>
    namespaces.get(name) ?? { name, labels: { [NAMESPACE_NAME_LABEL]: name } };

  return { file: doc.file, test, policies: policySet.policies, jobs, namespaceOf, problems };
}

/** What a policy check sees of a loaded job. */
export function jobSubject(loaded: LoadedJob): JobSubject {
  return {
    namespace: loaded.namespace,
    name: loaded.name,
    labels: loaded.job.metadata.labels ?? {},
    spec: loaded.job.spec,
    object: loaded.job,
  };
}

function isFileRef(ref: z.infer<typeof ResourceRef>): ref is { path: string; namespace?: string } {
  return typeof ref === "object" && !("kind" in ref);
}

/** Evaluates one case of a loaded test with effectivePolicy() and compares with what it expects. */
export function judgeCase(loaded: LoadedPolicyTest, c: PolicyTestCase): CaseResult {
  const job = loaded.jobs.get(c.job);
  if (!job) throw new Error(`no SyncJob ${c.job} among the resources`);
  const effective: EffectivePolicy = effectivePolicy(
    loaded.policies,
    jobSubject(job),
    loaded.namespaceOf(job.namespace),
  );
  const violations = [...new Set(effective.violations.map((v) => `${v.policy}/${v.rule}`))].sort();
  const reasons: string[] = [];
  if (effective.verdict !== c.expect) reasons.push(`expected ${c.expect}, got ${effective.verdict}`);
  if (c.violations) {
    const expected = c.violations;
    const matches = (e: string, actual: string) =>
      e.includes("/") ? e === actual : actual.endsWith(`/${e}`);
    const missing = expected.filter((e) => !violations.some((a) => matches(e, a)));
    const unexpected = violations.filter((a) => !expected.some((e) => matches(e, a)));
    if (missing.length > 0) reasons.push(`missing violations: ${missing.join(", ")}`);
    if (unexpected.length > 0) {
      const messages = effective.violations
        .filter((v) => unexpected.includes(`${v.policy}/${v.rule}`))
        .map((v) => `${v.policy}/${v.rule} (${v.message})`);
      reasons.push(`unexpected violations: ${messages.join(", ")}`);
    }
  }
  return {
    testFile: displayPath(loaded.file),
    job: c.job,
    expected: c.expect,
    actual: effective.verdict,
    policies: effective.policies,
    violations,
    passed: reasons.length === 0,
    reasons,
  };
}

/** "PASS policies/baseline/tests/x.yaml payments/orders: Block (streaming/realtime-no-replace)" */
export function describeResult(r: CaseResult): string {
  const found = r.violations.length > 0 ? ` (${r.violations.join(", ")})` : "";
  return r.passed
    ? `PASS ${r.testFile} ${r.job}: ${r.actual}${found}`
    : `FAIL ${r.testFile} ${r.job}: ${r.reasons.join("; ")}`;
}
