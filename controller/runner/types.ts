/**
 * The runner's vocabulary: what a run is given (RunInput), what it hands back (RunResult), and the
 * one protocol between ./run.ts and its steps — each step, batch (./table-copy.ts, ./file-load.ts) or
 * stream (./stream.ts and the steps it runs), receives a RunContext and resolves with a StepOutcome
 * or throws (a RunFailure, RunCancelled, or any error ./run.ts maps to a reason).
 *
 * A leaf of the runner's module graph: it imports from ./ only modules that import nothing from ./
 * themselves, so every step can import it and none has to import ./run.ts.
 */

import type pg from "pg";
import type { SyncJobSpec } from "../api/syncjob.ts";
import type { RunBreakerStatus, SyncRunSpec } from "../api/syncrun.ts";
import type { EventRecord } from "../kube/events.ts";
import type { MaskingRequirement, RowMasker } from "../masking/masking.ts";
import type { BreakerConfigInput } from "../resilience/breaker-config.ts";
import type { ProgressMeter, RunCounts } from "./progress.ts";
import type { RejectionLog, RunRejection } from "./rejections.ts";
import type { RunValidation } from "./validation.ts";

export interface RunIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string | undefined;
}

/** Connection URLs resolved from the job's Secrets; the runner never logs or reports them. */
export interface RunConnections {
  /** For a SQL source. */
  readonly source?: string | undefined;
  readonly target: string;
  /** Kafka bootstrap servers (`host:port`) for a Kafka source and the job's buffer topic. */
  readonly kafkaBrokers?: readonly string[] | undefined;
}

export interface RunInput {
  readonly run: RunIdentity;
  readonly job: { readonly namespace: string; readonly name: string; readonly spec: SyncJobSpec };
  readonly spec: SyncRunSpec;
  readonly connections: RunConnections;
  /** Key of the hash transform, HMAC-SHA256 (from a Secret: spec.maskingKeySecretRef). */
  readonly maskingSalt?: string | undefined;
  /** A policy requires keyed hashing: a hash rule without a key fails the run. */
  readonly hashKeyRequired?: boolean | undefined;
  /** Masking the matching SyncPolicies require; the run refuses to write a matching column unmasked. */
  readonly requiredMasking?: readonly MaskingRequirement[] | undefined;
  /** The cursor of the job's last successful run; incremental runs read from it. */
  readonly previousCursor?: string | undefined;
  /**
   * Breaker settings of the SyncPolicies that match the job: the bounds the job's own settings are
   * combined with (the strictest wins, controller/resilience/breaker-config.ts).
   */
  readonly breakerBounds?: readonly BreakerConfigInput[] | undefined;
  /** The OpenLineage runId recorded in the SyncRun's status, reused by every attempt. */
  readonly lineageRunId?: string | undefined;
  readonly signal?: AbortSignal | undefined;
}

export type RunOutcomePhase = "Succeeded" | "Failed" | "Cancelled";

export interface RunResult {
  readonly phase: RunOutcomePhase;
  /** CamelCase, for conditions: Completed, TargetSchemaMismatch, MaskingRequired, Cancelled, … */
  readonly reason: string;
  /** A sentence a person can act on; carries no Secret value. */
  readonly message: string;
  readonly counts: RunCounts;
  readonly validation?: RunValidation | undefined;
  /** The new high-water mark of a SQL source with a cursor column, once its rows are written. */
  readonly cursor?: string | undefined;
  /** The first rejected rows or lines (bounded); counts.rowsRejected counts them all. */
  readonly rejections: readonly RunRejection[];
  /** What a realtime session last reported of its buffer and breaker. */
  readonly stream?: StreamStatus | undefined;
}

/** What a realtime session reports beside the row counts, as it changes. */
export interface StreamStatus {
  /** Records this session diverted to the job's buffer topic. */
  readonly rowsBuffered: number;
  readonly breaker: RunBreakerStatus;
}

/** Minimal logger (pino's shape); messages reach it scrubbed. */
export interface RunLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Thrown by the steps of a run; its reason goes to the result. */
export class RunFailure extends Error {
  override readonly name = "RunFailure";
  readonly reason: string;

  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** The signal fired: the run stops at the next batch boundary. */
export class RunCancelled extends Error {
  override readonly name = "RunCancelled";
}

/**
 * What ./run.ts hands every step of a run, batch or stream. It owns what the context holds: pools
 * are ended, progress flushed and reports scrubbed when the run ends, whichever step ran.
 */
export interface RunContext {
  readonly input: RunInput;
  /** The job's spec (input.job.spec). */
  readonly spec: SyncJobSpec;
  /** A pool for a connection URL; pools are ended when the run ends. */
  readonly pool: (url: string) => pg.Pool;
  /** The job's masking, compiled; steps write masked rows only. */
  readonly masker: RowMasker;
  readonly progress: ProgressMeter;
  readonly rejections: RejectionLog;
  /** Rows per source page and per upsert statement of a batch step. */
  readonly batchSize: number;
  /** Fires when the run is cancelled; checkpoint() is the batch steps' way of honouring it. */
  readonly signal: AbortSignal;
  /** Removes the run's Secret values (connection URLs, masking salt) from a text. */
  readonly scrub: (text: string) => string;
  /** Throws RunCancelled when the signal has fired. */
  checkpoint(): void;
  /** Throws a RunFailure (MaskingRequired) naming every column the policy requires masked and is not. */
  requireMasking(targetColumns: readonly string[]): void;
  /** Reports a realtime session's buffer and breaker; the caller writes it to status (latest wins). */
  reportStream(status: StreamStatus): void;
  /** Records an event about the run's job (breaker transitions); the note is scrubbed by the caller. */
  recordEvent(event: EventRecord): void;
}

/** What a step hands back on success. */
export interface StepOutcome {
  readonly summary: string;
  readonly cursor?: string | undefined;
  readonly validation?: RunValidation | undefined;
}

/**
 * Executes Realtime and Compensation runs, and any run of a job with a Kafka source: the stream
 * step of ./run.ts. Wired by the controller (./stream.ts); without one, such runs fail with reason
 * NotWired.
 */
export interface StreamRunner {
  execute(context: RunContext): Promise<StepOutcome>;
}
