import { isWaitingPhase } from "../api/phases.ts";
import type { SyncJob } from "../api/syncjob.ts";
import { holdsSlot, type StoredObject } from "../cache/objects.ts";
import type { EffectivePolicy } from "../policy/effective.ts";
import type { RegistryView } from "../registry/registry.ts";
import type { AdmissionInput, PendingRun } from "./admission.ts";
import { outsideBatchWindows } from "./windows.ts";

/** What the scheduler needs to know about a job with waiting runs. */
export interface JobAdmission {
  /** Absent for an invalid job, which carries a refusal instead. */
  job?: SyncJob | undefined;
  effective?: EffectivePolicy | undefined;
  /** The job is invalid or blocked by policy: its runs are not admitted. */
  refusal?: string | undefined;
}

export function isWaiting(e: StoredObject): boolean {
  return e.kind === "SyncRun" && isWaitingPhase(e.phase);
}

/** The identity of a job's target for the per-target limit: same connection Secret and table. */
export function targetKey(namespace: string, job: SyncJob): string {
  const sql = job.spec.target.sql;
  return `${namespace}/${sql.connectionSecretRef.name}/${sql.table}`;
}

export interface BuiltInput {
  input: AdmissionInput;
  /** Waiting runs whose job refuses them (invalid, blocked, missing), with the reason. */
  refused: { run: StoredObject; reason: string; message: string }[];
  /**
   * The soonest status.nextAttemptTime (ms epoch) of a run queued again after its runner was lost
   * and still in its backoff: it is left out of this pass, and the pass after that time admits it.
   */
  retryAt?: number;
}

/** Builds the admission decision's input from one registry view. */
export function admissionInput(
  view: RegistryView<StoredObject>,
  admissionOf: (namespace: string, jobName: string) => JobAdmission | undefined,
  now: Date,
): BuiltInput {
  const pending: PendingRun[] = [];
  const refused: BuiltInput["refused"] = [];
  const running: AdmissionInput["running"][number][] = [];
  let retryAt: number | undefined;
  for (const run of view.ofKind("SyncRun")) {
    const namespace = run.namespace ?? "";
    if (holdsSlot(run)) {
      running.push({
        key: `${namespace}/${run.name}`,
        namespace,
        jobName: run.jobName ?? "",
        target: run.target ?? "",
        realtime: run.runType === "Realtime",
      });
      continue;
    }
    if (!isWaiting(run)) continue;
    const next = Date.parse(
      (run.object as { status?: { nextAttemptTime?: string } }).status?.nextAttemptTime ?? "",
    );
    if (next > now.getTime()) {
      retryAt = retryAt === undefined ? next : Math.min(retryAt, next);
      continue;
    }
    const a = admissionOf(namespace, run.jobName ?? "");
    if (!a) {
      refused.push({
        run,
        reason: "JobNotFound",
        message: `SyncJob ${run.jobName} does not exist in ${namespace}`,
      });
      continue;
    }
    if (a.refusal || !a.job || !a.effective) {
      refused.push({
        run,
        reason: "JobNotAdmissible",
        message: a.refusal ?? `job ${run.jobName} cannot be admitted`,
      });
      continue;
    }
    const spec = (run.object as { spec?: { priority?: number } }).spec;
    const isBatch = run.runType === undefined || run.runType === "Batch";
    const realtime = run.runType === "Realtime";
    pending.push({
      key: `${namespace}/${run.name}`,
      namespace,
      name: run.name,
      jobName: run.jobName ?? "",
      target: targetKey(namespace, a.job),
      priority: spec?.priority ?? a.job.spec.priority,
      createdAt: Date.parse(run.object.metadata?.creationTimestamp as unknown as string) || 0,
      // A realtime session is one per job (decideAdmissions skips a second one); concurrencyPolicy
      // governs batch overlap. Sessions count against the policy's limits like any run.
      concurrencyPolicy: realtime ? "Allow" : a.job.spec.concurrencyPolicy,
      realtime,
      limits: {
        maxRunsPerNamespace: a.effective.maxRunsPerNamespace,
        maxRunsPerTarget: a.effective.maxRunsPerTarget,
        maxRunsGlobal: a.effective.maxRunsGlobal,
      },
      outsideWindow: isBatch ? outsideBatchWindows(a.effective.batchWindows, now) : undefined,
    });
  }
  return { input: { pending, running }, refused, ...(retryAt !== undefined ? { retryAt } : {}) };
}
