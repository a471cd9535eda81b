import { isFinishedPhase } from "../../api/phases.ts";
import type { SyncJobStatus } from "../../api/syncjob.ts";
import type { ConditionLedger } from "./ledger.ts";
import type { RunSummary } from "./types.ts";

export const VALIDATED = "Validated";

/**
 * The job's lastValidation and Validated condition, mirrored from the newest finished run that
 * validated (runs oldest first); nothing when no run validated yet.
 */
export function mirrorValidation(
  runs: readonly RunSummary[],
  generation: number,
  ledger: ConditionLedger,
): SyncJobStatus["lastValidation"] | undefined {
  const latest = runs.filter((r) => isFinishedPhase(r.phase) && r.validation).at(-1);
  const v = latest?.validation;
  if (!latest || !v) return undefined;
  const passed = v.result === "Passed";
  const message = `${latest.name}: source ${v.sourceRows} rows (${v.sourceChecksum}), target ${v.targetRows} rows (${v.targetChecksum})`;
  ledger.set(
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
  return {
    result: v.result,
    run: latest.name,
    ...(latest.completionTime ? { time: latest.completionTime } : {}),
    sourceRows: v.sourceRows,
    targetRows: v.targetRows,
    sourceChecksum: v.sourceChecksum,
    targetChecksum: v.targetChecksum,
  };
}

/** The job's breaker, mirrored from its live realtime session (the newest unfinished one reporting it). */
export function mirrorBreaker(runs: readonly RunSummary[]): SyncJobStatus["breaker"] | undefined {
  const session = runs
    .filter((r) => r.type === "Realtime" && !isFinishedPhase(r.phase) && r.breaker?.state)
    .at(-1);
  const b = session?.breaker;
  if (!b?.state) return undefined;
  const state = b.state === "HalfOpen" || b.state === "Open" ? b.state : "Closed";
  return {
    state,
    ...(b.slowCallRate !== undefined ? { slowCallRate: b.slowCallRate } : {}),
    ...(b.failureRate !== undefined ? { failureRate: b.failureRate } : {}),
    ...(b.bufferedRecords !== undefined ? { bufferedRecords: b.bufferedRecords } : {}),
    ...(b.lastTransitionTime ? { lastTransitionTime: b.lastTransitionTime } : {}),
  };
}
