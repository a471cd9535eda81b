/**
 * A run's metrics and trace. Metrics go to the process's global MeterProvider: the controller's
 * (served on its /metrics) for in-process runs, the runner process's own for `syncgov run` (served on
 * --metrics-port and pushed over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; see
 * controller/telemetry/telemetry.ts). The run's span is a child of the admission span the scheduler
 * recorded on the run (status.traceContext), so one trace shows the run from admission on.
 *
 * Metric names and labels (namespace, job, type; no row data, no connection details):
 * - syncgov_run_rows_total{direction=read|written|rejected|buffered}: rows moved, counted as the run
 *   reports progress;
 * - syncgov_runs_total{phase}: runs finished, by phase;
 * - syncgov_run_duration_seconds: from the runner's start to the run's end;
 * - syncgov_validation_results_total{result}: validations by result;
 * - syncgov_stream_buffered_records and syncgov_breaker_state (0 Closed, 1 HalfOpen, 2 Open): a
 *   realtime session's buffer and breaker, as last reported.
 */

import { type Attributes, type Context, metrics, type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import type { RunCounts } from "./progress.ts";
import type { RunResult, StreamStatus } from "./types.ts";

const BREAKER_STATE = { Closed: 0, HalfOpen: 1, Open: 2 } as const;
/** The last stream status per live run, read by the observable gauges. */
const streams = new Map<RunTelemetry, { attributes: Attributes; status: StreamStatus }>();

/**
 * The instruments, made from the meter provider registered when first asked for, and made again if
 * another is registered since: an instrument made before a process registers its provider would
 * count into the no-op meter for good (the metrics API has no proxy), and the runner process
 * registers its provider after this module is loaded.
 */
let made: { provider: unknown; instruments: ReturnType<typeof makeInstruments> } | undefined;
function instruments(): ReturnType<typeof makeInstruments> {
  const provider = metrics.getMeterProvider();
  if (made?.provider !== provider) made = { provider, instruments: makeInstruments() };
  return made.instruments;
}

function makeInstruments() {
  const meter = metrics.getMeter("syncgov-runner");
  meter
    .createObservableGauge("syncgov_stream_buffered_records", {
      description: "Records a realtime session has buffered",
    })
    .addCallback((r) => {
      for (const { attributes, status } of streams.values()) r.observe(status.rowsBuffered, attributes);
    });
  meter
    .createObservableGauge("syncgov_breaker_state", {
      description: "A realtime session's breaker: 0 Closed, 1 HalfOpen, 2 Open",
    })
    .addCallback((r) => {
      for (const { attributes, status } of streams.values()) {
        const state = status.breaker.state as keyof typeof BREAKER_STATE;
        r.observe(BREAKER_STATE[state] ?? 0, attributes);
      }
    });
  return {
    rows: meter.createCounter("syncgov_run_rows_total", {
      description: "Rows a run read, wrote, rejected or buffered",
    }),
    finished: meter.createCounter("syncgov_runs_total", { description: "Runs finished, by phase" }),
    duration: meter.createHistogram("syncgov_run_duration_seconds", {
      description: "Run duration from the runner's start to the run's end",
      unit: "s",
      advice: { explicitBucketBoundaries: [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14_400] },
    }),
    validations: meter.createCounter("syncgov_validation_results_total", {
      description: "Validations by result (Passed, Failed)",
    }),
  };
}

const tracer = trace.getTracer("syncgov-runner");

export class RunTelemetry {
  readonly span: Span;
  readonly context: Context;
  readonly #attributes: Attributes;
  readonly #started = performance.now();
  #counted: RunCounts = { rowsRead: 0, rowsWritten: 0, rowsRejected: 0 };
  #buffered = 0;

  constructor(run: { namespace: string; name: string }, parent: Context) {
    this.#attributes = { namespace: run.namespace, job: "", type: "" };
    this.span = tracer.startSpan(
      `run ${run.namespace}/${run.name}`,
      { attributes: { "syncgov.run": `${run.namespace}/${run.name}` } },
      parent,
    );
    this.context = trace.setSpan(parent, this.span);
  }

  /** Names the run's job and type once the run is read (labels of every metric after). */
  describe(job: string, type: string): void {
    this.#attributes.job = job;
    this.#attributes.type = type;
    this.span.setAttributes({ "syncgov.job": job, "syncgov.run_type": type });
  }

  /** Counts the rows since the last report (reports carry running totals). */
  progress(counts: RunCounts): void {
    const add = (direction: string, now: number, before: number) => {
      if (now > before) instruments().rows.add(now - before, { ...this.#attributes, direction });
    };
    add("read", counts.rowsRead, this.#counted.rowsRead);
    add("written", counts.rowsWritten, this.#counted.rowsWritten);
    add("rejected", counts.rowsRejected, this.#counted.rowsRejected);
    this.#counted = {
      rowsRead: Math.max(counts.rowsRead, this.#counted.rowsRead),
      rowsWritten: Math.max(counts.rowsWritten, this.#counted.rowsWritten),
      rowsRejected: Math.max(counts.rowsRejected, this.#counted.rowsRejected),
    };
  }

  stream(status: StreamStatus): void {
    if (status.rowsBuffered > this.#buffered) {
      instruments().rows.add(status.rowsBuffered - this.#buffered, {
        ...this.#attributes,
        direction: "buffered",
      });
      this.#buffered = status.rowsBuffered;
    }
    instruments();
    streams.set(this, { attributes: { ...this.#attributes }, status });
  }

  /** Records the end of the run and ends its span. */
  finish(phase: string, result: RunResult | undefined, message: string): void {
    if (result) {
      this.progress(result.counts);
      if (result.stream) this.stream(result.stream);
    }
    streams.delete(this);
    const { finished, duration, validations } = instruments();
    finished.add(1, { ...this.#attributes, phase });
    duration.record((performance.now() - this.#started) / 1000, { ...this.#attributes, phase });
    if (result?.validation) validations.add(1, { ...this.#attributes, result: result.validation.result });
    this.span.setAttributes({
      "syncgov.phase": phase,
      "syncgov.rows_read": result?.counts.rowsRead ?? 0,
      "syncgov.rows_written": result?.counts.rowsWritten ?? 0,
    });
    if (phase === "Failed") this.span.setStatus({ code: SpanStatusCode.ERROR, message });
    this.span.end();
  }
}
