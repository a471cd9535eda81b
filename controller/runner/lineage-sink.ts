/**
 * The runner's LineageSink (./lineage.ts) on OpenLineage: each run becomes a RunLineage
 * (controller/lineage/events.ts) whose events go through a LineageEmitter — START when the run
 * starts, RUNNING on progress at most every 30 s, and at the end COMPLETE (succeeded), ABORT
 * (cancelled) or FAIL (failed, with the scrubbed message as the error facet).
 *
 * The runId is the one the SyncRun's status records (lineageRunId), so every attempt of a run and
 * every event agree on it; a Realtime run is a STREAMING job, the others BATCH. The final events carry
 * what the run measured: rows read on the inputs, rows written on the outputs, and a validation's
 * checksums as the syncgov_checksum facet. Nothing here throws into the run: the emitter queues and
 * never rejects.
 */

import {
  createLineageEmitter,
  type LineageConfig,
  type LineageEmitter,
  lineageConfigFromEnv,
} from "../lineage/emitter.ts";
import {
  type LineageDataset as EventDataset,
  type Measured,
  RunLineage,
  syncJobLineageJob,
} from "../lineage/events.ts";
import { isUuidV7 } from "../lineage/uuid.ts";
import type { Logger } from "../telemetry/logger.ts";
import type { LineageRun, LineageSink } from "./lineage.ts";
import type { RunCounts } from "./progress.ts";
import type { RunResult } from "./types.ts";

export interface OpenLineageSinkOptions {
  readonly emitter: LineageEmitter;
  /** The installation's job namespace in lineage (SYNCGOV_LINEAGE_NAMESPACE); default "syncgov". */
  readonly namespace?: string;
  /** RUNNING events at most this often per run; default 30 s. */
  readonly runningIntervalMs?: number;
  /** Monotonic milliseconds; injectable for tests. */
  readonly now?: () => number;
}

interface TrackedRun {
  readonly lineage: RunLineage;
  lastRunning: number;
}

export class OpenLineageSink implements LineageSink {
  readonly emitter: LineageEmitter;
  readonly #namespace: string;
  readonly #runningIntervalMs: number;
  readonly #now: () => number;
  readonly #runs = new Map<string, TrackedRun>();

  constructor(options: OpenLineageSinkOptions) {
    this.emitter = options.emitter;
    this.#namespace = options.namespace ?? "syncgov";
    this.#runningIntervalMs = options.runningIntervalMs ?? 30_000;
    this.#now = options.now ?? (() => performance.now());
  }

  start(run: LineageRun): void {
    const tracked = this.#track(run);
    tracked.lastRunning = this.#now();
    void this.emitter.emit(tracked.lineage.start());
  }

  progress(run: LineageRun, counts: RunCounts): void {
    const tracked = this.#track(run);
    const now = this.#now();
    if (now - tracked.lastRunning < this.#runningIntervalMs) return;
    tracked.lastRunning = now;
    void this.emitter.emit(tracked.lineage.running(measured(run, counts)));
  }

  complete(run: LineageRun, result: RunResult): void {
    const tracked = this.#track(run);
    this.#runs.delete(keyOf(run));
    void this.emitter.emit(tracked.lineage.complete(measured(run, result.counts, result)));
  }

  fail(run: LineageRun, result: RunResult): void {
    const tracked = this.#track(run);
    this.#runs.delete(keyOf(run));
    const datasets = measured(run, result.counts, result);
    void this.emitter.emit(
      result.phase === "Cancelled"
        ? tracked.lineage.abort(datasets)
        : tracked.lineage.fail(`${result.reason}: ${result.message}`, datasets),
    );
  }

  /** Waits until the queued events were sent (each bounded by the emitter's deadline). */
  flush(): Promise<void> {
    return this.emitter.flush();
  }

  #track(run: LineageRun): TrackedRun {
    const key = keyOf(run);
    let tracked = this.#runs.get(key);
    if (!tracked) {
      tracked = {
        lineage: new RunLineage({
          job: syncJobLineageJob(run.job.namespace, run.job.name, this.#namespace),
          inputs: run.inputs,
          outputs: run.outputs,
          processingType: run.type === "Realtime" ? "STREAMING" : "BATCH",
          ...(run.runId !== undefined && isUuidV7(run.runId) ? { runId: run.runId } : {}),
        }),
        lastRunning: Number.NEGATIVE_INFINITY,
      };
      this.#runs.set(key, tracked);
    }
    return tracked;
  }
}

function keyOf(run: LineageRun): string {
  return `${run.run.namespace}/${run.run.name}/${run.runId ?? ""}`;
}

/** The run's datasets with what it measured: rows read, rows written, and the validation's checksums. */
function measured(run: LineageRun, counts: RunCounts, result?: RunResult): Measured {
  const v = result?.validation;
  const inputs: EventDataset[] = run.inputs.map((d, i) => ({
    ...d,
    rowCount: counts.rowsRead,
    ...(v && i === 0 ? { checksum: { rowCount: v.sourceRows, sum: v.sourceChecksum } } : {}),
  }));
  const outputs: EventDataset[] = run.outputs.map((d, i) => ({
    ...d,
    rowCount: counts.rowsWritten,
    ...(v && i === 0 ? { checksum: { rowCount: v.targetRows, sum: v.targetChecksum } } : {}),
  }));
  return { inputs, outputs };
}

let processSink: { readonly sink: OpenLineageSink | undefined } | undefined;

/**
 * The process's lineage sink, configured from the SYNCGOV_LINEAGE* environment (console by default,
 * controller/lineage/emitter.ts) and shared by every run the process executes. Invalid settings are
 * logged once and turn lineage off rather than stop runs.
 */
export function processLineageSink(logger?: Logger): OpenLineageSink | undefined {
  if (!processSink) {
    let config: LineageConfig | undefined;
    try {
      config = lineageConfigFromEnv();
    } catch (error) {
      logger?.warn({ error: error instanceof Error ? error.message : String(error) }, "lineage is off");
    }
    processSink = {
      sink: config
        ? new OpenLineageSink({
            emitter: createLineageEmitter(config, logger ? { logger } : {}),
            namespace: config.namespace,
          })
        : undefined,
    };
  }
  return processSink.sink;
}
