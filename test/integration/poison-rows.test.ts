/**
 * Poison rows (issue 18, finding 4) against the real Kafka, PostgreSQL and API server: a Realtime
 * SyncRun executed by runSyncRun (as the in-process executor does) streams a topic into a table whose
 * columns are narrower than the row model (smallint, varchar(8), numeric(12,2)) and which has a NOT
 * NULL and a CHECK. Records whose values the table cannot hold are mixed among good ones. Every good
 * record must arrive; every poison one must be in the dead-letter topic with a reason naming its
 * column or constraint, counted as rejected; the breaker must stay closed; and the session must go
 * on taking records after them. Before the fix, the first such record failed its chunk's write on
 * every retry and its partition never moved again.
 */

import type { EventsV1Event } from "@kubernetes/client-node";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { readDeadLetterHeaders } from "../../controller/connectors/kafka/dead-letter.ts";
import { createStreamRunner } from "../../controller/runner/stream.ts";
import { eventually } from "../support/controller.ts";
import { testEnv } from "../support/env.ts";
import { kafkaToPostgres } from "../support/kafka.ts";
import { realtimeRuns, runNamespace } from "../support/runner.ts";

const env = testEnv();
const streams = kafkaToPostgres();
const pool = streams.tables.pool;
pool.on("error", () => {});
const ns = runNamespace("poison");
const namespace = ns.name;

const log = pino(
  { level: "info" },
  pino.destination({ dest: `${env.runDir}/${namespace}.log`, sync: false }),
);
afterAll(() => log.flush());

const runs = realtimeRuns(ns, streams, {
  log,
  stream: createStreamRunner({ pollIntervalMs: 250, statusIntervalMs: 250, logger: log }),
});

const COLUMNS = `id int8 PRIMARY KEY,
  qty smallint,
  code varchar(8),
  amount numeric(12,2),
  score int4 NOT NULL CONSTRAINT score_not_negative CHECK (score >= 0),
  seq int8 NOT NULL`;

interface Item {
  id: number;
  qty?: number;
  code?: string;
  amount?: string;
  score?: number;
  seq: number;
}

/** What a poison record must be set aside with: its reason and the column or constraint named. */
interface Expected {
  readonly reason: string;
  readonly column?: string;
  readonly constraint?: string;
  readonly sqlState?: string;
}

const KINDS: readonly {
  readonly make: (id: number, seq: number, i: number) => Item;
  readonly expected: Expected;
}[] = [
  // smallint's range: caught as the record is decoded.
  {
    make: (id, seq, i) => ({ ...good(id, seq), qty: i % 2 ? 40_000 : -32_769 }),
    expected: { reason: "OutOfRange", column: "qty" },
  },
  // varchar(8): caught as the record is decoded (9 characters, one of them not ASCII).
  {
    make: (id, seq, i) => ({ ...good(id, seq), code: i % 2 ? "ABCDEFGHIJ" : "ÄÖÜßäöüéx" }),
    expected: { reason: "TooLong", column: "code" },
  },
  // numeric(12,2): caught as the record is decoded (the live case, and values that round over).
  {
    make: (id, seq, i) => ({
      ...good(id, seq),
      amount: ["9007199254740993", "99999999999.5", "9999999999.995"][i % 3]!,
    }),
    expected: { reason: "OutOfRange", column: "amount" },
  },
  // NOT NULL: caught as the record is decoded.
  {
    make: (id, seq) => {
      const { score: _, ...rest } = good(id, seq);
      return rest;
    },
    expected: { reason: "NullNotAllowed", column: "score" },
  },
  // The CHECK: only PostgreSQL can judge it; the chunk is split until the row is found.
  {
    make: (id, seq, i) => ({ ...good(id, seq), score: -1 - i }),
    expected: { reason: "CheckViolation", constraint: "score_not_negative", sqlState: "23514" },
  },
];
const PER_KIND = 6;

function good(id: number, seq: number): Item {
  return {
    id,
    // Values at the very edge of what the columns hold are good ones.
    qty: id % 50 === 0 ? 32_767 : id % 7,
    code: id % 40 === 0 ? "ÄÖÜßäöüé" : `c${id}`,
    amount: id % 60 === 0 ? "9999999999.99" : `${id}.25`,
    score: id % 5,
    seq,
  };
}

/** The latest good record per id, as the target should hold it. */
function latestGood(items: readonly Item[], poison: ReadonlySet<Item>): Map<number, Item> {
  const latest = new Map<number, Item>();
  for (const item of items) if (!poison.has(item)) latest.set(item.id, item);
  return latest;
}

async function targetRows(table: string): Promise<Map<number, Item>> {
  const result = await pool.query<{
    id: string;
    qty: number | null;
    code: string | null;
    amount: string | null;
    score: number;
    seq: string;
  }>(`SELECT id::text, qty, code, amount::text, score, seq::text FROM ${table}`);
  return new Map(
    result.rows.map((r) => [
      Number(r.id),
      {
        id: Number(r.id),
        qty: r.qty ?? undefined,
        code: r.code ?? undefined,
        amount: r.amount ?? undefined,
        score: r.score,
        seq: Number(r.seq),
      } as Item,
    ]),
  );
}

/** Good records as the table stores them: numeric(12,2) prints two decimals. */
function stored(items: Map<number, Item>): Map<number, Item> {
  return new Map(
    [...items].map(([id, item]) => [
      id,
      { ...item, amount: item.amount === undefined ? undefined : Number(item.amount).toFixed(2) },
    ]),
  );
}

/** Every message of a topic, read by a throwaway group until `expected` have arrived. */
async function readTopic(topic: string, expected: number) {
  const reader = streams.kafka.consumer({ groupId: `${topic}.reader`, maxWaitTimeInMs: 200 });
  streams.groups.push(`${topic}.reader`);
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
    await eventually(
      `${expected} messages in ${topic}`,
      async () => (messages.length >= expected ? true : undefined),
      30_000,
    );
    // Nothing more than expected arrives.
    await new Promise((resolve) => setTimeout(resolve, 1000));
  } finally {
    await reader.disconnect();
  }
  return messages;
}

async function jobEvents(job: string): Promise<EventsV1Event[]> {
  const list = await ns.clients.events.listNamespacedEvent({ namespace });
  return list.items.filter((e) => e.regarding?.kind === "SyncJob" && e.regarding.name === job);
}

describe("poison rows in a realtime session", () => {
  it("sets aside every record the table cannot hold, writes every good one, and keeps going", async () => {
    const { job, topic, table } = await runs.createJob("poison", { columns: COLUMNS });
    const session = await runs.startSession(job);

    // 200 good records, one per key, with 30 poison ones interleaved: half of them with a key of a
    // good record produced before (the target must keep that good value), half with keys of their own.
    const items: Item[] = [];
    const poison = new Map<Item, Expected>();
    let seq = 1;
    let poisonIndex = 0;
    for (let id = 1; id <= 200; id++) {
      items.push(good(id, seq++));
      if (id % 6 === 0 && poisonIndex < KINDS.length * PER_KIND) {
        const kind = KINDS[poisonIndex % KINDS.length]!;
        const i = Math.floor(poisonIndex / KINDS.length);
        const key = poisonIndex % 2 ? id - 3 : 1000 + poisonIndex;
        const bad = kind.make(key, seq++, i);
        items.push(bad);
        poison.set(bad, kind.expected);
        poisonIndex++;
      }
    }
    expect(poison.size).toBe(30);
    await runs.produce(topic, items);

    const caughtUp = await runs.until(
      session.ref,
      "the session to read every record, poison ones included",
      (s) => (s.rowsRead ?? 0) >= items.length,
      60_000,
    );
    expect(caughtUp.rowsRead).toBe(items.length);
    expect(caughtUp.rowsRejected).toBe(poison.size);
    expect(caughtUp.rowsWritten).toBe(items.length - poison.size);
    expect(caughtUp.rowsRead).toBe(
      (caughtUp.rowsWritten ?? 0) + (caughtUp.rowsBuffered ?? 0) + (caughtUp.rowsRejected ?? 0),
    );
    expect(caughtUp.rowsBuffered ?? 0).toBe(0);
    expect(caughtUp.breaker).toMatchObject({ state: "Closed", bufferedRecords: 0 });

    const poisonSet = new Set(poison.keys());
    expect(await targetRows(table)).toEqual(stored(latestGood(items, poisonSet)));

    // Every poison record is in the dead-letter topic, once, with its reason and column or constraint.
    const letters = await readTopic(`syncgov.dlq.${namespace}.${job}`, poison.size);
    expect(letters).toHaveLength(poison.size);
    const byKeyAndSeq = new Map([...poison].map(([item, expected]) => [`${item.id}/${item.seq}`, expected]));
    const seen = new Set<string>();
    for (const letter of letters) {
      const info = readDeadLetterHeaders(letter.headers as never);
      expect(info).toBeDefined();
      const value = JSON.parse(letter.value!.toString()) as { seq: number | string };
      const at = `${letter.key}/${Number(value.seq)}`;
      const expected = byKeyAndSeq.get(at);
      expect(expected, `dead letter ${at} is one of the poison records`).toBeDefined();
      seen.add(at);
      expect(info).toMatchObject({
        reason: expected!.reason,
        topic,
        ...(expected!.column ? { column: expected!.column } : {}),
        ...(expected!.constraint ? { constraint: expected!.constraint } : {}),
        ...(expected!.sqlState ? { sqlState: expected!.sqlState } : {}),
      });
      expect(info!.message).toMatch(expected!.column ?? expected!.constraint!);
      // The reason never repeats a value.
      expect(info!.message).not.toMatch(/9007199254740993|ABCDEFGHIJ|ÄÖÜßäöüéx/);
    }
    expect(seen.size).toBe(poison.size);

    // The job's events say so, naming the first rows and why; the breaker never opened.
    const rejectedEvent = await eventually("a RowsRejected event", async () =>
      (await jobEvents(job)).find((e) => e.reason === "RowsRejected"),
    );
    expect(rejectedEvent.type).toBe("Warning");
    expect(rejectedEvent.note).toMatch(/set aside in dead-letter topic syncgov\.dlq\./);
    expect(rejectedEvent.note).toMatch(
      /qty: OutOfRange|code: TooLong|amount: OutOfRange|score: NullNotAllowed|CheckViolation/,
    );
    expect((await jobEvents(job)).some((e) => e.reason === "BreakerOpened")).toBe(false);

    // The session goes on: updates of 50 good keys and 10 new keys after the poison land.
    const more: Item[] = [];
    for (let id = 1; id <= 50; id++) more.push({ ...good(id, seq++), code: `u${id}` });
    for (let id = 201; id <= 210; id++) more.push(good(id, seq++));
    const poisonAfter = KINDS[4]!.make(205, seq++, 99);
    more.push(poisonAfter);
    poisonSet.add(poisonAfter);
    await runs.produce(topic, more);
    const all = [...items, ...more];
    const later = await runs.until(
      session.ref,
      "the session to read the records produced after the poison",
      (s) => (s.rowsRead ?? 0) >= all.length,
      60_000,
    );
    expect(later.rowsRejected).toBe(poison.size + 1);
    expect(later.rowsRead).toBe((later.rowsWritten ?? 0) + (later.rowsRejected ?? 0));
    expect(later.breaker).toMatchObject({ state: "Closed" });
    expect(await targetRows(table)).toEqual(stored(latestGood(all, poisonSet)));

    const stopped = await session.stop();
    expect(stopped.phase).toBe("Cancelled");
    expect(stopped.result?.counts).toMatchObject({ rowsRead: all.length, rowsRejected: poison.size + 1 });
    expect(stopped.message).toMatch(/31 rejected: /);
  }, 180_000);
});
