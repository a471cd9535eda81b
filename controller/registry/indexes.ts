import type { IndexDefinition, RegistryEntry } from "./registry.ts";

/** Index definitions the controller keeps in the registry, built from functions over its entry type. */

export const BY_KIND_AND_PHASE = "by-kind-and-phase";
export const RUNNING_BY_NAMESPACE = "running-by-namespace";
export const RUNNING_BY_TARGET = "running-by-target";
export const RUNNING_TOTAL = "running-total";
/** The single key of the RUNNING_TOTAL index. */
export const ALL = "*";

/**
 * The few kind/phase keys are cached, so an index update reuses one string (whose hash the engine
 * has already computed) instead of building and hashing a new one on every write.
 */
const kindPhaseKeys = new Map<string, Map<string, string>>();
const MAX_CACHED_KIND_PHASE_KEYS = 1024;
let cachedKindPhaseKeys = 0;

/** Key of the BY_KIND_AND_PHASE index: `Kind/Phase`, with an entry that has no phase counted as `Kind/`. */
export function kindPhaseKey(kind: string, phase: string | undefined): string {
  const phaseName = phase ?? "";
  let byPhase = kindPhaseKeys.get(kind);
  let key = byPhase?.get(phaseName);
  if (key === undefined) {
    key = `${kind}/${phaseName}`;
    if (cachedKindPhaseKeys < MAX_CACHED_KIND_PHASE_KEYS) {
      if (byPhase === undefined) {
        byPhase = new Map();
        kindPhaseKeys.set(kind, byPhase);
      }
      byPhase.set(phaseName, key);
      cachedKindPhaseKeys++;
    }
  }
  return key;
}

/** Counts entries by kind and phase (for the runs-by-phase metric and the console). */
export function countByKindAndPhase<E extends RegistryEntry>(
  phaseOf: (entry: E) => string | undefined,
): IndexDefinition<E> {
  return { name: BY_KIND_AND_PHASE, keyOf: (entry) => kindPhaseKey(entry.kind, phaseOf(entry)) };
}

export interface RunningRunsSpec<E> {
  /** True for an entry that holds a concurrency slot (a SyncRun admitted and not finished). */
  isRunning(entry: E): boolean;
  /** The target the run writes to (e.g. connection + table), or undefined when it has none. */
  targetKeyOf(entry: E): string | undefined;
}

/**
 * Counts running runs per namespace, per target and in total: the numbers the admission scheduler
 * compares against the concurrency limits.
 */
export function countRunningRuns<E extends RegistryEntry>(spec: RunningRunsSpec<E>): IndexDefinition<E>[] {
  return [
    {
      name: RUNNING_BY_NAMESPACE,
      keyOf: (entry) => (spec.isRunning(entry) ? (entry.namespace ?? "") : undefined),
    },
    {
      name: RUNNING_BY_TARGET,
      keyOf: (entry) => (spec.isRunning(entry) ? spec.targetKeyOf(entry) : undefined),
    },
    { name: RUNNING_TOTAL, keyOf: (entry) => (spec.isRunning(entry) ? ALL : undefined) },
  ];
}
