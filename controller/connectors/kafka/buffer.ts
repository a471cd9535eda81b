/**
 * A job's buffer topic (`syncgov.buffer.<namespace>.<job>` by default): where the realtime channel
 * puts rows while the target may not be written, and from where a Compensation run replays them.
 *
 * The invariant the resilience layer builds on — for any key, an older value never overwrites a
 * newer one — rests on three things, each kept here or stated as a requirement:
 * 1. Keyed partitioning: every row is produced under its key, so all values of a key share one
 *    partition (as long as the topic's partition count does not change while rows are pending; this
 *    module creates the topic once and never alters it).
 * 2. Produce order is log order: an idempotent producer (acks from all in-sync replicas, one request
 *    in flight) cannot duplicate or reorder a retried batch, and divert() resolves only when the
 *    broker acknowledged every row, so the caller diverts chunk after chunk in order.
 * 3. Replay order is log order: replay() hands a partition's rows to the sink in offset order, one
 *    chunk at a time, and commits after each sink call, so a crash resumes after the last chunk the
 *    sink took. What replay cannot know — a newer value written straight to the target meanwhile —
 *    is settled by the target's version guard (PostgresTarget versionColumn: an existing row is only
 *    replaced by a row whose version is not older); the buffer records each row's version in a
 *    header for that reason and for operators reading the topic.
 *
 * Buffered rows are in canonical row form (controller/connectors/record.ts) as JSON: canonical values
 * are strings, safe integers, booleans and null, which JSON carries exactly, so replay needs no
 * schema and re-parses nothing. The topic keeps records forever (retention.ms -1) and replay trims
 * what it committed, so nothing is lost to retention during a long outage.
 */

import { type Kafka, type Message, Partitioners, type Producer } from "kafkajs";
import { type Logger, logger as rootLogger } from "../../telemetry/logger.ts";
import type { Row, RowValue } from "../record.ts";
import {
  assertTopicName,
  committedOffsets,
  consumerGroupLag,
  ensureTopic,
  headerText,
  type PartitionOffsets,
  pendingPerPartition,
  topicOffsets,
} from "./cluster.ts";
import { BatchKeepAlive, errorSummary } from "./keep-alive.ts";
import { clusterTopicLimit, groupWithin, sendGroups, type TopicLimit } from "./limits.ts";
import type { KeyedRow } from "./source.ts";

export interface BufferTopicOptions {
  readonly kafka: Kafka;
  /** The topic (cluster.ts jobTopicName("buffer", …)). */
  readonly topic: string;
  /** Consumer group whose committed offsets mark what was replayed; default `<topic>.replay`. */
  readonly replayGroupId?: string;
  /** The target's version column; its value travels in a header with each row. */
  readonly versionColumn?: string;
  /** Partitions when the topic is created; default 3. An existing topic keeps its own. */
  readonly partitions?: number;
  /** Create the topic on first use if missing; default true. */
  readonly createTopic?: boolean;
  /** Most rows per replay sink call; default 500. */
  readonly maxRowsPerSink?: number;
  /** Delete replayed records after a replay (DeleteRecords up to the committed offsets); default true. */
  readonly trimAfterReplay?: boolean;
  readonly heartbeatIntervalMs?: number;
  readonly logger?: Logger;
}

/** A row read back from the buffer, with where it was and the version it was diverted with. */
export interface BufferedRecord extends KeyedRow {
  readonly partition: number;
  readonly offset: string;
  readonly version: string | undefined;
}

/**
 * Takes one chunk of replayed rows, in order, and resolves once they are written; rejecting stops the
 * replay with nothing of that chunk committed. Never called concurrently.
 */
export type ReplaySink = (records: readonly BufferedRecord[]) => Promise<unknown>;

export interface ReplayOptions {
  /**
   * Exclusive end offset per partition; default the end offsets observed when replay starts, so rows
   * diverted during the replay wait for the next one. Partitions not listed are not replayed.
   */
  readonly until?: PartitionOffsets;
  /** Stops the replay after the chunk in flight; the result then says it is incomplete. */
  readonly signal?: AbortSignal;
}

export interface ReplayResult {
  /** Rows handed to the sink (and committed). */
  readonly replayed: number;
  /** Whether every partition reached its `until` offset. */
  readonly complete: boolean;
}

/** A row too large for the buffer topic: divert() hands it back for the dead-letter path. */
export interface OversizedRow {
  readonly row: KeyedRow;
  /** The buffer record's size and the topic's max.message.bytes, as the broker counts them. */
  readonly bytes: number;
  readonly limitBytes: number;
}

export interface DivertResult {
  /** Rows the buffer topic holds now, in order. */
  readonly buffered: number;
  /** Rows whose buffer record would exceed the topic's size limit, in order; not in the buffer. */
  readonly oversized: readonly OversizedRow[];
}

/** A buffer record that divert() did not write: a bug or a foreign producer, never bad source data. */
export class BufferRecordError extends Error {
  override readonly name = "BufferRecordError";
}

export const BUFFER_HEADERS = {
  version: "syncgov.version",
  format: "syncgov.format",
  topic: "syncgov.source.topic",
  partition: "syncgov.source.partition",
  offset: "syncgov.source.offset",
} as const;

/** Format of the buffered value, so a later syncgov can read what an earlier one diverted. */
const ROW_FORMAT = "row-json/1";

export class BufferTopic {
  readonly topic: string;
  readonly replayGroupId: string;
  readonly #options: BufferTopicOptions;
  readonly #log: Logger;
  #producer: Promise<Producer> | undefined;
  #created: Promise<void> | undefined;
  /** Whether the topic existed when this object first looked, before it created it. */
  #existed: Promise<boolean> | undefined;
  /** Whether this object has diverted anything. */
  #diverted = false;
  /** The topic's max.message.bytes, read from the cluster (./limits.ts). */
  readonly #limit: TopicLimit;

  constructor(options: BufferTopicOptions) {
    this.topic = assertTopicName(options.topic);
    this.replayGroupId = options.replayGroupId ?? `${this.topic}.replay`;
    const maxRows = options.maxRowsPerSink ?? 500;
    if (!Number.isInteger(maxRows) || maxRows < 1)
      throw new Error("maxRowsPerSink must be a positive integer");
    this.#options = options;
    this.#log = (options.logger ?? rootLogger).child({ component: "buffer-topic", topic: this.topic });
    this.#limit = clusterTopicLimit(options.kafka, this.topic, (limitBytes, error) =>
      this.#log.warn(
        { limitBytes, error: error === undefined ? undefined : errorSummary(error) },
        "could not read the buffer topic's max.message.bytes; assuming Kafka's default",
      ),
    );
  }

  /** Creates the topic (infinite retention) unless it exists or creation is turned off. */
  ensureTopic(): Promise<void> {
    if (this.#options.createTopic === false) return Promise.resolve();
    this.#created ??= this.#existedAtFirstLook().then(async (existed) => {
      if (existed) return;
      await this.#withAdmin((admin) =>
        ensureTopic(admin, this.topic, {
          partitions: this.#options.partitions ?? 3,
          config: { "retention.ms": "-1", "cleanup.policy": "delete" },
        }),
      );
    });
    this.#created.catch(() => {
      this.#created = undefined;
    });
    return this.#created;
  }

  /**
   * Produces the rows under their keys, in order, and resolves once all in-sync replicas have them.
   * Call it for one chunk at a time: the order of calls is the order per key. The rows go in as many
   * produce calls as the topic's size limit asks; a row whose record exceeds the limit alone is not
   * buffered but handed back (in `oversized`) for the caller's dead-letter path.
   */
  async divert(rows: readonly KeyedRow[]): Promise<DivertResult> {
    if (rows.length === 0) return { buffered: 0, oversized: [] };
    this.#diverted = true;
    await this.ensureTopic();
    const producer = await this.#connectedProducer();
    const limitBytes = await this.#limit.get();
    const versionColumn = this.#options.versionColumn;
    const messages: Message[] = rows.map((r) => {
      if (r.key === "") throw new BufferRecordError("a buffered row needs a non-empty key");
      const headers: Record<string, string> = { [BUFFER_HEADERS.format]: ROW_FORMAT };
      const version = versionColumn === undefined ? null : (r.row[versionColumn] ?? null);
      if (version !== null) headers[BUFFER_HEADERS.version] = String(version);
      const origin = r as Partial<{ topic: string; partition: number; offset: string }>;
      if (typeof origin.topic === "string" && typeof origin.offset === "string") {
        headers[BUFFER_HEADERS.topic] = origin.topic;
        headers[BUFFER_HEADERS.partition] = String(origin.partition);
        headers[BUFFER_HEADERS.offset] = origin.offset;
      }
      return { key: r.key, value: JSON.stringify(r.row), headers };
    });
    const { groups, oversized } = groupWithin(messages, limitBytes);
    try {
      await sendGroups(producer, this.topic, groups);
    } catch (error) {
      // The limit was lowered since it was read: the next attempt (the caller retries) reads it again.
      this.#limit.forgetOn(error);
      throw error;
    }
    return {
      buffered: rows.length - oversized.length,
      oversized: oversized.map((o) => ({ row: rows[o.index]!, bytes: o.bytes, limitBytes })),
    };
  }

  /** The offsets a replay started now would run to (the topic's end offsets). */
  async endOffsets(): Promise<PartitionOffsets> {
    await this.ensureTopic();
    return this.#withAdmin(async (admin) => (await topicOffsets(admin, this.topic)).end);
  }

  /**
   * Rows diverted and not yet replayed: end offsets minus the replay group's committed offsets. A
   * topic that did not exist when this object first looked, and to which it has diverted nothing,
   * holds nothing (a job's sessions run one at a time, so nobody else writes it): then the answer
   * needs neither the topic's creation nor the offsets, which spares a new job's first session the
   * wait.
   */
  async pendingCount(): Promise<number> {
    if (this.#options.createTopic !== false && !this.#diverted && !(await this.#existedAtFirstLook())) {
      return 0;
    }
    await this.ensureTopic();
    return this.#withAdmin((admin) => consumerGroupLag(admin, this.replayGroupId, this.topic));
  }

  /**
   * Hands the buffered rows from the replay group's committed position up to `until` to the sink, in
   * offset order per partition, committing after each sink call. Resolves when every partition got
   * there (or the signal stopped it); rejects with the sink's error if the sink fails, with nothing
   * of the failed chunk committed. One replay per buffer at a time: a second member in the replay
   * group would take partitions away from the first.
   */
  async replay(sink: ReplaySink, options: ReplayOptions = {}): Promise<ReplayResult> {
    await this.ensureTopic();
    const [offsets, committed] = await this.#withAdmin((admin) =>
      Promise.all([topicOffsets(admin, this.topic), committedOffsets(admin, this.replayGroupId, this.topic)]),
    );
    // A mark beyond the current end could never be reached: it is clamped to the end.
    const until = new Map<number, string>();
    for (const [partition, end] of offsets.end) {
      const mark = options.until === undefined ? end : options.until.get(partition);
      if (mark !== undefined) until.set(partition, BigInt(mark) < BigInt(end) ? mark : end);
    }
    // Partitions with something to replay → their exclusive end offset.
    const remaining = new Map<number, bigint>();
    for (const [partition, pending] of pendingPerPartition({ end: until, start: offsets.start }, committed)) {
      if (pending > 0n) remaining.set(partition, BigInt(until.get(partition)!));
    }
    if (remaining.size === 0 || options.signal?.aborted)
      return { replayed: 0, complete: remaining.size === 0 };

    const maxRows = this.#options.maxRowsPerSink ?? 500;
    const heartbeatMs = this.#options.heartbeatIntervalMs ?? 3000;
    const finished = Promise.withResolvers<void>();
    // Awaited below; this only keeps an early rejection from counting as unhandled meanwhile.
    finished.promise.catch(() => {});
    let replayed = 0;
    let failed = false;
    const consumer = this.#options.kafka.consumer({
      groupId: this.replayGroupId,
      heartbeatInterval: heartbeatMs,
      // Disconnecting waits for the fetch in flight; a short wait keeps the end of a replay prompt.
      maxWaitTimeInMs: 500,
    });
    consumer.on(consumer.events.CRASH, (event) => {
      if (!event.payload.restart) finished.reject(event.payload.error);
    });
    const onAbort = () => finished.resolve();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [this.topic], fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 1,
        eachBatch: async (payload) => {
          const { batch } = payload;
          const end = remaining.get(batch.partition);
          if (end === undefined || failed) {
            payload.pause();
            return;
          }
          let chunk: BufferedRecord[] = [];
          let last: string | undefined;
          const flush = async (): Promise<boolean> => {
            if (last === undefined) return true;
            const keepAlive = new BatchKeepAlive(() => payload.heartbeat(), heartbeatMs);
            try {
              if (chunk.length > 0) await sink(chunk);
            } catch (error) {
              failed = true;
              finished.reject(error);
              return false;
            } finally {
              keepAlive.stop();
            }
            const next = (BigInt(last) + 1n).toString();
            payload.resolveOffset(last);
            await payload.commitOffsetsIfNecessary({
              topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }],
            });
            replayed += chunk.length;
            chunk = [];
            last = undefined;
            if (keepAlive.rebalance) throw keepAlive.rebalance;
            if (BigInt(next) >= end) {
              remaining.delete(batch.partition);
              payload.pause();
              if (remaining.size === 0) finished.resolve();
              return false;
            }
            return true;
          };
          for (const message of batch.messages) {
            if (!payload.isRunning() || options.signal?.aborted) break;
            if (BigInt(message.offset) >= end) break;
            try {
              chunk.push(readBufferedRecord(batch.partition, message));
            } catch (error) {
              failed = true;
              finished.reject(error);
              return;
            }
            last = message.offset;
            if (chunk.length >= maxRows && !(await flush())) return;
          }
          await flush();
          await payload.heartbeat();
        },
      });
      await finished.promise;
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      await consumer.disconnect();
    }
    if (this.#options.trimAfterReplay !== false) await this.trim();
    return { replayed, complete: remaining.size === 0 };
  }

  /**
   * Deletes the records the replay group has committed past (Kafka DeleteRecords). Failures are
   * logged, not thrown: a buffer that keeps replayed records is only bigger, not wrong.
   */
  async trim(): Promise<void> {
    try {
      await this.#withAdmin(async (admin) => {
        const [offsets, committed] = await Promise.all([
          topicOffsets(admin, this.topic),
          committedOffsets(admin, this.replayGroupId, this.topic),
        ]);
        const partitions = [...committed]
          .filter(([p, offset]) => BigInt(offset) > BigInt(offsets.start.get(p) ?? "0"))
          .map(([partition, offset]) => ({ partition, offset }));
        if (partitions.length > 0) await admin.deleteTopicRecords({ topic: this.topic, partitions });
      });
    } catch (error) {
      this.#log.warn({ error: errorSummary(error) }, "could not trim replayed records from the buffer topic");
    }
  }

  /** Disconnects the producer; the buffer can be used again afterwards (it reconnects). */
  async close(): Promise<void> {
    const producer = this.#producer;
    this.#producer = undefined;
    if (producer) await (await producer.catch(() => undefined))?.disconnect();
  }

  #connectedProducer(): Promise<Producer> {
    this.#producer ??= (async () => {
      // Idempotent with one request in flight: a retried batch is neither duplicated nor reordered.
      const producer = this.#options.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        // Murmur2, as the Java client: a key lands on the partition any Kafka tool expects.
        createPartitioner: Partitioners.DefaultPartitioner,
      });
      await producer.connect();
      return producer;
    })();
    this.#producer.catch(() => {
      this.#producer = undefined;
    });
    return this.#producer;
  }

  #existedAtFirstLook(): Promise<boolean> {
    this.#existed ??= this.#withAdmin(async (admin) => (await admin.listTopics()).includes(this.topic));
    this.#existed.catch(() => {
      this.#existed = undefined;
    });
    return this.#existed;
  }

  async #withAdmin<T>(use: (admin: ReturnType<Kafka["admin"]>) => Promise<T>): Promise<T> {
    const admin = this.#options.kafka.admin();
    await admin.connect();
    try {
      return await use(admin);
    } finally {
      await admin.disconnect();
    }
  }
}

/** Decodes a record divert() wrote; throws BufferRecordError for anything else. */
export function readBufferedRecord(
  partition: number,
  message: { key: Buffer | null; value: Buffer | null; offset: string; headers?: Message["headers"] },
): BufferedRecord {
  const where = `buffer record at partition ${partition} offset ${message.offset}`;
  const key = message.key?.toString("utf8");
  if (!key) throw new BufferRecordError(`${where} has no key`);
  let row: unknown;
  try {
    row = JSON.parse(message.value?.toString("utf8") ?? "");
  } catch {
    throw new BufferRecordError(`${where} is not JSON`);
  }
  if (typeof row !== "object" || row === null || Array.isArray(row)) {
    throw new BufferRecordError(`${where} is not a row object`);
  }
  for (const value of Object.values(row)) {
    if (!isRowValue(value)) throw new BufferRecordError(`${where} holds a value that is not a row value`);
  }
  return {
    key,
    row: row as Row,
    partition,
    offset: message.offset,
    version: headerText(message.headers?.[BUFFER_HEADERS.version]),
  };
}

function isRowValue(value: unknown): value is RowValue {
  return (
    value === null || typeof value === "string" || typeof value === "boolean" || typeof value === "number"
  );
}
