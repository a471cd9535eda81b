/**
 * The one definition of what a SyncRun's phase means to the controller, the scheduler and the
 * runner. Lifecycle (docs/architecture.md): Pending (created, no decision yet) → Queued (waiting for a
 * slot or a window) → Running (admitted; holds a slot unless it is a Realtime session) → Succeeded,
 * Failed, Cancelled or Skipped, which are terminal: a finished run never runs again.
 */

import type { RunPhase } from "./syncrun.ts";

/** Terminal phases: the run is over and only its status remains (until TTL or history limits). */
export const FINISHED_RUN_PHASES: ReadonlySet<string> = new Set<RunPhase>([
  "Succeeded",
  "Failed",
  "Cancelled",
  "Skipped",
]);

/** Phases in which the run executes (and, unless it is a Realtime session, holds a concurrency slot). */
export const ACTIVE_RUN_PHASES: ReadonlySet<string> = new Set<RunPhase>(["Running"]);

/** Phases of a run waiting for admission; a run without a phase yet waits too. */
export const WAITING_RUN_PHASES: ReadonlySet<string> = new Set<RunPhase>(["Pending", "Queued"]);

export function isFinishedPhase<P extends string>(phase: P | undefined): phase is P {
  return phase !== undefined && FINISHED_RUN_PHASES.has(phase);
}

export function isActivePhase(phase: string | undefined): boolean {
  return phase !== undefined && ACTIVE_RUN_PHASES.has(phase);
}

export function isWaitingPhase(phase: string | undefined): boolean {
  return phase === undefined || WAITING_RUN_PHASES.has(phase);
}

/**
 * Liveness of a running run (docs/architecture.md, "Runs that lose their runner"): the runner writes
 * status.heartbeatTime every RUNNER_HEARTBEAT_INTERVAL_MS while it runs; the controller takes a
 * runner whose last heartbeat is older than RUNNER_HEARTBEAT_TIMEOUT_MS (six missed beats) for gone.
 */
export const RUNNER_HEARTBEAT_INTERVAL_MS = 10_000;
export const RUNNER_HEARTBEAT_TIMEOUT_MS = 60_000;
