import { createHash } from "node:crypto";
import { Cron } from "croner";
import { isFinishedPhase } from "../../api/phases.ts";
import { requestMark } from "../../api/request-mark.ts";
import type { SyncJob } from "../../api/syncjob.ts";
import { runName } from "./run-name.ts";
import type { NewRun, RunSummary } from "./types.ts";

/** What a trigger decider asks for: a run to create, and when to look again. */
export interface TriggerDecision {
  readonly create?: NewRun;
  readonly requeueAfterMs?: number;
}

/**
 * The realtime channel: one long-lived Realtime run while the job is realtime or hybrid. A session
 * that keeps failing is restarted with exponential backoff (10 s doubling to 5 min), counted over the
 * consecutive failed sessions, as a pod in CrashLoopBackOff. Runs oldest first.
 */
export function decideRealtimeSession(job: SyncJob, runs: readonly RunSummary[], now: Date): TriggerDecision {
  if (job.spec.mode === "batch") return {};
  const sessions = runs.filter((r) => r.type === "Realtime");
  if (sessions.some((r) => !isFinishedPhase(r.phase))) return {};
  let failures = 0;
  for (let i = sessions.length - 1; i >= 0 && sessions[i]!.phase === "Failed"; i--) failures++;
  const backoffMs = failures === 0 ? 0 : Math.min(10_000 * 2 ** (failures - 1), 300_000);
  const resumeAt = (Date.parse(sessions.at(-1)?.completionTime ?? "") || 0) + backoffMs;
  if (failures > 0 && resumeAt > now.getTime()) return { requeueAfterMs: resumeAt - now.getTime() };
  return {
    create: { name: runName(job.metadata.name ?? "job", "rt", now), type: "Realtime", trigger: "Stream" },
  };
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

export interface ScheduleInput {
  readonly job: string;
  readonly schedule: string | undefined;
  readonly timeZone: string;
  /** When this schedule last fired (status), else the job's creation time. */
  readonly since: string;
  /** The run name's kind letter: "s" for the job's schedule, "v" for the realtime compare's. */
  readonly kind: string;
  readonly type: NewRun["type"];
  readonly now: Date;
}

/**
 * A cron schedule: one run when a fire is due since the last one, named after that fire; missed
 * fires are not replayed (as CronJob), so the next is looked for from now. `fired` is the time to
 * record as the schedule's last fire.
 */
export function decideScheduleFire(input: ScheduleInput): TriggerDecision & { readonly fired?: Date } {
  if (!input.schedule) return {};
  const cron = cronOf(input.schedule, input.timeZone);
  const now = input.now;
  const due = cron.nextRun(new Date(input.since));
  if (!due) return {};
  if (due.getTime() > now.getTime()) return { requeueAfterMs: due.getTime() - now.getTime() };
  const next = cron.nextRun(now);
  return {
    create: { name: runName(input.job, input.kind, due), type: input.type, trigger: "Schedule" },
    fired: now,
    ...(next ? { requeueAfterMs: next.getTime() - now.getTime() } : {}),
  };
}

/** Compensation: once the breaker has closed again, replay what the session buffered meanwhile. */
export function decideCompensation(
  job: string,
  breaker: { state?: string; bufferedRecords?: number } | undefined,
  runs: readonly RunSummary[],
  now: Date,
): TriggerDecision {
  if (breaker?.state !== "Closed" || (breaker.bufferedRecords ?? 0) <= 0) return {};
  if (runs.some((r) => r.type === "Compensation" && !isFinishedPhase(r.phase))) return {};
  return { create: { name: runName(job, "c", now), type: "Compensation", trigger: "Stream" } };
}

/** Annotation a person sets (to any new value) to start a run by hand: `kubectl annotate sj x syncgov.io/run-now=$(date +%s)`. */
export const RUN_NOW_ANNOTATION = "syncgov.io/run-now";

/**
 * A run by hand: one per new value of the run-now annotation, named after the value so that the same
 * request never starts two runs. A stream has no batch copy: a manual run of a Kafka-sourced job is
 * a compare. `requested` is the value to record as handled.
 */
export function decideManualRun(
  job: SyncJob,
  lastManualRequest: string | undefined,
): TriggerDecision & { readonly requested?: string } {
  const value = job.metadata.annotations?.[RUN_NOW_ANNOTATION];
  if (value === undefined) return {};
  const requested = requestMark(value);
  if (requested === lastManualRequest) return {};
  const token = createHash("sha256").update(value).digest("hex").slice(0, 8);
  return {
    create: {
      name: `${(job.metadata.name ?? "job").slice(0, 240)}-m${token}`,
      type: job.spec.source.kafka ? "Validation" : "Batch",
      trigger: "Manual",
    },
    requested,
  };
}
