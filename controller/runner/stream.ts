/**
 * The StreamRunner: the runs of a job's Kafka side. A Realtime run is the job's long-lived session
 * (Kafka topic → PostgreSQL table); Compensation replays the buffer topic (./compensation.ts);
 * Validation compares the topic with the table (./stream-validation.ts).
 *
 * A realtime session:
 * - checks the target (columns, unique key, masking) before it reads anything (./stream-target.ts);
 * - reads the topic with the job's consumer group, committing offsets only after the rows they carry
 *   are written, diverted or set aside, and sends malformed records to the job's dead-letter topic
 *   (../connectors/kafka/source.ts); records are read into the target's own bounds (a smallint's
 *   range, a varchar(n)'s length, a numeric(p,s)'s precision, NOT NULL: ./plan.ts withTargetLimits),
 *   so a value the table cannot hold is set aside as the record is decoded;
 * - sets aside, in the same dead-letter topic, the rows the target refuses with a data error that no
 *   bound caught (a CHECK, a foreign key, a trigger): the chunk is split until they are found and
 *   the rest is written (./stream-sink.ts, ../connectors/postgres/row-errors.ts), so one bad row never
 *   stops a partition. Every row set aside counts in rowsRejected (read = written + buffered +
 *   rejected) and a RowsRejected event on the job names the first of them and why, at once and then
 *   at most every REJECTION_EVENT_INTERVAL_MS;
 * - decodes the records in a worker thread, which also prepares the COPY text the target writes, so
 *   the main thread keeps only the consumer, the session and the socket writes
 *   (../connectors/kafka/decoder.ts); a job with masking rules decodes and masks on the main thread;
 * - masks every row, then writes it through a SlowCallBreaker or diverts it to the job's buffer topic
 *   (./stream-sink.ts says how, how probes work, and why per key an older value never overwrites a
 *   newer one). The breaker's settings are the job's, bounded by the matching SyncPolicies' (the
 *   strictest of all wins; slow-call threshold 500 ms unless set);
 * - reports rowsRead/rowsWritten (at most once per second), rowsRejected, rowsBuffered and the breaker
 *   (state, rates, records waiting in the buffer, last transition) as they change, transitions at
 *   once; and records an event on the job at each transition (BreakerOpened, BreakerHalfOpen,
 *   BreakerClosed, with the rates) and when the buffer has drained (BufferDrained);
 * - runs until its signal fires (Replace, stop, SIGTERM): the chunk in flight is finished and
 *   committed, the consumer leaves its group, and the run ends Cancelled. It ends Failed when the
 *   consumer fails for good; the controller starts the next session with backoff.
 */

import type { SyncJobSpec } from "../api/syncjob.ts";
import type { RunBreakerStatus } from "../api/syncrun.ts";
import { BufferTopic, type OversizedRow } from "../connectors/kafka/buffer.ts";
import { bufferTopicOf, deadLetterTopicOf, jobConsumerGroup } from "../connectors/kafka/cluster.ts";
import {
  oversizedRowMessage,
  readDeadLetterHeaders,
  refusedRowMessage,
} from "../connectors/kafka/dead-letter.ts";
import { sharedDecodePool } from "../connectors/kafka/decoder.ts";
import { errorSummary, sleep } from "../connectors/kafka/keep-alive.ts";
import {
  KafkaSource,
  type KeyedRow,
  type SourceChunk,
  type SourceRecord,
  sourceChunk,
} from "../connectors/kafka/source.ts";
import type { RefusedRow } from "../connectors/postgres/target.ts";
import type { Row } from "../connectors/record.ts";
import type { EventRecord } from "../kube/events.ts";
import { kubeTime } from "../kube/status.ts";
import { type BreakerConfig, strictestBreakerConfig } from "../resilience/breaker-config.ts";
import {
  type BreakerState,
  type BreakerTransition,
  SlowCallBreaker,
} from "../resilience/slow-call-breaker.ts";
import { type Logger, logger as rootLogger } from "../telemetry/logger.ts";
import { compensate } from "./compensation.ts";
import { describeRejection, type RunRejection } from "./rejections.ts";
import { DivertingSink } from "./stream-sink.ts";
import { emptyUpsert, kafkaOf, streamTarget } from "./stream-target.ts";
import { validateTopic } from "./stream-validation.ts";
import {
  RunCancelled,
  type RunContext,
  RunFailure,
  type RunInput,
  type StepOutcome,
  type StreamRunner,
  type StreamStatus,
} from "./types.ts";

/**
 * Rows per sink call (one upsert or COPY) and per replayed chunk unless set. Each statement has a
 * cost of its own in PostgreSQL: in the sync bench's "target alone" row (1,000,000 rows by COPY on
 * three connections), PostgreSQL spent 3.2–4.1 µs of CPU a row in 2000-row statements and 2.4–2.9 µs
 * in 10,000-row ones, no more than on the raw ceiling's 50,000-row COPY (2.6–3.1 µs); compare
 * `npm run bench -- sync --chunk 2000`. 500-row chunks were slower still. A 10,000-row statement takes
 * tens of milliseconds, far below the breaker's 500 ms slow-call threshold, and holds a few MB.
 */
export const DEFAULT_MAX_ROWS_PER_CHUNK = 10_000;

/**
 * Partitions a realtime session writes at once unless set: while one partition's chunk is decoded,
 * others are in PostgreSQL, on their own connections (the runner's pool holds one more than this).
 */
export const DEFAULT_CONCURRENT_PARTITIONS = 3;

/**
 * Consumer group members a realtime session runs unless set, each fetching for its share of the
 * partitions while the others' chunks are written: with one member every fetch left the target
 * idle. Measured on 1,000,000 records from 3 partitions (test/bench/sync.ts), three members moved
 * 1.3 to 1.5 times as many rows per second as one. A member without a partition only heartbeats.
 */
export const DEFAULT_SESSION_MEMBERS = 3;

/**
 * A session's members heartbeat every second (the Java client's default is 3 s): a member learns of a
 * rebalance from its heartbeat, and while a session's members join one another at start, the ones
 * already joined keep the others waiting until they notice. Each heartbeat is one small request.
 */
const SESSION_HEARTBEAT_MS = 1000;

/** Least time between two RowsRejected events of a session; the first comes at once. */
export const REJECTION_EVENT_INTERVAL_MS = 30_000;

export interface StreamRunnerOptions {
  readonly logger?: Logger;
  /** Most rows per sink call of the session and per replayed chunk; default DEFAULT_MAX_ROWS_PER_CHUNK. */
  readonly maxRowsPerChunk?: number;
  /**
   * How often a session probes a target whose breaker waits to half-open, reads the buffer's pending
   * count while diverting, and checks its consumer; default 1000 ms.
   */
  readonly pollIntervalMs?: number;
  /** Most one status report per this interval, transitions aside; default 1000 ms. */
  readonly statusIntervalMs?: number;
  /** A probe slower than this counts as failed; default 10 s. */
  readonly probeTimeoutMs?: number;
  /** Partitions of a buffer topic the runner creates; default 3. */
  readonly bufferPartitions?: number;
  /**
   * Source partitions a realtime session writes at once, each chunk on its own connection; default 3.
   * A partition's chunks still go one at a time, in order (../connectors/kafka/source.ts).
   */
  readonly concurrentPartitions?: number;
  /** Consumer session timeout of a realtime session; default 30 s. */
  readonly sessionTimeoutMs?: number;
  /** Consumer group members of a realtime session (KafkaSourceOptions.members); default DEFAULT_SESSION_MEMBERS. */
  readonly members?: number;
}

export function createStreamRunner(options: StreamRunnerOptions = {}): StreamRunner {
  return {
    execute: (context) => executeStream(context, options),
  };
}

async function executeStream(context: RunContext, options: StreamRunnerOptions): Promise<StepOutcome> {
  const { input } = context;
  const logger = (options.logger ?? rootLogger).child({
    run: `${input.run.namespace}/${input.run.name}`,
    type: input.spec.type,
  });
  const kafkaSpec = input.job.spec.source.kafka;
  const needsTopic = (what: string) =>
    new RunFailure("NoKafkaSource", `${what} runs of the stream need a Kafka source; this job has none`);
  switch (input.spec.type) {
    case "Realtime":
      if (!kafkaSpec) throw needsTopic("Realtime");
      return runSession(context, options, logger);
    case "Compensation":
      return compensate(context, kafkaOf(input, logger), {
        logger,
        maxRowsPerChunk: options.maxRowsPerChunk ?? DEFAULT_MAX_ROWS_PER_CHUNK,
      });
    case "Validation":
      if (!kafkaSpec) throw needsTopic("Validation");
      return validateTopic(context, kafkaOf(input, logger), { logger });
    case "Batch":
      throw new RunFailure(
        "RunTypeNotSupported",
        "a Kafka source is synced by the job's Realtime session and compared by Validation runs; Batch runs need a SQL or file source",
      );
    default:
      throw new RunFailure(
        "RunTypeNotSupported",
        `${input.spec.type} runs are not executed by the stream runner`,
      );
  }
}

/**
 * The breaker settings of a job's realtime session: the job's own, bounded by the matching policies'
 * (the strictest of all, controller/resilience/breaker-config.ts); a field nobody sets takes its
 * default, e.g. a slow call is one of 500 ms or more.
 */
export function sessionBreakerConfig(
  spec: Pick<SyncJobSpec, "breaker">,
  bounds: RunInput["breakerBounds"] = [],
): BreakerConfig {
  return strictestBreakerConfig([spec.breaker ?? {}, ...bounds]);
}

const STATE_NAMES: Readonly<Record<BreakerState, RunBreakerStatus["state"]>> = {
  CLOSED: "Closed",
  OPEN: "Open",
  HALF_OPEN: "HalfOpen",
};

async function runSession(context: RunContext, options: StreamRunnerOptions, logger: Logger): Promise<never> {
  const { input } = context;
  const { namespace, name, spec } = input.job;
  const kafkaSpec = spec.source.kafka!;
  const maxRows = options.maxRowsPerChunk ?? DEFAULT_MAX_ROWS_PER_CHUNK;
  const pollMs = options.pollIntervalMs ?? 1000;
  const kafka = kafkaOf(input, logger);
  const stream = await streamTarget(input, context.pool(input.connections.target), context.masker, maxRows);
  const probe = emptyUpsert(stream);
  const bufferTopic = bufferTopicOf(namespace, name, spec);
  const breaker = new SlowCallBreaker({
    name: `${namespace}/${name}`,
    config: sessionBreakerConfig(spec, input.breakerBounds),
  });
  const buffer = new BufferTopic({
    kafka,
    topic: bufferTopic,
    versionColumn: stream.versionColumn,
    partitions: options.bufferPartitions ?? 3,
    maxRowsPerSink: maxRows,
    logger,
  });
  const stopping = new AbortController();
  const stop = () => stopping.abort();
  if (context.signal.aborted) stop();
  context.signal.addEventListener("abort", stop, { once: true });

  const status = new SessionStatus(breaker, context, options.statusIntervalMs ?? 1000);
  const sink = new DivertingSink<SourceChunk>({
    breaker,
    target: {
      upsert: (chunk) =>
        stream.target.upsertChunk(chunk.length, chunk.prepared, () => chunk.records().map((r) => r.row)),
      probe: async () => {
        await stream.pool.query(probe.text, probe.values);
      },
      salvage: (chunk, error) =>
        stream.target.upsertSettingAside(
          chunk.records().map((r) => r.row),
          { failedWith: error },
        ),
    },
    buffer: {
      divert: async (chunk) => {
        const result = await buffer.divert(chunk.records());
        if (result.oversized.length > 0) await setAsideOversized(result.oversized);
        return result;
      },
      pendingCount: () => buffer.pendingCount(),
    },
    pollIntervalMs: pollMs,
    probeTimeoutMs: options.probeTimeoutMs ?? 10_000,
    onChange: () => {
      if (sink.mode === "Direct" && status.diverting) {
        context.recordEvent({
          type: "Normal",
          reason: "BufferDrained",
          action: "Resume",
          note: `Buffer topic ${bufferTopic} has drained; records from topic ${kafkaSpec.topic} are written to ${stream.table} again.`,
        });
        logger.info({ bufferTopic }, "buffer drained; writing to the target again");
      }
      status.diverting = sink.mode === "Diverting";
      status.report(sink);
    },
    onError: (what, error) => logger.warn({ what, error: errorSummary(error) }, "stream supervisor error"),
  });
  breaker.onStateTransition((transition) => {
    status.transitioned();
    status.report(sink, true);
    context.recordEvent(transitionEvent(transition, breaker, stream.table, bufferTopic, sink.pending));
    logger.info(
      {
        from: transition.from,
        to: transition.to,
        reason: transition.reason,
        slowCallRate: transition.slowCallRate,
        failureRate: transition.failureRate,
      },
      "breaker transition",
    );
  });

  const deadLetterTopic = deadLetterTopicOf(namespace, name, spec);
  const rejected = new RejectionReport(context, kafkaSpec.topic, deadLetterTopic);
  const masking = context.masker.maskedColumns.size > 0;
  // Masked rows are made on this thread, so a decoder's COPY text (of unmasked rows) would not serve.
  const decoder = masking ? undefined : sharedDecodePool().decoder(stream.schema);
  const source = new KafkaSource({
    kafka,
    ...(decoder ? { decoder } : {}),
    topic: kafkaSpec.topic,
    groupId: jobConsumerGroup(namespace, name),
    deadLetterTopic,
    schema: stream.schema,
    startFrom: kafkaSpec.startFrom,
    maxRowsPerSink: maxRows,
    concurrentPartitions: options.concurrentPartitions ?? DEFAULT_CONCURRENT_PARTITIONS,
    members: options.members ?? DEFAULT_SESSION_MEMBERS,
    heartbeatIntervalMs: SESSION_HEARTBEAT_MS,
    ...(options.sessionTimeoutMs ? { sessionTimeoutMs: options.sessionTimeoutMs } : {}),
    logger,
    // The source's own rejections (malformed records, values outside the target's bounds): they
    // never reached the sink, so they count as read here.
    onDeadLetters: (messages) => {
      for (const message of messages) {
        const info = readDeadLetterHeaders(message.headers);
        rejected.add({
          position: `${info?.topic ?? kafkaSpec.topic}/${info?.partition}@${info?.offset}`,
          ...(info?.column !== undefined ? { column: info.column } : {}),
          reason: info?.reason ?? "DeadLettered",
          message: info?.message ?? "malformed record",
        });
      }
      context.progress.add({ rowsRead: messages.length, rowsRejected: messages.length });
    },
    sink: async (chunk) => {
      await preparing;
      const rows = masking
        ? sourceChunk(chunk.records().map((r) => ({ ...r, row: context.masker.mask(r.row) })))
        : chunk;
      const result = await sink.write(rows, stopping.signal);
      // Set aside before the chunk counts as taken: should that fail, the chunk is offered again.
      if (result.refused && result.refused.length > 0) await setAsideRefused(rows, result.refused);
      context.progress.add({ rowsRead: chunk.length, rowsWritten: result.written });
      if (result.outcome === "diverted") status.report(sink);
      return result.outcome;
    },
  });

  const keyOf = (row: Row): Row =>
    Object.fromEntries(stream.schema.keyColumns.map((k) => [k, row[k] ?? null]));
  const positionOf = (r: KeyedRow | SourceRecord): string | undefined =>
    "topic" in r ? `${r.topic}/${r.partition}@${r.offset}` : undefined;

  // Rows too large for the buffer topic go to the dead-letter topic with their reason; the sink
  // counted them as read, so they count as rejected here (read = written + buffered + rejected).
  const setAsideOversized = async (rows: readonly OversizedRow[]) => {
    await source.setAside(
      rows.map((o) =>
        oversizedRowMessage(o.row, { bytes: o.bytes, limitBytes: o.limitBytes, topic: bufferTopic }),
      ),
    );
    for (const o of rows) {
      const position = positionOf(o.row);
      rejected.add({
        key: keyOf(o.row.row),
        ...(position ? { position } : {}),
        reason: "RecordTooLarge",
        message: `a row's buffer record is ${o.bytes} bytes, over buffer topic ${bufferTopic}'s limit of ${o.limitBytes}`,
      });
    }
    context.progress.add({ rowsRejected: rows.length });
    logger.warn(
      { rows: rows.length, bufferTopic, deadLetterTopic },
      "rows too large for the buffer topic set aside in the dead-letter topic",
    );
  };

  // Rows the target refused with a data error: the sink counted them as read, the rest of their
  // chunk is written; they count as rejected (read = written + buffered + rejected).
  const setAsideRefused = async (chunk: SourceChunk, refused: readonly RefusedRow[]) => {
    const records = chunk.records();
    await source.setAside(refused.map((r) => refusedRowMessage(records[r.index]!, r.refusal)));
    for (const r of refused) {
      const record = records[r.index]!;
      const position = positionOf(record);
      rejected.add({
        key: keyOf(record.row),
        ...(position ? { position } : {}),
        ...(r.refusal.column !== undefined ? { column: r.refusal.column } : {}),
        reason: r.refusal.reason,
        message: `${stream.table} refused the row: ${r.refusal.message}`,
      });
    }
    context.progress.add({ rowsRejected: refused.length });
    logger.warn(
      {
        rows: refused.length,
        table: stream.table,
        deadLetterTopic,
        first: { sqlState: refused[0]!.refusal.sqlState, reason: refused[0]!.refusal.reason },
      },
      "rows the target refused set aside in the dead-letter topic",
    );
  };

  let supervising: Promise<void> = Promise.resolve();
  // The sink learns whether the buffer still holds rows while the consumer joins its group; its first
  // chunk waits for that answer, not for the buffer topic's creation (a failure of either fails the
  // session below).
  const preparing = sink.prepare();
  const bufferReady = buffer.ensureTopic();
  preparing.catch(() => {});
  bufferReady.catch(() => {});
  try {
    try {
      await source.start();
    } catch (error) {
      if (stopping.signal.aborted) throw new RunCancelled("the realtime session was stopped while starting");
      throw new RunFailure(
        "SourceUnavailable",
        `cannot consume topic ${kafkaSpec.topic}: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    await preparing;
    await bufferReady;
    status.diverting = sink.mode === "Diverting";
    status.report(sink, true);
    supervising = sink.supervise(stopping.signal);
    logger.info(
      { topic: kafkaSpec.topic, mode: sink.mode, pending: sink.pending },
      "realtime session started",
    );
    while (!stopping.signal.aborted) {
      await sleep(pollMs, stopping.signal);
      rejected.announce();
      // The meter reports on add() at most once per interval; a quiet stream still gets its last counts out.
      context.progress.flush();
      status.report(sink);
      if (source.state === "failed") {
        throw new RunFailure(
          "StreamFailed",
          `the consumer of topic ${kafkaSpec.topic} stopped: ${source.failure ?? "unknown error"}`,
        );
      }
    }
  } finally {
    stop();
    context.signal.removeEventListener("abort", stop);
    await source
      .stop()
      .catch((error: unknown) =>
        logger.warn({ error: errorSummary(error) }, "the Kafka source did not stop cleanly"),
      );
    await supervising;
    rejected.announce(true);
    sink.close();
    status.report(sink, true);
    await buffer.close().catch(() => {});
  }
  // A session ends only when it is stopped; what it moved is in the counts and rowsBuffered.
  throw new RunCancelled("the realtime session was stopped");
}

/**
 * Rows a session set aside in its dead-letter topic: each is listed in the run's rejections
 * (RejectionLog: counted, the first ones kept for the result's message) and the first few since the
 * last announcement go into a Warning event on the job (RowsRejected), at once for the first and at
 * most every REJECTION_EVENT_INTERVAL_MS after, so that a stream setting rows aside is seen while it
 * runs without an event per row.
 */
class RejectionReport {
  static readonly SHOWN = 5;
  readonly #context: RunContext;
  readonly #topic: string;
  readonly #deadLetterTopic: string;
  readonly #first: RunRejection[] = [];
  #unannounced = 0;
  #lastAt = Number.NEGATIVE_INFINITY;

  constructor(context: RunContext, topic: string, deadLetterTopic: string) {
    this.#context = context;
    this.#topic = topic;
    this.#deadLetterTopic = deadLetterTopic;
  }

  add(rejection: RunRejection): void {
    this.#context.rejections.add(rejection);
    this.#unannounced++;
    if (this.#first.length < RejectionReport.SHOWN) this.#first.push(rejection);
  }

  /** Records the event when rows were set aside since the last one and the interval allows (or `force`). */
  announce(force = false): void {
    if (this.#unannounced === 0) return;
    const now = performance.now();
    if (!force && now - this.#lastAt < REJECTION_EVENT_INTERVAL_MS) return;
    const items = this.#first.map((r) => `${describeRejection(r)}: ${r.message}`);
    const more = this.#unannounced - items.length;
    this.#context.recordEvent({
      type: "Warning",
      reason: "RowsRejected",
      action: "SetAside",
      note: `${this.#unannounced} records of topic ${this.#topic} were not written and are set aside in dead-letter topic ${this.#deadLetterTopic}${
        this.#lastAt === Number.NEGATIVE_INFINITY ? "" : " since the last such event"
      }: ${items.join("; ")}${more > 0 ? `; and ${more} more` : ""}.`,
    });
    this.#lastAt = now;
    this.#unannounced = 0;
    this.#first.length = 0;
  }
}

/**
 * The session's status as it goes to the SyncRun: reported when it changed, at most once per
 * interval unless forced (transitions, the first and the last report).
 */
class SessionStatus {
  diverting = false;
  readonly #breaker: SlowCallBreaker;
  readonly #context: RunContext;
  readonly #intervalMs: number;
  #lastTransitionTime = kubeTime(new Date());
  #lastText = "";
  #lastAt = Number.NEGATIVE_INFINITY;

  constructor(breaker: SlowCallBreaker, context: RunContext, intervalMs: number) {
    this.#breaker = breaker;
    this.#context = context;
    this.#intervalMs = intervalMs;
  }

  transitioned(): void {
    this.#lastTransitionTime = kubeTime(new Date());
  }

  report(sink: DivertingSink<SourceChunk>, force = false): void {
    const metrics = this.#breaker.metrics();
    const status: StreamStatus = {
      rowsBuffered: sink.rowsDiverted,
      breaker: {
        state: STATE_NAMES[metrics.state],
        ...(metrics.slowCallRate === null ? {} : { slowCallRate: roundRate(metrics.slowCallRate) }),
        ...(metrics.failureRate === null ? {} : { failureRate: roundRate(metrics.failureRate) }),
        bufferedRecords: sink.pending,
        lastTransitionTime: this.#lastTransitionTime,
      },
    };
    const text = JSON.stringify(status);
    if (text === this.#lastText) return;
    const now = performance.now();
    if (!force && now - this.#lastAt < this.#intervalMs) return;
    this.#lastText = text;
    this.#lastAt = now;
    this.#context.reportStream(status);
  }
}

function roundRate(rate: number): number {
  return Math.round(rate * 10) / 10;
}

function describeRates(t: Pick<BreakerTransition, "slowCallRate" | "failureRate" | "bufferedCalls">): string {
  const percent = (rate: number | null) => (rate === null ? "not yet known" : `${roundRate(rate)}%`);
  return `slow-call rate ${percent(t.slowCallRate)} and failure rate ${percent(t.failureRate)} over ${t.bufferedCalls} calls`;
}

function transitionEvent(
  t: BreakerTransition,
  breaker: SlowCallBreaker,
  table: string,
  bufferTopic: string,
  pending: number,
): EventRecord {
  const { config } = breaker;
  const breakerOf = `The circuit breaker around writes to ${table}`;
  switch (t.to) {
    case "OPEN":
      return {
        type: "Warning",
        reason: "BreakerOpened",
        action: "Divert",
        note: `${breakerOf} opened (${t.reason}): ${describeRates(t)} (thresholds: slow calls ≥ ${config.slowCallDurationThresholdMs} ms at ${config.slowCallRateThreshold}%, failures at ${config.failureRateThreshold}%). Records go to buffer topic ${bufferTopic}; probes start in ${config.waitDurationInOpenStateMs} ms.`,
      };
    case "HALF_OPEN":
      return {
        type: "Normal",
        reason: "BreakerHalfOpen",
        action: "Probe",
        note: `${breakerOf} is half-open after ${config.waitDurationInOpenStateMs} ms: up to ${config.permittedNumberOfCallsInHalfOpenState} probes decide whether it closes (it was open at ${describeRates(t)}).`,
      };
    case "CLOSED":
      return {
        type: "Normal",
        reason: "BreakerClosed",
        action: "Close",
        note: `${breakerOf} closed: probes had ${describeRates(t)}. ${pending} records wait in buffer topic ${bufferTopic}; records keep going there until a Compensation run has replayed them.`,
      };
  }
}
