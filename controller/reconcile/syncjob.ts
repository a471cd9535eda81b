import { createHash } from "node:crypto";
import type { KubernetesObject } from "@kubernetes/client-node";
import { Cron } from "croner";
import type { Condition } from "../api/common.ts";
import { semanticErrors } from "../api/semantics.ts";
import type { SyncJob, SyncJobStatus } from "../api/syncjob.ts";
import type { SyncRunStatus } from "../api/syncrun.ts";
import { describeErrors, type FieldError, validateSyncJob } from "../api/validate.ts";
import type { EventRecord } from "../kube/events.ts";
import { kubeTime, setCondition } from "../kube/status.ts";
import {
  type EffectivePolicy,
  effectivePolicy,
  type NamedPolicy,
  type NamespaceSubject,
} from "../policy/effective.ts";
import { decideShadow, type ShadowDecision, type ShadowStatus } from "../shadow/state.ts";

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

export interface NewRun {
  name: string;
  type: "Batch" | "Realtime" | "Validation" | "Compensation" | "ShadowFill";
  trigger: "Schedule" | "Manual" | "Stream" | "Controller";
}

export interface RunSummary {
  name: string;
  phase: string | undefined;
  type: string | undefined;
  createdAt: number;
  completionTime?: string | undefined;
  /** The run's validation result, when it validated. */
  validation?: SyncRunStatus["validation"];
  /** A realtime session's breaker, as the runner reports it. */
  breaker?: {
    state?: string;
    slowCallRate?: number;
    failureRate?: number;
    bufferedRecords?: number;
    lastTransitionTime?: string;
  };
}

export interface JobInput {
  object: KubernetesObject;
  policies: readonly NamedPolicy[];
  namespace: NamespaceSubject;
  runs: readonly RunSummary[];
  now: Date;
  /** jobPolicyView of this object, policies and namespace, when the caller has it already. */
  view?: JobPolicyView;
}

/**
 * What the spec and the matching policies make of a job, apart from time and runs: the parsed job
 * and its effective policy, or the spec's errors. The admission scheduler needs only this, and it
 * changes only with the object, the policies or the namespace, so callers may keep it per object.
 */
export interface JobPolicyView {
  readonly job?: SyncJob;
  readonly errors: FieldError[];
  readonly effective?: EffectivePolicy;
}

export function jobPolicyView(
  object: KubernetesObject,
  policies: readonly NamedPolicy[],
  namespace: NamespaceSubject,
): JobPolicyView {
  const parsed = validateSyncJob(object);
  const errors = parsed.ok ? semanticErrors(parsed.value.spec) : parsed.errors;
  if (!parsed.ok || errors.length > 0) return { errors };
  const job = parsed.value;
  const effective = effectivePolicy(
    policies,
    {
      namespace: object.metadata?.namespace ?? "",
      name: object.metadata?.name ?? "",
      labels: object.metadata?.labels ?? {},
      spec: job.spec,
      object,
    },
    namespace,
  );
  return { job, errors, effective };
}

/**
 * Parsed schedules, shared by every job with the same schedule and time zone: a paused Cron only
 * computes occurrences (nextRun from a given date), so one instance serves all of them, and parsing
 * a pattern costs far more than asking it. Bounded: cleared when it grows past CRON_CACHE_LIMIT.
 * A cached Cron is never stopped (croner's stop() ends its nextRun() answers for good); a paused
 * Cron with no callback holds no timer, so there is nothing to stop.
 */
const cronCache = new Map<string, Cron>();
const CRON_CACHE_LIMIT = 1024;

function cronOf(schedule: string, timeZone: string): Cron {
  const key = `${timeZone} ${schedule}`;
  let cron = cronCache.get(key);
  if (!cron) {
    if (cronCache.size >= CRON_CACHE_LIMIT) cronCache.clear();
    cron = new Cron(schedule, { paused: true, mode: "5-part", timezone: timeZone });
    cronCache.set(key, cron);
  }
  return cron;
}

export const VALID = "Valid";
export const POLICY_COMPLIANT = "PolicyCompliant";
export const VALIDATED = "Validated";
/** Annotation a person sets (to any new value) to start a run by hand: `kubectl annotate sj x syncgov.io/run-now=$(date +%s)`. */
export const RUN_NOW_ANNOTATION = "syncgov.io/run-now";

const FINISHED: ReadonlySet<string> = new Set(["Succeeded", "Failed", "Cancelled", "Skipped"]);
const ACTIVE: ReadonlySet<string> = new Set(["Running"]);
const WAITING: ReadonlySet<string> = new Set(["Pending", "Queued"]);

export function isFinished(phase: string | undefined): boolean {
  return phase !== undefined && FINISHED.has(phase);
}

function finishedRuns(runs: readonly RunSummary[]): RunSummary[] {
  return runs.filter((r) => isFinished(r.phase));
}

/**
 * The SyncJob's level: spec validity, the effective policy and its verdict, the phase derived from
 * its runs, runs to start (schedule, manual annotation, the realtime session) and finished runs to
 * clean up (TTL from completionTime, history limits). Events are produced only when a condition
 * changes, so repeated reconciles of an unchanged job record nothing.
 */
export function decideJob(input: JobInput): JobDecision {
  const { object, now } = input;
  const current = (object as { status?: SyncJobStatus }).status ?? {};
  const generation = object.metadata?.generation ?? 0;
  const events: EventRecord[] = [];
  const decision: JobDecision = { events, create: [], delete: [] };
  let conditions = current.conditions;
  let changed = false;
  const set = (
    c: Omit<Condition, "lastTransitionTime">,
    event?: (prev: Condition | undefined) => EventRecord | undefined,
  ) => {
    const prev = conditions?.find((x) => x.type === c.type);
    const r = setCondition(conditions, c, now);
    conditions = r.conditions;
    if (r.changed) {
      changed = true;
      if (prev?.status !== c.status || prev?.message !== c.message) {
        const ev = event?.(prev);
        if (ev) events.push(ev);
      }
    }
  };

  const view = input.view ?? jobPolicyView(object, input.policies, input.namespace);
  const status: Partial<SyncJobStatus> = { observedGeneration: generation };
  if (!view.job || !view.effective) {
    const message = describeErrors(view.errors);
    set(
      { type: VALID, status: "False", reason: "InvalidSpec", message, observedGeneration: generation },
      () => ({
        type: "Warning",
        reason: "InvalidSpec",
        note: `The spec is invalid: ${message}`,
      }),
    );
    status.phase = "Invalid";
    return finish(decision, current, status, conditions, changed);
  }
  const job = view.job;
  decision.job = job;
  set(
    {
      type: VALID,
      status: "True",
      reason: "SpecValid",
      message: "The spec passed validation.",
      observedGeneration: generation,
    },
    () => ({
      type: "Normal",
      reason: "SpecValid",
      note: "The spec passed validation.",
    }),
  );

  const effective = view.effective;
  decision.effective = effective;
  status.effectivePolicy = {
    policies: effective.policies,
    ...(effective.violations.length > 0 ? { enforcement: enforcementOf(effective.verdict) } : {}),
    ...(effective.maxRunsPerNamespace !== undefined
      ? { maxRunsPerNamespace: effective.maxRunsPerNamespace }
      : {}),
    ...(effective.maxRunsPerTarget !== undefined ? { maxRunsPerTarget: effective.maxRunsPerTarget } : {}),
    ...(effective.maxRunsGlobal !== undefined ? { maxRunsGlobal: effective.maxRunsGlobal } : {}),
    ...(effective.ttlSecondsAfterFinished !== undefined
      ? { ttlSecondsAfterFinished: effective.ttlSecondsAfterFinished }
      : {}),
    failedValidationsBeforeShadow: effective.failedValidationsBeforeShadow,
    violations: effective.violations.map((v) => `${v.policy}/${v.rule}: ${v.message}`),
  };
  const violationText = effective.violations.map((v) => `${v.policy}/${v.rule}: ${v.message}`).join("; ");
  if (effective.verdict === "Admit") {
    set(
      {
        type: POLICY_COMPLIANT,
        status: "True",
        reason: "Compliant",
        message: `Complies with ${effective.policies.length} matching policies.`,
        observedGeneration: generation,
      },
      (prev) =>
        prev && prev.status !== "True"
          ? { type: "Normal", reason: "Compliant", note: "The job now complies with its policies." }
          : undefined,
    );
  } else {
    const reason =
      effective.verdict === "Block"
        ? "Blocked"
        : effective.verdict === "Warn"
          ? "PolicyWarning"
          : "PolicyAudit";
    set(
      {
        type: POLICY_COMPLIANT,
        status: "False",
        reason,
        message: violationText,
        observedGeneration: generation,
      },
      () => ({
        type: effective.verdict === "Audit" ? "Normal" : "Warning",
        reason,
        note:
          effective.verdict === "Block"
            ? `Blocked by policy: ${violationText}`
            : effective.verdict === "Warn"
              ? `Admitted with warnings: ${violationText}`
              : `Policy violation recorded (audit): ${violationText}`,
      }),
    );
  }

  // Runs of this job, oldest first.
  const runs = [...input.runs].sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name));
  const active = runs.filter((r) => r.phase !== undefined && ACTIVE.has(r.phase));
  const waiting = runs.filter((r) => r.phase === undefined || WAITING.has(r.phase));
  status.activeRuns = [...active, ...waiting].map((r) => r.name).slice(0, 100);
  const lastFinished = [...runs].reverse().find((r) => isFinished(r.phase));
  if (lastFinished) {
    status.lastRun = {
      name: lastFinished.name,
      phase: lastFinished.phase!,
      ...(lastFinished.completionTime ? { finishedAt: lastFinished.completionTime } : {}),
    };
  }

  let requeue: number | undefined;
  const soonest = (ms: number) => {
    requeue = requeue === undefined ? ms : Math.min(requeue, ms);
  };
  // Validation: the newest finished run that validated, and the streak of failures before it.
  const validated = finishedRuns(runs).filter((r) => r.validation);
  const latest = validated[validated.length - 1];
  if (latest?.validation) {
    const v = latest.validation;

    status.lastValidation = {
      result: v.result,
      run: latest.name,
      ...(latest.completionTime ? { time: latest.completionTime } : {}),
      sourceRows: v.sourceRows,
      targetRows: v.targetRows,
      sourceChecksum: v.sourceChecksum,
      targetChecksum: v.targetChecksum,
    };
    const passed = v.result === "Passed";
    const message = `${latest.name}: source ${v.sourceRows} rows (${v.sourceChecksum}), target ${v.targetRows} rows (${v.targetChecksum})`;
    set(
      {
        type: VALIDATED,
        status: passed ? "True" : "False",
        reason: passed ? "ChecksumsMatch" : "ChecksumsDiffer",
        message,
        observedGeneration: generation,
      },
      () => ({
        type: passed ? "Normal" : "Warning",
        reason: passed ? "ValidationPassed" : "ValidationFailed",
        note: passed ? `Source and target agree (${message}).` : `Source and target differ (${message}).`,
      }),
    );
  }

  // The shadow-table fallback: it counts validations itself (status.shadow keeps its memory, so
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
    validations: validated.map((r) => ({
      run: r.name,
      result: r.validation!.result,
      finishedAt: r.completionTime ?? "",
    })),
    fillRun: runs.find((r) => r.name === current.shadow?.fillRun),
    now,
  });
  decision.shadow = shadow;
  if (shadow.changed || current.shadow === undefined)
    status.shadow = shadow.status as SyncJobStatus["shadow"];
  for (const c of shadow.conditions) {
    set({ ...c, observedGeneration: generation });
  }
  events.push(...shadow.events);
  for (const a of shadow.actions) {
    if (a.kind === "StartShadowFill")
      decision.create.push({ name: a.run, type: "ShadowFill", trigger: "Controller" });
  }

  // The realtime session's breaker, mirrored from its run.
  const session = runs.filter((r) => r.type === "Realtime" && !isFinished(r.phase) && r.breaker?.state).pop();
  if (session?.breaker?.state) {
    const b = session.breaker;
    const state = (b.state === "HalfOpen" || b.state === "Open" ? b.state : "Closed") as
      | "Closed"
      | "Open"
      | "HalfOpen";
    status.breaker = {
      state,
      ...(b.slowCallRate !== undefined ? { slowCallRate: b.slowCallRate } : {}),
      ...(b.failureRate !== undefined ? { failureRate: b.failureRate } : {}),
      ...(b.bufferedRecords !== undefined ? { bufferedRecords: b.bufferedRecords } : {}),
      ...(b.lastTransitionTime ? { lastTransitionTime: b.lastTransitionTime } : {}),
    };
  }

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
    // The realtime channel: one long-lived Realtime run while the job is realtime or hybrid.
    if (job.spec.mode !== "batch" && !runs.some((r) => r.type === "Realtime" && !isFinished(r.phase))) {
      // A session that keeps failing is restarted with exponential backoff (10 s doubling to 5 min),
      // counted over the consecutive failed sessions, as a pod in CrashLoopBackOff.
      const sessions = runs.filter((r) => r.type === "Realtime");
      let failures = 0;
      for (let i = sessions.length - 1; i >= 0 && sessions[i]!.phase === "Failed"; i--) failures++;
      const last = sessions[sessions.length - 1];
      const backoffMs = failures === 0 ? 0 : Math.min(10_000 * 2 ** (failures - 1), 300_000);
      const resumeAt = (Date.parse(last?.completionTime ?? "") || 0) + backoffMs;
      if (failures > 0 && resumeAt > now.getTime()) soonest(resumeAt - now.getTime());
      else
        decision.create.push({
          name: runName(job.metadata.name ?? "job", "rt", now),
          type: "Realtime",
          trigger: "Stream",
        });
    }
    // The schedule: at most one run per missed fire (as CronJob, missed fires are not replayed).
    // Schedules: the job's own (batch runs; a hybrid job's scheduled compare) and the realtime
    // compare (spec.validation.schedule). At most one run per missed fire, as CronJob.
    const fire = (
      schedule: string | undefined,
      last: string | undefined,
      kind: string,
      type: NewRun["type"],
      record: (at: string) => void,
    ) => {
      if (!schedule) return;
      const cron = cronOf(schedule, job.spec.timeZone ?? "UTC");
      const due = cron.nextRun(new Date(last ?? object.metadata?.creationTimestamp ?? now.toISOString()));
      if (due && due.getTime() <= now.getTime()) {
        decision.create.push({
          name: runName(job.metadata.name ?? "job", kind, due),
          type,
          trigger: "Schedule",
        });
        record(kubeTime(now));
        const next = cron.nextRun(now);
        if (next) soonest(next.getTime() - now.getTime());
      } else if (due) {
        soonest(due.getTime() - now.getTime());
      }
      // The Cron is shared and must never be stopped: a stopped croner Cron answers nextRun() with
      // null for good, so every later reconcile of every job on this schedule would find nothing due.
    };
    fire(
      job.spec.schedule,
      current.lastScheduleTime,
      "s",
      job.spec.mode === "hybrid" ? "Validation" : "Batch",
      (at) => {
        status.lastScheduleTime = at;
      },
    );
    if (job.spec.mode === "realtime" && job.spec.validation?.enabled !== false) {
      fire(job.spec.validation?.schedule, current.lastValidationTime, "v", "Validation", (at) => {
        status.lastValidationTime = at;
      });
    }
    // Compensation: once the breaker has closed again, replay what the session buffered meanwhile.
    const buffered = status.breaker?.bufferedRecords ?? 0;
    if (
      status.breaker?.state === "Closed" &&
      buffered > 0 &&
      !runs.some((r) => r.type === "Compensation" && !isFinished(r.phase))
    ) {
      decision.create.push({
        name: runName(job.metadata.name ?? "job", "c", now),
        type: "Compensation",
        trigger: "Stream",
      });
    }
    const requested = object.metadata?.annotations?.[RUN_NOW_ANNOTATION];
    if (requested !== undefined && requested !== current.lastManualRequest) {
      // Named after the request, so that the same request never starts two runs.
      const token = createHash("sha256").update(requested).digest("hex").slice(0, 8);
      decision.create.push({
        name: `${(job.metadata.name ?? "job").slice(0, 240)}-m${token}`,
        // A stream has no batch copy: a manual run of a Kafka-sourced job is a compare.
        type: job.spec.source.kafka ? "Validation" : "Batch",
        trigger: "Manual",
      });
      status.lastManualRequest = requested;
    }
  }

  // Clean-up of finished runs: history limits, then TTL from completionTime (as the Job TTL controller).
  const finished = runs.filter((r) => isFinished(r.phase));
  const succeeded = finished.filter((r) => r.phase === "Succeeded");
  const failed = finished.filter((r) => r.phase !== "Succeeded");
  const doomed = new Set<string>([
    ...succeeded
      .slice(0, Math.max(0, succeeded.length - effective.successfulRunsHistoryLimit))
      .map((r) => r.name),
    ...failed.slice(0, Math.max(0, failed.length - effective.failedRunsHistoryLimit)).map((r) => r.name),
  ]);
  const ttl = effective.ttlSecondsAfterFinished;
  if (ttl !== undefined) {
    for (const r of finished) {
      if (doomed.has(r.name)) continue;
      const done = Date.parse(r.completionTime ?? "");
      if (Number.isNaN(done)) continue;
      const expires = done + ttl * 1000;
      if (expires <= now.getTime()) doomed.add(r.name);
      else soonest(expires - now.getTime());
    }
  }
  decision.delete = [...doomed];
  if (decision.shadow?.requeueAfterMs !== undefined) soonest(decision.shadow.requeueAfterMs);
  if (requeue !== undefined) decision.requeueAfterMs = Math.max(requeue, 100);
  return finish(decision, current, status, conditions, changed);
}

function finish(
  decision: JobDecision,
  current: SyncJobStatus,
  status: Partial<SyncJobStatus>,
  conditions: Condition[] | undefined,
  conditionsChanged: boolean,
): JobDecision {
  const next: Partial<SyncJobStatus> = { ...status, conditions: conditions ?? [] };
  const differs =
    conditionsChanged ||
    (Object.keys(next) as (keyof SyncJobStatus)[]).some(
      (k) => k !== "conditions" && JSON.stringify(next[k]) !== JSON.stringify(current[k]),
    );
  if (differs) decision.status = next;
  return decision;
}

function enforcementOf(verdict: EffectivePolicy["verdict"]): "Enforce" | "Warn" | "Audit" {
  return verdict === "Block" ? "Enforce" : verdict === "Warn" ? "Warn" : "Audit";
}

/**
 * `<job>-<kind><unix seconds>`: deterministic per trigger (a cron fire, a manual request), so a
 * reconcile repeated before the run shows up in the informer creates no duplicate (the create
 * answers 409 AlreadyExists).
 */
export function runName(job: string, kind: string, at: Date): string {
  const suffix = `-${kind}${Math.floor(at.getTime() / 1000).toString(36)}`;
  return `${job.slice(0, 253 - suffix.length)}${suffix}`;
}

export type { SyncRunStatus };
