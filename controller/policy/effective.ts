import { compileRe2, type Re2 } from "../api/re2.ts";
import type { SyncJobSpec } from "../api/syncjob.ts";
import type { Enforcement, SyncPolicySpec } from "../api/syncpolicy.ts";
import type { MaskingRequirement } from "../masking/masking.ts";
import { type BreakerConfigInput, strictestBreakerBounds } from "../resilience/breaker-config.ts";
import { type CompiledRule, compileRule } from "./cel.ts";
import { PER_POLICY_COST_LIMIT } from "./cel-cost.ts";
import { selectorMatches } from "./selector.ts";

/** What a policy check needs to know about a job and its namespace. */
export interface JobSubject {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  spec: SyncJobSpec;
  /** The whole object as stored, for CEL rules. */
  object: unknown;
}

export interface NamespaceSubject {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export interface NamedPolicy {
  name: string;
  spec: SyncPolicySpec;
}

export function policyMatches(policy: NamedPolicy, job: JobSubject, ns: NamespaceSubject): boolean {
  const match = policy.spec.match;
  if (!match) return true;
  if (match.namespaces && match.namespaces.length > 0 && !match.namespaces.includes(job.namespace))
    return false;
  return (
    selectorMatches(match.namespaceSelector, ns.labels) && selectorMatches(match.jobSelector, job.labels)
  );
}

export interface Violation {
  policy: string;
  rule: string;
  enforcement: Enforcement;
  message: string;
}

export interface TimeWindowSpec {
  start: string;
  end: string;
  timeZone: string;
  days?: string[] | undefined;
}

/**
 * All matching policies combined into the most restrictive result: the lowest limits, the shortest
 * maximum TTL, the strictest breaker thresholds, shadow required if any requires it; batch windows
 * of different policies must all be open (each policy's list is a union of windows).
 */
export interface EffectivePolicy {
  policies: string[];
  maxRunsPerNamespace?: number;
  maxRunsPerTarget?: number;
  maxRunsGlobal?: number;
  /** The TTL that applies to the job's finished runs, after bounds. */
  ttlSecondsAfterFinished?: number;
  successfulRunsHistoryLimit: number;
  failedRunsHistoryLimit: number;
  failedValidationsBeforeShadow: number;
  shadowRequired: boolean;
  /** One entry per policy that restricts windows; a start must fall in some window of every entry. */
  batchWindows: TimeWindowSpec[][];
  /**
   * The strictest breaker settings of the matching policies (strictestBreakerBounds): bounds the
   * job's own settings cannot loosen. Recorded on each admitted run; the runner applies them.
   */
  breaker: BreakerConfigInput;
  /** Masking the matching Enforce-mode policies require; recorded on each admitted run. */
  requiredMasking: MaskingRequirement[];
  /** A matching Enforce-mode policy requires keyed hash masking; recorded on each admitted run. */
  hashKeyRequired: boolean;
  violations: Violation[];
  /** The strictest enforcement among the policies that report a violation. */
  verdict: "Admit" | "Warn" | "Audit" | "Block";
}

const DEFAULT_FAILED_VALIDATIONS_BEFORE_SHADOW = 3;

const minDefined = (...xs: (number | undefined)[]): number | undefined => {
  const defined = xs.filter((x): x is number => x !== undefined);
  return defined.length ? Math.min(...defined) : undefined;
};

/** Compiled CEL rules are cached per expression; compiling is the expensive part. */
const compiled = new Map<string, CompiledRule>();
export function compiledRule(expression: string): CompiledRule {
  let c = compiled.get(expression);
  if (!c) {
    c = compileRule(expression);
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(expression, c);
  }
  return c;
}

/**
 * The pattern as a case-insensitive RE2 expression (../api/re2.ts: linear time, as the API server's
 * CEL matches() is), or undefined when RE2 does not accept it.
 */
function columnPattern(source: string): Re2 | undefined {
  try {
    return compileRe2(source, { caseInsensitive: true });
  } catch {
    return undefined;
  }
}

/** A rule of a policy that cannot be used: it does not compile, or the policy's rules cost too much. */
export interface RuleProblem {
  rule: string;
  /** spec.rules[i].expression */
  field: string;
  /** line:column in the expression, when the compiler says. */
  position: string | undefined;
  reason: string;
}

const problemsBySpec = new WeakMap<SyncPolicySpec, RuleProblem[]>();

/**
 * The rules of a policy that cannot judge: each that does not compile (which includes an estimated
 * cost over the per-rule budget), and the rule with which the rules' estimated costs together pass
 * PER_POLICY_COST_LIMIT. Such a policy fails closed (effectivePolicy).
 */
export function ruleProblems(spec: SyncPolicySpec): RuleProblem[] {
  const known = problemsBySpec.get(spec);
  if (known) return known;
  const problems: RuleProblem[] = [];
  let total = 0;
  let over = false;
  (spec.rules ?? []).forEach((rule, i) => {
    const field = `spec.rules[${i}].expression`;
    const c = compiledRule(rule.expression);
    if (!c.ok) {
      problems.push({ rule: rule.name, field, position: c.position, reason: c.reason });
      return;
    }
    total += c.estimatedCost;
    if (!over && total > PER_POLICY_COST_LIMIT) {
      over = true;
      problems.push({
        rule: rule.name,
        field,
        position: undefined,
        reason: `the policy's rules up to this one have an estimated cost of ${Math.ceil(total)}, over the budget of ${PER_POLICY_COST_LIMIT} per policy`,
      });
    }
  });
  problemsBySpec.set(spec, problems);
  return problems;
}

/** "spec.rules[2].expression (rule team-label): 1:7: undeclared reference to 'objct'" */
export function describeRuleProblem(p: RuleProblem): string {
  return `${p.field} (rule ${p.rule}): ${p.position ? `${p.position}: ` : ""}${p.reason}`;
}

/** Evaluates every matching policy against the job; a pure function of its inputs. */
export function effectivePolicy(
  all: readonly NamedPolicy[],
  job: JobSubject,
  ns: NamespaceSubject,
): EffectivePolicy {
  const matching = all.filter((p) => policyMatches(p, job, ns)).sort((a, b) => a.name.localeCompare(b.name));
  const specs = matching.map((p) => p.spec);
  const violations: Violation[] = [];
  const namespaceObject = { metadata: { name: ns.name, labels: ns.labels } };
  for (const p of matching) {
    const enforcement = p.spec.enforcement;
    const problems = ruleProblems(p.spec);
    // Fails closed, as an unreadable masking requirement does: a rule that cannot judge blocks every
    // job the policy matches, whatever the policy's enforcement, until the policy is fixed (its
    // Ready condition says why). No rule of such a policy is evaluated.
    for (const problem of problems) {
      violations.push({
        policy: p.name,
        rule: problem.rule,
        enforcement: "Enforce",
        message: `SyncPolicy ${p.name} cannot judge: ${describeRuleProblem(problem)}; it blocks every job it matches until fixed`,
      });
    }
    for (const rule of problems.length > 0 ? [] : (p.spec.rules ?? [])) {
      const c = compiledRule(rule.expression);
      if (!c.ok) continue; // unreachable: ruleProblems reported it
      const outcome = c.evaluate({ object: job.object, namespaceObject });
      if ("error" in outcome) {
        violations.push({
          policy: p.name,
          rule: rule.name,
          enforcement,
          message: `${rule.message} (evaluation error: ${outcome.error})`,
        });
      } else if (!outcome.holds) {
        violations.push({ policy: p.name, rule: rule.name, enforcement, message: rule.message });
      }
    }
    for (const req of p.spec.masking?.requiredFor ?? []) {
      const pattern = columnPattern(req.columnPattern);
      if (!pattern) {
        // Fails closed: a requirement whose columns cannot be known judges every job it matches.
        violations.push({
          policy: p.name,
          rule: "masking",
          enforcement: "Enforce",
          message: `masking.requiredFor columnPattern ${JSON.stringify(req.columnPattern)} is not a valid regular expression for RE2`,
        });
        continue;
      }
      const masked = new Map((job.spec.masking ?? []).map((m) => [m.column, m.transform]));
      for (const column of sensitiveColumns(job.spec)) {
        if (!pattern.test(column)) continue;
        const transform = masked.get(column);
        if (!transform || !req.transforms.includes(transform)) {
          violations.push({
            policy: p.name,
            rule: "masking",
            enforcement,
            message: `column ${column} matches /${req.columnPattern}/ and must be masked with ${req.transforms.join(" or ")}`,
          });
        }
      }
    }
    const unkeyed = unkeyedHashRules(job.spec);
    if (p.spec.masking?.requireHashKey && unkeyed.length > 0) {
      violations.push({
        policy: p.name,
        rule: "masking-key",
        enforcement,
        message: `spec.maskingKeySecretRef: hash masking must be keyed (HMAC-SHA256 with a key from a Secret), but ${unkeyed.join(", ")} ${unkeyed.length === 1 ? "hashes" : "hash"} without one; name a Secret holding a key of at least 16 bytes in spec.maskingKeySecretRef`,
      });
    }
    if (p.spec.shadow?.required && job.spec.shadow?.enabled === false) {
      violations.push({
        policy: p.name,
        rule: "shadow",
        enforcement,
        message: "the shadow-table fallback must stay enabled",
      });
    }
  }

  const maxTtl = minDefined(...specs.map((s) => s.ttl?.maxSecondsAfterFinished));
  const defaultTtl = minDefined(...specs.map((s) => s.ttl?.defaultSecondsAfterFinished));
  const wanted = job.spec.ttlSecondsAfterFinished ?? defaultTtl;
  const ttl = wanted === undefined ? maxTtl : maxTtl === undefined ? wanted : Math.min(wanted, maxTtl);

  const verdictOf = (e: Enforcement) => (e === "Enforce" ? 3 : e === "Warn" ? 2 : 1);
  const worst = Math.max(0, ...violations.map((v) => verdictOf(v.enforcement)));
  return {
    policies: matching.map((p) => p.name),
    maxRunsPerNamespace: minDefined(...specs.map((s) => s.concurrency?.maxRunsPerNamespace)),
    maxRunsPerTarget: minDefined(...specs.map((s) => s.concurrency?.maxRunsPerTarget)),
    maxRunsGlobal: minDefined(...specs.map((s) => s.concurrency?.maxRunsGlobal)),
    ttlSecondsAfterFinished: ttl,
    successfulRunsHistoryLimit: minDefined(
      job.spec.successfulRunsHistoryLimit,
      ...specs.map((s) => s.history?.maxSuccessfulRuns),
    )!,
    failedRunsHistoryLimit: minDefined(
      job.spec.failedRunsHistoryLimit,
      ...specs.map((s) => s.history?.maxFailedRuns),
    )!,
    failedValidationsBeforeShadow:
      minDefined(
        job.spec.shadow?.failedValidationsBeforeShadow,
        ...specs.map((s) => s.shadow?.failedValidationsBeforeShadow),
      ) ?? DEFAULT_FAILED_VALIDATIONS_BEFORE_SHADOW,
    shadowRequired: specs.some((s) => s.shadow?.required === true),
    batchWindows: specs.filter((s) => (s.batchWindows ?? []).length > 0).map((s) => s.batchWindows!),
    breaker: strictestBreakerBounds(specs.flatMap((s) => (s.breaker ? [s.breaker] : []))),
    // Warn and Audit policies admit a job in spite of violations by choice, so only Enforce-mode
    // policies make masking a condition of writing.
    requiredMasking: matching
      .filter((p) => p.spec.enforcement === "Enforce")
      .flatMap((p) =>
        (p.spec.masking?.requiredFor ?? []).map((r) => ({
          policy: p.name,
          columnPattern: r.columnPattern,
          transforms: [...r.transforms],
        })),
      ),
    hashKeyRequired: matching.some(
      (p) => p.spec.enforcement === "Enforce" && p.spec.masking?.requireHashKey === true,
    ),
    violations,
    verdict: worst === 3 ? "Block" : worst === 2 ? "Warn" : worst === 1 ? "Audit" : "Admit",
  };
}

/** The job's hash rules, as `spec.masking[i] (column c)`, when it names no key for them. */
function unkeyedHashRules(spec: SyncJobSpec): string[] {
  if (spec.maskingKeySecretRef !== undefined) return [];
  return (spec.masking ?? []).flatMap((m, i) =>
    m.transform === "hash" ? [`spec.masking[${i}] (column ${m.column})`] : [],
  );
}

/** Columns a job writes that the spec names: key, version, file fields, masking rules. */
function sensitiveColumns(spec: SyncJobSpec): string[] {
  const cols = new Set<string>([...spec.target.sql.keyColumns, ...(spec.masking ?? []).map((m) => m.column)]);
  for (const f of spec.source.file?.fields ?? []) cols.add(f.name);
  if (spec.target.sql.versionColumn) cols.add(spec.target.sql.versionColumn);
  return [...cols];
}
