import { isFinishedPhase } from "../../api/phases.ts";
import type { EffectivePolicy } from "../../policy/effective.ts";
import type { RunSummary } from "./types.ts";

/**
 * Finished runs to delete: beyond the history limits (oldest first), then those whose TTL since
 * completionTime has passed (as the Job TTL controller); `requeueAfterMs` is the next expiry.
 */
export function decideCleanup(
  runs: readonly RunSummary[],
  effective: Pick<
    EffectivePolicy,
    "successfulRunsHistoryLimit" | "failedRunsHistoryLimit" | "ttlSecondsAfterFinished"
  >,
  now: Date,
): { delete: string[]; requeueAfterMs?: number } {
  const finished = runs.filter((r) => isFinishedPhase(r.phase));
  const succeeded = finished.filter((r) => r.phase === "Succeeded");
  const failed = finished.filter((r) => r.phase !== "Succeeded");
  const doomed = new Set<string>([
    ...succeeded
      .slice(0, Math.max(0, succeeded.length - effective.successfulRunsHistoryLimit))
      .map((r) => r.name),
    ...failed.slice(0, Math.max(0, failed.length - effective.failedRunsHistoryLimit)).map((r) => r.name),
  ]);
  let next: number | undefined;
  const ttl = effective.ttlSecondsAfterFinished;
  if (ttl !== undefined) {
    for (const r of finished) {
      if (doomed.has(r.name)) continue;
      const done = Date.parse(r.completionTime ?? "");
      if (Number.isNaN(done)) continue;
      const expires = done + ttl * 1000;
      if (expires <= now.getTime()) doomed.add(r.name);
      else next = Math.min(next ?? Number.POSITIVE_INFINITY, expires - now.getTime());
    }
  }
  return { delete: [...doomed], ...(next !== undefined ? { requeueAfterMs: next } : {}) };
}
