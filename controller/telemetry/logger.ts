import { isSpanContextValid, trace } from "@opentelemetry/api";
import pino from "pino";

/**
 * The process logger: JSON lines on stdout, with the trace and span ids of the active span. Connection
 * URLs and passwords are redacted wherever they appear under these keys, as a second line of
 * defence: code never logs a Secret's value on purpose.
 */
export const logger = pino({
  name: "syncgov",
  // Every line written inside a span carries its trace: a run's log lines join its trace.
  mixin() {
    const span = trace.getActiveSpan()?.spanContext();
    return span && isSpanContextValid(span) ? { trace_id: span.traceId, span_id: span.spanId } : {};
  },
  level: process.env.SYNCGOV_LOG_LEVEL ?? "info",
  redact: {
    paths: [
      "password",
      "*.password",
      "connectionString",
      "*.connectionString",
      "url",
      "*.url",
      "secret",
      "*.secret",
    ],
    censor: "[redacted]",
  },
});

export type Logger = pino.Logger;
