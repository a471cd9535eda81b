/**
 * The realtime channel of a job: a Kafka topic of JSON records, read by the job's own consumer group
 * and handed to a sink in bounded chunks.
 *
 * Contract:
 * - At least once. A partition's offset is committed only after the sink resolved for every row the
 *   committed range carries, and after the malformed messages in that range were acknowledged by the
 *   dead-letter topic (acks from all in-sync replicas). A crash re-delivers at most the chunks whose
 *   commit did not land; the upsert behind the sink is idempotent, so a re-delivered chunk converges.
 *   Counters count deliveries, so after such a crash they count the re-delivered chunk twice.
 * - Order. A partition's rows reach the sink in partition order, one chunk at a time; chunks of
 *   different partitions may be in the sink at once (`concurrentPartitions`, kafkajs's
 *   partitionsConsumedConcurrently). Producers key records by row key, so all values of a key are in
 *   one partition and the sink sees them in the order they were produced.
 * - Malformed messages (no key, tombstone, not JSON, not a row of the schema) are counted and
 *   produced to the dead-letter topic with headers saying why (./dead-letter.ts), then committed with
 *   the rest; they never stop the channel and are never dropped silently.
 * - Sink failures are retried with capped exponential backoff (heartbeats continue meanwhile) until
 *   the sink succeeds, the source stops, or the partition is taken away; nothing is committed past
 *   rows the sink did not take. The runner's sink is expected to divert to the buffer topic rather
 *   than fail for long; a sink that resolves "diverted" counts its rows as diverted, not written, and
 *   their offsets are committed just the same (the buffer holds them now).
 * - Backpressure. kafkajs fetches the next batch only after the previous one was handled (its fetcher
 *   waits for the worker queue to drain), so a slow sink slows reading and at most one fetch response
 *   per broker is held in memory; nothing more is read ahead of the sink, so there is nothing to
 *   pause. Heartbeats keep the member in the group while a sink call runs longer than the session
 *   timeout would allow.
 * - Rebalances. A commit names only the partition of the batch in hand, never offsets resolved
 *   elsewhere, and every commit happens inside eachBatch, before kafkajs re-joins the group (it re-joins
 *   only once the in-flight batches returned), so a commit carries the generation that owned the
 *   partition. If the group moved on meanwhile the broker refuses it (ILLEGAL_GENERATION,
 *   UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS): the error goes back to kafkajs, which re-joins, and the
 *   new owner re-reads from the last accepted commit. A rebalance noticed by a heartbeat during a
 *   chunk lets the chunk finish and commit (the coordinator accepts commits from the current
 *   generation while it prepares the rebalance), then hands the rebalance to kafkajs.
 * - stop() lets the chunk in flight reach the sink and commit, leaves the group and disconnects;
 *   messages of the current batch not yet handed to the sink are left uncommitted and read by the
 *   next start, so a stop never loses or skips a record.
 */

import {
  type EachBatchPayload,
  type Kafka,
  type Consumer as KafkaConsumer,
  type KafkaMessage,
  type Message,
  Partitioners,
  type Producer,
} from "kafkajs";
import { type Logger, logger as rootLogger } from "../../telemetry/logger.ts";
import type { PreparedCopy } from "../postgres/copy-text.ts";
import type { Row, RowSchema } from "../record.ts";
import { assertTopicName, consumerGroupLag, ensureTopic } from "./cluster.ts";
import { deadLetterMessage, decodeMessage, fitDeadLetter } from "./dead-letter.ts";
import type { DecodedMessages, MessageDecoder } from "./decoder.ts";
import { BatchKeepAlive, errorSummary, sleep } from "./keep-alive.ts";
import {
  clusterTopicLimit,
  fitsAlone,
  groupWithin,
  sendGroups,
  type TopicLimit,
  topicMessageLimit,
} from "./limits.ts";

/** A row and the Kafka key it travelled under (the key decides its partition, hence its order). */
export interface KeyedRow {
  readonly key: string;
  readonly row: Row;
}

/** A row read from the source topic, with its position. */
export interface SourceRecord extends KeyedRow {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
}

/** Where the sink put a chunk: into the target, or into the job's buffer topic. */
export type SinkOutcome = "written" | "diverted";

/** The rows of one sink call. */
export interface SourceChunk {
  /** Rows in the chunk. */
  readonly length: number;
  /**
   * The rows with their positions, in partition order. With a decoder, they are decoded (on this
   * thread) at the first call, so a sink that writes `prepared` never pays for them.
   */
  records(): readonly SourceRecord[];
  /** The rows as COPY text, when the source's decoder prepared them; undefined otherwise. */
  readonly prepared: PreparedCopy | undefined;
}

/**
 * Takes one chunk of rows, in order, and resolves once they are durable (written to the target or
 * acknowledged by the buffer topic); resolving with nothing means "written". Rejecting means none of
 * them may be considered taken: the chunk is offered again. Never called concurrently for chunks of
 * the same partition; called concurrently for different partitions when concurrentPartitions > 1.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: a sink returning Promise<void> wrote the rows.
export type RowSink = (chunk: SourceChunk) => Promise<SinkOutcome | void>;

/** A chunk whose records are at hand. */
export function sourceChunk(records: readonly SourceRecord[]): SourceChunk {
  return { length: records.length, records: () => records, prepared: undefined };
}

/**
 * How each member's consumer retries a failed request (join, sync, fetch, commit) before it crashes
 * and restarts: after 50 ms, doubling, 8 times (about 13 s in all; kafkajs's default, 300 ms 5 times,
 * makes about 9 s). Members joining a group at once retry their joins while the group settles; with
 * a first retry of 300 ms, three members took 350–620 ms to join a fresh group, with 50 ms about
 * 90 ms, and a realtime session waits for that before its first row.
 */
const CONSUMER_RETRY = { initialRetryTime: 50, retries: 8 } as const;

export interface KafkaSourceOptions {
  readonly kafka: Kafka;
  readonly topic: string;
  /** The job's consumer group (cluster.ts jobConsumerGroup). */
  readonly groupId: string;
  /** Malformed messages go here (cluster.ts jobTopicName("dlq", …)). */
  readonly deadLetterTopic: string;
  readonly schema: RowSchema;
  readonly sink: RowSink;
  /**
   * Decodes messages off this thread (./decoder.ts) and prepares the rows' COPY text for the sink;
   * without one, or when it fails, messages are decoded here.
   */
  readonly decoder?: MessageDecoder;
  /** Where a group without committed offsets starts; default "earliest". */
  readonly startFrom?: "earliest" | "latest";
  /** Most rows (and most dead letters) per sink call; default 500. Larger Kafka batches are split. */
  readonly maxRowsPerSink?: number;
  /** Partitions whose chunks may be in the sink at once, over all members; default 1. */
  readonly concurrentPartitions?: number;
  /**
   * Group members this source runs; default 1. A member fetches its next batch only once it has
   * handled the last one (kafkajs), so with one member every fetch leaves the sink idle; with more,
   * one member's fetch overlaps the others' writes. The group divides the partitions among them,
   * and each partition stays with one member at a time, as with members in different processes.
   */
  readonly members?: number;
  /**
   * Called with the dead letters of a chunk once they are in the dead-letter topic and the chunk
   * counts as taken (each message once, as counters().rejected counts it); their headers say why
   * (dead-letter.ts readDeadLetterHeaders). Must not throw.
   */
  readonly onDeadLetters?: (messages: readonly Message[]) => void;
  /** Create the dead-letter topic at start if it does not exist; default true. */
  readonly createDeadLetterTopic?: boolean;
  /** Consumer session timeout; default 30 s. */
  readonly sessionTimeoutMs?: number;
  /** Heartbeat interval, also while a chunk is in the sink; default 3 s. */
  readonly heartbeatIntervalMs?: number;
  /** Backoff between failed sink (or dead-letter) attempts, first and largest; default 200 ms, 10 s. */
  readonly retryBackoffMs?: { readonly initial: number; readonly max: number };
  /**
   * Longest wait of a fetch for new records; default 500 ms (the Java client's fetch.max.wait.ms).
   * stop() waits for the fetch in flight, so this also bounds how long a stop takes when idle.
   */
  readonly maxWaitTimeMs?: number;
  /**
   * Longest a partition's taken chunks wait for their commit within a batch; default 1000 ms. A batch
   * commits at its end anyway, so this only matters for long batches behind a slow sink.
   */
  readonly commitIntervalMs?: number;
  /** Bytes fetched per partition per request; default 4 MiB. */
  readonly maxBytesPerPartition?: number;
  readonly logger?: Logger;
}

export interface KafkaSourceCounters {
  /** Messages handed on (to the sink or the dead-letter topic). */
  readonly read: number;
  /** Rows the sink took into the target. */
  readonly written: number;
  /** Rows the sink diverted to the buffer topic. */
  readonly diverted: number;
  /** Malformed messages produced to the dead-letter topic. */
  readonly rejected: number;
  /** Failed sink or dead-letter attempts, each retried. */
  readonly failedAttempts: number;
  /** Offset commits the broker accepted. */
  readonly commits: number;
  /**
   * Records behind the partition ends as of each partition's last batch; undefined before the first
   * batch. Cheap but stale between batches; lag() asks the broker.
   */
  readonly lag: number | undefined;
}

export type KafkaSourceState = "new" | "starting" | "running" | "stopping" | "stopped" | "failed";

/** The messages of a batch gathered for one sink call. */
interface Chunk {
  /** The rows for the sink as the decoder left them; absent when decoded here (`records` are the rows). */
  rows?: SourceChunk;
  readonly records: SourceRecord[];
  readonly deadLetters: Message[];
  /** Messages in the chunk (records + dead letters). */
  size: number;
  lastOffset: string | undefined;
}

/** How far the sink has taken a batch's partition, and how far that is committed. */
interface BatchPosition {
  /** The offset after the last chunk the sink took. */
  taken: string | undefined;
  committed: string | undefined;
  committedAt: number;
}

const newChunk = (): Chunk => ({ records: [], deadLetters: [], size: 0, lastOffset: undefined });

export class KafkaSource {
  readonly topic: string;
  readonly groupId: string;
  readonly deadLetterTopic: string;
  readonly #options: KafkaSourceOptions;
  readonly #maxRows: number;
  readonly #heartbeatMs: number;
  readonly #commitIntervalMs: number;
  readonly #backoff: { readonly initial: number; readonly max: number };
  readonly #log: Logger;
  readonly #stopping = new AbortController();
  readonly #partitionLag = new Map<number, number>();
  readonly #consumers: KafkaConsumer[] = [];
  /** The partitions each member owns, as of its last join. */
  readonly #owned: Set<number>[] = [];
  #producer: Producer | undefined;
  #deadLetterReady: Promise<void> = Promise.resolve();
  /** The dead-letter topic's max.message.bytes, read from the cluster (./limits.ts). */
  readonly #deadLetterLimit: TopicLimit;
  #starting: Promise<void> | undefined;
  #state: KafkaSourceState = "new";
  #failure: string | undefined;
  #read = 0;
  #written = 0;
  #diverted = 0;
  #rejected = 0;
  #failedAttempts = 0;
  #commits = 0;
  #decoderFailure = false;

  constructor(options: KafkaSourceOptions) {
    this.topic = assertTopicName(options.topic);
    this.deadLetterTopic = assertTopicName(options.deadLetterTopic);
    if (this.deadLetterTopic === this.topic)
      throw new Error("the dead-letter topic must differ from the source topic");
    if (options.groupId.length === 0) throw new Error("groupId must not be empty");
    this.#deadLetterLimit = clusterTopicLimit(options.kafka, this.deadLetterTopic, (limitBytes, error) =>
      this.#log.warn(
        { limitBytes, error: error === undefined ? undefined : errorSummary(error) },
        "could not read the dead-letter topic's max.message.bytes; assuming Kafka's default",
      ),
    );
    this.groupId = options.groupId;
    this.#maxRows = options.maxRowsPerSink ?? 500;
    if (!Number.isInteger(this.#maxRows) || this.#maxRows < 1) {
      throw new Error("maxRowsPerSink must be a positive integer");
    }
    const members = options.members ?? 1;
    if (!Number.isInteger(members) || members < 1) throw new Error("members must be a positive integer");
    this.#heartbeatMs = options.heartbeatIntervalMs ?? 3000;
    this.#commitIntervalMs = options.commitIntervalMs ?? 1000;
    this.#backoff = options.retryBackoffMs ?? { initial: 200, max: 10_000 };
    this.#options = options;
    this.#log = (options.logger ?? rootLogger).child({
      component: "kafka-source",
      topic: this.topic,
      groupId: this.groupId,
    });
  }

  get state(): KafkaSourceState {
    return this.#state;
  }

  /** Why the consumer stopped for good, when state is "failed". */
  get failure(): string | undefined {
    return this.#failure;
  }

  counters(): KafkaSourceCounters {
    let lag: number | undefined;
    for (const n of this.#partitionLag.values()) lag = (lag ?? 0) + n;
    return {
      read: this.#read,
      written: this.#written,
      diverted: this.#diverted,
      rejected: this.#rejected,
      failedAttempts: this.#failedAttempts,
      commits: this.#commits,
      lag,
    };
  }

  /** The group's lag as the broker sees it: end offsets minus committed offsets. */
  async lag(): Promise<number> {
    const admin = this.#options.kafka.admin();
    await admin.connect();
    try {
      return await consumerGroupLag(admin, this.groupId, this.topic);
    } finally {
      await admin.disconnect();
    }
  }

  /** Connects, joins the group and starts consuming; resolves once the group is joined. */
  start(): Promise<void> {
    if (this.#state !== "new")
      throw new Error(`the source is ${this.#state}; create a new one to start again`);
    this.#state = "starting";
    this.#starting = this.#start().then(
      () => {
        if (this.#state === "starting") this.#state = "running";
      },
      async (error: unknown) => {
        this.#state = "failed";
        this.#failure = error instanceof Error ? error.message : String(error);
        await this.#disconnect();
        throw error;
      },
    );
    return this.#starting;
  }

  /**
   * The dead-letter side (topic and producer) is made ready while the consumer joins its group, and
   * start() waits for both; a chunk holding dead letters waits for it before sending.
   */
  async #start(): Promise<void> {
    this.#deadLetterReady = this.#prepareDeadLetters();
    // Awaited below; until then a failure must not count as unhandled.
    this.#deadLetterReady.catch(() => {});
    const members = this.#options.members ?? 1;
    const concurrent = Math.ceil((this.#options.concurrentPartitions ?? 1) / members);
    await Promise.all(Array.from({ length: members }, (_, member) => this.#startMember(member, concurrent)));
    await this.#deadLetterReady;
  }

  /** One group member: its own consumer (connection, fetches, heartbeats) feeding the same sink. */
  async #startMember(member: number, concurrentPartitions: number): Promise<void> {
    const consumer = this.#options.kafka.consumer({
      groupId: this.groupId,
      sessionTimeout: this.#options.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: this.#heartbeatMs,
      maxBytesPerPartition: this.#options.maxBytesPerPartition ?? 4 * 1024 * 1024,
      maxWaitTimeInMs: this.#options.maxWaitTimeMs ?? 500,
      retry: CONSUMER_RETRY,
    });
    this.#consumers.push(consumer);
    consumer.on(consumer.events.CRASH, (event) => {
      const { error, restart } = event.payload;
      this.#log.error({ error: errorSummary(error), restart, member }, "Kafka consumer crashed");
      if (!restart && this.#state !== "stopping" && this.#state !== "stopped") {
        this.#state = "failed";
        this.#failure = error.message;
      }
    });
    consumer.on(consumer.events.GROUP_JOIN, (event) => {
      // Lag of partitions no member owns any more would be stale forever.
      this.#owned[member] = new Set(event.payload.memberAssignment[this.topic] ?? []);
      for (const partition of this.#partitionLag.keys()) {
        if (!this.#owned.some((owned) => owned?.has(partition))) this.#partitionLag.delete(partition);
      }
    });
    await consumer.connect();
    await consumer.subscribe({
      topics: [this.topic],
      fromBeginning: (this.#options.startFrom ?? "earliest") === "earliest",
    });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: concurrentPartitions,
      eachBatch: (payload) => this.#eachBatch(payload),
    });
  }

  async #prepareDeadLetters(): Promise<void> {
    const { kafka } = this.#options;
    if (this.#options.createDeadLetterTopic !== false) {
      const admin = kafka.admin();
      await admin.connect();
      try {
        // A dead letter carries a source record (or a row decoded from one) plus error headers: a
        // topic made here takes twice the source topic's limit, so values are not left out by default.
        const source = await topicMessageLimit(admin, this.topic);
        await ensureTopic(admin, this.deadLetterTopic, {
          config: { "max.message.bytes": String(source.bytes * 2 + 65_536) },
        });
      } finally {
        await admin.disconnect();
      }
    }
    // Not idempotent: kafkajs would then retry a send forever, and a stop must be able to give up.
    // A duplicate dead letter is harmless; the retry loop below re-sends a failed chunk.
    this.#producer = kafka.producer({
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    await this.#producer.connect();
  }

  /**
   * Finishes the chunk in flight (sink and commit), leaves the group and disconnects. Safe to call
   * more than once and in any state.
   */
  async stop(): Promise<void> {
    if (this.#state === "stopped") return;
    const wasFailed = this.#state === "failed";
    this.#state = "stopping";
    this.#stopping.abort();
    await this.#starting?.catch(() => {});
    await this.#disconnect();
    this.#state = wasFailed ? "failed" : "stopped";
  }

  async #disconnect(): Promise<void> {
    // A producer still connecting would otherwise connect after the disconnect below.
    await this.#deadLetterReady.catch(() => {});
    try {
      await Promise.all(this.#consumers.map((consumer) => consumer.disconnect()));
    } finally {
      await this.#producer?.disconnect();
    }
  }

  /**
   * Decodes the batch chunk by chunk, one chunk ahead of the sink: while chunk k is in the sink (and
   * then committed), chunk k+1 is decoded, so decoding and writing overlap instead of taking turns.
   * Chunk k+1 goes to the sink only after chunk k was taken, so the sink still sees a partition's
   * rows one chunk at a time, in order, and commits stay in offset order. Whether the batch went
   * stale (a seek) is asked before each chunk goes to the sink, not per message (it costs a lookup):
   * a stale chunk is dropped uncommitted, to be read again from the committed offset.
   */
  async #eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const position: BatchPosition = {
      taken: undefined,
      committed: undefined,
      committedAt: performance.now(),
    };
    let chunk = newChunk();
    let inSink: Promise<boolean> = Promise.resolve(true);
    try {
      if (this.#options.decoder) {
        await this.#eachDecodedChunk(payload, position);
        return;
      }
      for (const message of batch.messages) {
        if (!payload.isRunning()) break;
        this.#add(chunk, batch.topic, batch.partition, message);
        if (chunk.records.length >= this.#maxRows || chunk.deadLetters.length >= this.#maxRows) {
          if (!(await inSink)) return;
          if (payload.isStale()) return;
          inSink = this.#flush(payload, chunk, position);
          // Its failure is handled where it is awaited; until then it must not count as unhandled.
          inSink.catch(() => {});
          chunk = newChunk();
          // Decoding the next chunk is synchronous: let the flush reach its socket writes first.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      }
      if (!(await inSink)) return;
      if (chunk.size > 0 && !payload.isStale()) await this.#flush(payload, chunk, position);
    } finally {
      // However the batch ends (done, stopping, abandoned, revoked), what the sink took is committed.
      await this.#commit(payload, position);
    }
  }

  /**
   * The batch with a decoder: cut into chunks of maxRowsPerSink messages, all handed to the decoder at
   * once (it works through them while earlier chunks are in the sink), then flushed in order, one in
   * the sink at a time, as #eachBatch does.
   */
  async #eachDecodedChunk(payload: EachBatchPayload, position: BatchPosition): Promise<void> {
    const { batch } = payload;
    const decoding: Promise<Chunk>[] = [];
    for (let start = 0; start < batch.messages.length; start += this.#maxRows) {
      const messages = batch.messages.slice(start, start + this.#maxRows);
      decoding.push(this.#decoded(batch.topic, batch.partition, messages));
    }
    let inSink: Promise<boolean> = Promise.resolve(true);
    for (const next of decoding) {
      if (!payload.isRunning()) break;
      const chunk = await next;
      if (!(await inSink)) return;
      if (payload.isStale()) return;
      inSink = this.#flush(payload, chunk, position);
      inSink.catch(() => {});
    }
    await inSink;
  }

  /**
   * One chunk through the decoder: its rejections become dead letters here, its rows stay undecoded
   * on this thread until someone asks for them. A failed decoder leaves the chunk to #add.
   */
  async #decoded(topic: string, partition: number, messages: KafkaMessage[]): Promise<Chunk> {
    let decoded: DecodedMessages;
    try {
      decoded = await this.#options.decoder!.decode(messages);
    } catch (error) {
      this.#decoderFailed(error);
      const chunk = newChunk();
      for (const message of messages) this.#add(chunk, topic, partition, message);
      return chunk;
    }
    const chunk = newChunk();
    const rejected = new Set<number>();
    for (const rejection of decoded.rejections) {
      const { index, ...reason } = rejection;
      const message = messages[index]!;
      rejected.add(index);
      chunk.deadLetters.push(
        deadLetterMessage(message, reason, {
          topic,
          partition,
          offset: message.offset,
          timestamp: message.timestamp,
        }),
      );
    }
    const schema = this.#options.schema;
    let records: SourceRecord[] | undefined;
    chunk.rows = {
      length: decoded.rows,
      prepared: decoded.copy,
      records: () => {
        records ??= messages
          .filter((_, i) => !rejected.has(i))
          .map((message) => {
            const row = decodeMessage(schema, message);
            // The worker ran the same function on the same bytes.
            if (!row.ok) throw new Error(`message at offset ${message.offset} decoded differently twice`);
            return { key: row.key, row: row.row, topic, partition, offset: message.offset };
          });
        return records;
      },
    };
    chunk.size = messages.length;
    chunk.lastOffset = messages.at(-1)?.offset;
    return chunk;
  }

  #decoderFailed(error: unknown): void {
    if (this.#decoderFailure) return;
    this.#decoderFailure = true;
    this.#log.warn(
      { error: errorSummary(error) },
      "the decode worker failed; messages are decoded on the main thread",
    );
  }

  #add(chunk: Chunk, topic: string, partition: number, message: KafkaMessage): void {
    const decoded = decodeMessage(this.#options.schema, message);
    if (decoded.ok) {
      chunk.records.push({ key: decoded.key, row: decoded.row, topic, partition, offset: message.offset });
    } else {
      chunk.deadLetters.push(
        deadLetterMessage(message, decoded, {
          topic,
          partition,
          offset: message.offset,
          timestamp: message.timestamp,
        }),
      );
    }
    chunk.size++;
    chunk.lastOffset = message.offset;
  }

  /**
   * Dead letters, then rows; then the chunk's range counts as taken, and is committed when the
   * partition's last commit is older than the commit interval or a rebalance is coming (else at the
   * end of the batch). Returns false when the chunk was abandoned (stopping while the sink kept
   * failing): nothing of it is taken.
   */
  async #flush(payload: EachBatchPayload, chunk: Chunk, position: BatchPosition): Promise<boolean> {
    const { partition } = payload.batch;
    const keepAlive = new BatchKeepAlive(() => payload.heartbeat(), this.#heartbeatMs);
    let outcome: SinkOutcome = "written";
    const rows = chunk.rows ?? sourceChunk(chunk.records);
    try {
      if (chunk.deadLetters.length > 0) {
        await this.#deadLetterReady;
        const sent = await this.#attempt("dead-letter", keepAlive, payload, () =>
          this.#sendDeadLetters(chunk.deadLetters),
        );
        if (!sent.ok) return false;
      }
      if (rows.length > 0) {
        const sunk = await this.#attempt("sink", keepAlive, payload, () => this.#options.sink(rows));
        if (!sunk.ok) return false;
        if (sunk.value === "diverted") outcome = "diverted";
      }
    } finally {
      keepAlive.stop();
    }
    this.#read += chunk.size;
    this.#rejected += chunk.deadLetters.length;
    if (chunk.deadLetters.length > 0) this.#options.onDeadLetters?.(chunk.deadLetters);
    if (outcome === "diverted") this.#diverted += rows.length;
    else this.#written += rows.length;

    const next = (BigInt(chunk.lastOffset!) + 1n).toString();
    payload.resolveOffset(chunk.lastOffset!);
    position.taken = next;
    const end = BigInt(payload.batch.highWatermark);
    this.#partitionLag.set(partition, Number(end > BigInt(next) ? end - BigInt(next) : 0n));
    if (keepAlive.rebalance) {
      await this.#commit(payload, position);
      throw keepAlive.rebalance;
    }
    if (performance.now() - position.committedAt >= this.#commitIntervalMs) {
      await this.#commit(payload, position);
    }
    await payload.heartbeat();
    return true;
  }

  /**
   * Sets messages aside in the dead-letter topic, in order, and resolves once all in-sync replicas
   * have them: the sink's way to set aside rows it cannot put anywhere else (a row too large for the
   * buffer topic). The caller counts them. Waits for the dead-letter side to be ready.
   */
  async setAside(messages: readonly Message[]): Promise<void> {
    if (messages.length === 0) return;
    await this.#deadLetterReady;
    await this.#sendDeadLetters(messages);
  }

  /**
   * Produces dead letters in as many calls as the topic's size limit asks; one too large alone goes
   * without its value (dead-letter.ts fitDeadLetter).
   */
  async #sendDeadLetters(messages: readonly Message[]): Promise<void> {
    const limitBytes = await this.#deadLetterLimit.get();
    const { groups, oversized } = groupWithin(messages, limitBytes);
    const trimmed = new Map(
      oversized.map((o) => [
        o.index,
        fitDeadLetter(o.message, (m) => fitsAlone(m, limitBytes), { bytes: o.bytes, limitBytes }),
      ]),
    );
    let fitted = groups;
    if (trimmed.size > 0) {
      const regrouped = groupWithin(
        messages.map((m, i) => trimmed.get(i) ?? m),
        limitBytes,
      );
      // Never dropped silently: a dead letter that fits nowhere (a limit of a few hundred bytes) stops
      // the chunk, which is offered again, with the reason in the log.
      if (regrouped.oversized.length > 0)
        throw new Error(
          `dead-letter topic ${this.deadLetterTopic} takes at most ${limitBytes} bytes: too little for even the error headers of a dead letter`,
        );
      fitted = regrouped.groups;
    }
    try {
      await sendGroups(this.#producer!, this.deadLetterTopic, fitted);
    } catch (error) {
      this.#deadLetterLimit.forgetOn(error);
      throw error;
    }
  }

  /** Commits the partition's offset past the last chunk taken, unless that is committed already. */
  async #commit(payload: EachBatchPayload, position: BatchPosition): Promise<void> {
    const next = position.taken;
    if (next === undefined || next === position.committed) return;
    const { topic, partition } = payload.batch;
    try {
      await payload.commitOffsetsIfNecessary({
        topics: [{ topic, partitions: [{ partition, offset: next }] }],
      });
    } catch (error) {
      this.#log.info(
        { partition, offset: next, error: errorSummary(error) },
        "offset commit refused; the uncommitted range will be read again",
      );
      throw error;
    }
    position.committed = next;
    position.committedAt = performance.now();
    this.#commits++;
  }

  /**
   * Runs `call` until it succeeds, with capped exponential backoff. Gives up (ok: false) when the
   * source is stopping; rethrows a rebalance seen by the heartbeats, since the partition may no
   * longer be ours.
   */
  async #attempt<T>(
    what: "sink" | "dead-letter",
    keepAlive: BatchKeepAlive,
    payload: EachBatchPayload,
    call: () => Promise<T>,
  ): Promise<{ ok: true; value: T } | { ok: false }> {
    let wait = this.#backoff.initial;
    for (;;) {
      try {
        return { ok: true, value: await call() };
      } catch (error) {
        this.#failedAttempts++;
        this.#log.warn(
          { partition: payload.batch.partition, error: errorSummary(error), retryInMs: wait },
          `${what} failed; retrying the chunk`,
        );
      }
      if (keepAlive.rebalance) throw keepAlive.rebalance;
      if (!payload.isRunning()) return { ok: false };
      await sleep(wait, this.#stopping.signal);
      if (!payload.isRunning()) return { ok: false };
      wait = Math.min(wait * 2, this.#backoff.max);
    }
  }
}
