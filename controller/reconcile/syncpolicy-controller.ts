/**
 * The SyncPolicy controller: a policy's status is a pure function of the policy and the jobs'
 * recorded effective policies (decidePolicyStatus); the controller writes it when it differs and
 * says once, with an event, that a rule does not compile.
 */

import type { KubernetesObject } from "@kubernetes/client-node";
import type { Condition } from "../api/common.ts";
import type { SyncPolicy } from "../api/syncpolicy.ts";
import { validateSyncPolicy } from "../api/validate.ts";
import type { ClusterCache } from "../cache/cluster.ts";
import { keyOf } from "../cache/objects.ts";
import type { EventRecord } from "../kube/events.ts";
import { SYNCPOLICIES } from "../kube/resource.ts";
import { setCondition } from "../kube/status.ts";
import type { KubeWrites } from "../kube/writes.ts";
import { describeRuleProblem } from "../policy/effective.ts";
import { ruleCompileErrors } from "../policy/policy-files.ts";
import type { ObjectKey, ReconcileResult, Reconciler } from "./reconciler.ts";

/** What a job's status says of the policies that match it (SyncJob status.effectivePolicy). */
export interface JobPolicyRecord {
  readonly policies?: readonly string[];
  readonly violations?: readonly string[];
}

export interface PolicyStatusDecision {
  /** The status to write; undefined when the stored one is already right. */
  readonly status?: Record<string, unknown>;
  readonly event?: EventRecord;
}

/**
 * Ready (every CEL rule compiles within the cost budget, with its field, position and reason when
 * not; such a policy blocks the jobs it matches), how many jobs the policy
 * matches and how many of them violate it, as the jobs' statuses record it.
 */
export function decidePolicyStatus(
  policy: KubernetesObject,
  jobs: Iterable<JobPolicyRecord | undefined>,
  now: Date,
): PolicyStatusDecision {
  const name = policy.metadata?.name ?? "";
  const status = (policy as { status?: Record<string, unknown> }).status ?? {};
  const parsed = validateSyncPolicy(policy);
  const generation = policy.metadata?.generation ?? 0;
  const problems = parsed.ok ? ruleCompileErrors({ name, spec: (parsed.value as SyncPolicy).spec }) : [];
  const ruleErrors = problems.map((e) => ({
    rule: e.rule,
    ...(e.position ? { position: e.position } : {}),
    reason: e.reason.slice(0, 1024),
  }));
  let matched = 0;
  let violating = 0;
  for (const job of jobs) {
    if (!job?.policies?.includes(name)) continue;
    matched++;
    if (job.violations?.some((v) => v.startsWith(`${name}/`))) violating++;
  }
  const ready = ruleErrors.length === 0;
  const message = ready
    ? "All rules compile."
    : `${problems.map(describeRuleProblem).join("; ")}. The policy blocks every job it matches until fixed.`;
  const { conditions, changed } = setCondition(
    status.conditions as Condition[] | undefined,
    {
      type: "Ready",
      status: ready ? "True" : "False",
      reason: ready ? "RulesCompiled" : "InvalidRule",
      message,
      observedGeneration: generation,
    },
    now,
  );
  const same =
    !changed &&
    status.observedGeneration === generation &&
    status.matchedJobs === matched &&
    status.violations === violating &&
    JSON.stringify(status.ruleErrors ?? []) === JSON.stringify(ruleErrors);
  if (same) return {};
  return {
    status: {
      observedGeneration: generation,
      conditions,
      matchedJobs: matched,
      violations: violating,
      ruleErrors,
    },
    ...(changed && !ready ? { event: { type: "Warning", reason: "InvalidRule", note: message } } : {}),
  };
}

export interface SyncPolicyControllerDeps {
  readonly cache: ClusterCache;
  readonly kube: KubeWrites;
  readonly now?: () => Date;
}

export class SyncPolicyController implements Reconciler {
  readonly #deps: SyncPolicyControllerDeps;

  constructor(deps: SyncPolicyControllerDeps) {
    this.#deps = deps;
  }

  async reconcile(key: ObjectKey): Promise<ReconcileResult | undefined> {
    const { cache, kube } = this.#deps;
    const snap = cache.snapshot();
    const entry = snap.get(keyOf("SyncPolicy", undefined, key.name));
    if (!entry) return undefined;
    const jobs = [...snap.ofKind("SyncJob")].map(
      (job) => (job.object as { status?: { effectivePolicy?: JobPolicyRecord } }).status?.effectivePolicy,
    );
    const decision = decidePolicyStatus(entry.object, jobs, this.#deps.now?.() ?? new Date());
    if (!decision.status) return undefined;
    const written = await kube.patchStatus({
      resource: SYNCPOLICIES,
      name: entry.name,
      status: decision.status,
    });
    cache.wrote("SyncPolicy", written);
    if (decision.event) await kube.recordEvent(entry.object, decision.event);
    return undefined;
  }
}
