/**
 * The controller's model of the cluster in the registry (as Kueue's cache): each object the
 * informers deliver is stored with the few fields the indexes and the scheduler read, and the
 * registry keeps the derived indexes (runs by kind and phase, slots per namespace and target).
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { isActivePhase } from "../api/phases.ts";
import type { SyncRunStatus } from "../api/syncrun.ts";
import { countByKindAndPhase, countRunningRuns } from "../registry/indexes.ts";
import { type IndexDefinition, Registry, type RegistryEntry, registryKey } from "../registry/registry.ts";

export type StoredKind = "SyncJob" | "SyncRun" | "SyncPolicy" | "Namespace";

/**
 * What the registry holds for each Kubernetes object: the object as the API server returned it, and
 * the few fields the indexes and the scheduler read, lifted out once when the object is stored.
 */
export interface StoredObject extends RegistryEntry {
  readonly kind: StoredKind;
  readonly namespace?: string | undefined;
  readonly name: string;
  readonly resourceVersion?: string | undefined;
  readonly object: KubernetesObject;
  /** status.phase */
  readonly phase?: string | undefined;
  /** For SyncRuns holding a concurrency slot: the target they write to (status.target). */
  readonly target?: string | undefined;
  /** For SyncRuns: spec.jobName and spec.type. */
  readonly jobName?: string | undefined;
  readonly runType?: string | undefined;
}

export function stored(kind: StoredKind, object: KubernetesObject): StoredObject {
  const status = (object as { status?: { phase?: string; target?: string } }).status;
  const spec =
    kind === "SyncRun" ? (object as { spec?: { jobName?: string; type?: string } }).spec : undefined;
  return {
    jobName: spec?.jobName,
    runType: spec?.type,
    kind,
    namespace: object.metadata?.namespace || undefined,
    name: object.metadata?.name ?? "",
    resourceVersion: object.metadata?.resourceVersion,
    object,
    phase: status?.phase,
    target: status?.target,
  };
}

export function keyOf(kind: StoredKind, namespace: string | undefined, name: string): string {
  return registryKey({ kind, namespace, name });
}

/**
 * A run holds a concurrency slot while it runs, Realtime sessions included: a standing stream loads
 * the target and the cluster like any run, and a tenant must not escape the limits by streaming.
 * (A job's own session does not hold back that job's other runs, e.g. a hybrid job's scheduled
 * compare: scheduler/admission.ts.)
 */
export function holdsSlot(e: StoredObject): boolean {
  return e.kind === "SyncRun" && isActivePhase(e.phase);
}

export const REGISTRY_INDEXES: readonly IndexDefinition<StoredObject>[] = [
  countByKindAndPhase<StoredObject>((e) => e.phase),
  ...countRunningRuns<StoredObject>({
    isRunning: holdsSlot,
    targetKeyOf: (e) => e.target,
  }),
];

export function newRegistry(options: { tombstoneTtlMs?: number } = {}): Registry<StoredObject> {
  return new Registry<StoredObject>({ indexes: REGISTRY_INDEXES, ...options });
}

export type SyncRegistry = Registry<StoredObject>;

/** What the job reconciler reads of each of a job's runs (ClusterCache.runsOf). */
export interface RunSummary {
  name: string;
  phase: string | undefined;
  type: string | undefined;
  createdAt: number;
  completionTime?: string | undefined;
  /** The run's validation result, when it validated. */
  validation?: SyncRunStatus["validation"];
  /** A realtime session's breaker, as the runner reports it. */
  breaker?: {
    state?: string;
    slowCallRate?: number;
    failureRate?: number;
    bufferedRecords?: number;
    lastTransitionTime?: string;
  };
}
