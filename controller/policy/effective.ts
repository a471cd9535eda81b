import type { SyncJobSpec } from "../api/syncjob.ts";
import type { Enforcement, SyncPolicySpec } from "../api/syncpolicy.ts";
import type { MaskingRequirement } from "../masking/masking.ts";
import { type BreakerConfigInput, strictestBreakerBounds } from "../resilience/breaker-config.ts";
import { type CompiledRule, compileRule } from "./cel.ts";
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

/** The pattern as a case-insensitive RegExp, or undefined when it is not a valid regular expression. */
function columnPattern(source: string): RegExp | undefined {
  try {
    return new RegExp(source, "i");
  } catch {
    return undefined;
  }
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
    for (const rule of p.spec.rules ?? []) {
      const c = compiledRule(rule.expression);
      if (!c.ok) continue; // a rule that does not compile makes the policy not Ready; it judges nothing
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
          message: `masking.requiredFor columnPattern ${JSON.stringify(req.columnPattern)} is not a valid regular expression`,
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
    violations,
    verdict: worst === 3 ? "Block" : worst === 2 ? "Warn" : worst === 1 ? "Audit" : "Admit",
  };
}

/** Columns a job writes that the spec names: key, version, file fields, masking rules. */
function sensitiveColumns(spec: SyncJobSpec): string[] {
  const cols = new Set<string>([...spec.target.sql.keyColumns, ...(spec.masking ?? []).map((m) => m.column)]);
  for (const f of spec.source.file?.fields ?? []) cols.add(f.name);
  if (spec.target.sql.versionColumn) cols.add(spec.target.sql.versionColumn);
  return [...cols];
}
