/**
 * The runner's adapter to shadow mode: pointing a run at the table a job writes to in its shadow
 * state (../shadow/state.ts decides which). The steps know nothing of shadow mode: a ShadowFill run
 * is an ordinary full copy whose target is the shadow table, and a realtime session or validation in
 * shadow mode is the ordinary one with the shadow as target.
 */

import type { SyncJobSpec } from "../api/syncjob.ts";
import type { RunInput } from "./types.ts";

/** The job spec with its target table replaced by `table` (the decision's writeTable). */
export function specWritingTo(spec: SyncJobSpec, table: string): SyncJobSpec {
  if (spec.target.sql.table === table) return spec;
  return { ...spec, target: { ...spec.target, sql: { ...spec.target.sql, table } } };
}

/**
 * The input of executeRun for a ShadowFill run: a full (never incremental) Batch copy from the
 * source into `shadowTable`, which validates at its end like any Batch run, so the approver sees how
 * the shadow compares with the source. The run keeps its own identity (name, uid) for status and
 * lineage; its lineage output is the shadow table.
 */
export function shadowFillRunInput(input: RunInput, shadowTable: string): RunInput {
  return {
    ...input,
    spec: { ...input.spec, type: "Batch", incremental: false },
    job: { ...input.job, spec: specWritingTo(input.job.spec, shadowTable) },
    previousCursor: undefined,
  };
}
