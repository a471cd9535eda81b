/**
 * The realtime session under a sick target, against the real API server, Kafka and PostgreSQL:
 * 800 ms of added latency (test/support/fault-proxy.ts between the runner and PostgreSQL) and a
 * PostgreSQL server stopped for 30 s. The breaker opens, records go to the buffer topic, probes
 * close it once the target recovers, a Compensation run replays the buffer, the session writes
 * directly again, and at the end the target equals the source.
 *
 * Every target table has a trigger that records any update lowering a row's seq: an older value
 * overwriting a newer one, at any moment of the run, leaves a row there.
 */

import type { EventsV1Event } from "@kubernetes/client-node";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SyncRunStatus } from "../../controller/api/syncrun.ts";
import { LineageEmitter } from "../../controller/lineage/emitter.ts";
import { ConsoleTransport } from "../../controller/lineage/transports.ts";
import { OpenLineageSink } from "../../controller/runner/lineage-sink.ts";
import { createStreamRunner } from "../../controller/runner/stream.ts";
import { eventually, restartServer } from "../support/controller.ts";
import { testEnv } from "../support/env.ts";
import { FaultProxy } from "../support/fault-proxy.ts";
import { kafkaToPostgres } from "../support/kafka.ts";
import { DATABASE_SECRET, type RealtimeJob, realtimeRuns, runNamespace } from "../support/runner.ts";

const env = testEnv();
const streams = kafkaToPostgres();
const pool = streams.tables.pool;
// PostgreSQL stops during a test: the pool's idle clients then fail, which is no reason to crash.
pool.on("error", () => {});
const ns = runNamespace("resilience");
const namespace = ns.name;
let proxy: FaultProxy;

const log = pino(
  { level: "info" },
  pino.destination({ dest: `${env.runDir}/${namespace}.log`, sync: false }),
);
/** Lineage of the runs, as the console transport writes it, kept beside the log. */
const lineageLines = pino.destination({ dest: `${env.runDir}/${namespace}.lineage.jsonl`, sync: false });
const lineage = new OpenLineageSink({
  emitter: new LineageEmitter({ transport: new ConsoleTransport((line) => void lineageLines.write(line)) }),
});
const runs = realtimeRuns(ns, streams, {
  log,
  lineage,
  /** Small chunks, so that a few hundred records make enough writes for the breaker to judge. */
  stream: createStreamRunner({
    maxRowsPerChunk: 50,
    pollIntervalMs: 250,
    statusIntervalMs: 250,
    logger: log,
  }),
});

/** A small window and a short wait, so the breaker trips and recovers within seconds. */
const breaker = {
  slidingWindowType: "COUNT_BASED",
  slidingWindowSize: 10,
  minimumNumberOfCalls: 5,
  slowCallRateThreshold: 50,
  waitDurationInOpenStateMs: 2000,
  permittedNumberOfCallsInHalfOpenState: 3,
};

/** The Secret with the URL of the database through the fault proxy. */
const PROXIED_DATABASE_SECRET = "proxied-db";

beforeAll(async () => {
  const db = new URL(env.databaseUrl);
  proxy = await FaultProxy.start({ host: db.hostname, port: Number(db.port) });
  const proxied = new URL(env.databaseUrl);
  proxied.host = `${proxy.host}:${proxy.port}`;
  await ns.secret(PROXIED_DATABASE_SECRET, { url: proxied.href });
});

afterEach(() => proxy.setLatency(0));

afterAll(async () => {
  await proxy?.close();
  log.flush();
  lineageLines.flush();
});

interface BreakerJob extends RealtimeJob {
  /** Where the trigger records every update that lowered a row's seq. */
  readonly regressions: string;
}

/** A topic, a target table with the regression trigger, and a realtime job with a small breaker. */
async function breakerJob(
  prefix: string,
  options: { secret: string; versioned: boolean },
): Promise<BreakerJob> {
  const created = await runs.createJob(prefix, {
    columns: "id int8 PRIMARY KEY, val text NOT NULL, seq int8 NOT NULL",
    secret: options.secret,
    target: options.versioned ? { versionColumn: "seq" } : {},
    spec: { breaker },
  });
  const { table } = created;
  const regressions = await streams.tables.create(
    `${prefix}_regressions`,
    "id int8, old_seq int8, new_seq int8",
  );
  await pool.query(`CREATE FUNCTION ${table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.seq < OLD.seq THEN
        INSERT INTO ${regressions} VALUES (NEW.id, OLD.seq, NEW.seq);
      END IF;
      RETURN NEW;
    END $$`);
  await pool.query(
    `CREATE TRIGGER regressions BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_guard()`,
  );
  return { ...created, regressions };
}

async function jobEvents(job: string): Promise<EventsV1Event[]> {
  const list = await ns.clients.events.listNamespacedEvent({ namespace });
  return list.items.filter((e) => e.regarding?.kind === "SyncJob" && e.regarding.name === job);
}

interface Change {
  id: number;
  val: string;
  seq: number;
}

/** Produces the source's changes in rounds and remembers them. */
class Source {
  readonly changes: Change[] = [];
  #seq = 0;
  readonly #topic: string;
  readonly #keys: number;

  constructor(topic: string, keys: number) {
    this.#topic = topic;
    this.#keys = keys;
  }

  /** `rounds` updates of every key, keys in a different order each round. */
  async send(rounds: number): Promise<void> {
    const batch: Change[] = [];
    for (let round = 0; round < rounds; round++) {
      const offset = (this.#seq * 31) % this.#keys;
      for (let i = 0; i < this.#keys; i++) {
        const id = ((i + offset) % this.#keys) + 1;
        this.#seq++;
        batch.push({ id, val: `value ${this.#seq} of ${id}`, seq: this.#seq });
      }
    }
    this.changes.push(...batch);
    await runs.produce(this.#topic, batch);
  }

  latest(): Map<number, Change> {
    return new Map(this.changes.map((c) => [c.id, c]));
  }
}

async function targetRows(table: string): Promise<Map<number, Change>> {
  const result = await pool.query<{ id: string; val: string; seq: string }>(
    `SELECT id::text, val, seq::text FROM ${table}`,
  );
  return new Map(
    result.rows.map((r) => [Number(r.id), { id: Number(r.id), val: r.val, seq: Number(r.seq) }]),
  );
}

/** The end state every scenario must reach: target == source, no regression ever, validation Passed. */
async function expectConverged({ job, table, regressions }: BreakerJob, source: Source): Promise<void> {
  expect(await targetRows(table)).toEqual(source.latest());
  expect((await pool.query(`SELECT * FROM ${regressions}`)).rows).toEqual([]);
  const validation = await ns.createRun(job, { type: "Validation" });
  expect((await runs.execute(validation)).phase).toBe("Succeeded");
  const status = await ns.runStatus(validation);
  expect(status.validation).toMatchObject({
    result: "Passed",
    sourceRows: source.latest().size,
    targetRows: source.latest().size,
  });
  expect(status.validation!.sourceChecksum).toBe(status.validation!.targetChecksum);
}

/**
 * Healthy writes, then 800 ms of latency until the breaker opens and a probe round finds the target
 * still slow, then recovery: closed, a Compensation run, the switch back, and more healthy writes.
 */
async function latencyScenario(options: {
  prefix: string;
  versioned: boolean;
  keys: number;
  rounds: number;
}) {
  const created = await breakerJob(options.prefix, {
    secret: PROXIED_DATABASE_SECRET,
    versioned: options.versioned,
  });
  const { job, topic } = created;
  const source = new Source(topic, options.keys);
  const session = await runs.startSession(job);
  const readAll = (s: SyncRunStatus) => (s.rowsRead ?? 0) >= source.changes.length;

  await source.send(1);
  await runs.until(session.ref, "the healthy records to be written", readAll);

  proxy.setLatency(800);
  await source.send(options.rounds);
  const opened = await runs.until(session.ref, "the breaker to open", (s) => s.breaker?.state === "Open");
  expect(opened.breaker!.slowCallRate).toBeGreaterThanOrEqual(breaker.slowCallRateThreshold);
  const openedEvent = (await jobEvents(job)).find((e) => e.reason === "BreakerOpened");
  expect(openedEvent?.type).toBe("Warning");
  // The rates come from the window that tripped it: no more calls than one window holds.
  const calls = Number(/over (\d+) calls/.exec(openedEvent?.note ?? "")?.[1]);
  expect(calls).toBeGreaterThanOrEqual(breaker.minimumNumberOfCalls);
  expect(calls).toBeLessThanOrEqual(breaker.slidingWindowSize);
  await runs.until(session.ref, "records to go to the buffer", (s) => (s.rowsBuffered ?? 0) > 0);
  // A probe round while the target is still slow opens the breaker again.
  await eventually("a probe round to find the target still slow", async () => {
    const events = await jobEvents(job);
    const count = (reason: string) =>
      events.filter((e) => e.reason === reason).reduce((n, e) => n + (e.series?.count ?? 1), 0);
    return count("BreakerHalfOpen") >= 1 && count("BreakerOpened") >= 2 ? true : undefined;
  });
  expect((await ns.runStatus(session.ref)).breaker?.state).not.toBe("Closed");

  proxy.setLatency(0);
  const closed = await runs.until(
    session.ref,
    "the breaker to close",
    (s) => s.breaker?.state === "Closed",
    60_000,
  );
  expect(closed.breaker!.bufferedRecords).toBeGreaterThan(0);
  const reasons = new Set((await jobEvents(job)).map((e) => e.reason));
  for (const reason of ["BreakerOpened", "BreakerHalfOpen", "BreakerClosed"])
    expect(reasons).toContain(reason);

  // Arriving while the buffer still holds older values, these wait instead of overtaking them.
  await source.send(1);
  const compensation = await ns.createRun(job, { type: "Compensation" });
  const replay = await runs.execute(compensation);
  expect(replay.phase).toBe("Succeeded");
  expect(replay.message).toContain("the buffer is empty up to the end offsets seen at the start");

  const resumed = await runs.until(
    session.ref,
    "the session to write directly again",
    (s) => s.breaker?.bufferedRecords === 0 && readAll(s),
  );
  expect((await jobEvents(job)).some((e) => e.reason === "BufferDrained")).toBe(true);
  expect((await ns.runStatus(compensation)).rowsRead).toBe(resumed.rowsBuffered);

  await source.send(1);
  const done = await runs.until(session.ref, "the last records to be written", readAll);
  expect(done.rowsBuffered).toBe(resumed.rowsBuffered);
  expect((await session.stop()).phase).toBe("Cancelled");
  await expectConverged(created, source);
}

describe("realtime session with a slow target", () => {
  it("opens the breaker within one window, buffers, closes after probes, and converges after compensation", async () => {
    await latencyScenario({ prefix: "slow", versioned: false, keys: 200, rounds: 3 });
  }, 180_000);

  it("with many updates per key and a version column, never lets an older value overwrite a newer one", async () => {
    await latencyScenario({ prefix: "slowv", versioned: true, keys: 50, rounds: 20 });
  }, 180_000);
});

describe("realtime session while PostgreSQL is down", () => {
  it("loses no record when the server stops for 30 s", async () => {
    const created = await breakerJob("down", { secret: DATABASE_SECRET, versioned: false });
    const { job, topic } = created;
    const source = new Source(topic, 100);
    const session = await runs.startSession(job);
    const readAll = (s: SyncRunStatus) => (s.rowsRead ?? 0) >= source.changes.length;
    await source.send(1);
    await runs.until(session.ref, "the first records to be written", readAll);

    const restarted = restartServer("postgres", 30_000);
    for (let i = 0; i < 6; i++) {
      await source.send(1);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    const opened = await runs.until(session.ref, "the breaker to open", (s) => s.breaker?.state === "Open");
    expect(opened.breaker!.failureRate).toBeGreaterThanOrEqual(50);
    await runs.until(
      session.ref,
      "records to go to the buffer",
      (s) => (s.rowsBuffered ?? 0) > 0 && readAll(s),
    );
    await restarted;
    await eventually("PostgreSQL to answer again", async () =>
      (await pool.query("SELECT 1")).rowCount === 1 ? true : undefined,
    );

    await runs.until(session.ref, "the breaker to close", (s) => s.breaker?.state === "Closed");
    const compensation = await ns.createRun(job, { type: "Compensation" });
    expect((await runs.execute(compensation)).phase).toBe("Succeeded");
    await runs.until(
      session.ref,
      "the session to write directly again",
      (s) => s.breaker?.bufferedRecords === 0,
    );
    await source.send(1);
    await runs.until(session.ref, "the last records to be written", readAll);
    expect((await session.stop()).phase).toBe("Cancelled");
    await expectConverged(created, source);
  }, 180_000);
});
