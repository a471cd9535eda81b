import { availableParallelism } from "node:os";
import { finished } from "node:stream/promises";
import type { Kafka, Producer } from "kafkajs";
import { Partitioners } from "kafkajs";
import pg from "pg";
import copyStreams from "pg-copy-streams";
import pino from "pino";
import { quoteTable } from "../../controller/api/identifiers.ts";
import { SyncJobSpec } from "../../controller/api/syncjob.ts";
import { SyncRunSpec } from "../../controller/api/syncrun.ts";
import {
  bufferTopicOf,
  connectKafka,
  deadLetterTopicOf,
  ensureTopic,
  jobConsumerGroup,
} from "../../controller/connectors/kafka/cluster.ts";
import { PostgresTarget } from "../../controller/connectors/postgres/target.ts";
import { defineRowSchema, parseRecord, type Row } from "../../controller/connectors/record.ts";
import { executeRun } from "../../controller/runner/run.ts";
import {
  createStreamRunner,
  DEFAULT_CONCURRENT_PARTITIONS,
  DEFAULT_MAX_ROWS_PER_CHUNK,
} from "../../controller/runner/stream.ts";
import type { RunInput, RunResult } from "../../controller/runner/types.ts";
import { checksumRows, sameChecksum, type TableChecksum } from "../../controller/validation/checksum.ts";
import { postgresTableChecksum } from "../../controller/validation/postgres.ts";
import { type Environment, startEnvironment } from "../env/services/environment.ts";
import {
  cpuByProgram,
  integerOption,
  machineBusySeconds,
  ownCpuSeconds,
  processCpuSnapshot,
  table,
} from "./measure.ts";

/**
 * The data plane's throughput against its raw ceilings, on real servers started for the run:
 *
 * - Kafka → PostgreSQL: a Realtime run (executeRun with the stream runner, as the in-process executor
 *   runs it) reads `records` keyed JSON records from a 3-partition topic into an empty table; timed
 *   from the start of the run until the table holds every row.
 * - table → table: a Batch run copies a generate_series table of the same size into an empty table
 *   (the run includes the validation a Batch run does by default).
 * - raw consume: a bare kafkajs consumer (eachBatch, auto-commit, a fresh group) reads the same topic
 *   from the beginning to the end, without decoding the records. It is the kafkajs the runner uses,
 *   with syncgov's patch (controller/connectors/kafka/patches: record offsets and timestamps by Number
 *   arithmetic), which about halved this consumer's CPU per record.
 * - Before anything is timed, the same bare consumer reads the topic once, and a Realtime run of
 *   another job writes its first WARMUP_ROWS rows into a scratch table: a fresh broker pays for its
 *   first consumer group (it creates __consumer_offsets then) and its first fetches, a fresh runner
 *   for compiling its code (its decode threads live as long as the process), and whichever path came
 *   first would carry that cost; a broker and a runner in service have paid it long ago.
 * - raw write: the same rows written into a fresh table of the same shape by a bare multi-row INSERT
 *   from unnest() in the stream's chunk size, and by COPY; the faster is the ceiling.
 * - target alone (not a ceiling): the runner's PostgresTarget writing the same rows from memory on as
 *   many connections as a realtime session uses (new keys, so its batches go by COPY), to tell how much
 *   of the gap the write explains.
 *
 * Kafka → PostgreSQL, raw consume and the raw writes take turns for `--rounds N` rounds (default 3);
 * each figure is its path's median round. The last line is the JSON summary; ratio is the median
 * Kafka → PostgreSQL rate over the smaller of the median ceilings. `--records N` sets the size
 * (default 1,000,000), `--chunk N` the rows per target batch.
 */

const PARTITIONS = 3;
/** Rows per target batch: the stream runner's chunk (StreamRunnerOptions.maxRowsPerChunk); `--chunk N`. */
const STREAM_CHUNK_ROWS = integerOption("chunk", DEFAULT_MAX_ROWS_PER_CHUNK);
/** Records per produce request while filling the topic, and sends in flight. */
const PRODUCE_BATCH = 5000;
const PRODUCE_CONCURRENCY = 2;
/** Rows per COPY statement of the raw write. */
const COPY_ROWS = 50_000;
const POLL_MS = 100;
/** Rows the untimed warm-up realtime run writes before it is stopped. */
const WARMUP_ROWS = 100_000;
const NAMESPACE = "bench";

const COLUMNS_SQL = `id int8 PRIMARY KEY, name text NOT NULL, category text NOT NULL,
  amount numeric(12,2) NOT NULL, quantity int4 NOT NULL, updated_at timestamptz NOT NULL`;
const CATEGORIES = ["books", "garden", "music", "sports", "toys"] as const;
const EPOCH_MS = Date.UTC(2025, 0, 1);

/** The i-th row (1-based), as the topic carries it and the raw write writes it. */
interface OrderRow {
  readonly id: number;
  readonly name: string;
  readonly category: string;
  readonly amount: string;
  readonly quantity: number;
  readonly updated_at: string;
}

function orderRow(i: number): OrderRow {
  const cents = i % 100_000;
  return {
    id: i,
    name: `customer ${i}`,
    category: CATEGORIES[i % CATEGORIES.length]!,
    amount: `${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, "0")}`,
    quantity: i % 1000,
    updated_at: new Date(EPOCH_MS + i * 1000).toISOString(),
  };
}

const ORDER_SCHEMA = defineRowSchema(
  [
    { name: "id", type: "bigint" },
    { name: "name", type: "text" },
    { name: "category", type: "text" },
    { name: "amount", type: "numeric" },
    { name: "quantity", type: "integer" },
    { name: "updated_at", type: "timestamp" },
  ],
  ["id"],
);

/**
 * What a table must hold after a path ran: every one of the `records` rows, value for value. Paths
 * are checked against the checksum of orderRow(1..records) in canonical form, computed in the
 * database over the table (controller/validation), so a speed change cannot trade rows for rate.
 */
async function expectAllRows(pool: pg.Pool, table: string, expected: TableChecksum, what: string) {
  const found = await postgresTableChecksum(pool, table, ORDER_SCHEMA.columns);
  if (!sameChecksum(found, expected))
    throw new Error(
      `${what} left ${found.rowCount} rows (checksum ${found.sum}); the source has ${expected.rowCount} (${expected.sum})`,
    );
}

function sourceChecksum(records: number): TableChecksum {
  function* rows() {
    for (let i = 1; i <= records; i++) {
      const parsed = parseRecord(ORDER_SCHEMA, orderRow(i));
      if (!parsed.ok) throw new Error(`order ${i} does not parse: ${parsed.message}`);
      yield parsed.row;
    }
  }
  return checksumRows(ORDER_SCHEMA.columns, rows());
}

/** The same rows in SQL, for the table → table source. */
function generatedRowsSql(records: number): string {
  return `SELECT g, 'customer ' || g, (ARRAY['books','garden','music','sports','toys'])[g % 5 + 1],
    (g % 100000) / 100.0, g % 1000, timestamptz '2025-01-01 00:00:00+00' + g * interval '1 second'
    FROM generate_series(1, ${records}) AS g`;
}

interface Measured {
  readonly name: string;
  readonly rows: number;
  readonly seconds: number;
  /** Seconds from the start until the first row arrived, where it is known. */
  readonly firstRowSeconds?: number | undefined;
  readonly note?: string;
  /** CPU seconds of this process, PostgreSQL, the broker and the whole machine while it ran (see withCpu). */
  readonly cpu?: {
    readonly own: number;
    readonly postgres: number;
    readonly broker: number;
    readonly machine: number | undefined;
  };
}

/**
 * Runs one measurement and adds the CPU it took: this process (the runner, or the bare client) and
 * the whole machine (PostgreSQL, the broker and everything else too). On a small machine the rows/s
 * figures are bounded by CPU, and these tell which side spent it.
 */
async function withCpu(measure: () => Promise<Measured>): Promise<Measured> {
  const own = ownCpuSeconds();
  const machine = machineBusySeconds();
  const processes = processCpuSnapshot();
  const m = await measure();
  const machineAfter = machineBusySeconds();
  const byProgram = cpuByProgram(processes, processCpuSnapshot());
  return {
    ...m,
    cpu: {
      own: ownCpuSeconds() - own,
      postgres: byProgram.get("postgres") ?? 0,
      // The broker is the only JVM the environment runs.
      broker: byProgram.get("java") ?? 0,
      machine: machine === undefined || machineAfter === undefined ? undefined : machineAfter - machine,
    },
  };
}

const microsPerRow = (seconds: number | undefined, rows: number) =>
  seconds === undefined ? "-" : ((seconds * 1e6) / rows).toFixed(1);

const rate = (m: Measured) => m.rows / m.seconds;

/** The faster of the raw writes. */
const fasterWrite = (insert: Measured, copy: Measured) => (rate(insert) >= rate(copy) ? insert : copy);

/** The smaller ceiling: raw consume, or the faster of the raw writes. */
const ceilingOf = (consume: Measured, insert: Measured, copy: Measured) =>
  Math.min(rate(consume), rate(fasterWrite(insert, copy)));

/** The measurement of median rate (of an even count, the slower of the middle two). */
function median(measured: readonly Measured[]): Measured {
  const sorted = [...measured].sort((a, b) => rate(a) - rate(b));
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}
const now = () => performance.now() / 1000;
const progress = (line: string) => console.error(`sync bench: ${line}`);

async function produceTopic(kafka: Kafka, topic: string, records: number): Promise<number> {
  const producer: Producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const started = now();
  try {
    let next = 1;
    const worker = async () => {
      while (next <= records) {
        const first = next;
        const last = Math.min(records, first + PRODUCE_BATCH - 1);
        next = last + 1;
        const messages = [];
        for (let i = first; i <= last; i++) {
          messages.push({ key: String(i), value: JSON.stringify(orderRow(i)) });
        }
        await producer.send({ topic, acks: 1, messages });
      }
    };
    await Promise.all(Array.from({ length: PRODUCE_CONCURRENCY }, worker));
  } finally {
    await producer.disconnect();
  }
  return now() - started;
}

async function countRows(pool: pg.Pool, name: string): Promise<number> {
  const result = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${quoteTable(name)}`);
  return Number(result.rows[0]!.n);
}

/**
 * Runs the job's Realtime session until the target holds `records` rows, then stops it. Timed until
 * the run's progress (reported every 50 ms) first counts every row written — rows count as written
 * once their statement has returned — and count(*) on the table then confirms it (untimed); if it
 * does not, the timing runs on until it does.
 */
async function kafkaToPostgres(
  env: Environment,
  kafka: Kafka,
  pool: pg.Pool,
  topic: string,
  target: string,
  records: number,
  log: pino.Logger,
  job = "orders-stream",
): Promise<Measured> {
  const stop = new AbortController();
  const input: RunInput = {
    run: { namespace: NAMESPACE, name: `${job}-realtime` },
    job: {
      namespace: NAMESPACE,
      name: job,
      spec: SyncJobSpec.parse({
        mode: "realtime",
        source: { kafka: { topic, startFrom: "earliest" } },
        target: { sql: { connectionSecretRef: { name: "db" }, table: target, keyColumns: ["id"] } },
      }),
    },
    spec: SyncRunSpec.parse({ jobName: job, type: "Realtime", trigger: "Stream" }),
    connections: { target: env.postgres.url, kafkaBrokers: env.kafka.brokers.split(",") },
    signal: stop.signal,
  };
  let written = 0;
  let firstRowAt: number | undefined;
  let allWrittenAt: number | undefined;
  const started = now();
  const run = executeRun(input, {
    stream: createStreamRunner({ logger: log, maxRowsPerChunk: STREAM_CHUNK_ROWS }),
    log,
    progressIntervalMs: 50,
    onProgress: (counts) => {
      written = counts.rowsWritten;
      if (written > 0) firstRowAt ??= now();
      if (written >= records) allWrittenAt ??= now();
    },
  });
  let ended: RunResult | undefined;
  void run.then((result) => {
    ended = result;
  });
  let seconds: number | undefined;
  let lastReport = started;
  while (seconds === undefined) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (ended) throw new Error(`the realtime run ended early: ${ended.phase}: ${ended.message}`);
    if (allWrittenAt !== undefined && (await countRows(pool, target)) >= records) {
      seconds = allWrittenAt - started;
    } else if (allWrittenAt !== undefined) {
      allWrittenAt = now();
    } else if (now() - lastReport >= 10) {
      lastReport = now();
      progress(`realtime run: ${written.toLocaleString("en-US")} rows written`);
    }
  }
  stop.abort();
  const result = await run;
  if (result.phase !== "Cancelled") throw new Error(`realtime run ${result.phase}: ${result.message}`);
  const { spec } = input.job;
  const admin = kafka.admin();
  await admin.connect();
  await admin
    .deleteTopics({
      topics: [deadLetterTopicOf(NAMESPACE, job, spec), bufferTopicOf(NAMESPACE, job, spec)],
    })
    .catch(() => {});
  await admin.deleteGroups([jobConsumerGroup(NAMESPACE, job)]).catch(() => {});
  await admin.disconnect();
  return {
    name: "Kafka → PostgreSQL (Realtime run)",
    rows: records,
    seconds,
    firstRowSeconds: firstRowAt === undefined ? undefined : firstRowAt - started,
    note: `${result.counts.rowsRead} read, ${result.counts.rowsWritten} written, chunks of ${STREAM_CHUNK_ROWS}`,
  };
}

/** A bare kafkajs consumer with kafkajs defaults: counts messages, decodes nothing. */
async function rawConsume(kafka: Kafka, topic: string, records: number): Promise<Measured> {
  const groupId = `syncgov-bench-raw-${Date.now().toString(36)}`;
  const consumer = kafka.consumer({ groupId });
  const started = now();
  let firstAt: number | undefined;
  let seen = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: true,
    eachBatch: async ({ batch }) => {
      firstAt ??= now();
      seen += batch.messages.length;
      if (seen >= records) done();
    },
  });
  await all;
  const seconds = now() - started;
  await consumer.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteGroups([groupId]).catch(() => {});
  await admin.disconnect();
  return {
    name: "raw kafkajs consumer (eachBatch)",
    rows: seen,
    seconds,
    firstRowSeconds: firstAt === undefined ? undefined : firstAt - started,
    note: "kafkajs defaults, no decoding",
  };
}

/** One array per column, in column order, for rows first..last. */
function columnArrays(first: number, last: number): unknown[][] {
  const ids: string[] = [];
  const names: string[] = [];
  const categories: string[] = [];
  const amounts: string[] = [];
  const quantities: number[] = [];
  const updated: string[] = [];
  for (let i = first; i <= last; i++) {
    const row = orderRow(i);
    ids.push(String(row.id));
    names.push(row.name);
    categories.push(row.category);
    amounts.push(row.amount);
    quantities.push(row.quantity);
    updated.push(row.updated_at);
  }
  return [ids, names, categories, amounts, quantities, updated];
}

const COLUMN_LIST = "id, name, category, amount, quantity, updated_at";

async function rawInsert(pool: pg.Pool, target: string, records: number): Promise<Measured> {
  const client = await pool.connect();
  const sql = `INSERT INTO ${quoteTable(target)} (${COLUMN_LIST})
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::numeric[], $5::int4[], $6::timestamptz[])`;
  const started = now();
  try {
    for (let first = 1; first <= records; first += STREAM_CHUNK_ROWS) {
      await client.query(sql, columnArrays(first, Math.min(records, first + STREAM_CHUNK_ROWS - 1)));
    }
  } finally {
    client.release();
  }
  return {
    name: `raw INSERT … unnest (${STREAM_CHUNK_ROWS}-row batches)`,
    rows: records,
    seconds: now() - started,
  };
}

/** COPY … FROM STDIN text-format lines for rows first..last (no value needs escaping). */
function copyText(first: number, last: number): string {
  const lines: string[] = [];
  for (let i = first; i <= last; i++) {
    const r = orderRow(i);
    lines.push(`${r.id}\t${r.name}\t${r.category}\t${r.amount}\t${r.quantity}\t${r.updated_at}\n`);
  }
  return lines.join("");
}

async function rawCopy(pool: pg.Pool, target: string, records: number): Promise<Measured> {
  const client = await pool.connect();
  const sql = `COPY ${quoteTable(target)} (${COLUMN_LIST}) FROM STDIN`;
  const started = now();
  try {
    for (let first = 1; first <= records; first += COPY_ROWS) {
      const copy = client.query(copyStreams.from(sql));
      copy.end(copyText(first, Math.min(records, first + COPY_ROWS - 1)));
      await finished(copy);
    }
  } finally {
    client.release();
  }
  return {
    name: `raw COPY FROM STDIN (${COPY_ROWS}-row statements)`,
    rows: records,
    seconds: now() - started,
  };
}

/**
 * The runner's own write path with nothing in front of it: PostgresTarget.upsert of rows already in
 * memory, in the stream's chunk size, on as many connections as a realtime session writes partitions
 * at once. Not a ceiling of the ratio; it tells how much of the gap the target's writes explain.
 */
async function targetAlone(pool: pg.Pool, target: string, records: number): Promise<Measured> {
  const schema = ORDER_SCHEMA;
  const writer = new PostgresTarget(pool, { table: target, schema, batchSize: STREAM_CHUNK_ROWS });
  const chunks: Row[][] = [];
  for (let first = 1; first <= records; first += STREAM_CHUNK_ROWS) {
    const chunk: Row[] = [];
    for (let i = first; i <= Math.min(records, first + STREAM_CHUNK_ROWS - 1); i++) {
      const r = orderRow(i);
      chunk.push({ ...r, id: String(r.id), updated_at: r.updated_at.replace("Z", "000Z") });
    }
    chunks.push(chunk);
  }
  await writer.checkSchema();
  let next = 0;
  const started = now();
  await Promise.all(
    Array.from({ length: DEFAULT_CONCURRENT_PARTITIONS }, async () => {
      while (next < chunks.length) await writer.upsert(chunks[next++]!);
    }),
  );
  return {
    name: `syncgov target alone (${DEFAULT_CONCURRENT_PARTITIONS} connections)`,
    rows: records,
    seconds: now() - started,
    note: "rows already decoded, in memory",
  };
}

async function tableToTable(
  env: Environment,
  source: string,
  target: string,
  records: number,
  log: pino.Logger,
): Promise<Measured> {
  const job = "orders-copy";
  const input: RunInput = {
    run: { namespace: NAMESPACE, name: `${job}-batch` },
    job: {
      namespace: NAMESPACE,
      name: job,
      spec: SyncJobSpec.parse({
        mode: "batch",
        schedule: "0 2 * * *",
        source: { sql: { connectionSecretRef: { name: "db" }, table: source } },
        target: { sql: { connectionSecretRef: { name: "db" }, table: target, keyColumns: ["id"] } },
      }),
    },
    spec: SyncRunSpec.parse({ jobName: job, type: "Batch" }),
    connections: { source: env.postgres.url, target: env.postgres.url },
  };
  const started = now();
  const result = await executeRun(input, { log });
  const seconds = now() - started;
  if (result.phase !== "Succeeded") throw new Error(`batch run ${result.phase}: ${result.message}`);
  if (result.counts.rowsWritten !== records) {
    throw new Error(`batch run wrote ${result.counts.rowsWritten} of ${records} rows`);
  }
  return {
    name: "table → table (Batch run)",
    rows: records,
    seconds,
    note: `validation ${result.validation?.result ?? "none"}, 2000-row pages and upserts`,
  };
}

export async function run(): Promise<void> {
  const records = integerOption("records", 1_000_000);
  const rounds = integerOption("rounds", 3);
  const log = pino({ level: "warn" }, pino.destination(2));
  const env = await startEnvironment(progress);
  const pool = new pg.Pool({ connectionString: env.postgres.url, max: 3 });
  pool.on("error", () => {});
  const suffix = Date.now().toString(36);
  const topic = `bench.sync.orders.${suffix}`;
  const roundTables = (round: number) => ({
    stream: `bench_sync_stream_${suffix}_${round}`,
    insert: `bench_sync_insert_${suffix}_${round}`,
    copy: `bench_sync_copy_${suffix}_${round}`,
  });
  const tables = {
    source: `bench_sync_source_${suffix}`,
    copied: `bench_sync_copied_${suffix}`,
    upserted: `bench_sync_upserted_${suffix}`,
    warmup: `bench_sync_warmup_${suffix}`,
  };
  const kafka = connectKafka({
    brokers: env.kafka.brokers.split(","),
    clientId: "syncgov-bench",
    logger: log,
  });
  try {
    for (const name of Object.values(tables)) {
      await pool.query(`CREATE TABLE ${quoteTable(name)} (${COLUMNS_SQL})`);
    }
    const admin = kafka.admin();
    await admin.connect();
    await ensureTopic(admin, topic, { partitions: PARTITIONS });
    await admin.disconnect();
    progress(
      `producing ${records.toLocaleString("en-US")} records to ${topic} (${PARTITIONS} partitions)...`,
    );
    const produced = await produceTopic(kafka, topic, records);
    progress(`produced in ${produced.toFixed(1)} s; warming the broker and the runner up...`);
    await rawConsume(kafka, topic, records);
    await kafkaToPostgres(
      env,
      kafka,
      pool,
      topic,
      tables.warmup,
      Math.min(WARMUP_ROWS, records),
      log,
      "orders-warmup",
    );
    // The path and its ceilings take turns, round after round, and each figure is the median of its
    // rounds: on a shared machine the speed drifts, and a ratio of two single runs made at different
    // moments carries that drift twice.
    const byRound: { stream: Measured; consume: Measured; insert: Measured; copy: Measured }[] = [];
    let expected: TableChecksum | undefined;
    for (let round = 1; round <= rounds; round++) {
      const names = roundTables(round);
      for (const name of Object.values(names)) {
        await pool.query(`CREATE TABLE ${quoteTable(name)} (${COLUMNS_SQL})`);
      }
      progress(`round ${round} of ${rounds}: Kafka → PostgreSQL...`);
      const stream = await withCpu(() =>
        kafkaToPostgres(env, kafka, pool, topic, names.stream, records, log, `orders-stream-${round}`),
      );
      progress(`round ${round} of ${rounds}: raw consumer, raw INSERT, raw COPY...`);
      const consume = await withCpu(() => rawConsume(kafka, topic, records));
      const insert = await withCpu(() => rawInsert(pool, names.insert, records));
      const copy = await withCpu(() => rawCopy(pool, names.copy, records));
      expected ??= sourceChecksum(records);
      for (const [m, name] of [
        [stream, names.stream],
        [insert, names.insert],
        [copy, names.copy],
      ] as const) {
        await expectAllRows(pool, name, expected, `${m.name} (round ${round})`);
      }
      for (const name of Object.values(names)) await pool.query(`DROP TABLE ${quoteTable(name)}`);
      byRound.push({ stream, consume, insert, copy });
    }
    const stream = median(byRound.map((r) => r.stream));
    const consume = median(byRound.map((r) => r.consume));
    const insert = median(byRound.map((r) => r.insert));
    const copy = median(byRound.map((r) => r.copy));
    progress("target alone...");
    const upserted = await withCpu(() => targetAlone(pool, tables.upserted, records));
    progress("table → table...");
    await pool.query(`INSERT INTO ${quoteTable(tables.source)} ${generatedRowsSql(records)}`);
    await pool.query(`VACUUM ANALYZE ${quoteTable(tables.source)}`);
    const batch = await withCpu(() => tableToTable(env, tables.source, tables.copied, records, log));

    await expectAllRows(pool, tables.upserted, expected!, upserted.name);
    await expectAllRows(pool, tables.copied, expected!, batch.name);
    const rawWrite = fasterWrite(insert, copy);
    const ceiling = ceilingOf(consume, insert, copy);
    const measured = [stream, batch, consume, insert, copy, upserted];
    console.log(
      table(
        [
          "path",
          "rows",
          "seconds",
          "rows/s",
          "first row s",
          "CPU µs/row: bench",
          "postgres",
          "broker",
          "machine",
          "note",
        ],
        measured.map((m) => [
          m.name,
          m.rows.toLocaleString("en-US"),
          m.seconds.toFixed(2),
          Math.round(rate(m)).toLocaleString("en-US"),
          m.firstRowSeconds === undefined ? "-" : m.firstRowSeconds.toFixed(2),
          microsPerRow(m.cpu?.own, m.rows),
          microsPerRow(m.cpu?.postgres, m.rows),
          microsPerRow(m.cpu?.broker, m.rows),
          microsPerRow(m.cpu?.machine, m.rows),
          m.note ?? "",
        ]),
      ),
    );
    const ratio = rate(stream) / ceiling;
    console.log("");
    console.log(
      `by round (Kafka → PostgreSQL / raw COPY / ratio): ${byRound
        .map((r) => {
          const ratioOfRound = rate(r.stream) / ceilingOf(r.consume, r.insert, r.copy);
          return `${Math.round(rate(r.stream)).toLocaleString("en-US")} / ${Math.round(rate(r.copy)).toLocaleString("en-US")} / ${ratioOfRound.toFixed(2)}`;
        })
        .join(", ")}; the table shows each path's median round`,
    );
    console.log(
      `${ratio >= 0.7 ? "met   " : "MISSED"}  Kafka → PostgreSQL at least 0.7 of the smaller ceiling: ${ratio.toFixed(2)} (ceiling ${rate(consume) <= rate(rawWrite) ? "raw consume" : "raw write"}; raw write is ${rawWrite === copy ? "COPY" : "INSERT … unnest"})`,
    );
    console.log(
      `(topic produced in ${produced.toFixed(1)} s; Node ${process.version}; ${availableParallelism()} cores; CPU µs/row counts this process, PostgreSQL's processes, the broker's, then every process of the machine, over the whole measurement)`,
    );
    console.log(
      JSON.stringify({
        bench: "sync",
        records,
        kafka_to_pg_rows_per_s: Math.round(rate(stream)),
        table_to_table_rows_per_s: Math.round(rate(batch)),
        raw_consume_per_s: Math.round(rate(consume)),
        raw_write_per_s: Math.round(rate(rawWrite)),
        ratio: Number(ratio.toFixed(3)),
      }),
    );
  } finally {
    const admin = kafka.admin();
    await admin.connect().catch(() => {});
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect().catch(() => {});
    for (const name of Object.values(tables)) {
      await pool.query(`DROP TABLE IF EXISTS ${quoteTable(name)}`).catch(() => {});
    }
    await pool.end();
    await env.stop();
  }
}
