import type { KubernetesObject } from "@kubernetes/client-node";
import type { Condition } from "../api/common.ts";
import { isActivePhase, isFinishedPhase, isWaitingPhase } from "../api/phases.ts";
import type { SyncJob, SyncJobStatus } from "../api/syncjob.ts";
import type { EventRecord } from "../kube/events.ts";
import { kubeTime } from "../kube/status.ts";
import type { EffectivePolicy, NamedPolicy, NamespaceSubject } from "../policy/effective.ts";
import { type JobPolicyView, jobPolicyView } from "../policy/job-view.ts";
import { decideShadow, type RequestGuard, type ShadowDecision, type ShadowStatus } from "../shadow/state.ts";
import { decideCleanup } from "./job/cleanup.ts";
import { ConditionLedger } from "./job/ledger.ts";
import { mirrorBreaker, mirrorValidation } from "./job/mirror.ts";
import { decideInvalid, decidePolicyVerdict } from "./job/policy.ts";
import {
  decideCompensation,
  decideManualRun,
  decideRealtimeSession,
  decideScheduleFire,
  type TriggerDecision,
} from "./job/triggers.ts";
import { byAge, type NewRun, type RunSummary } from "./job/types.ts";

export { type JobPolicyView, jobPolicyView } from "../policy/job-view.ts";
export { VALIDATED } from "./job/mirror.ts";
export { POLICY_COMPLIANT, VALID } from "./job/policy.ts";
export { RUN_NOW_ANNOTATION } from "./job/triggers.ts";
export type { NewRun, RunSummary };

/** What reconciling a SyncJob decides. Every field is a pure function of `JobInput`. */
export interface JobDecision {
  /** The status fields to merge; undefined when the stored status is already right. */
  status?: Partial<SyncJobStatus>;
  events: EventRecord[];
  /** SyncRuns to create (schedule or manual triggers). */
  create: NewRun[];
  /** Finished SyncRuns to delete (TTL or history limits). */
  delete: string[];
  /** When to look at the job again (next cron fire, next TTL expiry), in ms from now. */
  requeueAfterMs?: number;
  /** The parsed job, when valid; callers use it for the target identity. */
  job?: SyncJob;
  effective?: EffectivePolicy;
  /** The shadow-table machine's decision: its database actions are the caller's to perform. */
  shadow?: ShadowDecision;
}

export interface JobInput {
  object: KubernetesObject;
  policies: readonly NamedPolicy[];
  namespace: NamespaceSubject;
  runs: readonly RunSummary[];
  now: Date;
  /** jobPolicyView of this object, policies and namespace, when the caller has it already. */
  view?: JobPolicyView;
  /** Whether the API server guards shadow requests; without it approvals and rollbacks are refused. */
  requestGuard?: RequestGuard;
}

/**
 * The SyncJob's level: spec validity, the effective policy and its verdict, the phase derived from
 * its runs, runs to start (schedule, manual annotation, the realtime session, compensation) and
 * finished runs to clean up (TTL from completionTime, history limits). Each concern is its own pure
 * decider (./job/); this merges their answers into one decision. Events are produced only when a
 * condition changes, so repeated reconciles of an unchanged job record nothing.
 */
export function decideJob(input: JobInput): JobDecision {
  const { object, now } = input;
  const current = (object as { status?: SyncJobStatus }).status ?? {};
  const generation = object.metadata?.generation ?? 0;
  const ledger = new ConditionLedger(current.conditions, now);
  const decision: JobDecision = { events: ledger.events, create: [], delete: [] };
  const status: Partial<SyncJobStatus> = { observedGeneration: generation };

  const view = input.view ?? jobPolicyView(object, input.policies, input.namespace);
  if (!view.job || !view.effective) {
    decideInvalid(view.errors, generation, ledger);
    status.phase = "Invalid";
    return finish(decision, current, status, ledger);
  }
  const job = view.job;
  const effective = view.effective;
  decision.job = job;
  decision.effective = effective;
  status.effectivePolicy = decidePolicyVerdict(effective, generation, ledger);

  const runs = byAge(input.runs);
  const active = runs.filter((r) => isActivePhase(r.phase));
  const waiting = runs.filter((r) => isWaitingPhase(r.phase));
  status.activeRuns = [...active, ...waiting].map((r) => r.name).slice(0, 100);
  const lastFinished = runs
    .filter((r) => r.phase !== undefined && !isActivePhase(r.phase) && !isWaitingPhase(r.phase))
    .at(-1);
  if (lastFinished) {
    status.lastRun = {
      name: lastFinished.name,
      phase: lastFinished.phase!,
      ...(lastFinished.completionTime ? { finishedAt: lastFinished.completionTime } : {}),
    };
  }
  const lastValidation = mirrorValidation(runs, generation, ledger);
  if (lastValidation) status.lastValidation = lastValidation;

  let requeue: number | undefined;
  const soonest = (ms: number | undefined) => {
    if (ms !== undefined) requeue = requeue === undefined ? ms : Math.min(requeue, ms);
  };
  const take = (d: TriggerDecision) => {
    if (d.create) decision.create.push(d.create);
    soonest(d.requeueAfterMs);
  };

  // The shadow-table fallback counts validations itself (status.shadow keeps its memory, so
  // deleting old runs does not reset a streak of failures).
  const shadow = decideShadow({
    job: { namespace: object.metadata?.namespace ?? "", name: object.metadata?.name ?? "", generation },
    target: job.spec.target.sql.table,
    settings: {
      enabled: job.spec.shadow?.enabled !== false || effective.shadowRequired,
      failedValidationsBeforeShadow: effective.failedValidationsBeforeShadow,
      retiredTableTtlSeconds: job.spec.shadow?.retiredTableTtlSeconds ?? 604_800,
    },
    status: current.shadow as ShadowStatus | undefined,
    annotations: object.metadata?.annotations,
    requestGuard: input.requestGuard,
    validations: runs
      .filter((r) => r.validation && isFinishedPhase(r.phase))
      .map((r) => ({ run: r.name, result: r.validation!.result, finishedAt: r.completionTime ?? "" })),
    fillRun: runs.find((r) => r.name === current.shadow?.fillRun),
    now,
  });
  decision.shadow = shadow;
  if (shadow.changed || current.shadow === undefined)
    status.shadow = shadow.status as SyncJobStatus["shadow"];
  for (const c of shadow.conditions) ledger.set({ ...c, observedGeneration: generation });
  ledger.events.push(...shadow.events);
  for (const a of shadow.actions) {
    if (a.kind === "StartShadowFill")
      decision.create.push({ name: a.run, type: "ShadowFill", trigger: "Controller" });
  }
  soonest(shadow.requeueAfterMs);

  const breaker = mirrorBreaker(runs);
  if (breaker) status.breaker = breaker;

  const blocked = effective.verdict === "Block";
  status.phase = blocked
    ? "Blocked"
    : job.spec.suspend
      ? "Suspended"
      : active.length > 0
        ? "Running"
        : waiting.length > 0
          ? "Queued"
          : "Idle";

  if (!blocked && !job.spec.suspend) {
    const name = job.metadata.name ?? "job";
    const since = (last: string | undefined) =>
      last ?? String(object.metadata?.creationTimestamp ?? now.toISOString());
    take(decideRealtimeSession(job, runs, now));
    // The job's own schedule: batch runs, or a hybrid job's scheduled compare.
    const scheduled = decideScheduleFire({
      job: name,
      schedule: job.spec.schedule,
      timeZone: job.spec.timeZone ?? "UTC",
      since: since(current.lastScheduleTime),
      kind: "s",
      type: job.spec.mode === "hybrid" ? "Validation" : "Batch",
      now,
    });
    take(scheduled);
    if (scheduled.fired) status.lastScheduleTime = kubeTime(scheduled.fired);
    // A realtime job's scheduled compare (spec.validation.schedule).
    if (job.spec.mode === "realtime" && job.spec.validation?.enabled !== false) {
      const compare = decideScheduleFire({
        job: name,
        schedule: job.spec.validation?.schedule,
        timeZone: job.spec.timeZone ?? "UTC",
        since: since(current.lastValidationTime),
        kind: "v",
        type: "Validation",
        now,
      });
      take(compare);
      if (compare.fired) status.lastValidationTime = kubeTime(compare.fired);
    }
    take(decideCompensation(name, status.breaker, runs, now));
    const manual = decideManualRun(job, current.lastManualRequest);
    take(manual);
    if (manual.requested !== undefined) status.lastManualRequest = manual.requested;
  }

  const cleanup = decideCleanup(runs, effective, now);
  decision.delete = cleanup.delete;
  soonest(cleanup.requeueAfterMs);
  if (requeue !== undefined) decision.requeueAfterMs = Math.max(requeue, 100);
  return finish(decision, current, status, ledger);
}

function finish(
  decision: JobDecision,
  current: SyncJobStatus,
  status: Partial<SyncJobStatus>,
  ledger: ConditionLedger,
): JobDecision {
  const next: Partial<SyncJobStatus> = { ...status, conditions: ledger.conditions as Condition[] };
  const differs =
    ledger.changed ||
    (Object.keys(next) as (keyof SyncJobStatus)[]).some(
      (k) => k !== "conditions" && JSON.stringify(next[k]) !== JSON.stringify(current[k]),
    );
  if (differs) decision.status = next;
  return decision;
}
