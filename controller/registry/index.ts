/**
 * The job registry (docs/architecture.md, The registry): versioned copy-on-write snapshots of every SyncJob, SyncRun
 * and SyncPolicy, with derived counts. The trie and key-space internals stay private to this folder.
 */

export {
  ALL,
  BY_KIND_AND_PHASE,
  countByKindAndPhase,
  countRunningRuns,
  kindPhaseKey,
  RUNNING_BY_NAMESPACE,
  RUNNING_BY_TARGET,
  RUNNING_TOTAL,
  type RunningRunsSpec,
} from "./indexes.ts";
export { type Defined, PersistentMap, type PersistentMapEditor } from "./persistent-map.ts";
export {
  type BatchResult,
  type CommitResult,
  type DeleteOutcome,
  deepFreeze,
  type IndexDefinition,
  indexKeysOf,
  type MultiKeyIndex,
  type ObjectRef,
  Registry,
  type RegistryConflict,
  RegistryConflictError,
  type RegistryDraft,
  type RegistryEntry,
  type RegistryEvent,
  type RegistryOptions,
  type RegistrySnapshot,
  type RegistryView,
  registryKey,
  type SingleKeyIndex,
  type Tombstone,
  type UpsertOutcome,
} from "./registry.ts";
export { compareResourceVersions } from "./resource-version.ts";
