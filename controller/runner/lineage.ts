/**
 * The runner's side of lineage: a small sink the OpenLineage adapter (./lineage-sink.ts) implements.
 * The runner calls it at the start, on progress (at most once per second), and once at the end; a
 * sink that throws or rejects is logged and never changes the run's outcome. Messages handed to it
 * are already scrubbed of Secret values, and datasets are named by controller/lineage/naming.ts,
 * which never reads credentials out of a connection URL.
 */

import type { RunType } from "../api/syncrun.ts";
import type { DatasetName } from "../lineage/naming.ts";
import type { RunCounts } from "./progress.ts";
import type { RunIdentity, RunResult } from "./types.ts";

/** A dataset in OpenLineage naming (e.g. `postgres://host:port` + `database.schema.table`). */
export type LineageDataset = DatasetName;

export interface LineageRun {
  readonly run: RunIdentity;
  /** The OpenLineage runId (a UUIDv7) recorded in the SyncRun's status, so a retried attempt keeps it. */
  readonly runId?: string | undefined;
  readonly job: { readonly namespace: string; readonly name: string };
  readonly type: RunType;
  readonly inputs: readonly LineageDataset[];
  readonly outputs: readonly LineageDataset[];
}

export interface LineageSink {
  start(run: LineageRun): void | Promise<void>;
  progress(run: LineageRun, counts: RunCounts): void | Promise<void>;
  /** The run succeeded; the result carries counts and validation (the data-quality facet). */
  complete(run: LineageRun, result: RunResult): void | Promise<void>;
  /** The run failed or was cancelled (result.phase says which: FAIL or ABORT). */
  fail(run: LineageRun, result: RunResult): void | Promise<void>;
  /** Resolves once the events handed over so far were delivered or given up on; the runner awaits it before it exits. */
  flush?(): Promise<void>;
}
