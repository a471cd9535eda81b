import { describe, expect, it } from "vitest";
import { ensureTopic, type JsonRecord, produceJson } from "../../controller/connectors/kafka/cluster.ts";
import {
  readDeadLetterHeaders,
  VALUE_OMITTED_HEADER,
} from "../../controller/connectors/kafka/dead-letter.ts";
import { DecodePool } from "../../controller/connectors/kafka/decoder.ts";
import { KafkaSource, type RowSink } from "../../controller/connectors/kafka/source.ts";
import { PostgresTarget } from "../../controller/connectors/postgres/target.ts";
import { defineRowSchema } from "../../controller/connectors/record.ts";
import { eventually } from "../support/controller.ts";
import { uniqueName } from "../support/env.ts";
import { kafkaToPostgres } from "../support/kafka.ts";

const { kafka, admin, topics, groups, tables, stopBeforeCleanup } = kafkaToPostgres();
const pool = tables.pool;

const schema = defineRowSchema(
  [
    { name: "order_id", type: "bigint" },
    { name: "status", type: "text" },
    { name: "qty", type: "integer" },
    { name: "amount", type: "numeric" },
    { name: "updated_at", type: "timestamp" },
    { name: "version", type: "bigint", nullable: false },
  ],
  ["order_id"],
);

/** A job's topics, group and target table, all unique to the test and removed afterwards. */
async function setUpJob(prefix: string, partitions = 3) {
  const topic = uniqueName(`${prefix}-orders`);
  const deadLetterTopic = `${topic}.dlq`;
  const groupId = `${topic}.group`;
  topics.push(topic, deadLetterTopic);
  groups.push(groupId, `${deadLetterTopic}.reader`);
  await ensureTopic(admin, topic, { partitions });
  const table = await tables.create(
    prefix,
    "order_id int8 PRIMARY KEY, status text, qty int4, amount numeric, updated_at timestamptz, version int8 NOT NULL",
  );
  const target = new PostgresTarget(pool, { table, schema });
  const sink: RowSink = async (chunk) => {
    await target.upsertChunk(chunk.length, chunk.prepared, () => chunk.records().map((r) => r.row));
  };
  return { topic, deadLetterTopic, groupId, table, target, sink };
}

const BIG_AMOUNT = "123456789012345678901234.5678901234567890123";

/**
 * `keys` orders, each updated `versions` times (all keys at version 1, then all at version 2, …, so
 * a key's versions are spread over the log), with malformed messages of every kind mixed in.
 * Orders whose id is a multiple of 100 carry, in their last version, an amount no double can hold.
 */
function orderRecords(
  keys: number,
  versions: number,
): { records: JsonRecord[]; malformed: Map<string, number> } {
  const records: JsonRecord[] = [];
  const malformed = new Map<string, number>();
  const bad = (reason: string, record: JsonRecord) => {
    malformed.set(reason, (malformed.get(reason) ?? 0) + 1);
    records.push(record);
  };
  for (let version = 1; version <= versions; version++) {
    for (let i = 0; i < keys; i++) {
      const id = 1000 + ((i * 7919) % keys); // a permutation: neighbouring records have unrelated keys
      const fields = {
        order_id: id,
        status: `v${version}`,
        qty: (id * version) % 997,
        updated_at: `2024-05-0${version}T10:00:00.123456Z`,
        version,
      };
      if (version === versions && id % 100 === 0) {
        const text = JSON.stringify({ ...fields, amount: 0 }).replace('"amount":0', `"amount":${BIG_AMOUNT}`);
        records.push({ key: String(id), value: Buffer.from(text) });
      } else {
        records.push({ key: String(id), value: { ...fields, amount: `${id}.${version}5` } });
      }
      if (i % 97 === 13) {
        switch ((i + version) % 5) {
          case 0:
            bad("NotJson", { key: String(id), value: Buffer.from(`{"order_id": ${id}, oops`) });
            break;
          case 1:
            bad("MissingMessageKey", { key: null, value: { order_id: id, version: 99 } });
            break;
          case 2:
            bad("NotAnInteger", { key: String(id), value: { order_id: id, qty: "lots", version: 99 } });
            break;
          case 3:
            bad("MissingValue", { key: String(id), value: null });
            break;
          default:
            bad("MissingKey", { key: String(id), value: { status: "no id", version: 99 } });
        }
      }
    }
  }
  return { records, malformed };
}

/** Polls probe until done(value), through eventually(); a timeout names the last value seen. */
function until<T>(probe: () => Promise<T> | T, done: (value: T) => boolean, timeoutMs = 45_000): Promise<T> {
  return eventually(
    `a condition within ${timeoutMs} ms`,
    async () => {
      const value = await probe();
      if (!done(value)) throw new Error(`last value ${JSON.stringify(value)}`);
      return value;
    },
    timeoutMs,
  );
}

/** sink, each call of it delayed by delayMs: a slow target, so that a test can act mid-stream. */
function delayed(sink: RowSink, delayMs: number): RowSink {
  return async (rows) => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    await sink(rows);
  };
}

/** Every message of a topic, read by a throwaway group until the end offsets seen at the start. */
async function readTopic(topic: string, groupId: string) {
  const offsets = await admin.fetchTopicOffsets(topic);
  const expected = offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  const reader = kafka.consumer({ groupId, maxWaitTimeInMs: 200 });
  const messages: { key: string | null; value: Buffer | null; headers: Record<string, unknown> }[] = [];
  await reader.connect();
  await reader.subscribe({ topics: [topic], fromBeginning: true });
  await reader.run({
    eachMessage: async ({ message }) => {
      messages.push({
        key: message.key?.toString() ?? null,
        value: message.value,
        headers: message.headers ?? {},
      });
    },
  });
  try {
    await until(
      () => messages.length,
      (n) => n >= expected,
    );
  } finally {
    await reader.disconnect();
  }
  return messages;
}

async function latestPerKey(table: string) {
  const result = await pool.query<{ order_id: string; status: string; version: string; amount: string }>(
    `SELECT order_id::text, status, version::text, amount::text FROM ${table} ORDER BY order_id`,
  );
  return result.rows;
}

function startSource(
  job: Awaited<ReturnType<typeof setUpJob>>,
  overrides: Partial<ConstructorParameters<typeof KafkaSource>[0]> = {},
) {
  const source = new KafkaSource({
    kafka,
    topic: job.topic,
    groupId: job.groupId,
    deadLetterTopic: job.deadLetterTopic,
    schema,
    sink: job.sink,
    heartbeatIntervalMs: 1000,
    ...overrides,
  });
  stopBeforeCleanup.push(() => source.stop());
  return source;
}

/** Per key, what the target must hold: the last version, and the exact big amount where one was sent. */
function expectLatest(rows: Awaited<ReturnType<typeof latestPerKey>>, keys: number, versions: number) {
  expect(rows).toHaveLength(keys);
  for (const row of rows) {
    const id = Number(row.order_id);
    expect(row).toEqual({
      order_id: String(id),
      status: `v${versions}`,
      version: String(versions),
      amount: id % 100 === 0 ? BIG_AMOUNT : `${id}.${versions}5`,
    });
  }
}

describe("KafkaSource", () => {
  it("sends dead letters within the dead-letter topic's size limit, a letter too large alone without its value", async () => {
    const job = await setUpJob("ksrcdlqsize", 1);
    // The platform team's dead-letter topic takes at most 4000-byte messages; the source topic the default.
    await ensureTopic(admin, job.deadLetterTopic, { config: { "max.message.bytes": "4000" } });
    const records: JsonRecord[] = [];
    for (let i = 0; i < 300; i++)
      records.push({ key: `bad-${i}`, value: Buffer.from(`not json ${"z".repeat(1500)}`) });
    records.push({ key: "huge", value: Buffer.from(`not json ${"h".repeat(10_000)}`) });
    for (let i = 0; i < 100; i++)
      records.push({
        key: String(i),
        value: {
          order_id: i,
          status: "v1",
          qty: 1,
          amount: "1.5",
          updated_at: "2026-01-01T00:00:00Z",
          version: 1,
        },
      });
    await produceJson(kafka, job.topic, records);
    const source = startSource(job, { maxRowsPerSink: 10_000 });
    await source.start();
    const counters = await until(
      () => source.counters(),
      (c) => c.read >= records.length,
    );
    expect(counters).toEqual(expect.objectContaining({ read: 401, written: 100, rejected: 301 }));
    await source.stop();
    const letters = await readTopic(job.deadLetterTopic, `${job.deadLetterTopic}.reader`);
    expect(letters).toHaveLength(301);
    const huge = letters.find((l) => l.key === "huge")!;
    expect(huge.value).toBeNull();
    expect(String(huge.headers[VALUE_OMITTED_HEADER])).toContain("at most 4000");
    expect(readDeadLetterHeaders(huge.headers as never)).toEqual(
      expect.objectContaining({ reason: "NotJson", topic: job.topic, offset: "300" }),
    );
    for (const letter of letters.filter((l) => l.key !== "huge"))
      expect(letter.value?.length).toBeGreaterThan(1500);
  });

  it.each([
    ["on the main thread", "none"],
    ["in a worker thread", "worker"],
    ["on the main thread after the worker failed", "failed"],
    ["in a worker thread, by three group members", "members"],
  ] as const)(
    "syncs 5,000 records with repeated keys to the latest value per key and dead-letters the malformed ones, decoding %s",
    async (_, decoding) => {
      const job = await setUpJob(`ksrc${decoding}`);
      const { records, malformed } = orderRecords(1000, 5);
      const malformedCount = [...malformed.values()].reduce((a, b) => a + b, 0);
      expect(records.length - malformedCount).toBe(5000);
      expect(malformed.size).toBe(5);
      await produceJson(kafka, job.topic, records);

      const pool = decoding === "none" ? undefined : new DecodePool({ threads: 1 });
      if (pool) stopBeforeCleanup.push(() => pool.close());
      // A closed pool rejects every chunk, as one whose threads died would.
      if (decoding === "failed") await pool?.close();
      const decoder = pool?.decoder(schema);
      const source = startSource(job, {
        ...(decoder ? { decoder } : {}),
        ...(decoding === "members" ? { members: 3, concurrentPartitions: 3 } : {}),
      });
      await source.start();
      const counters = await until(
        () => source.counters(),
        (c) => c.read >= records.length,
      );
      expect(counters.read).toBe(records.length);
      expect(counters.read).toBe(counters.written + counters.rejected);
      expect(counters.rejected).toBe(malformedCount);
      expect(counters.diverted).toBe(0);
      expect(counters.lag).toBe(0);
      expect(await source.lag()).toBe(0);
      await source.stop();
      expect(source.state).toBe("stopped");

      expectLatest(await latestPerKey(job.table), 1000, 5);

      const deadLetters = await readTopic(job.deadLetterTopic, `${job.deadLetterTopic}.reader`);
      expect(deadLetters).toHaveLength(malformedCount);
      const reasons = new Map<string, number>();
      const positions = new Set<string>();
      for (const letter of deadLetters) {
        const info = readDeadLetterHeaders(letter.headers as never);
        expect(info).toBeDefined();
        if (!info) continue;
        reasons.set(info.reason, (reasons.get(info.reason) ?? 0) + 1);
        expect(info.topic).toBe(job.topic);
        expect(info.partition).toBeGreaterThanOrEqual(0);
        positions.add(`${info.partition}/${info.offset}`);
        if (info.reason === "NotAnInteger") expect(info.column).toBe("qty");
        if (info.reason === "MissingKey") expect(info.column).toBe("order_id");
        if (info.reason === "NotJson") expect(letter.value?.toString()).toMatch(/oops$/);
        if (info.reason === "MissingValue") expect(letter.value).toBeNull();
      }
      expect(reasons).toEqual(malformed);
      expect(positions.size).toBe(malformedCount);
    },
  );

  it("resumes after a stop in the middle without losing or repeating a record", async () => {
    const job = await setUpJob("kstop");
    const { records, malformed } = orderRecords(400, 5);
    const malformedCount = [...malformed.values()].reduce((a, b) => a + b, 0);
    await produceJson(kafka, job.topic, records);

    const slowSink = delayed(job.sink, 25);
    const first = startSource(job, { sink: slowSink, maxRowsPerSink: 50 });
    await first.start();
    await until(
      () => first.counters().read,
      (n) => n >= 100,
    );
    await first.stop();
    const stoppedAt = first.counters();
    expect(stoppedAt.read).toBeGreaterThan(0);
    expect(stoppedAt.read).toBeLessThan(records.length);
    // Everything handed on was committed: the group's lag is exactly what the first session left.
    expect(await first.lag()).toBe(records.length - stoppedAt.read);

    const second = startSource(job, { maxRowsPerSink: 200 });
    await second.start();
    const resumed = await until(
      () => second.counters(),
      (c) => stoppedAt.read + c.read >= records.length,
    );
    await second.stop();
    expect(stoppedAt.read + resumed.read).toBe(records.length);
    expect(stoppedAt.rejected + resumed.rejected).toBe(malformedCount);
    expect(stoppedAt.written + resumed.written).toBe(records.length - malformedCount);
    expect(await second.lag()).toBe(0);
    expectLatest(await latestPerKey(job.table), 400, 5);
    expect(await readTopic(job.deadLetterTopic, `${job.deadLetterTopic}.reader`)).toHaveLength(
      malformedCount,
    );
  });

  it("retries a failing sink without committing past it, and counts diverted chunks apart", async () => {
    const job = await setUpJob("kretry", 1);
    const { records } = orderRecords(100, 3);
    const good = records.filter(
      (r) =>
        r.key &&
        typeof r.value === "object" &&
        r.value !== null &&
        "order_id" in r.value &&
        !Buffer.isBuffer(r.value),
    );
    await produceJson(kafka, job.topic, good.slice(0, 200));
    let calls = 0;
    const source = startSource(job, {
      maxRowsPerSink: 80,
      retryBackoffMs: { initial: 50, max: 200 },
      sink: async (rows) => {
        calls++;
        if (calls <= 2) throw new Error("target unavailable");
        if (calls === 4) return "diverted";
        await job.sink(rows);
        return "written";
      },
    });
    await source.start();
    const counters = await until(
      () => source.counters(),
      (c) => c.read >= 200,
    );
    await source.stop();
    expect(counters.failedAttempts).toBe(2);
    expect(counters.read).toBe(200);
    expect(counters.written + counters.diverted).toBe(200);
    expect(counters.diverted).toBeGreaterThan(0);
    expect(await source.lag()).toBe(0);
  });

  it("keeps every record through a rebalance when a second member joins mid-stream", async () => {
    const job = await setUpJob("kreb");
    const { records } = orderRecords(300, 5);
    await produceJson(kafka, job.topic, records);
    const slowSink = delayed(job.sink, 100);
    const first = startSource(job, { sink: slowSink, maxRowsPerSink: 40 });
    await first.start();
    await until(
      () => first.counters().read,
      (n) => n >= 80,
    );
    const second = startSource(job, { sink: slowSink, maxRowsPerSink: 40 });
    await second.start();
    await until(
      () => first.lag(),
      (lag) => lag === 0,
    );
    await Promise.all([first.stop(), second.stop()]);
    const read = first.counters().read + second.counters().read;
    // At least once: a chunk whose commit the rebalance refused is read again, never skipped.
    expect(read).toBeGreaterThanOrEqual(records.length);
    expect(second.counters().read).toBeGreaterThan(0);
    expectLatest(await latestPerKey(job.table), 300, 5);
  });
});
