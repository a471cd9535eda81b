import type { SyncRunStatus } from "../../api/syncrun.ts";

/** A SyncRun the job reconciler asks to create. */
export interface NewRun {
  name: string;
  type: "Batch" | "Realtime" | "Validation" | "Compensation" | "ShadowFill";
  trigger: "Schedule" | "Manual" | "Stream" | "Controller";
}

/** What the job deciders read of each of the job's runs. */
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

/** The job's runs, oldest first (ties by name), as every decider expects them. */
export function byAge(runs: readonly RunSummary[]): RunSummary[] {
  return [...runs].sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name));
}
