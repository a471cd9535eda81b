import type { RunSummary } from "../../cache/objects.ts";

export type { RunSummary };

/** A SyncRun the job reconciler asks to create. */
export interface NewRun {
  name: string;
  type: "Batch" | "Realtime" | "Validation" | "Compensation" | "ShadowFill";
  trigger: "Schedule" | "Manual" | "Stream" | "Controller";
}

/** The job's runs, oldest first (ties by name), as every decider expects them. */
export function byAge(runs: readonly RunSummary[]): RunSummary[] {
  return [...runs].sort((a, b) => a.createdAt - b.createdAt || a.name.localeCompare(b.name));
}
