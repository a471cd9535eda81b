/**
 * The realtime channel end to end against the real API server, Kafka and PostgreSQL: a Realtime
 * SyncRun executed by runSyncRun (as the in-process executor does) streams a topic into a table,
 * a Validation run compares the two, and every run emits OpenLineage events — through an explicit
 * sink, and through the default wiring of the `syncgov run` process.
 */

import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { LineageEmitter } from "../../controller/lineage/emitter.ts";
import type { RunEvent } from "../../controller/lineage/events.ts";
import { ConsoleTransport } from "../../controller/lineage/transports.ts";
import { ChildProcessExecutor } from "../../controller/runner/executors.ts";
import { OpenLineageSink } from "../../controller/runner/lineage-sink.ts";
import { createStreamRunner } from "../../controller/runner/stream.ts";
import { testEnv } from "../support/env.ts";
import { kafkaToPostgres } from "../support/kafka.ts";
import { realtimeRuns, runNamespace } from "../support/runner.ts";

const env = testEnv();
const streams = kafkaToPostgres();
const pool = streams.tables.pool;
pool.on("error", () => {});
const brokers = env.kafkaBrokers.split(",");
const ns = runNamespace("realtime");
const namespace = ns.name;
const password = decodeURIComponent(new URL(env.databaseUrl).password);

/** The runner's log lines, kept in the run directory for when a test fails. */
const log = pino(
  { level: "info" },
  pino.destination({ dest: join(env.runDir, `${namespace}.log`), sync: false }),
);
afterAll(() => log.flush());

/** Every lineage event the in-process runs emit. */
const lineageEvents: RunEvent[] = [];
const lineage = new OpenLineageSink({
  emitter: new LineageEmitter({
    transport: new ConsoleTransport((line) => void lineageEvents.push(JSON.parse(line) as RunEvent)),
  }),
  namespace: "syncgov-test",
});

const runs = realtimeRuns(ns, streams, {
  log,
  lineage,
  stream: createStreamRunner({ pollIntervalMs: 250, statusIntervalMs: 250, logger: log }),
});

/** A topic of 3 partitions, a target table and a realtime SyncJob between them, with email hashed. */
function streamJob(prefix: string) {
  return runs.createJob(prefix, {
    columns: "id int8 PRIMARY KEY, name text NOT NULL, amount numeric, email text, seq int8 NOT NULL",
    spec: { masking: [{ column: "email", transform: "hash" }] },
  });
}

interface Order {
  id: number;
  name: string;
  amount: string;
  email: string;
  seq: number;
}

/** `updates` rounds over `keys` keys, each round an update of every key (in shuffled key order). */
function orders(keys: number, updates: number, firstSeq = 1): Order[] {
  const out: Order[] = [];
  let seq = firstSeq;
  for (let round = 0; round < updates; round++) {
    const ids = Array.from({ length: keys }, (_, i) => i + 1).sort(
      (a, b) => ((a * 7919 + round) % keys) - ((b * 7919 + round) % keys),
    );
    for (const id of ids) {
      out.push({
        id,
        name: `customer ${id} round ${round}`,
        amount: `${id}.${round}5`,
        email: `c${id}.r${round}@example.com`,
        seq: seq++,
      });
    }
  }
  return out;
}

/** The latest order per id, as the target should hold it (email hashed, as the job masks it). */
function latestPerKey(records: readonly Order[]): Map<number, Order> {
  const latest = new Map<number, Order>();
  for (const r of records) {
    latest.set(r.id, { ...r, email: createHash("sha256").update(r.email).digest("hex") });
  }
  return latest;
}

async function targetRows(table: string): Promise<Map<number, Order>> {
  const result = await pool.query<{ id: string; name: string; amount: string; email: string; seq: string }>(
    `SELECT id::text, name, amount::text, email, seq::text FROM ${table}`,
  );
  return new Map(
    result.rows.map((r) => [
      Number(r.id),
      { id: Number(r.id), name: r.name, amount: r.amount, email: r.email, seq: Number(r.seq) },
    ]),
  );
}

describe("realtime session", () => {
  it("streams 10,000 records with repeated keys into exactly the latest value per key, and a Validation run agrees", async () => {
    const { job, topic, table } = await streamJob("rt");
    const records = orders(2000, 5);
    expect(records).toHaveLength(10_000);
    const session = await runs.startSession(job);
    await runs.produce(topic, records);

    const caughtUp = await runs.until(
      session.ref,
      "the session to read every record",
      (s) => (s.rowsRead ?? 0) >= records.length,
      90_000,
    );
    expect(caughtUp.breaker).toMatchObject({ state: "Closed", bufferedRecords: 0 });
    expect(caughtUp.rowsBuffered ?? 0).toBe(0);

    const stopped = await session.stop();
    expect(stopped.phase).toBe("Cancelled");
    expect(stopped.result?.counts).toMatchObject({ rowsRead: 10_000, rowsRejected: 0 });
    const final = await ns.runStatus(session.ref);
    expect(final).toMatchObject({ phase: "Cancelled", rowsRead: 10_000, rowsBuffered: 0 });

    expect(await targetRows(table)).toEqual(latestPerKey(records));

    const validation = await ns.createRun(job, { type: "Validation" });
    const outcome = await runs.execute(validation);
    expect(outcome.phase).toBe("Succeeded");
    const status = await ns.runStatus(validation);
    expect(status.validation).toMatchObject({ result: "Passed", sourceRows: 2000, targetRows: 2000 });
    expect(status.validation!.sourceChecksum).toBe(status.validation!.targetChecksum);
    expect(status.conditions?.find((c) => c.type === "Validated")).toMatchObject({
      status: "True",
      reason: "ChecksumsMatch",
    });
  }, 150_000);

  it("fails validation when the target lost a row, naming both counts", async () => {
    const { job, topic, table } = await streamJob("rtv");
    const records = orders(50, 2);
    await runs.produce(topic, records);
    const session = await runs.startSession(job);
    await runs.until(
      session.ref,
      "the session to catch up",
      (s) => (s.rowsRead ?? 0) >= records.length,
      30_000,
    );
    await session.stop();
    await pool.query(`DELETE FROM ${table} WHERE id = 7`);

    const validation = await ns.createRun(job, { type: "Validation" });
    expect((await runs.execute(validation)).phase).toBe("Succeeded");
    const status = await ns.runStatus(validation);
    expect(status.validation).toMatchObject({ result: "Failed", sourceRows: 50, targetRows: 49 });
    expect(status.conditions?.find((c) => c.type === "Validated")).toMatchObject({
      status: "False",
      reason: "ChecksumsDiffer",
    });
  }, 90_000);
});

describe("lineage of stream runs", () => {
  it("emits START and exactly one final event per run, with its runId, the real datasets, and no password", async () => {
    const { job, topic, table } = await streamJob("rtl");
    await runs.produce(topic, orders(20, 2));
    const session = await runs.startSession(job);
    await runs.until(session.ref, "the session to catch up", (s) => (s.rowsRead ?? 0) >= 40, 30_000);
    await session.stop();
    const validation = await ns.createRun(job, { type: "Validation" });
    await runs.execute(validation);
    await lineage.flush();

    const port = new URL(env.databaseUrl).port;
    const database = new URL(env.databaseUrl).pathname.slice(1);
    for (const ref of [session.ref, validation]) {
      const runId = (await ns.runStatus(ref)).lineageRunId;
      expect(runId).toMatch(/^[0-9a-f-]{36}$/);
      const events = lineageEvents.filter((e) => e.run.runId === runId);
      expect(events[0]?.eventType).toBe("START");
      const finals = events.filter((e) => ["COMPLETE", "FAIL", "ABORT"].includes(e.eventType));
      expect(finals.map((e) => e.eventType)).toEqual([ref === session.ref ? "ABORT" : "COMPLETE"]);
      for (const event of events) {
        expect(event.job).toMatchObject({ namespace: "syncgov-test", name: `${namespace}.${job}` });
        expect(event.inputs.map((d) => [d.namespace, d.name])).toEqual([[`kafka://${brokers[0]}`, topic]]);
        expect(event.outputs.map((d) => [d.namespace, d.name])).toEqual([
          [`postgres://127.0.0.1:${port}`, `${database}.public.${table}`],
        ]);
      }
    }
    expect(JSON.stringify(lineageEvents)).not.toContain(password);
  }, 90_000);

  it("goes to the console by default from a `syncgov run` process, which takes Kafka from KAFKA_BROKERS", async () => {
    const { job, topic } = await streamJob("rtc");
    await runs.produce(topic, orders(10, 1));
    const logDir = mkdtempSync(join(tmpdir(), "syncgov-lineage-"));
    const executor = new ChildProcessExecutor({
      logDir,
      kubeconfigPath: env.kubeconfig,
      env: { KAFKA_BROKERS: env.kafkaBrokers, SYNCGOV_LINEAGE: "console", SYNCGOV_LOG_LEVEL: "warn" },
    });
    const ref = await ns.createRun(job, { type: "Validation" });
    expect(await (await executor.start(ref)).done).toBe(0);
    const status = await ns.runStatus(ref);
    // No session ran, so the table is empty: the validation says so (and the run still succeeded).
    expect(status.validation).toMatchObject({ result: "Failed", sourceRows: 10, targetRows: 0 });
    const output = readFileSync(executor.logFileOf(ref), "utf8");
    const events = output
      .split("\n")
      .filter((line) => line.includes('"eventType"'))
      .map((line) => JSON.parse(line) as RunEvent);
    expect(events.map((e) => [e.eventType, e.run.runId])).toEqual([
      ["START", status.lineageRunId],
      ["COMPLETE", status.lineageRunId],
    ]);
    expect(output).not.toContain(password);
  }, 60_000);
});
