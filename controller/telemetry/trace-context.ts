/**
 * The W3C trace context a SyncRun carries (status.traceContext): written by the scheduler from the
 * admission span, read by the runner to make its span a child of it.
 */

import { type Context, context } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";

const propagator = new W3CTraceContextPropagator();

/** The context a traceparent (and tracestate) carry; the active context when there is none. */
export function contextFromTraceparent(
  carrier: { traceparent?: string; tracestate?: string } | undefined,
): Context {
  if (!carrier?.traceparent) return context.active();
  return propagator.extract(context.active(), carrier, {
    get: (c, key) => (c as Record<string, string | undefined>)[key],
    keys: (c) => Object.keys(c),
  });
}

/** The active span as a W3C traceparent carrier, for recording on a run. */
export function traceparentOf(ctx: Context): { traceparent: string; tracestate?: string } | undefined {
  const carrier: Record<string, string> = {};
  propagator.inject(ctx, carrier, { set: (c, k, v) => ((c as Record<string, string>)[k] = v) });
  return carrier.traceparent
    ? { traceparent: carrier.traceparent, ...(carrier.tracestate ? { tracestate: carrier.tracestate } : {}) }
    : undefined;
}
