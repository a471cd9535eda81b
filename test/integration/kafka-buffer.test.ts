import { describe, expect, it } from "vitest";
import { BufferTopic, type ReplaySink } from "../../controller/connectors/kafka/buffer.ts";
import { ensureTopic, produceJson } from "../../controller/connectors/kafka/cluster.ts";
import { KafkaSource, type KeyedRow } from "../../controller/connectors/kafka/source.ts";
import { PostgresTarget } from "../../controller/connectors/postgres/target.ts";
import { defineRowSchema } from "../../controller/connectors/record.ts";
import { uniqueName } from "../support/env.ts";
import { kafkaToPostgres } from "../support/kafka.ts";

const { kafka, admin, topics, groups, tables, stopBeforeCleanup } = kafkaToPostgres();
const pool = tables.pool;

const schema = defineRowSchema(
  [
    { name: "id", type: "bigint" },
    { name: "val", type: "text" },
    { name: "version", type: "bigint", nullable: false },
  ],
  ["id"],
);

/** A buffer topic and a version-guarded target table, unique to the test. */
async function setUp(prefix: string) {
  const topic = uniqueName(`${prefix}-buffer`);
  topics.push(topic);
  groups.push(`${topic}.replay`);
  const table = await tables.create(prefix, "id int8 PRIMARY KEY, val text, version int8 NOT NULL");
  const target = new PostgresTarget(pool, { table, schema, versionColumn: "version" });
  const buffer = new BufferTopic({
    kafka,
    topic,
    versionColumn: "version",
    partitions: 3,
    maxRowsPerSink: 64,
  });
  stopBeforeCleanup.push(() => buffer.close());
  return { topic, table, target, buffer };
}

const keyed = (id: number, version: number, val = `v${version}`): KeyedRow => ({
  key: String(id),
  row: { id: String(id), val, version: String(version) },
});

async function targetVersions(table: string): Promise<Map<number, number>> {
  const result = await pool.query<{ id: string; version: string }>(
    `SELECT id::text, version::text FROM ${table}`,
  );
  return new Map(result.rows.map((r) => [Number(r.id), Number(r.version)]));
}

describe("BufferTopic", () => {
  it("replays per key in divert order, and an older buffered value never overwrites a newer one", async () => {
    const { target, buffer, table } = await setUp("bufo");
    const diverted = new Map<number, number[]>();
    let total = 0;
    // Six chunks; in each, every key appears twice with increasing versions.
    for (let round = 1; round <= 6; round++) {
      const chunk: KeyedRow[] = [];
      for (let i = 0; i < 150; i++) {
        const id = (i * 37) % 150;
        for (const version of [round * 10, round * 10 + 1]) {
          chunk.push(keyed(id, version));
          diverted.set(id, [...(diverted.get(id) ?? []), version]);
        }
      }
      await buffer.divert(chunk);
      total += chunk.length;
    }
    expect(await buffer.pendingCount()).toBe(total);

    // Meanwhile newer values reached the target directly for every tenth key.
    await target.upsert(
      [...diverted.keys()].filter((id) => id % 10 === 0).map((id) => keyed(id, 1000, "direct").row),
    );

    const seen = new Map<number, number[]>();
    const sink: ReplaySink = async (records) => {
      for (const r of records) {
        const id = Number(r.key);
        expect(r.version).toBe(r.row.version);
        seen.set(id, [...(seen.get(id) ?? []), Number(r.version)]);
      }
      await target.upsert(records.map((r) => r.row));
    };
    const result = await buffer.replay(sink);
    expect(result).toEqual({ replayed: total, complete: true });
    expect(seen).toEqual(diverted);
    expect(await buffer.pendingCount()).toBe(0);

    const versions = await targetVersions(table);
    expect(versions.size).toBe(150);
    for (const [id, version] of versions) expect(version).toBe(id % 10 === 0 ? 1000 : 61);
    expect((await buffer.replay(sink)).replayed).toBe(0);
  });

  it("diverts a chunk larger than the broker's default message size, and one under a topic's own lower limit", async () => {
    // 10,000 rows of about 250 bytes: 2.5 MB, over the broker's 1 MiB default message.max.bytes.
    const { buffer } = await setUp("bufl");
    const rows = Array.from({ length: 10_000 }, (_, i) => keyed(i, 1, "x".repeat(200)));
    expect(await buffer.divert(rows)).toEqual({ buffered: 10_000, oversized: [] });
    expect(await buffer.pendingCount()).toBe(10_000);

    // A topic the platform team made with max.message.bytes 20000: read from the cluster, not assumed.
    const small = uniqueName("bufs-buffer");
    topics.push(small);
    groups.push(`${small}.replay`);
    await ensureTopic(admin, small, { partitions: 3, config: { "max.message.bytes": "20000" } });
    const limited = new BufferTopic({ kafka, topic: small, versionColumn: "version", maxRowsPerSink: 500 });
    stopBeforeCleanup.push(() => limited.close());
    const chunk = Array.from({ length: 2000 }, (_, i) => keyed(i, 2));
    chunk.splice(700, 0, keyed(5000, 2, "y".repeat(25_000)));
    const result = await limited.divert(chunk);
    expect(result.buffered).toBe(2000);
    expect(result.oversized).toHaveLength(1);
    expect(result.oversized[0]!.row.key).toBe("5000");
    expect(result.oversized[0]!.limitBytes).toBe(20_000);
    expect(result.oversized[0]!.bytes).toBeGreaterThan(25_000);
    expect(await limited.pendingCount()).toBe(2000);
    let replayed = 0;
    expect(
      await limited.replay(async (records) => {
        replayed += records.length;
      }),
    ).toEqual({ replayed: 2000, complete: true });
    expect(replayed).toBe(2000);
  });

  it("counts nothing pending in a topic it had to create, and a later session counts what an earlier one diverted", async () => {
    const { topic, buffer } = await setUp("bufn");
    expect(await buffer.pendingCount()).toBe(0);
    await buffer.ensureTopic();
    expect((await admin.listTopics()).includes(topic)).toBe(true);
    await buffer.divert(Array.from({ length: 40 }, (_, i) => keyed(i, 1)));
    expect(await buffer.pendingCount()).toBe(40);

    // The next session's buffer object finds the topic already there and asks the broker.
    const next = new BufferTopic({ kafka, topic, versionColumn: "version", partitions: 3 });
    stopBeforeCleanup.push(() => next.close());
    expect(await next.pendingCount()).toBe(40);
  });

  it("replays up to the end offsets seen at start (or an explicit mark) and trims what it replayed", async () => {
    const { target, buffer, topic } = await setUp("bufm");
    await buffer.divert(Array.from({ length: 100 }, (_, i) => keyed(i, 1)));
    const mark = await buffer.endOffsets();
    await buffer.divert(Array.from({ length: 50 }, (_, i) => keyed(i, 2)));
    expect(await buffer.pendingCount()).toBe(150);

    const upsert: ReplaySink = (records) => target.upsert(records.map((r) => r.row));
    expect(await buffer.replay(upsert, { until: mark })).toEqual({ replayed: 100, complete: true });
    expect(await buffer.pendingCount()).toBe(50);
    expect(await buffer.replay(upsert)).toEqual({ replayed: 50, complete: true });
    expect(await buffer.pendingCount()).toBe(0);
    for (const p of await admin.fetchTopicOffsets(topic)) expect(p.low).toBe(p.high);
  });

  it("stops at a failing sink with nothing of the failed chunk committed, and the next replay resumes there", async () => {
    const { target, buffer, table } = await setUp("buff");
    await buffer.divert(Array.from({ length: 300 }, (_, i) => keyed(i % 100, 1 + Math.floor(i / 100))));
    let calls = 0;
    let taken = 0;
    const failing: ReplaySink = async (records) => {
      if (++calls === 2) throw new Error("target down");
      await target.upsert(records.map((r) => r.row));
      taken += records.length;
    };
    await expect(buffer.replay(failing)).rejects.toThrow("target down");
    expect(await buffer.pendingCount()).toBe(300 - taken);
    const rest = await buffer.replay((records) => target.upsert(records.map((r) => r.row)));
    expect(rest).toEqual({ replayed: 300 - taken, complete: true });
    const versions = await targetVersions(table);
    expect([...versions.values()].every((v) => v === 3)).toBe(true);
    expect(versions.size).toBe(100);
  });

  it("takes diverted chunks from the realtime channel; replay then converges with rows written directly after", async () => {
    const { target, buffer, table } = await setUp("bufs");
    const topic = uniqueName("bufs-orders");
    const groupId = `${topic}.group`;
    topics.push(topic, `${topic}.dlq`);
    groups.push(groupId);
    await ensureTopic(admin, topic, { partitions: 2 });
    const ids = Array.from({ length: 200 }, (_, i) => i);
    const versions = (from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => from + i).flatMap((version) =>
        ids.map((id) => ({ key: String(id), value: { id, val: `v${version}`, version } })),
      );

    // While the breaker is open every chunk goes to the buffer; once it closes, straight to the target.
    let breakerOpen = true;
    let divertedRows = 0;
    const source = new KafkaSource({
      kafka,
      topic,
      groupId,
      deadLetterTopic: `${topic}.dlq`,
      schema,
      maxRowsPerSink: 100,
      sink: async (chunk) => {
        const rows = chunk.records();
        if (breakerOpen) {
          await buffer.divert(rows);
          divertedRows += rows.length;
          return "diverted";
        }
        await target.upsert(rows.map((r) => r.row));
        return "written";
      },
    });
    const readAtLeast = async (n: number) => {
      const deadline = Date.now() + 30_000;
      while (source.counters().read < n && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await source.start();
    await produceJson(kafka, topic, versions(1, 2));
    await readAtLeast(400);
    breakerOpen = false;
    await produceJson(kafka, topic, versions(3, 4));
    await readAtLeast(800);
    await source.stop();
    const counters = source.counters();
    expect(counters.read).toBe(800);
    expect(counters.diverted).toBe(divertedRows);
    expect(divertedRows).toBe(400);
    expect(counters.written).toBe(400);
    // Source count == rows written + buffered records at this quiet point.
    expect(await buffer.pendingCount()).toBe(counters.diverted);

    // Every buffered value is older than what the target got directly afterwards: without the version
    // guard, this replay would put old values back.
    const replayedVersions = new Set<string | undefined>();
    await buffer.replay(async (rows) => {
      for (const r of rows) replayedVersions.add(r.version);
      await target.upsert(rows.map((r) => r.row));
    });
    expect(replayedVersions.has("4")).toBe(false);
    expect(replayedVersions.size).toBeGreaterThan(0);
    const inTarget = await targetVersions(table);
    expect(inTarget.size).toBe(200);
    expect([...inTarget.values()].every((v) => v === 4)).toBe(true);
  });
});
