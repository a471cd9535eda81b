/**
 * Compensation runs: replay the job's buffer topic — the rows a realtime session diverted while its
 * breaker was not closed — into the target.
 *
 * Contract:
 * - Replays from the replay group's committed position up to the buffer's end offsets as seen when
 *   the run starts; rows diverted meanwhile wait for the next Compensation run. Succeeds once every
 *   partition reached those offsets, i.e. the buffer is empty up to them.
 * - Per partition in offset order, one chunk at a time, committing after each chunk is written
 *   (../connectors/kafka/buffer.ts), so per key the buffered values land in the order they were
 *   diverted, and a crashed or cancelled run resumes after the last chunk it wrote.
 * - Writes are the job's idempotent upserts with its version guard: a row the target holds in a newer
 *   version is left alone, and a chunk written twice converges.
 * - Buffered rows are stored masked (the session masks before it diverts), so they are written as
 *   they are; masking again would hash a hash.
 * - A write that fails for a reason that may pass (a lost connection, a server restarting) is retried
 *   with backoff a few times before the run fails; what was committed stays committed.
 * - One Compensation run per job at a time (the controller starts at most one).
 */

import type { Kafka } from "kafkajs";
import { BufferTopic } from "../connectors/kafka/buffer.ts";
import { bufferTopicOf } from "../connectors/kafka/cluster.ts";
import { sleep } from "../connectors/kafka/keep-alive.ts";
import type { Row } from "../connectors/record.ts";
import type { Logger } from "../telemetry/logger.ts";
import { isTransientTargetError, type StreamTarget, streamTarget } from "./stream-target.ts";
import { RunCancelled, type RunContext, RunFailure, type StepOutcome } from "./types.ts";

export interface CompensationOptions {
  /** Rows per replay chunk (one upsert each); default 500. */
  readonly maxRowsPerChunk?: number;
  /** Attempts per chunk when a write fails transiently; default 6 (about 15 s of backoff). */
  readonly writeAttempts?: number;
  readonly logger?: Logger;
}

export async function compensate(
  context: RunContext,
  kafka: Kafka,
  options: CompensationOptions = {},
): Promise<StepOutcome> {
  const { input } = context;
  const { namespace, name, spec } = input.job;
  const maxRows = options.maxRowsPerChunk ?? 500;
  const stream = await streamTarget(input, context.pool(input.connections.target), context.masker, maxRows);
  const buffer = new BufferTopic({
    kafka,
    topic: bufferTopicOf(namespace, name, spec),
    versionColumn: stream.versionColumn,
    maxRowsPerSink: maxRows,
    ...(options.logger ? { logger: options.logger } : {}),
  });
  try {
    const until = await buffer.endOffsets();
    const attempts = options.writeAttempts ?? 6;
    let written = 0;
    const result = await buffer.replay(
      async (records) => {
        const rows = records.map((r) => r.row);
        const upserted = await upsertWithRetries(stream, rows, attempts, context.signal);
        written += upserted;
        context.progress.add({ rowsRead: records.length, rowsWritten: upserted });
      },
      { until, signal: context.signal },
    );
    if (!result.complete) {
      if (context.signal.aborted) throw new RunCancelled("the Compensation run was cancelled");
      throw new RunFailure(
        "ReplayIncomplete",
        `the replay of ${buffer.topic} stopped before its end offsets`,
      );
    }
    const left = await buffer.pendingCount();
    const kept = result.replayed - written;
    return {
      summary: [
        `replayed ${result.replayed} buffered records from ${buffer.topic} into ${stream.table} (${written} rows inserted or updated${
          kept > 0
            ? `, ${kept} not: repeated keys${stream.versionColumn ? " or rows the target holds in a newer version" : ""}`
            : ""
        })`,
        "the buffer is empty up to the end offsets seen at the start",
        ...(left > 0 ? [`${left} records diverted since wait for the next Compensation run`] : []),
      ].join("; "),
    };
  } finally {
    await buffer.close();
  }
}

/** One chunk's upsert, retried with backoff while the failure may pass; the last error otherwise. */
async function upsertWithRetries(
  stream: StreamTarget,
  rows: readonly Row[],
  attempts: number,
  signal: AbortSignal,
): Promise<number> {
  let wait = 500;
  for (let attempt = 1; ; attempt++) {
    try {
      return (await stream.target.upsert(rows)).written;
    } catch (error) {
      if (attempt >= attempts || signal.aborted || !isTransientTargetError(error)) throw error;
    }
    await sleep(wait, signal);
    wait = Math.min(wait * 2, 8000);
  }
}
