/**
 * The Kafka cluster as syncgov's connectors use it: one kafkajs client per process or job, the
 * per-job topic and group names, topic creation, offsets read through the admin API, and a small
 * producer of JSON records for tests and examples.
 *
 * kafkajs logs through the syncgov logger (warnings and errors only by default), so broker problems
 * land in the same JSON lines as everything else rather than in kafkajs' own format.
 */

import { createHash } from "node:crypto";
import {
  type Admin,
  type IHeaders,
  Kafka,
  type LogEntry,
  logLevel,
  Partitioners,
  type Producer,
} from "kafkajs";
import { KAFKA_TOPIC } from "../../api/identifiers.ts";
import { tenantTopicRefusal } from "../../api/tenancy.ts";
import { type Logger, logger as rootLogger } from "../../telemetry/logger.ts";

export interface KafkaConnectionOptions {
  /** Bootstrap servers, `host:port`. */
  readonly brokers: readonly string[];
  /** Names the client in broker logs and quotas; default "syncgov". */
  readonly clientId?: string;
  readonly logger?: Logger;
  /** Lowest kafkajs level that reaches the logger; default "warn". */
  readonly logLevel?: "error" | "warn" | "info" | "debug";
  /** Per-request timeout; default kafkajs' 30 s. */
  readonly requestTimeoutMs?: number;
}

const LOG_LEVELS = {
  error: logLevel.ERROR,
  warn: logLevel.WARN,
  info: logLevel.INFO,
  debug: logLevel.DEBUG,
} as const;

/** A kafkajs client whose log lines go to the syncgov logger. */
export function connectKafka(options: KafkaConnectionOptions): Kafka {
  if (options.brokers.length === 0) throw new Error("at least one Kafka bootstrap server is needed");
  const log = (options.logger ?? rootLogger).child({ component: "kafka" });
  return new Kafka({
    clientId: options.clientId ?? "syncgov",
    brokers: [...options.brokers],
    logLevel: LOG_LEVELS[options.logLevel ?? "warn"],
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeout: options.requestTimeoutMs }),
    logCreator: () => (entry: LogEntry) => writeKafkaLog(log, entry),
  });
}

/**
 * kafkajs logs every error response at error level from its Connection, including the ones the
 * client handles itself (a rebalance in progress, a coordinator still loading, a topic that exists);
 * those go to debug, and what matters surfaces from the consumer, producer and syncgov's own lines.
 */
function writeKafkaLog(log: Logger, entry: LogEntry): void {
  const { message, timestamp: _timestamp, logger: _logger, ...fields } = entry.log;
  const line = { kafkaNamespace: entry.namespace, ...fields };
  const level = entry.namespace === "Connection" ? logLevel.DEBUG : entry.level;
  switch (level) {
    case logLevel.ERROR:
      log.error(line, message);
      break;
    case logLevel.WARN:
      log.warn(line, message);
      break;
    case logLevel.INFO:
      log.info(line, message);
      break;
    default:
      log.debug(line, message);
  }
}

const kafkaTopicRe = new RegExp(KAFKA_TOPIC);

/** Throws unless `topic` is a valid Kafka topic name (controller/api/identifiers.ts). */
export function assertTopicName(topic: string): string {
  if (!kafkaTopicRe.test(topic)) throw new Error(`invalid Kafka topic name ${JSON.stringify(topic)}`);
  return topic;
}

const MAX_TOPIC_LENGTH = 249;

/**
 * A per-job topic or group name, `syncgov.<kind>.<namespace>.<job>`. A Kubernetes namespace has no
 * dots, so the name is unambiguous. Names longer than Kafka's 249 characters keep their start and
 * end a hash of the full name, so two long job names never share a topic.
 */
export function jobTopicName(kind: "buffer" | "dlq", namespace: string, job: string): string {
  const full = `syncgov.${kind}.${namespace}.${job}`;
  if (full.length <= MAX_TOPIC_LENGTH) return assertTopicName(full);
  const hash = createHash("sha256").update(full).digest("hex").slice(0, 16);
  return assertTopicName(`${full.slice(0, MAX_TOPIC_LENGTH - hash.length - 1)}-${hash}`);
}

/** The consumer group of a job's realtime channel: `syncgov.<namespace>.<job>`. */
export function jobConsumerGroup(namespace: string, job: string): string {
  return `syncgov.${namespace}.${job}`;
}

/**
 * The job's buffer topic: the topic its SyncJob spec names (bufferTopic, only under the job's own
 * namespace prefix: api/tenancy.ts), or
 * `syncgov.buffer.<namespace>.<job>`. Realtime sessions divert to it and Compensation runs replay it.
 */
export function bufferTopicOf(
  namespace: string,
  job: string,
  spec: { readonly bufferTopic?: string | undefined },
): string {
  return spec.bufferTopic === undefined
    ? jobTopicName("buffer", namespace, job)
    : tenantTopic("buffer", namespace, spec.bufferTopic);
}

/** A topic the spec names, refused (with the field) when it lies outside the job's namespace. */
function tenantTopic(kind: "buffer" | "dlq", namespace: string, topic: string): string {
  const refusal = tenantTopicRefusal(kind, namespace, topic);
  if (refusal !== undefined)
    throw new Error(`spec.${kind === "buffer" ? "bufferTopic" : "deadLetterTopic"} ${topic}: ${refusal}`);
  return assertTopicName(topic);
}

/**
 * The job's dead-letter topic: the topic its SyncJob spec names (deadLetterTopic, only under the
 * job's own namespace prefix), or
 * `syncgov.dlq.<namespace>.<job>`. Malformed records and rows too large to buffer go there.
 */
export function deadLetterTopicOf(
  namespace: string,
  job: string,
  spec: { readonly deadLetterTopic?: string | undefined },
): string {
  return spec.deadLetterTopic === undefined
    ? jobTopicName("dlq", namespace, job)
    : tenantTopic("dlq", namespace, spec.deadLetterTopic);
}

export interface TopicSettings {
  readonly partitions?: number;
  readonly replicationFactor?: number;
  /** Topic configuration entries, e.g. `{"retention.ms": "-1"}`. */
  readonly config?: Readonly<Record<string, string>>;
}

/**
 * Creates the topic unless it exists; true when it was created. Existing topics are left as they
 * are (their partitions and configuration belong to whoever made them).
 */
export async function ensureTopic(
  admin: Admin,
  topic: string,
  settings: TopicSettings = {},
): Promise<boolean> {
  assertTopicName(topic);
  // Asking first keeps the usual case (the topic exists) free of a refused CreateTopics.
  if ((await admin.listTopics()).includes(topic)) return false;
  // Right after a broker starts, or while another creator races this one, the wait for leaders can
  // answer a retriable "does not host this topic-partition": ask again rather than fail the caller.
  // A topic that exists by then (another creator won) is as good as one created here.
  return retryRetriable(async () => {
    if ((await admin.listTopics()).includes(topic)) return false;
    return createTopic(admin, topic, settings);
  });
}

function createTopic(admin: Admin, topic: string, settings: TopicSettings): Promise<boolean> {
  return admin.createTopics({
    waitForLeaders: true,
    topics: [
      {
        topic,
        numPartitions: settings.partitions ?? 1,
        // -1 lets the broker apply default.replication.factor.
        replicationFactor: settings.replicationFactor ?? -1,
        configEntries: Object.entries(settings.config ?? {}).map(([name, value]) => ({ name, value })),
      },
    ],
  });
}

/** Offsets of one topic: partition → offset, as decimal strings (Kafka offsets are 64-bit). */
export type PartitionOffsets = ReadonlyMap<number, string>;

export interface TopicOffsets {
  /** Offset of the next record each partition will receive (the high watermark). */
  readonly end: PartitionOffsets;
  /** Offset of the oldest record still held (retention may have deleted earlier ones). */
  readonly start: PartitionOffsets;
}

export async function topicOffsets(admin: Admin, topic: string): Promise<TopicOffsets> {
  const entries = await retryRetriable(() => admin.fetchTopicOffsets(topic));
  return {
    end: new Map(entries.map((e) => [e.partition, e.high])),
    start: new Map(entries.map((e) => [e.partition, e.low])),
  };
}

/**
 * Runs an admin call again while kafkajs marks its error retriable (a group coordinator that is
 * loading or moved, a leader election): the admin client does not retry these itself for every
 * request, and they pass within moments.
 */
export async function retryRetriable<T>(call: () => Promise<T>, attempts = 6): Promise<T> {
  let wait = 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const retriable = (error as { retriable?: unknown } | null)?.retriable === true;
      if (!retriable || attempt >= attempts) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 2000);
  }
}

/** The group's committed offsets for the topic; partitions without a commit are absent. */
export async function committedOffsets(
  admin: Admin,
  groupId: string,
  topic: string,
): Promise<PartitionOffsets> {
  const [entry] = await retryRetriable(() => admin.fetchOffsets({ groupId, topics: [topic] }));
  const committed = new Map<number, string>();
  for (const p of entry?.partitions ?? []) {
    if (BigInt(p.offset) >= 0n) committed.set(p.partition, p.offset);
  }
  return committed;
}

/**
 * Records the group has yet to consume from the topic, per partition: the end offset minus the
 * committed offset, or minus the oldest held offset when nothing is committed or the commit points
 * at records retention already deleted.
 */
export function pendingPerPartition(offsets: TopicOffsets, committed: PartitionOffsets): Map<number, bigint> {
  const pending = new Map<number, bigint>();
  for (const [partition, endText] of offsets.end) {
    const end = BigInt(endText);
    const start = BigInt(offsets.start.get(partition) ?? "0");
    const position = committed.has(partition) ? BigInt(committed.get(partition)!) : start;
    const from = position > start ? position : start;
    pending.set(partition, end > from ? end - from : 0n);
  }
  return pending;
}

/** Total records the group has yet to consume from the topic (its lag). */
export async function consumerGroupLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [offsets, committed] = await Promise.all([
    topicOffsets(admin, topic),
    committedOffsets(admin, groupId, topic),
  ]);
  let total = 0n;
  for (const n of pendingPerPartition(offsets, committed).values()) total += n;
  return Number(total);
}

/** One record for produceJson: a key and a value that is JSON-encoded unless it is already bytes. */
export interface JsonRecord {
  readonly key?: string | null;
  /**
   * Encoded with JSON.stringify; a Buffer is sent as is (to produce malformed records on purpose);
   * null is a tombstone.
   */
  readonly value: unknown;
  readonly headers?: IHeaders;
}

/**
 * Produces records to a topic with acks from all in-sync replicas, in order, and returns when the
 * broker acknowledged them. For tests and examples; the connectors keep their own producers.
 * Records go in chunks of 1000 so a large array does not become one oversized request.
 */
export async function produceJson(
  kafka: Kafka,
  topic: string,
  records: readonly JsonRecord[],
): Promise<void> {
  assertTopicName(topic);
  const producer: Producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  try {
    for (let start = 0; start < records.length; start += 1000) {
      await producer.send({
        topic,
        acks: -1,
        messages: records.slice(start, start + 1000).map((r) => ({
          key: r.key ?? null,
          value:
            r.value === null
              ? null
              : Buffer.isBuffer(r.value)
                ? r.value
                : Buffer.from(JSON.stringify(r.value) ?? "null"),
          ...(r.headers ? { headers: r.headers } : {}),
        })),
      });
    }
  } finally {
    await producer.disconnect();
  }
}

/** Decodes a header value kafkajs hands over (bytes, text, or a repeated header's last value). */
export function headerText(value: IHeaders[string]): string | undefined {
  if (value === undefined) return undefined;
  const last = Array.isArray(value) ? value.at(-1) : value;
  if (last === undefined) return undefined;
  return typeof last === "string" ? last : last.toString("utf8");
}
