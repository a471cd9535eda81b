/**
 * The runner: executes one SyncRun — moves the rows, validates them, reports — given everything
 * already resolved (the specs, connection URLs from Secrets, the policy's required masking, the
 * previous run's cursor). It reads and writes data only; the Kubernetes side (reading the objects,
 * status, events) is ./cluster.ts.
 *
 * It orchestrates the steps: it builds one RunContext, hands it to the step the run's type and
 * source call for (./table-copy.ts, ./file-load.ts, or the StreamRunner), and turns the StepOutcome
 * or the error into the RunResult. The steps share only ./types.ts with it, and none imports it.
 *
 * Contract a caller may rely on:
 * - executeRun never throws: every failure becomes a Failed result whose message names the cause
 *   and carries no Secret value (every message goes through scrubSecrets with the connection URLs
 *   and the masking salt).
 * - Idempotent: target writes are upserts by the target's key columns, so a run repeated after a
 *   crash at any point converges to the same target rows. An incremental run's new cursor is in the
 *   result only once every row up to it is written; a crashed run reports none, and its retry starts
 *   again from the previous cursor.
 * - Nothing is written before the target's schema is checked and the policy's required masking is
 *   in place: a missing column, an incompatible type or an unmasked sensitive column fails the run
 *   with a message naming it.
 * - Cancellation (the signal) is honoured between batches: the batch in flight finishes, the run
 *   ends Cancelled, and what was written stays written (a later run converges it).
 * - Progress (rowsRead, rowsWritten, rowsRejected) is reported at most once per second. A realtime
 *   session also reports its buffer and breaker as they change (onStreamStatus; the last report is
 *   RunResult.stream) and records its breaker transitions as events (onEvent, notes scrubbed).
 * - A Batch run validates at its end (unless the job disables validation). A run whose validation
 *   fails still Succeeded — its rows moved — and carries validation.result Failed; deciding what a
 *   failed validation means (shadow fallback after N in a row) is the controller's business.
 */

import pg from "pg";
import type { RunType } from "../api/syncrun.ts";
import { FieldMapError } from "../connectors/fixedwidth.ts";
import { bufferTopicOf } from "../connectors/kafka/cluster.ts";
import { describeTable } from "../connectors/postgres/catalog.ts";
import { SourceSchemaError } from "../connectors/postgres/source.ts";
import { TargetSchemaError } from "../connectors/postgres/target.ts";
import type { EventRecord } from "../kube/events.ts";
import { type DatasetName, fileDataset, kafkaDataset, postgresDataset } from "../lineage/naming.ts";
import {
  compileMasking,
  describeMaskingViolation,
  MaskingRuleError,
  requiredMaskingViolations,
} from "../masking/masking.ts";
import { loadFile, validateFile } from "./file-load.ts";
import type { LineageRun, LineageSink } from "./lineage.ts";
import { ProgressMeter, type RunCounts } from "./progress.ts";
import { RejectionLog } from "./rejections.ts";
import { scrubbedErrorMessage, secretScrubber } from "./secrets.ts";
import { copyTable, validateTableSync } from "./table-copy.ts";
import {
  RunCancelled,
  type RunContext,
  RunFailure,
  type RunInput,
  type RunLogger,
  type RunOutcomePhase,
  type RunResult,
  type StepOutcome,
  type StreamRunner,
  type StreamStatus,
} from "./types.ts";
import type { RunValidation } from "./validation.ts";

export interface RunDeps {
  /** Opens a pool for a connection URL; default a pg.Pool of 3 connections. Pools are ended at the end. */
  readonly openPool?: (url: string) => pg.Pool;
  readonly lineage?: LineageSink | undefined;
  readonly stream?: StreamRunner | undefined;
  readonly onProgress?: ((counts: RunCounts) => void) | undefined;
  readonly onStreamStatus?: ((status: StreamStatus) => void) | undefined;
  readonly onEvent?: ((event: EventRecord) => void) | undefined;
  /** Default 1000: progress is reported at most once per second. */
  readonly progressIntervalMs?: number;
  /** Rows per source page and per upsert statement; default 2000. */
  readonly batchSize?: number;
  readonly log?: RunLogger | undefined;
}

export async function executeRun(input: RunInput, deps: RunDeps = {}): Promise<RunResult> {
  const scrub = secretScrubber(
    [input.connections.source, input.connections.target, input.maskingSalt].filter(
      (s): s is string => typeof s === "string" && s !== "",
    ),
  );
  const signal = input.signal ?? new AbortController().signal;
  const lineageRun = lineageRunOf(input);
  const lineage = guardedLineage(deps.lineage, deps.log, scrub);
  const progress = new ProgressMeter(
    (counts) => {
      deps.onProgress?.(counts);
      lineage.progress(lineageRun, counts);
    },
    { intervalMs: deps.progressIntervalMs ?? 1000 },
  );
  const rejections = new RejectionLog();
  const pools = new Map<string, pg.Pool>();
  const pool = (url: string): pg.Pool => {
    let p = pools.get(url);
    if (!p) {
      p = deps.openPool ? deps.openPool(url) : defaultPool(url);
      // An idle connection that breaks (server restart) must not crash the process; the next query fails instead.
      p.on("error", () => {});
      pools.set(url, p);
    }
    return p;
  };
  let streamStatus: StreamStatus | undefined;
  const runLabel = `${input.spec.type} run ${input.run.namespace}/${input.run.name}`;
  const finish = (
    phase: RunOutcomePhase,
    reason: string,
    message: string,
    outcome?: Partial<StepOutcome>,
  ): RunResult => {
    progress.flush();
    return {
      phase,
      reason,
      message: scrub(message),
      counts: { ...progress.counts, rowsRejected: rejections.count },
      validation: outcome?.validation,
      cursor: outcome?.cursor,
      rejections: rejections.listed,
      stream: streamStatus,
    };
  };
  const reportStream = (status: StreamStatus): void => {
    streamStatus = status;
    try {
      deps.onStreamStatus?.(status);
    } catch {
      // Advisory, as progress: the final result carries the last status again.
    }
  };
  const recordEvent = (event: EventRecord): void => {
    try {
      deps.onEvent?.({ ...event, note: scrub(event.note) });
    } catch {
      // Events are advisory; a recorder that throws does not stop the run.
    }
  };

  lineage.start(lineageRun);
  deps.log?.info({ run: `${input.run.namespace}/${input.run.name}`, type: input.spec.type }, "run started");
  let result: RunResult;
  try {
    const masker = compileMasking(input.job.spec.masking ?? [], {
      salt: input.maskingSalt,
      requireKey: input.hashKeyRequired,
    });
    const context: RunContext = {
      input,
      spec: input.job.spec,
      pool,
      masker,
      progress,
      rejections,
      batchSize: deps.batchSize ?? 2000,
      signal,
      scrub,
      reportStream,
      recordEvent,
      checkpoint() {
        if (signal.aborted) throw new RunCancelled("the run was cancelled");
      },
      requireMasking(targetColumns) {
        const violations = requiredMaskingViolations(
          targetColumns,
          input.job.spec.masking ?? [],
          input.requiredMasking ?? [],
        );
        if (violations.length > 0) {
          throw new RunFailure(
            "MaskingRequired",
            `refusing to write unmasked sensitive columns: ${violations.map(describeMaskingViolation).join("; ")}`,
          );
        }
      },
    };
    context.checkpoint();
    const outcome = await dispatch(input.spec.type, context, deps.stream);
    const validationNote = describeValidation(outcome.validation);
    const rejected = rejections.summary();
    const message = [outcome.summary, validationNote, rejected].filter((s) => s !== "").join("; ");
    result = finish("Succeeded", "Completed", `${message}.`, outcome);
  } catch (error) {
    if (error instanceof RunCancelled || (signal.aborted && !(error instanceof RunFailure))) {
      result = finish(
        "Cancelled",
        "Cancelled",
        `${runLabel} was cancelled after reading ${progress.counts.rowsRead} and writing ${progress.counts.rowsWritten} rows; the rows written stay, and a later run converges the target${
          rejections.count > 0 ? `; ${rejections.summary()}` : ""
        }.`,
      );
    } else {
      const reason = reasonOf(error);
      const rejected = rejections.summary();
      result = finish(
        "Failed",
        reason,
        `${runLabel} failed: ${scrubbedErrorMessage(error, scrub)}${rejected ? `; ${rejected}` : ""}`,
      );
    }
  } finally {
    await Promise.allSettled([...pools.values()].map((p) => p.end()));
  }
  if (result.phase === "Succeeded") lineage.complete(lineageRun, result);
  else lineage.fail(lineageRun, result);
  deps.log?.[result.phase === "Succeeded" ? "info" : "warn"](
    {
      run: `${input.run.namespace}/${input.run.name}`,
      phase: result.phase,
      reason: result.reason,
      ...result.counts,
    },
    result.message,
  );
  return result;
}

async function dispatch(
  type: RunType,
  context: RunContext,
  stream: StreamRunner | undefined,
): Promise<StepOutcome> {
  const { spec } = context;
  if (spec.target.sql.dialect !== "postgres") {
    throw new RunFailure(
      "DialectNotSupported",
      `the ${spec.target.sql.dialect} target dialect is not supported yet`,
    );
  }
  if (spec.source.sql && spec.source.sql.dialect !== "postgres") {
    throw new RunFailure(
      "DialectNotSupported",
      `the ${spec.source.sql.dialect} source dialect is not supported yet`,
    );
  }
  if (type === "Realtime" || type === "Compensation" || spec.source.kafka) {
    if (!stream) {
      throw new RunFailure(
        "NotWired",
        `${type} runs${spec.source.kafka ? " of a Kafka source" : ""} are not wired into this runner yet`,
      );
    }
    await checkStreamTarget(context);
    return stream.execute(context);
  }
  switch (type) {
    case "Batch":
      if (spec.source.sql) return copyTable(context);
      if (spec.source.file) return loadFile(context);
      break;
    case "Validation":
      if (spec.source.sql) return validateTableSync(context);
      if (spec.source.file) return validateFile(context);
      break;
    default:
      throw new RunFailure("RunTypeNotSupported", `${type} runs are not executed by the runner yet`);
  }
  throw new RunFailure("NoSource", "the job has no source");
}

/** A stream writes whatever columns the target has: all of them must satisfy the required masking. */
async function checkStreamTarget(context: RunContext): Promise<void> {
  if ((context.input.requiredMasking ?? []).length === 0) return;
  const target = context.spec.target.sql;
  const info = await describeTable(context.pool(context.input.connections.target), target.table);
  if (!info) throw new TargetSchemaError(target.table, ["the table does not exist or is not visible"]);
  context.requireMasking([...info.columns.keys()]);
}

function describeValidation(v: RunValidation | undefined): string {
  if (!v) return "";
  const excluded = v.excludedColumns.length
    ? ` (masked columns ${v.excludedColumns.join(", ")} not compared)`
    : "";
  if (v.result === "Passed") {
    return `validation passed: ${v.sourceRows} rows, checksum ${v.sourceChecksum}${excluded}`;
  }
  return `validation failed: source ${v.sourceRows} rows, checksum ${v.sourceChecksum}; target ${v.targetRows} rows, checksum ${v.targetChecksum}${excluded}`;
}

function reasonOf(error: unknown): string {
  if (error instanceof RunFailure) return error.reason;
  if (error instanceof TargetSchemaError) return "TargetSchemaMismatch";
  if (error instanceof SourceSchemaError) return "SourceSchemaMismatch";
  if (error instanceof FieldMapError) return "InvalidFieldMap";
  if (error instanceof MaskingRuleError) return "InvalidMaskingRule";
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && /^(ECONN|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH)/.test(code))
    return "ConnectionFailed";
  if (code === "28P01" || code === "28000") return "AuthenticationFailed";
  if (code === "ENOENT" || code === "EACCES") return "SourceFileUnreadable";
  return "RunError";
}

/** One connection per partition a realtime session writes at once (stream.ts), and one for the rest. */
function defaultPool(url: string): pg.Pool {
  return new pg.Pool({ connectionString: url, max: 4, application_name: "syncgov-runner" });
}

/**
 * The run's datasets, named as OpenLineage names them (controller/lineage/naming.ts: host, port,
 * database, table and topic only, never credentials). A Compensation run reads the job's buffer
 * topic; every other run reads the job's source. A location that cannot be named (a connection
 * string that is not a URL, no Kafka bootstrap server) keeps its table or topic name under an
 * `unknown` namespace rather than fail the run.
 */
function lineageRunOf(input: RunInput): LineageRun {
  const { spec } = input.job;
  const brokers = input.connections.kafkaBrokers ?? [];
  const table = (url: string | undefined, name: string) =>
    namedOr(() => postgresDataset(url ?? "", name), { namespace: "postgres://unknown", name });
  const topic = (name: string) =>
    namedOr(() => kafkaDataset(brokers, name), { namespace: "kafka://unknown", name });
  const source = spec.source.sql
    ? table(input.connections.source, spec.source.sql.table)
    : spec.source.file
      ? namedOr(() => fileDataset(spec.source.file!.path), { namespace: "file", name: spec.source.file.path })
      : spec.source.kafka
        ? topic(spec.source.kafka.topic)
        : undefined;
  const inputs =
    input.spec.type === "Compensation"
      ? [topic(bufferTopicOf(input.job.namespace, input.job.name, spec))]
      : source
        ? [source]
        : [];
  return {
    run: input.run,
    runId: input.lineageRunId,
    job: { namespace: input.job.namespace, name: input.job.name },
    type: input.spec.type,
    inputs,
    outputs: [table(input.connections.target, spec.target.sql.table)],
  };
}

function namedOr(name: () => DatasetName, fallback: DatasetName): DatasetName {
  try {
    return name();
  } catch {
    return fallback;
  }
}

/** Lineage never decides a run's fate: a sink that throws is logged and ignored. */
function guardedLineage(
  sink: LineageSink | undefined,
  log: RunLogger | undefined,
  scrub: (text: string) => string,
): Required<Pick<LineageSink, "start" | "progress" | "complete" | "fail">> {
  const call = (what: string, f: () => void | Promise<void>) => {
    if (!sink) return;
    try {
      const pending = f();
      if (pending) pending.catch((error: unknown) => warn(what, error));
    } catch (error) {
      warn(what, error);
    }
  };
  const warn = (what: string, error: unknown) =>
    log?.warn({ lineage: what, error: scrubbedErrorMessage(error, scrub) }, "lineage event not emitted");
  return {
    start: (run) => call("start", () => sink!.start(run)),
    progress: (run, counts) => call("progress", () => sink!.progress(run, counts)),
    complete: (run, result) => call("complete", () => sink!.complete(run, result)),
    fail: (run, result) => call("fail", () => sink!.fail(run, result)),
  };
}
