import type { Kafka } from "kafkajs";
import { Partitioners } from "kafkajs";
import pg from "pg";
import pino from "pino";
import { quoteTable } from "../../controller/api/identifiers.ts";
import { SyncJobSpec } from "../../controller/api/syncjob.ts";
import type { RunBreakerStatus } from "../../controller/api/syncrun.ts";
import { SyncRunSpec } from "../../controller/api/syncrun.ts";
import {
  bufferTopicOf,
  connectKafka,
  deadLetterTopicOf,
  ensureTopic,
  jobConsumerGroup,
} from "../../controller/connectors/kafka/cluster.ts";
import type { EventRecord } from "../../controller/kube/events.ts";
import { executeRun } from "../../controller/runner/run.ts";
import { createStreamRunner, type StreamRunnerOptions } from "../../controller/runner/stream.ts";
import type { RunInput, RunResult } from "../../controller/runner/types.ts";
import { type Environment, startEnvironment } from "../env/services/environment.ts";
import { FaultProxy } from "../support/fault-proxy.ts";
import { integerOption, table } from "./measure.ts";

/**
 * The breaker under a slow target at scale, on real servers started for the run: the scenario of
 * test/integration/resilience-breaker.test.ts with `records` records instead of a few hundred.
 *
 * A Realtime session (executeRun with the stream runner, as the in-process executor runs it) reads a
 * 3-partition topic into a table with a version column, writing through a FaultProxy in front of
 * PostgreSQL. The topic receives `records` keyed records (about two per key, so later values must win
 * over earlier ones). Once the session has written its first rows, the proxy adds 800 ms of latency
 * each way:
 *
 * - detect_ms: from setLatency(800) until the session reports its breaker Open;
 * - the latency stays until the session has read every record (all of the rest is diverted to the
 *   job's buffer topic) and at least HOLD_MS after the breaker opened; then it is removed and the
 *   bench waits for the probes to close the breaker;
 * - compensation_rows_per_s: buffered records replayed by Compensation runs over their run time;
 * - lost: keys whose latest produced value the target does not hold at the end (missing, or an older
 *   seq), compared key by key after the session has drained its buffer and written directly again.
 *
 * The last line is the JSON summary. `--records N` sets the size (default 200,000).
 */

const PARTITIONS = 3;
const NAMESPACE = "bench";
const JOB = "orders-breaker";
/** Records per produce request; sent one at a time, so each key's records reach Kafka in order. */
const PRODUCE_BATCH = 5000;
const LATENCY_MS = 800;
/** How long the latency stays at least after the breaker opened, so probe rounds find it still slow. */
const HOLD_MS = 3000;
const POLL_MS = 100;

/** The job's breaker, as in the integration test: a small window and a short wait in the open state. */
const BREAKER = {
  slidingWindowType: "COUNT_BASED",
  slidingWindowSize: 10,
  minimumNumberOfCalls: 5,
  slowCallDurationThresholdMs: 500,
  slowCallRateThreshold: 50,
  waitDurationInOpenStateMs: 2000,
  permittedNumberOfCallsInHalfOpenState: 3,
} as const;

/** The session polls its buffer and reports its status this often, so the bench sees changes soon. */
const STREAM_OPTIONS: Omit<StreamRunnerOptions, "logger"> = {
  pollIntervalMs: 250,
  statusIntervalMs: 250,
};

/** One produced change: `seq` is the record's position in the stream and the target's version column. */
interface Change {
  readonly id: number;
  readonly val: string;
  readonly seq: number;
}

/** The i-th change (1-based). Keys spread over the stream, each repeated about twice. */
function change(i: number, keys: number): Change {
  const id = 1 + ((i * 7919) % keys);
  return { id, val: `value ${i} of ${id}`, seq: i };
}

const now = () => performance.now();
const progress = (line: string) => console.error(`breaker bench: ${line}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Produces the changes with one producer, one request at a time (idempotent, one in flight), so
 * per key the records land in the order of their seq.
 */
async function produceStream(kafka: Kafka, topic: string, records: number, keys: number): Promise<void> {
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  try {
    for (let first = 1; first <= records; first += PRODUCE_BATCH) {
      const messages = [];
      for (let i = first; i <= Math.min(records, first + PRODUCE_BATCH - 1); i++) {
        const c = change(i, keys);
        messages.push({ key: String(c.id), value: JSON.stringify(c) });
      }
      await producer.send({ topic, acks: -1, messages });
    }
  } finally {
    await producer.disconnect();
  }
}

/** What the session has reported so far, as executeRun's callbacks deliver it. */
class SessionWatch {
  rowsRead = 0;
  rowsWritten = 0;
  rowsBuffered = 0;
  breaker: RunBreakerStatus | undefined;
  /** performance.now() of each breaker state first reported after `since`. */
  readonly transitions: { state: RunBreakerStatus["state"]; at: number }[] = [];
  readonly events: EventRecord[] = [];
  finished: RunResult | undefined;

  onStatus(breaker: RunBreakerStatus, rowsBuffered: number): void {
    if (breaker.state !== this.breaker?.state) this.transitions.push({ state: breaker.state, at: now() });
    this.breaker = breaker;
    this.rowsBuffered = rowsBuffered;
  }

  /** The first time the breaker was reported in `state` at or after `since`. */
  firstAt(state: RunBreakerStatus["state"], since: number): number | undefined {
    return this.transitions.find((t) => t.state === state && t.at >= since)?.at;
  }

  /** Waits until `holds` is true; fails if the session ended or `timeoutMs` passed. */
  async until(what: string, holds: () => boolean, timeoutMs = 300_000): Promise<void> {
    const deadline = now() + timeoutMs;
    while (!holds()) {
      if (this.finished) {
        throw new Error(`the session ended while waiting for ${what}: ${this.finished.message}`);
      }
      if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(POLL_MS);
    }
  }
}

function jobInput(
  env: Environment,
  targetUrl: string,
  topic: string,
  target: string,
  type: "Realtime" | "Compensation",
  signal?: AbortSignal,
): RunInput {
  return {
    run: { namespace: NAMESPACE, name: `${JOB}-${type.toLowerCase()}-${Date.now().toString(36)}` },
    job: {
      namespace: NAMESPACE,
      name: JOB,
      spec: SyncJobSpec.parse({
        mode: "realtime",
        source: { kafka: { topic, startFrom: "earliest" } },
        target: {
          sql: {
            connectionSecretRef: { name: "db" },
            table: target,
            keyColumns: ["id"],
            versionColumn: "seq",
          },
        },
        breaker: BREAKER,
      }),
    },
    spec: SyncRunSpec.parse({ jobName: JOB, type, trigger: type === "Realtime" ? "Stream" : "Manual" }),
    connections: { target: targetUrl, kafkaBrokers: env.kafka.brokers.split(",") },
    signal,
  };
}

/** Keys whose latest produced change the target lacks or holds in an older version. */
async function lostKeys(
  pool: pg.Pool,
  target: string,
  records: number,
  keys: number,
): Promise<{ lost: number; keys: number; rows: number }> {
  const latest = new Map<number, number>();
  for (let i = 1; i <= records; i++) {
    const c = change(i, keys);
    latest.set(c.id, c.seq);
  }
  const result = await pool.query<{ id: string; seq: string; val: string }>(
    `SELECT id::text, seq::text, val FROM ${quoteTable(target)}`,
  );
  const held = new Map(result.rows.map((r) => [Number(r.id), r]));
  let lost = 0;
  for (const [id, seq] of latest) {
    const row = held.get(id);
    if (!row || Number(row.seq) !== seq || row.val !== change(seq, keys).val) lost++;
  }
  return { lost, keys: latest.size, rows: result.rows.length };
}

export async function run(): Promise<void> {
  const records = integerOption("records", 200_000);
  const keys = Math.max(1, Math.ceil(records / 2));
  const log = pino({ level: "warn" }, pino.destination(2));
  const env = await startEnvironment(progress);
  const pool = new pg.Pool({ connectionString: env.postgres.url, max: 3 });
  pool.on("error", () => {});
  const db = new URL(env.postgres.url);
  const proxy = await FaultProxy.start({ host: db.hostname, port: Number(db.port) });
  const proxied = new URL(env.postgres.url);
  proxied.host = `${proxy.host}:${proxy.port}`;
  const suffix = Date.now().toString(36);
  const topic = `bench.breaker.orders.${suffix}`;
  const target = `bench_breaker_${suffix}`;
  const kafka = connectKafka({
    brokers: env.kafka.brokers.split(","),
    clientId: "syncgov-bench",
    logger: log,
  });
  const stream = createStreamRunner({ ...STREAM_OPTIONS, logger: log });
  const stop = new AbortController();
  const watch = new SessionWatch();
  let session: Promise<RunResult> | undefined;
  try {
    await pool.query(
      `CREATE TABLE ${quoteTable(target)} (id int8 PRIMARY KEY, val text NOT NULL, seq int8 NOT NULL)`,
    );
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopic(admin, topic, { partitions: PARTITIONS });
    await admin.disconnect();

    const sessionInput = jobInput(env, proxied.href, topic, target, "Realtime", stop.signal);
    session = executeRun(sessionInput, {
      stream,
      log,
      progressIntervalMs: 200,
      onProgress: (counts) => {
        watch.rowsRead = counts.rowsRead;
        watch.rowsWritten = counts.rowsWritten;
      },
      onStreamStatus: (status) => watch.onStatus(status.breaker, status.rowsBuffered),
      onEvent: (event) => watch.events.push(event),
    });
    void session.then((result) => {
      watch.finished = result;
    });

    progress(
      `streaming ${records.toLocaleString("en-US")} records over ${keys.toLocaleString("en-US")} keys...`,
    );
    const producing = produceStream(kafka, topic, records, keys);
    await watch.until("the session to write its first rows", () => watch.rowsWritten > 0);
    proxy.setLatency(LATENCY_MS);
    const latencyAt = now();
    const writtenBefore = watch.rowsWritten;
    progress(`${LATENCY_MS} ms latency after ${writtenBefore} rows written; waiting for the breaker...`);
    await watch.until("the breaker to open", () => watch.firstAt("Open", latencyAt) !== undefined);
    const openedAt = watch.firstAt("Open", latencyAt)!;
    const detectMs = openedAt - latencyAt;
    const openedEvent = watch.events.find((e) => e.reason === "BreakerOpened");
    progress(`breaker open after ${Math.round(detectMs)} ms; diverting the rest of the stream...`);

    await producing;
    await watch.until(
      "the session to read every record",
      () => watch.rowsRead >= records && now() - openedAt >= HOLD_MS,
    );
    proxy.setLatency(0);
    const healedAt = now();
    progress(
      `latency removed; ${watch.rowsBuffered.toLocaleString("en-US")} records in the buffer so far; waiting for the probes...`,
    );
    await watch.until("the breaker to close", () => watch.firstAt("Closed", healedAt) !== undefined, 120_000);
    const closeMs = watch.firstAt("Closed", healedAt)! - healedAt;

    // One Compensation run replays up to the end offsets seen at its start; the session diverted
    // nothing after it read every record, so one run is expected, and a second would replay the rest.
    let replayed = 0;
    let replaySeconds = 0;
    const compensations: RunResult[] = [];
    while (compensations.length === 0 || (watch.breaker?.bufferedRecords ?? 0) > 0) {
      if (compensations.length >= 3) throw new Error("the buffer did not drain after 3 Compensation runs");
      progress(`Compensation run ${compensations.length + 1}...`);
      const started = now();
      const result = await executeRun(jobInput(env, proxied.href, topic, target, "Compensation"), {
        stream,
        log,
      });
      replaySeconds += (now() - started) / 1000;
      if (result.phase !== "Succeeded")
        throw new Error(`Compensation run ${result.phase}: ${result.message}`);
      replayed += result.counts.rowsRead;
      compensations.push(result);
      await watch
        .until("the session to see the buffer drained", () => watch.breaker?.bufferedRecords === 0, 10_000)
        .catch(() => {});
    }
    await watch.until("the session to write directly again", () =>
      watch.events.some((e) => e.reason === "BufferDrained"),
    );

    stop.abort();
    const ended = await session;
    if (ended.phase !== "Cancelled") throw new Error(`the session ended ${ended.phase}: ${ended.message}`);
    const check = await lostKeys(pool, target, records, keys);
    const rate = replayed / replaySeconds;

    console.log(
      table(
        ["measure", "value", "note"],
        [
          [
            "records streamed",
            records.toLocaleString("en-US"),
            `${check.keys.toLocaleString("en-US")} keys, ${PARTITIONS} partitions`,
          ],
          ["rows written before the latency", writtenBefore.toLocaleString("en-US"), "healthy target"],
          [
            "detect (latency → Open)",
            `${Math.round(detectMs)} ms`,
            `${LATENCY_MS} ms each way; window ${BREAKER.slidingWindowSize}, minimum ${BREAKER.minimumNumberOfCalls}, slow ≥ ${BREAKER.slowCallDurationThresholdMs} ms`,
          ],
          [
            "opened on",
            openedEvent?.note?.match(/slow-call rate [^(]*calls/)?.[0] ?? "-",
            "BreakerOpened event",
          ],
          [
            "records diverted",
            (ended.stream?.rowsBuffered ?? 0).toLocaleString("en-US"),
            "to the buffer topic while the breaker was not closed",
          ],
          ["close (latency removed → Closed)", `${Math.round(closeMs)} ms`, "half-open probes"],
          [
            "compensation",
            `${Math.round(rate).toLocaleString("en-US")} rows/s`,
            `${replayed.toLocaleString("en-US")} replayed in ${replaySeconds.toFixed(2)} s by ${compensations.length} run(s)`,
          ],
          [
            "session counts",
            `${ended.counts.rowsRead.toLocaleString("en-US")} read`,
            `${ended.counts.rowsWritten.toLocaleString("en-US")} written directly`,
          ],
          [
            "target rows",
            check.rows.toLocaleString("en-US"),
            `${check.lost} keys missing or older than produced`,
          ],
        ],
      ),
    );
    console.log(`(Node ${process.version})`);
    console.log(
      JSON.stringify({
        bench: "breaker",
        records,
        detect_ms: Math.round(detectMs),
        lost: check.lost,
        compensation_rows_per_s: Math.round(rate),
      }),
    );
    if (check.lost > 0) process.exitCode = 1;
  } finally {
    stop.abort();
    await session?.catch(() => {});
    await proxy.close();
    const { spec } = jobInput(env, proxied.href, topic, target, "Realtime").job;
    const bufferTopic = bufferTopicOf(NAMESPACE, JOB, spec);
    const admin = kafka.admin();
    await admin.connect().catch(() => {});
    await admin
      .deleteTopics({ topics: [topic, bufferTopic, deadLetterTopicOf(NAMESPACE, JOB, spec)] })
      .catch(() => {});
    await admin.deleteGroups([jobConsumerGroup(NAMESPACE, JOB), `${bufferTopic}.replay`]).catch(() => {});
    await admin.disconnect().catch(() => {});
    await pool.query(`DROP TABLE IF EXISTS ${quoteTable(target)}`).catch(() => {});
    await pool.end();
    await env.stop();
  }
}
