/**
 * The broker's size limit on what syncgov produces (buffer rows, dead letters, lineage events), read
 * from the cluster, and produce calls cut to fit it.
 *
 * A broker refuses a record batch larger than the topic's `max.message.bytes` (which defaults to the
 * broker's `message.max.bytes`, 1 MiB + 12 bytes unless the platform team set another) with
 * MESSAGE_TOO_LARGE, and a producer that retries the same batch is refused forever. kafkajs has no
 * client-side limit (the Java client's max.request.size), so the cut is made here: each send() holds
 * messages whose record-batch size, computed as the broker computes it (uncompressed record format
 * v2), stays within the topic's limit. The bound is taken over the whole call, not per partition,
 * so every partition's batch fits whatever the partitioner decides. A message that cannot fit even
 * alone is returned to the caller, which sets it aside with its reason (never dropped silently).
 */

import kafkajs, { type Admin, type IHeaders, type Kafka, type Message, type Producer } from "kafkajs";

// kafkajs is CommonJS and Node's named-export detection does not find this one.
const { ConfigResourceTypes } = kafkajs;

/** Kafka's default `message.max.bytes`, used only when the cluster does not say (no describe right). */
export const KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;

/** Record batch header (v2), including the log overhead (base offset and length) the broker counts. */
const RECORD_BATCH_OVERHEAD = 61;

/**
 * The topic's effective `max.message.bytes` (its own setting, else the broker's default), as the
 * cluster reports it. Falls back to Kafka's default, with `fromCluster: false`, when the cluster
 * does not answer the question (e.g. the client may not describe configs).
 */
export async function topicMessageLimit(
  admin: Admin,
  topic: string,
): Promise<{ bytes: number; fromCluster: boolean; error?: unknown }> {
  try {
    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ["max.message.bytes"] }],
    });
    const entry = described.resources[0]?.configEntries.find((e) => e.configName === "max.message.bytes");
    const bytes = Number(entry?.configValue);
    if (Number.isSafeInteger(bytes) && bytes > RECORD_BATCH_OVERHEAD) return { bytes, fromCluster: true };
    return { bytes: KAFKA_DEFAULT_MAX_MESSAGE_BYTES, fromCluster: false };
  } catch (error) {
    return { bytes: KAFKA_DEFAULT_MAX_MESSAGE_BYTES, fromCluster: false, error };
  }
}

/** Bytes of a zigzag varint (Kafka's varint and varlong); exact for safe integers. */
function varintBytes(value: number): number {
  let zigzag = value >= 0 ? value * 2 : -value * 2 - 1;
  let bytes = 1;
  while (zigzag >= 128) {
    zigzag = Math.floor(zigzag / 128);
    bytes++;
  }
  return bytes;
}

function byteLength(value: Buffer | string | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === "string" ? Buffer.byteLength(value) : value.length;
}

function sizedField(value: Buffer | string | null | undefined): number {
  if (value === null || value === undefined) return varintBytes(-1);
  const n = byteLength(value);
  return varintBytes(n) + n;
}

function headerBytes(headers: IHeaders | undefined): number {
  let total = 0;
  let count = 0;
  for (const [key, value] of Object.entries(headers ?? {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one === undefined) continue;
      count++;
      total += sizedField(key) + sizedField(one);
    }
  }
  return varintBytes(count) + total;
}

/**
 * Upper bound of the message's size inside a record batch (record format v2, uncompressed): the
 * length prefix, attributes, timestamp and offset deltas at their widest, key, value and headers.
 */
export function recordBytes(message: Message): number {
  const body =
    1 + // attributes
    10 + // timestamp delta (varlong, widest)
    5 + // offset delta (varint, widest)
    sizedField(message.key) +
    sizedField(message.value) +
    headerBytes(message.headers);
  return varintBytes(body) + body;
}

/** Whether the message fits a record batch of its own under the limit. */
export function fitsAlone(message: Message, limitBytes: number): boolean {
  return RECORD_BATCH_OVERHEAD + recordBytes(message) <= limitBytes;
}

export interface SizedGroups {
  /** Consecutive runs of the messages, in order, each fitting one batch under the limit. */
  readonly groups: Message[][];
  /** Messages that do not fit even alone, with their index in the input and their size. */
  readonly oversized: { readonly index: number; readonly message: Message; readonly bytes: number }[];
}

/** Cuts the messages, in order, into groups whose total record-batch size stays within the limit. */
export function groupWithin(messages: readonly Message[], limitBytes: number): SizedGroups {
  const groups: Message[][] = [];
  const oversized: SizedGroups["oversized"][number][] = [];
  const budget = limitBytes - RECORD_BATCH_OVERHEAD;
  let group: Message[] = [];
  let used = 0;
  messages.forEach((message, index) => {
    const bytes = recordBytes(message);
    if (bytes > budget) {
      oversized.push({ index, message, bytes: bytes + RECORD_BATCH_OVERHEAD });
      return;
    }
    if (used + bytes > budget && group.length > 0) {
      groups.push(group);
      group = [];
      used = 0;
    }
    group.push(message);
    used += bytes;
  });
  if (group.length > 0) groups.push(group);
  return { groups, oversized };
}

/**
 * Sends the groups one after another (order kept: the next starts once the broker acknowledged the
 * last), with acks from all in-sync replicas.
 */
export async function sendGroups(
  producer: Producer,
  topic: string,
  groups: readonly Message[][],
): Promise<void> {
  for (const messages of groups) await producer.send({ topic, acks: -1, messages });
}

/** Whether kafkajs reports the broker's MESSAGE_TOO_LARGE (the limit changed since it was read). */
export function isMessageTooLarge(error: unknown): boolean {
  return (error as { type?: unknown } | null)?.type === "MESSAGE_TOO_LARGE";
}

/**
 * A topic's limit, read once from the cluster and read again after the broker refused a batch as
 * too large (the platform team lowered it meanwhile).
 */
export class TopicLimit {
  readonly #read: () => Promise<number>;
  #bytes: Promise<number> | undefined;

  constructor(read: () => Promise<number>) {
    this.#read = read;
  }

  get(): Promise<number> {
    this.#bytes ??= this.#read();
    this.#bytes.catch(() => {
      this.#bytes = undefined;
    });
    return this.#bytes;
  }

  /** Forgets the value when the error says the broker refused a batch as too large; returns whether it did. */
  forgetOn(error: unknown): boolean {
    if (!isMessageTooLarge(error)) return false;
    this.#bytes = undefined;
    return true;
  }
}

/**
 * The topic's limit as a TopicLimit, read over a short-lived admin connection; `onGuess` hears when
 * the cluster did not say and Kafka's default is assumed.
 */
export function clusterTopicLimit(
  kafka: Kafka,
  topic: string,
  onGuess: (bytes: number, error: unknown) => void = () => {},
): TopicLimit {
  return new TopicLimit(async () => {
    const admin = kafka.admin();
    await admin.connect();
    try {
      const limit = await topicMessageLimit(admin, topic);
      if (!limit.fromCluster) onGuess(limit.bytes, limit.error);
      return limit.bytes;
    } finally {
      await admin.disconnect();
    }
  });
}
