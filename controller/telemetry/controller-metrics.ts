/**
 * The controller's own metrics (docs/architecture.md, Observability): the work queue, the
 * registry, leadership and reconciles. Gauges read their values when scraped, from the functions
 * given; nothing here holds controller state.
 */

import { type Counter, type Histogram, metrics } from "@opentelemetry/api";
import type { WorkQueueMetrics } from "../queue/workqueue.ts";

const SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface ControllerMetricSources {
  /** Registry entries by "kind/phase" (the BY_KIND_AND_PHASE index) and the snapshot's version. */
  registryCounts(): Iterable<[string, number]>;
  registryVersion(): number;
  isLeader(): boolean;
}

export interface ControllerMetrics {
  /** What a work queue reports (depth, wait, retries); one queue per leadership term. */
  readonly queue: WorkQueueMetrics;
  readonly reconcileTotal: Counter;
  readonly reconcileDuration: Histogram;
}

export function controllerMetrics(sources: ControllerMetricSources): ControllerMetrics {
  const meter = metrics.getMeter("syncgov-controller");
  const depth = { value: 0 };
  meter
    .createObservableGauge("syncgov_workqueue_depth", { description: "Keys waiting in the work queue" })
    .addCallback((r) => r.observe(depth.value));
  const queueLatency = meter.createHistogram("syncgov_workqueue_queue_duration_seconds", {
    description: "Time a key waits before a worker takes it",
    unit: "s",
    advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
  });
  const retries = meter.createCounter("syncgov_workqueue_retries_total", {
    description: "Keys re-queued after an error",
  });
  meter
    .createObservableGauge("syncgov_registry_entries", {
      description: "Objects in the registry, by kind and phase",
    })
    .addCallback((r) => {
      for (const [key, n] of sources.registryCounts()) {
        const [kind, phase] = key.split("/");
        r.observe(n, { kind, phase: phase || "None" });
      }
    });
  meter
    .createObservableGauge("syncgov_registry_version", { description: "Version of the registry snapshot" })
    .addCallback((r) => r.observe(sources.registryVersion()));
  meter
    .createObservableGauge("syncgov_leader", { description: "1 while this replica leads" })
    .addCallback((r) => r.observe(sources.isLeader() ? 1 : 0));
  return {
    queue: {
      depth: (n) => {
        depth.value = n;
      },
      queueLatency: (s) => queueLatency.record(s),
      retried: () => retries.add(1),
    },
    reconcileTotal: meter.createCounter("syncgov_reconcile_total", {
      description: "Reconciles by kind and result",
    }),
    reconcileDuration: meter.createHistogram("syncgov_reconcile_duration_seconds", {
      description: "Reconcile duration by kind and result",
      unit: "s",
      advice: { explicitBucketBoundaries: SECONDS_BUCKETS },
    }),
  };
}
