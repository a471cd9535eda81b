/**
 * The runner's side of lineage: a small sink the OpenLineage emitter (controller/lineage/)
 * implements. The runner calls it at the start, on progress (at most once per second), and once at
 * the end; a sink that throws or rejects is logged and never changes the run's outcome. Messages
 * handed to it are already scrubbed of Secret values.
 */

import type { RunType } from "../api/syncrun.ts";
import type { RunCounts } from "./progress.ts";
import type { RunIdentity, RunResult } from "./run.ts";

/** A dataset in OpenLineage naming: namespace `postgres://host:port`, name `database.schema.table`. */
export interface LineageDataset {
  readonly namespace: string;
  readonly name: string;
}

export interface LineageRun {
  readonly run: RunIdentity;
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
}

/**
 * The dataset of a PostgreSQL table, named from the connection URL's host, port and database only:
 * the user name and password never leave the URL.
 */
export function datasetOfTable(connectionUrl: string | undefined, table: string): LineageDataset {
  let namespace = "postgres://unknown";
  let database = "";
  if (connectionUrl) {
    try {
      const url = new URL(connectionUrl);
      namespace = `postgres://${url.hostname}:${url.port || "5432"}`;
      database = decodeURIComponent(url.pathname.replace(/^\//, ""));
    } catch {
      // A URL the WHATWG parser rejects (pg accepts a few more forms): the table name alone still says what.
    }
  }
  const qualified = table.includes(".") ? table : `public.${table}`;
  return { namespace, name: database ? `${database}.${qualified}` : qualified };
}

export function datasetOfFile(path: string): LineageDataset {
  return { namespace: "file", name: path };
}
