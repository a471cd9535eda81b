/**
 * Validation of a Kafka source: what the target should hold, computed from the topic, against what
 * it holds.
 *
 * The topic is read from its earliest held offset up to the end offsets seen when the run starts, by
 * a consumer group of the run's own that commits nothing and is deleted afterwards, so the realtime
 * session's position is untouched. Each record is read into the target's row schema and masked as
 * the session masks it; per key the latest value is kept (with a version column, the greatest
 * version, as the target's version guard keeps it — ./validation.ts ExpectedTargetChecksum), and
 * records the session dead-letters are left out as it leaves them out. The count and checksum of
 * those rows are compared with the target's, computed in PostgreSQL over the same columns — masked
 * ones included, since both sides hold them masked.
 *
 * The comparison means something at a quiet point: when the session has caught up with the end
 * offsets and the buffer topic is empty (the summary says how many records still wait there). It
 * assumes the topic still holds every key's latest record (a compacted topic, or retention longer
 * than the job's life) and that producers key records by row key, so a key's values share a
 * partition and arrive in order.
 */

import { randomUUID } from "node:crypto";
import type { Kafka } from "kafkajs";
import { BufferTopic } from "../connectors/kafka/buffer.ts";
import { bufferTopicOf, topicOffsets } from "../connectors/kafka/cluster.ts";
import { decodeMessage } from "../connectors/kafka/dead-letter.ts";
import type { Logger } from "../telemetry/logger.ts";
import { postgresTableChecksum } from "../validation/postgres.ts";
import { streamTarget } from "./stream-target.ts";
import { RunCancelled, type RunContext, RunFailure, type StepOutcome } from "./types.ts";
import { compareChecksums, ExpectedTargetChecksum } from "./validation.ts";

export interface TopicValidationOptions {
  readonly logger?: Logger;
}

export async function validateTopic(
  context: RunContext,
  kafka: Kafka,
  options: TopicValidationOptions = {},
): Promise<StepOutcome> {
  const { input } = context;
  const { namespace, name, spec } = input.job;
  const topic = spec.source.kafka!.topic;
  const stream = await streamTarget(input, context.pool(input.connections.target), context.masker, 2000);
  const expected = new ExpectedTargetChecksum(stream.schema, stream.versionColumn);
  let deadLetters = 0;

  const admin = kafka.admin();
  await admin.connect();
  let offsets: Awaited<ReturnType<typeof topicOffsets>>;
  try {
    offsets = await topicOffsets(admin, topic);
  } catch (error) {
    throw new RunFailure(
      "SourceUnavailable",
      `cannot read the offsets of topic ${topic}: ${error instanceof Error ? error.message : String(error)}`,
    );
  } finally {
    await admin.disconnect();
  }
  // Partitions with records to read → their exclusive end offset.
  const remaining = new Map<number, bigint>();
  for (const [partition, end] of offsets.end) {
    if (BigInt(end) > BigInt(offsets.start.get(partition) ?? "0")) remaining.set(partition, BigInt(end));
  }

  if (remaining.size > 0) {
    const groupId = `syncgov.validation.${namespace}.${name}.${randomUUID()}`;
    const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 500 });
    const finished = Promise.withResolvers<void>();
    finished.promise.catch(() => {});
    consumer.on(consumer.events.CRASH, (event) => {
      if (!event.payload.restart) finished.reject(event.payload.error);
    });
    const onAbort = () => finished.resolve();
    context.signal.addEventListener("abort", onAbort, { once: true });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        partitionsConsumedConcurrently: 1,
        eachBatch: async ({ batch, pause, isRunning }) => {
          const end = remaining.get(batch.partition);
          if (end === undefined) {
            pause();
            return;
          }
          let read = 0;
          let next = -1n;
          for (const message of batch.messages) {
            if (!isRunning() || context.signal.aborted) break;
            const offset = BigInt(message.offset);
            if (offset >= end) break;
            next = offset + 1n;
            read++;
            const decoded = decodeMessage(stream.schema, message);
            if (decoded.ok) expected.add(context.masker.mask(decoded.row));
            else deadLetters++;
          }
          context.progress.add({ rowsRead: read });
          if (next >= end) {
            remaining.delete(batch.partition);
            pause();
            if (remaining.size === 0) finished.resolve();
          }
        },
      });
      await finished.promise;
    } finally {
      context.signal.removeEventListener("abort", onAbort);
      await consumer.disconnect();
      await deleteGroup(kafka, groupId, options.logger);
    }
    if (remaining.size > 0) throw new RunCancelled("the validation was cancelled");
  }

  const source = expected.result();
  const target = await postgresTableChecksum(stream.pool, stream.table, stream.schema.columns);
  const validation = compareChecksums(source, target, stream.schema.columns, []);
  const buffered = await pendingInBuffer(kafka, bufferTopicOf(namespace, name, spec));
  return {
    summary: [
      `compared topic ${topic} up to its end offsets (latest value of ${source.rowCount} keys${
        deadLetters > 0 ? `, ${deadLetters} malformed records left out` : ""
      }) with ${stream.table}`,
      ...(buffered > 0 ? [`${buffered} records still wait in the buffer topic for a Compensation run`] : []),
    ].join("; "),
    validation,
  };
}

/** Records waiting in the buffer topic; 0 when it does not exist (nothing was ever diverted). */
async function pendingInBuffer(kafka: Kafka, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) return 0;
  } finally {
    await admin.disconnect();
  }
  const buffer = new BufferTopic({ kafka, topic, createTopic: false });
  return buffer.pendingCount();
}

/** The run's own group holds no offsets worth keeping; failing to delete it only leaves an empty group. */
async function deleteGroup(kafka: Kafka, groupId: string, logger: Logger | undefined): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.deleteGroups([groupId]);
  } catch (error) {
    logger?.warn(
      { groupId, error: error instanceof Error ? error.message : String(error) },
      "could not delete the validation consumer group",
    );
  } finally {
    await admin.disconnect();
  }
}
