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

import { CoreV1Api, CustomObjectsApi, EventsV1Api, type EventsV1Event } from "@kubernetes/client-node";
import pg from "pg";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SyncRunStatus } from "../../controller/api/syncrun.ts";
import {
  connectKafka,
  ensureTopic,
  jobConsumerGroup,
  produceJson,
} from "../../controller/connectors/kafka/cluster.ts";
import { LineageEmitter } from "../../controller/lineage/emitter.ts";
import { ConsoleTransport } from "../../controller/lineage/transports.ts";
import { SYNCJOBS, SYNCRUNS } from "../../controller/reconcile/objects.ts";
import { type ClusterRunOutcome, type RunRef, runSyncRun } from "../../controller/runner/cluster.ts";
import { OpenLineageSink } from "../../controller/runner/lineage-sink.ts";
import { createStreamRunner } from "../../controller/runner/stream.ts";
import { eventually, restartServer } from "../support/controller.ts";
import { kubeConfig, testEnv, uniqueName } from "../support/env.ts";
import { FaultProxy } from "../support/fault-proxy.ts";
import { installCrds } from "../support/kubectl.ts";

const env = testEnv();
const kc = kubeConfig();
const custom = kc.makeApiClient(CustomObjectsApi);
const core = kc.makeApiClient(CoreV1Api);
const eventsApi = kc.makeApiClient(EventsV1Api);
const pool = new pg.Pool({ connectionString: env.databaseUrl, max: 3 });
pool.on("error", () => {});
const brokers = env.kafkaBrokers.split(",");
const kafka = connectKafka({ brokers, clientId: "syncgov-test" });
const namespace = uniqueName("resilience");
const topics: string[] = [];
const groups: string[] = [];
const tables: string[] = [];
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
/** Small chunks, so that a few hundred records make enough writes for the breaker to judge. */
const streamRunner = createStreamRunner({
  maxRowsPerChunk: 50,
  pollIntervalMs: 250,
  statusIntervalMs: 250,
  logger: log,
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

beforeAll(async () => {
  await installCrds();
  const db = new URL(env.databaseUrl);
  proxy = await FaultProxy.start({ host: db.hostname, port: Number(db.port) });
  const proxied = new URL(env.databaseUrl);
  proxied.host = `${proxy.host}:${proxy.port}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  const secrets: [string, string][] = [
    ["db", env.databaseUrl],
    ["proxied-db", proxied.href],
  ];
  for (const [name, url] of secrets) {
    await core.createNamespacedSecret({ namespace, body: { metadata: { name }, stringData: { url } } });
  }
}, 120_000);

const sessions: { stop(): Promise<ClusterRunOutcome> }[] = [];
afterEach(async () => {
  proxy.setLatency(0);
  for (const session of sessions.splice(0)) await session.stop();
});

afterAll(async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteGroups(groups).catch(() => {});
  await admin.deleteTopics({ topics }).catch(() => {});
  await admin.disconnect();
  await core.deleteNamespace({ name: namespace }).catch(() => {});
  await proxy?.close();
  for (const table of tables) await pool.query(`DROP TABLE IF EXISTS ${table}, ${table}_regressions`);
  await pool.end();
  log.flush();
  lineageLines.flush();
});

interface BreakerJob {
  readonly job: string;
  readonly topic: string;
  readonly table: string;
}

/** A topic, a target table with the regression trigger, and a realtime job with a small breaker. */
async function breakerJob(
  prefix: string,
  options: { secret: string; versioned: boolean },
): Promise<BreakerJob> {
  const job = uniqueName(prefix);
  const topic = `${job}.events`;
  const table = job.replaceAll("-", "_");
  topics.push(topic, `syncgov.buffer.${namespace}.${job}`, `syncgov.dlq.${namespace}.${job}`);
  groups.push(jobConsumerGroup(namespace, job), `syncgov.buffer.${namespace}.${job}.replay`);
  tables.push(table);
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopic(admin, topic, { partitions: 3 });
  await admin.disconnect();
  await pool.query(`CREATE TABLE ${table} (id int8 PRIMARY KEY, val text NOT NULL, seq int8 NOT NULL)`);
  await pool.query(`CREATE TABLE ${table}_regressions (id int8, old_seq int8, new_seq int8)`);
  await pool.query(`CREATE FUNCTION ${table}_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.seq < OLD.seq THEN
        INSERT INTO ${table}_regressions VALUES (NEW.id, OLD.seq, NEW.seq);
      END IF;
      RETURN NEW;
    END $$`);
  await pool.query(
    `CREATE TRIGGER regressions BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_guard()`,
  );
  await custom.createNamespacedCustomObject({
    ...SYNCJOBS,
    namespace,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncJob",
      metadata: { name: job },
      spec: {
        mode: "realtime",
        source: { kafka: { topic } },
        target: {
          sql: {
            connectionSecretRef: { name: options.secret },
            table,
            keyColumns: ["id"],
            ...(options.versioned ? { versionColumn: "seq" } : {}),
          },
        },
        breaker,
      },
    },
  });
  return { job, topic, table };
}

async function createRun(job: string, type: string): Promise<RunRef> {
  const name = uniqueName(`${type.toLowerCase()}-${job}`.slice(0, 40));
  await custom.createNamespacedCustomObject({
    ...SYNCRUNS,
    namespace,
    body: {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncRun",
      metadata: { name },
      spec: { jobName: job, type },
    },
  });
  return { namespace, name };
}

async function runStatus(ref: RunRef): Promise<SyncRunStatus> {
  return (
    ((await custom.getNamespacedCustomObject({ ...SYNCRUNS, ...ref })) as { status?: SyncRunStatus })
      .status ?? {}
  );
}

function execute(ref: RunRef, signal?: AbortSignal): Promise<ClusterRunOutcome> {
  return runSyncRun(ref, {
    kubeConfig: kc,
    signal,
    log,
    lineage,
    stream: streamRunner,
    kafkaBrokers: brokers,
  });
}

async function startSession(job: string) {
  const ref = await createRun(job, "Realtime");
  const cancel = new AbortController();
  const done = execute(ref, cancel.signal);
  const session = {
    ref,
    stop: async () => {
      cancel.abort();
      return done;
    },
  };
  sessions.push(session);
  return session;
}

function until(ref: RunRef, what: string, holds: (s: SyncRunStatus) => boolean, timeoutMs = 60_000) {
  return eventually(
    what,
    async () => {
      const status = await runStatus(ref);
      if (status.phase !== "Running") throw new Error(`the session is ${status.phase}: ${status.message}`);
      return holds(status) ? status : undefined;
    },
    timeoutMs,
  );
}

async function jobEvents(job: string): Promise<EventsV1Event[]> {
  const list = await eventsApi.listNamespacedEvent({ namespace });
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
    await produceJson(
      kafka,
      this.#topic,
      batch.map((c) => ({ key: String(c.id), value: c })),
    );
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
async function expectConverged(job: string, table: string, source: Source): Promise<void> {
  expect(await targetRows(table)).toEqual(source.latest());
  expect((await pool.query(`SELECT * FROM ${table}_regressions`)).rows).toEqual([]);
  const validation = await createRun(job, "Validation");
  expect((await execute(validation)).phase).toBe("Succeeded");
  const status = await runStatus(validation);
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
  const { job, topic, table } = await breakerJob(options.prefix, {
    secret: "proxied-db",
    versioned: options.versioned,
  });
  const source = new Source(topic, options.keys);
  const session = await startSession(job);
  const readAll = (s: SyncRunStatus) => (s.rowsRead ?? 0) >= source.changes.length;

  await source.send(1);
  await until(session.ref, "the healthy records to be written", readAll);

  proxy.setLatency(800);
  await source.send(options.rounds);
  const opened = await until(session.ref, "the breaker to open", (s) => s.breaker?.state === "Open");
  expect(opened.breaker!.slowCallRate).toBeGreaterThanOrEqual(breaker.slowCallRateThreshold);
  const openedEvent = (await jobEvents(job)).find((e) => e.reason === "BreakerOpened");
  expect(openedEvent?.type).toBe("Warning");
  // The rates come from the window that tripped it: no more calls than one window holds.
  const calls = Number(/over (\d+) calls/.exec(openedEvent?.note ?? "")?.[1]);
  expect(calls).toBeGreaterThanOrEqual(breaker.minimumNumberOfCalls);
  expect(calls).toBeLessThanOrEqual(breaker.slidingWindowSize);
  await until(session.ref, "records to go to the buffer", (s) => (s.rowsBuffered ?? 0) > 0);
  // A probe round while the target is still slow opens the breaker again.
  await eventually("a probe round to find the target still slow", async () => {
    const events = await jobEvents(job);
    const count = (reason: string) =>
      events.filter((e) => e.reason === reason).reduce((n, e) => n + (e.series?.count ?? 1), 0);
    return count("BreakerHalfOpen") >= 1 && count("BreakerOpened") >= 2 ? true : undefined;
  });
  expect((await runStatus(session.ref)).breaker?.state).not.toBe("Closed");

  proxy.setLatency(0);
  const closed = await until(
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
  const compensation = await createRun(job, "Compensation");
  const replay = await execute(compensation);
  expect(replay.phase).toBe("Succeeded");
  expect(replay.message).toContain("the buffer is empty up to the end offsets seen at the start");

  const resumed = await until(
    session.ref,
    "the session to write directly again",
    (s) => s.breaker?.bufferedRecords === 0 && readAll(s),
  );
  expect((await jobEvents(job)).some((e) => e.reason === "BufferDrained")).toBe(true);
  expect((await runStatus(compensation)).rowsRead).toBe(resumed.rowsBuffered);

  await source.send(1);
  const done = await until(session.ref, "the last records to be written", readAll);
  expect(done.rowsBuffered).toBe(resumed.rowsBuffered);
  expect((await session.stop()).phase).toBe("Cancelled");
  await expectConverged(job, table, source);
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
    const { job, topic, table } = await breakerJob("down", { secret: "db", versioned: false });
    const source = new Source(topic, 100);
    const session = await startSession(job);
    const readAll = (s: SyncRunStatus) => (s.rowsRead ?? 0) >= source.changes.length;
    await source.send(1);
    await until(session.ref, "the first records to be written", readAll);

    const restarted = restartServer("postgres", 30_000);
    for (let i = 0; i < 6; i++) {
      await source.send(1);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    const opened = await until(session.ref, "the breaker to open", (s) => s.breaker?.state === "Open");
    expect(opened.breaker!.failureRate).toBeGreaterThanOrEqual(50);
    await until(session.ref, "records to go to the buffer", (s) => (s.rowsBuffered ?? 0) > 0 && readAll(s));
    await restarted;
    await eventually("PostgreSQL to answer again", async () =>
      (await pool.query("SELECT 1")).rowCount === 1 ? true : undefined,
    );

    await until(session.ref, "the breaker to close", (s) => s.breaker?.state === "Closed");
    const compensation = await createRun(job, "Compensation");
    expect((await execute(compensation)).phase).toBe("Succeeded");
    await until(session.ref, "the session to write directly again", (s) => s.breaker?.bufferedRecords === 0);
    await source.send(1);
    await until(session.ref, "the last records to be written", readAll);
    expect((await session.stop()).phase).toBe("Cancelled");
    await expectConverged(job, table, source);
  }, 180_000);
});
