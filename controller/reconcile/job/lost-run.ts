/**
 * Runs that lost their runner (docs/architecture.md, "Runs that lose their runner"). A runner that
 * ends without writing the run's result — killed, OOM-killed, evicted, its pod or Job deleted, past
 * its deadline — or that stops beating (status.heartbeatTime older than RUNNER_HEARTBEAT_TIMEOUT_MS)
 * leaves its run Running. These deciders say what becomes of such a run, as Kubernetes Jobs treat
 * a failed pod: the attempt is failed, its slot freed, and the run retried after an exponential
 * backoff until its backoff limit is exceeded; then it ends Failed.
 *
 * - A Realtime session is not retried in place: it ends Failed at once, and the job's session
 *   decider (./triggers.ts, decideRealtimeSession) starts a new session with its own backoff.
 * - Any other run goes back to Queued with status.nextAttemptTime (the scheduler admits it again no
 *   sooner) and status.runnerFailures counted up; the next runner counts status.attempts up.
 *
 * Pure: the launcher (when an executor reports its runner ended) and the SyncJob controller (for a
 * silent runner) perform the answer with a write conditional on the run's resourceVersion.
 */

import { RUNNER_HEARTBEAT_TIMEOUT_MS } from "../../api/phases.ts";
import type { SyncRunStatus } from "../../api/syncrun.ts";
import type { EventRecord } from "../../kube/events.ts";

/** Lost runners a run survives, as a Job's backoffLimit (Kubernetes' default is 6 too). */
export const RUN_BACKOFF_LIMIT = 6;
/** The first retry's delay, doubling per lost runner up to RUN_BACKOFF_MAX_MS (as Jobs: 10 s to 6 min). */
export const RUN_BACKOFF_BASE_MS = 10_000;
export const RUN_BACKOFF_MAX_MS = 360_000;

/** The delay before the retry that follows the n-th lost runner (n ≥ 1): 10 s, 20 s, 40 s, … 6 min. */
export function retryBackoffMs(failures: number): number {
  return Math.min(RUN_BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1), RUN_BACKOFF_MAX_MS);
}

/** Why a runner is gone, for the run's condition and message. */
export interface RunnerLoss {
  /** RunnerExited, RunnerPodFailed, RunnerJobGone, RunnerUnresponsive, … */
  readonly reason: string;
  /** e.g. "runner pod p-1 was OOMKilled (exit 137)", "no heartbeat for 60 s". */
  readonly message: string;
}

/** What a Running run looks like to these deciders. */
export interface RunningRun {
  readonly type: string | undefined;
  readonly status: SyncRunStatus | undefined;
}

/**
 * When a Running run's runner counts as gone for lack of heartbeats: a RunnerLoss once its last
 * heartbeat is older than the timeout, else the time (ms epoch) to look again. A run without a
 * heartbeat yet (its runner has not started, or predates heartbeats) is left to its executor.
 */
export function staleHeartbeat(
  status: SyncRunStatus | undefined,
  now: Date,
  timeoutMs = RUNNER_HEARTBEAT_TIMEOUT_MS,
): { loss: RunnerLoss } | { checkAt: number } | undefined {
  if (status?.phase !== "Running" || !status.heartbeatTime) return undefined;
  const last = Date.parse(status.heartbeatTime);
  if (Number.isNaN(last)) return undefined;
  const silentMs = now.getTime() - last;
  if (silentMs < timeoutMs) return { checkAt: last + timeoutMs };
  return {
    loss: {
      reason: "RunnerUnresponsive",
      message: `no heartbeat from the runner for ${Math.round(silentMs / 1000)} s (last ${status.heartbeatTime}; the bound is ${timeoutMs / 1000} s)`,
    },
  };
}

export interface LostRunDecision {
  /** Merge patch of the run's status. */
  readonly status: Record<string, unknown>;
  readonly event: EventRecord;
  /** Whether the run is retried (Queued again) rather than Failed for good. */
  readonly retried: boolean;
}

/**
 * The run's status once its runner is lost: Queued again with a backoff while runnerFailures stays
 * within the limit (never for a Realtime session), else Failed with the loss named. Either way the
 * run stops holding a slot, and heartbeat and executor are cleared for the next runner.
 */
export function decideLostRun(
  run: RunningRun,
  loss: RunnerLoss,
  now: Date,
  backoffLimit = RUN_BACKOFF_LIMIT,
): LostRunDecision {
  const failures = (run.status?.runnerFailures ?? 0) + 1;
  const attempt = run.status?.attempts ?? 0;
  const realtime = run.type === "Realtime";
  const what = `attempt ${attempt}: ${loss.message}`;
  const condition = (type: string, reason: string, message: string) => ({
    type,
    status: "True",
    reason,
    message,
    lastTransitionTime: now.toISOString().replace(/\.\d{3}Z$/, "Z"),
  });
  const conditions = (extra: ReturnType<typeof condition>[]) => {
    const kept = (run.status?.conditions ?? []).filter((c) => !extra.some((e) => e.type === c.type));
    return [...kept, ...extra];
  };
  const common = { runnerFailures: failures, heartbeatTime: null, executor: null };
  if (!realtime && failures <= backoffLimit) {
    const delay = retryBackoffMs(failures);
    const at = new Date(now.getTime() + delay).toISOString();
    const message = `runner lost (${what}); retrying in ${delay / 1000} s (${failures} of ${backoffLimit} lost runners allowed)`;
    return {
      retried: true,
      status: {
        ...common,
        phase: "Queued",
        nextAttemptTime: at,
        queueReason: message,
        message,
        conditions: conditions([condition("RunnerLost", loss.reason, what)]),
      },
      event: { type: "Warning", reason: "RunnerLost", note: message },
    };
  }
  const reason = realtime ? loss.reason : "BackoffLimitExceeded";
  const message = realtime
    ? `runner lost (${what}); the job starts a new session`
    : `runner lost (${what}); ${failures} lost runners exceed the backoff limit of ${backoffLimit}`;
  return {
    retried: false,
    status: {
      ...common,
      phase: "Failed",
      completionTime: now.toISOString(),
      nextAttemptTime: null,
      message,
      conditions: conditions([
        condition("RunnerLost", loss.reason, what),
        condition("Failed", reason, message),
      ]),
    },
    event: { type: "Warning", reason: "RunFailed", note: message },
  };
}
