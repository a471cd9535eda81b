import type { IncomingMessage, ServerResponse } from "node:http";
import { context, metrics, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { type IMetricReader, MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { BatchSpanProcessor, type SpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";

export interface TelemetryOptions {
  serviceName: string;
  /** OTLP/HTTP endpoint for traces and metrics; default OTEL_EXPORTER_OTLP_ENDPOINT, none if unset. */
  otlpEndpoint?: string | undefined;
  /** Interval of OTLP metric exports. */
  exportIntervalMs?: number;
}

/**
 * OpenTelemetry for one syncgov process: a global MeterProvider whose metrics are served in the
 * Prometheus text format by `metricsHandler` (mounted on the controller's /metrics) and pushed over
 * OTLP when an endpoint is configured, and a global TracerProvider exporting spans over OTLP.
 */
export class Telemetry {
  readonly meterProvider: MeterProvider;
  readonly tracerProvider: TracerProvider;
  private readonly prometheus: PrometheusExporter;

  constructor(opts: TelemetryOptions) {
    const resource = resourceFromAttributes({
      "service.name": opts.serviceName,
      "service.namespace": "syncgov",
    });
    const endpoint = opts.otlpEndpoint ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    this.prometheus = new PrometheusExporter({ preventServerStart: true });
    const readers: IMetricReader[] = [this.prometheus];
    const spanProcessors: SpanProcessor[] = [];
    if (endpoint) {
      const base = endpoint.replace(/\/$/, "");
      readers.push(
        new PeriodicExportingMetricReader({
          exporter: new OTLPMetricExporter({ url: `${base}/v1/metrics` }),
          exportIntervalMillis: opts.exportIntervalMs ?? 15_000,
        }),
      );
      spanProcessors.push(
        new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${base}/v1/traces` }) }),
      );
    }
    this.meterProvider = new MeterProvider({ resource, readers });
    this.tracerProvider = new TracerProvider({ resource, spanProcessors });
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    metrics.setGlobalMeterProvider(this.meterProvider);
    trace.setGlobalTracerProvider(this.tracerProvider);
  }

  /** Serves the current metrics in the Prometheus text format. */
  metricsHandler(req: IncomingMessage, res: ServerResponse): void {
    this.prometheus.getMetricsRequestHandler(req, res);
  }

  async shutdown(): Promise<void> {
    await Promise.allSettled([this.meterProvider.shutdown(), this.tracerProvider.shutdown()]);
    metrics.disable();
    trace.disable();
    context.disable();
  }
}
