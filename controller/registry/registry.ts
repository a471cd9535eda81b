import { type EditToken, IdSet, type IdSetEditor, newEditToken } from "./id-trie.ts";
import { KeySpace, PersistentMap, type PersistentMapEditor } from "./persistent-map.ts";
import { compareResourceVersions } from "./resource-version.ts";

/**
 * The job registry: every SyncJob, SyncRun and SyncPolicy the controller knows, plus derived counts,
 * as a sequence of immutable versioned snapshots.
 *
 * - `snapshot()` returns the current snapshot: no lock, no await, no copy. A snapshot never changes,
 *   whatever commits land after it was taken, so a reader may hold it across awaits.
 * - Writers edit a draft built on one snapshot and publish it with one reference swap. `commit`
 *   publishes only if the registry is still at the draft's base version (compare-and-swap);
 *   `update` re-reads and retries on conflict; `applyBatch` commits a burst of watch events as one
 *   version.
 * - Entries are deep-frozen when stored (objects that are already frozen are taken as deeply frozen),
 *   so nothing reachable from a snapshot can be mutated; to change an entry, store a new object.
 * - A delete leaves a tombstone for `tombstoneTtlMs`; an upsert that is not newer than the tombstone
 *   is ignored, so a late watch event cannot resurrect a deleted object (see resource-version.ts for
 *   how versions are compared).
 */

/** What the registry needs to know about a stored object. */
export interface RegistryEntry {
  readonly kind: string;
  /** Absent (or empty) for cluster-scoped objects. */
  readonly namespace?: string | undefined;
  readonly name: string;
  readonly resourceVersion?: string | undefined;
}

export interface ObjectRef {
  readonly kind: string;
  readonly namespace?: string | undefined;
  readonly name: string;
}

/**
 * `Kind/namespace/name`, or `Kind/name` for cluster-scoped objects.
 *
 * Joined rather than concatenated: V8 keeps a concatenation as a tree of its pieces (a cons string),
 * and every hash or comparison of such a key walks the tree, here on every registry write and in the
 * key space for as long as the key lives; `join` builds one flat string (about 20% off a write).
 */
export function registryKey(ref: ObjectRef): string {
  return ref.namespace ? [ref.kind, ref.namespace, ref.name].join("/") : [ref.kind, ref.name].join("/");
}

/**
 * A derived index: the registry keeps, per key, the number of entries counted under it, updated in
 * the same commit as the entries. An index gives `keyOf` when an entry counts under at most one key
 * (no array per write), or `keysOf` when it may count under several (distinct keys). Either must be
 * a pure function of the entry: it is called again on the old entry when the entry is replaced.
 */
export type IndexDefinition<E> = SingleKeyIndex<E> | MultiKeyIndex<E>;

export interface SingleKeyIndex<E> {
  readonly name: string;
  /** The one key entry counts under, or undefined when it is not counted. */
  keyOf(entry: E): string | undefined;
  readonly keysOf?: undefined;
}

export interface MultiKeyIndex<E> {
  readonly name: string;
  keysOf(entry: E): readonly string[];
  readonly keyOf?: undefined;
}

const NO_KEYS: readonly string[] = Object.freeze([]);

/** The keys an index counts entry under, whichever form the index has. */
export function indexKeysOf<E>(index: IndexDefinition<E>, entry: E): readonly string[] {
  if (index.keyOf === undefined) return index.keysOf(entry);
  const key = index.keyOf(entry);
  return key === undefined ? NO_KEYS : [key];
}

export interface Tombstone {
  /** The deleted object's last known resourceVersion, if any. */
  readonly resourceVersion: string | undefined;
  readonly deletedAt: number;
  readonly expiresAt: number;
}

/** Read access shared by snapshots and drafts. */
export interface RegistryView<E extends RegistryEntry> {
  /** The version of the snapshot (for a draft: of the snapshot it was built on). */
  readonly version: number;
  /** Number of stored entries. */
  readonly size: number;
  get(key: string): E | undefined;
  has(key: string): boolean;
  /** Entries of one kind, optionally in one namespace. */
  ofKind(kind: string, namespace?: string): Iterable<E>;
  /** Entries of every kind in one namespace. */
  inNamespace(namespace: string): Iterable<E>;
  /** The count of an index key (0 when absent); throws for an unknown index name. */
  count(index: string, key: string): number;
  /** Every non-zero count of an index. */
  counts(index: string): ReadonlyMap<string, number>;
  /** The tombstone of a deleted key, expired or not (expired ones await the sweep). */
  tombstone(key: string): Tombstone | undefined;
  readonly tombstoneCount: number;
  [Symbol.iterator](): Iterator<E>;
}

/** An immutable, versioned view of the registry (frozen: no property can be set or added). */
export interface RegistrySnapshot<E extends RegistryEntry> extends RegistryView<E> {
  /** Keys interned by the registry's key space (a memory gauge; bounded by compaction). */
  readonly internedKeyCount: number;
}

export type UpsertOutcome = "created" | "updated" | "unchanged" | "stale";
export type DeleteOutcome = "deleted" | "absent" | "stale";

/**
 * The writable next version. Reads see the draft's own writes. A draft lives for one commit
 * attempt: any use after it was committed or discarded throws.
 */
export interface RegistryDraft<E extends RegistryEntry> extends RegistryView<E> {
  readonly base: RegistrySnapshot<E>;
  /**
   * Stores entry under its key (deep-freezing it). Returns "stale" and changes nothing when the key
   * holds a newer resourceVersion, or has an unexpired tombstone the entry is not newer than.
   */
  upsert(entry: E): UpsertOutcome;
  /**
   * Removes an entry and records a tombstone. Given the deleted object, its resourceVersion goes into
   * the tombstone, and a delete older than the stored entry is "stale"; given a key, the stored
   * entry's resourceVersion is used. A delete of an absent key still records the tombstone.
   */
  delete(target: string | E): DeleteOutcome;
}

/** A Kubernetes watch event (DELETED carries the object's final state). */
export interface RegistryEvent<E extends RegistryEntry> {
  readonly type: "ADDED" | "MODIFIED" | "DELETED";
  readonly object: E;
}

export interface RegistryConflict {
  readonly baseVersion: number;
  readonly currentVersion: number;
}

export type CommitResult<E extends RegistryEntry, R> =
  | { readonly ok: true; readonly snapshot: RegistrySnapshot<E>; readonly value: R }
  | { readonly ok: false; readonly conflict: RegistryConflict };

export interface BatchResult<E extends RegistryEntry> {
  readonly snapshot: RegistrySnapshot<E>;
  readonly applied: number;
  readonly stale: number;
}

export class RegistryConflictError extends Error {
  readonly attempts: number;
  constructor(attempts: number, conflict: RegistryConflict) {
    super(
      `registry update gave up after ${attempts} attempts: last draft was built on version ` +
        `${conflict.baseVersion}, registry was at ${conflict.currentVersion}`,
    );
    this.name = "RegistryConflictError";
    this.attempts = attempts;
  }
}

export interface RegistryOptions<E extends RegistryEntry> {
  readonly indexes?: readonly IndexDefinition<E>[];
  /** How long a tombstone keeps late events out. Default 5 minutes. */
  readonly tombstoneTtlMs?: number;
  /** Clock for tombstones, in milliseconds. Default Date.now. */
  readonly now?: () => number;
  /** Attempts `update` makes before throwing RegistryConflictError. Default 10. */
  readonly maxUpdateAttempts?: number;
}

const DEFAULT_TOMBSTONE_TTL_MS = 5 * 60_000;
const DEFAULT_MAX_UPDATE_ATTEMPTS = 10;
/** The key space is rebuilt when dead ids exceed live ones by this much (see PersistentMap). */
const COMPACTION_SLACK = 1024;
/** The keys one index counts an entry under: one key, several, or none (undefined). */
type IndexKeys = string | readonly string[] | undefined;

interface Config<E extends RegistryEntry> {
  readonly indexes: readonly IndexDefinition<E>[];
  readonly indexPositions: ReadonlyMap<string, number>;
  readonly tombstoneTtlMs: number;
  readonly now: () => number;
}

/** The persistent parts of one version; every field is immutable and shared between versions. */
interface State<E extends RegistryEntry> {
  readonly entries: PersistentMap<E>;
  /** Shares the key space of `entries`. */
  readonly tombstones: PersistentMap<Tombstone>;
  /** Group key (see groupKeysOf) -> ids of the entries in it. */
  readonly groups: PersistentMap<IdSet>;
  /** One count map per index, in the order of Config.indexes. */
  readonly counts: readonly PersistentMap<number>[];
}

/** Group keys: `Kind`, `Kind/namespace` and `/namespace` (kinds, namespaces and names hold no '/'). */
function groupKeysOf(entry: RegistryEntry): readonly string[] {
  return entry.namespace
    ? [entry.kind, `${entry.kind}/${entry.namespace}`, `/${entry.namespace}`]
    : [entry.kind];
}

function isBadNamePart(part: unknown): boolean {
  return typeof part !== "string" || part === "" || part.includes("/");
}

function validateIdentity(entry: RegistryEntry): void {
  const { kind, namespace, name } = entry;
  if (
    isBadNamePart(kind) ||
    isBadNamePart(name) ||
    (namespace !== undefined && namespace !== "" && isBadNamePart(namespace))
  ) {
    throw new TypeError(
      `registry entries need a kind and name (and optional namespace) without '/': ${JSON.stringify([entry.kind, entry.namespace, entry.name])}`,
    );
  }
}

/**
 * Freezes an object and everything reachable from it; an already frozen object is taken as deeply
 * frozen, so an updated entry that shares frozen parts with the old one costs only its new parts.
 * Typed arrays cannot be frozen and are left as they are.
 */
export function deepFreeze(value: object): void {
  Object.freeze(value);
  for (const key in value) {
    const child: unknown = (value as Record<string, unknown>)[key];
    if (
      typeof child === "object" &&
      child !== null &&
      !Object.isFrozen(child) &&
      Object.hasOwn(value, key) &&
      !ArrayBuffer.isView(child)
    ) {
      deepFreeze(child);
    }
  }
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function isExpired(tombstone: Tombstone, now: number): boolean {
  return now >= tombstone.expiresAt;
}

function positionOf(config: Config<RegistryEntry>, index: string): number {
  const position = config.indexPositions.get(index);
  if (position === undefined) throw new Error(`unknown registry index ${JSON.stringify(index)}`);
  return position;
}

/**
 * The entries of the newest version in a plain array indexed by key id, so that a read of the newest
 * snapshot (nearly every read) costs one native Map lookup and one array load instead of a walk down
 * the trie (5-30% more reads per second at 100k entries in test/bench/registry.ts, where the trie's
 * leaves miss the CPU cache). Publishing a version writes the ids its commit changed into the array
 * and moves `version` on; from then on every older snapshot reads its own trie, which the array never
 * replaces (unlike Baker's trick for persistent arrays, no version is ever a diff against another).
 * Private to the registry and never handed to a reader.
 */
class NewestEntries<E extends RegistryEntry> {
  version: number;
  readonly values: (E | undefined)[] = [];

  constructor(version: number) {
    this.version = version;
  }

  /** Makes the array hold exactly the entries of `entries`, the state of `version`. */
  reset(version: number, entries: PersistentMap<E>): void {
    const values = this.values;
    values.length = 0;
    const size = entries.keySpace.size;
    for (let id = 0; id < size; id++) values.push(undefined);
    entries.forEachById((entry, id) => {
      values[id] = entry;
    });
    this.version = version;
  }

  /** Moves the array from the version before `version` to `version`, which changed only `ids`. */
  advance(version: number, entries: PersistentMap<E>, ids: readonly number[]): void {
    const values = this.values;
    // Grown one slot at a time: a write far past the end would turn the array into a dictionary.
    for (let id = values.length, size = entries.keySpace.size; id < size; id++) values.push(undefined);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      values[id] = entries.getById(id);
    }
    this.version = version;
  }
}

class Snapshot<E extends RegistryEntry> implements RegistrySnapshot<E> {
  readonly version: number;
  readonly #state: State<E>;
  readonly #config: Config<E>;
  readonly #newest: NewestEntries<E>;
  /** The key space of the entries, held directly: one step less on every read. */
  readonly #keys: PersistentMap<E>["keySpace"];

  constructor(version: number, state: State<E>, config: Config<E>, newest: NewestEntries<E>) {
    this.version = version;
    this.#state = state;
    this.#config = config;
    this.#newest = newest;
    this.#keys = state.entries.keySpace;
    Object.freeze(this);
  }

  /** Internal: the state a draft starts from. Not part of RegistrySnapshot. */
  static stateOf<E extends RegistryEntry>(snapshot: Snapshot<E>): State<E> {
    return snapshot.#state;
  }

  get size(): number {
    return this.#state.entries.size;
  }

  get tombstoneCount(): number {
    return this.#state.tombstones.size;
  }

  get internedKeyCount(): number {
    return this.#state.entries.keySpace.size;
  }

  get(key: string): E | undefined {
    const id = this.#keys.idOf(key);
    if (id === undefined) return undefined;
    const newest = this.#newest;
    return newest.version === this.version ? newest.values[id] : this.#state.entries.getById(id);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  ofKind(kind: string, namespace?: string): Iterable<E> {
    return this.#group(namespace ? `${kind}/${namespace}` : kind);
  }

  inNamespace(namespace: string): Iterable<E> {
    return this.#group(`/${namespace}`);
  }

  *#group(groupKey: string): Generator<E> {
    const ids = this.#state.groups.get(groupKey);
    if (ids === undefined) return;
    // By the trie: the generator may run on after a newer version has taken the array.
    const entries = this.#state.entries;
    for (const id of ids) yield entries.getById(id)!;
  }

  count(index: string, key: string): number {
    return this.#state.counts[positionOf(this.#config, index)]!.get(key) ?? 0;
  }

  counts(index: string): ReadonlyMap<string, number> {
    return new Map(this.#state.counts[positionOf(this.#config, index)]!);
  }

  tombstone(key: string): Tombstone | undefined {
    return this.#state.tombstones.get(key);
  }

  [Symbol.iterator](): Iterator<E> {
    return this.#state.entries.values();
  }
}

// Snapshots are handed to every reader: not even the shared prototype may be patched.
Object.freeze(Snapshot.prototype);

class Draft<E extends RegistryEntry> implements RegistryDraft<E> {
  readonly base: Snapshot<E>;
  readonly #config: Config<E>;
  readonly #token: EditToken = newEditToken();
  readonly #entries: PersistentMapEditor<E>;
  #tombstones: PersistentMapEditor<Tombstone> | undefined;
  #groups: PersistentMapEditor<IdSet> | undefined;
  readonly #groupEditors = new Map<string, IdSetEditor>();
  readonly #counts: (PersistentMapEditor<number> | undefined)[];
  /** Ids of the entries this draft stored or removed (with repeats), for NewestEntries.advance. */
  readonly #changedIds: number[] = [];
  /** Scratch slots of #planReindex, one per index, reused by every write of the draft. */
  readonly #keysBefore: IndexKeys[];
  readonly #keysAfter: IndexKeys[];
  #changed = false;
  #closed = false;

  constructor(base: Snapshot<E>, config: Config<E>) {
    this.base = base;
    this.#config = config;
    this.#entries = Snapshot.stateOf(base).entries.edit(this.#token);
    this.#counts = config.indexes.map(() => undefined);
    this.#keysBefore = config.indexes.map(() => undefined);
    this.#keysAfter = config.indexes.map(() => undefined);
  }

  get version(): number {
    return this.base.version;
  }

  get size(): number {
    this.#open();
    return this.#entries.size;
  }

  get tombstoneCount(): number {
    this.#open();
    return this.#tombstones?.size ?? Snapshot.stateOf(this.base).tombstones.size;
  }

  get changed(): boolean {
    return this.#changed;
  }

  get changedIds(): readonly number[] {
    return this.#changedIds;
  }

  get(key: string): E | undefined {
    this.#open();
    return this.#entries.get(key);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  ofKind(kind: string, namespace?: string): Iterable<E> {
    return this.#group(namespace ? `${kind}/${namespace}` : kind);
  }

  inNamespace(namespace: string): Iterable<E> {
    return this.#group(`/${namespace}`);
  }

  /** Materialized, so later writes to the draft cannot disturb an iteration in progress. */
  #group(groupKey: string): E[] {
    this.#open();
    const editor = this.#groupEditors.get(groupKey);
    const ids = editor ? editor.ids() : [...(Snapshot.stateOf(this.base).groups.get(groupKey) ?? [])];
    return ids.map((id) => this.#entries.getById(id)!);
  }

  count(index: string, key: string): number {
    this.#open();
    const position = positionOf(this.#config, index);
    return (this.#counts[position] ?? Snapshot.stateOf(this.base).counts[position]!).get(key) ?? 0;
  }

  counts(index: string): ReadonlyMap<string, number> {
    this.#open();
    const position = positionOf(this.#config, index);
    const out = new Map<string, number>();
    (this.#counts[position] ?? Snapshot.stateOf(this.base).counts[position]!).forEach((count, key) => {
      out.set(key, count);
    });
    return out;
  }

  tombstone(key: string): Tombstone | undefined {
    this.#open();
    return (this.#tombstones ?? Snapshot.stateOf(this.base).tombstones).get(key);
  }

  [Symbol.iterator](): Iterator<E> {
    this.#open();
    const out: E[] = [];
    this.#entries.forEach((entry) => {
      out.push(entry);
    });
    return out[Symbol.iterator]();
  }

  upsert(entry: E): UpsertOutcome {
    this.#open();
    // Validated on every write, before its key is interned: checking the new entry's own strings
    // costs less than comparing them with the stored entry's, which are seldom in the CPU cache.
    validateIdentity(entry);
    const id = this.#entries.intern(registryKey(entry));
    const old = this.#entries.getById(id);
    if (old === entry) return "unchanged";
    if (old !== undefined) {
      if (compareResourceVersions(entry.resourceVersion, old.resourceVersion) === -1) return "stale";
    } else {
      const tombstone = (this.#tombstones ?? Snapshot.stateOf(this.base).tombstones).getById(id);
      if (tombstone !== undefined) {
        const fresh =
          isExpired(tombstone, this.#config.now()) ||
          compareResourceVersions(entry.resourceVersion, tombstone.resourceVersion) === 1;
        if (!fresh) return "stale";
        this.#tombstonesEditor().deleteById(id);
      }
    }
    const reindex = this.#planReindex(old, entry);
    if (!Object.isFrozen(entry)) deepFreeze(entry);
    this.#entries.setById(id, entry);
    this.#changedIds.push(id);
    if (old === undefined) this.#regroup(id, entry, true);
    if (reindex) this.#applyReindex();
    this.#changed = true;
    return old === undefined ? "created" : "updated";
  }

  delete(target: string | E): DeleteOutcome {
    this.#open();
    const key = typeof target === "string" ? target : registryKey(target);
    const id = this.#entries.intern(key);
    const old = this.#entries.getById(id);
    const deletedVersion = typeof target === "string" ? old?.resourceVersion : target.resourceVersion;
    if (old !== undefined && compareResourceVersions(deletedVersion, old.resourceVersion) === -1)
      return "stale";
    const reindex = old !== undefined && this.#planReindex(old, undefined);
    const tombstones = this.#tombstonesEditor();
    const previous = tombstones.getById(id);
    const now = this.#config.now();
    // A late duplicate delete must not lower the bar set by a newer (or incomparable) tombstone.
    const keepPrevious =
      previous !== undefined &&
      !isExpired(previous, now) &&
      compareResourceVersions(deletedVersion, previous.resourceVersion) !== 1;
    const resourceVersion = keepPrevious ? previous.resourceVersion : deletedVersion;
    tombstones.setById(
      id,
      Object.freeze({ resourceVersion, deletedAt: now, expiresAt: now + this.#config.tombstoneTtlMs }),
    );
    this.#changed = true;
    if (old === undefined) return "absent";
    this.#entries.deleteById(id);
    this.#changedIds.push(id);
    this.#regroup(id, old, false);
    if (reindex) this.#applyReindex();
    return "deleted";
  }

  /** Drops tombstones that expired by `now`; returns how many. */
  purgeExpiredTombstones(now: number): number {
    this.#open();
    const expired: string[] = [];
    Snapshot.stateOf(this.base).tombstones.forEach((tombstone, key) => {
      if (isExpired(tombstone, now)) expired.push(key);
    });
    if (expired.length === 0) return 0;
    const tombstones = this.#tombstonesEditor();
    for (const key of expired) tombstones.delete(key);
    this.#changed = true;
    return expired.length;
  }

  /** Ends the draft and returns the state of the next version. */
  freeze(): State<E> {
    this.#open();
    this.#closed = true;
    const base = Snapshot.stateOf(this.base);
    let groups = base.groups;
    if (this.#groups !== undefined) {
      const editor = this.#groups;
      for (const [key, members] of this.#groupEditors) {
        const set = members.freeze();
        if (set.size === 0) editor.delete(key);
        else editor.set(key, set);
      }
      groups = editor.freeze();
    }
    const state: State<E> = {
      entries: this.#entries.freeze(),
      tombstones: this.#tombstones?.freeze() ?? base.tombstones,
      groups,
      counts: this.#counts.map((editor, i) => editor?.freeze() ?? base.counts[i]!),
    };
    return state;
  }

  discard(): void {
    this.#closed = true;
  }

  #open(): void {
    if (this.#closed) throw new Error("registry draft used after its commit attempt ended");
  }

  #tombstonesEditor(): PersistentMapEditor<Tombstone> {
    this.#tombstones ??= Snapshot.stateOf(this.base).tombstones.edit(this.#token);
    return this.#tombstones;
  }

  #regroup(id: number, entry: E, add: boolean): void {
    this.#groups ??= Snapshot.stateOf(this.base).groups.edit(this.#token);
    for (const groupKey of groupKeysOf(entry)) {
      let members = this.#groupEditors.get(groupKey);
      if (members === undefined) {
        members = (this.#groups.get(groupKey) ?? IdSet.empty()).edit(this.#token);
        this.#groupEditors.set(groupKey, members);
      }
      if (add) members.add(id);
      else members.remove(id);
    }
  }

  /**
   * Computes, into the draft's scratch slots, the index keys a write removes and adds, before the
   * draft changes at all: a key function that throws leaves the draft as it was, even if the caller
   * catches the error and goes on. Returns whether any index changes.
   */
  #planReindex(old: E | undefined, next: E | undefined): boolean {
    const indexes = this.#config.indexes;
    const before = this.#keysBefore;
    const after = this.#keysAfter;
    let changed = false;
    for (let i = 0; i < indexes.length; i++) {
      const index = indexes[i]!;
      if (index.keyOf !== undefined) {
        const b = old === undefined ? undefined : index.keyOf(old);
        const a = next === undefined ? undefined : index.keyOf(next);
        before[i] = b;
        after[i] = a;
        if (a !== b) changed = true;
      } else {
        const b = old === undefined ? NO_KEYS : index.keysOf(old);
        const a = next === undefined ? NO_KEYS : index.keysOf(next);
        before[i] = b;
        after[i] = a;
        if (!sameKeys(b, a)) changed = true;
      }
    }
    return changed;
  }

  /** Applies what the last #planReindex computed. */
  #applyReindex(): void {
    const before = this.#keysBefore;
    const after = this.#keysAfter;
    for (let i = 0; i < before.length; i++) {
      const b = before[i];
      const a = after[i];
      if (a === b) continue;
      if (typeof a === "object" && typeof b === "object" && sameKeys(b, a)) continue;
      const counts = this.#countsEditor(i);
      if (typeof b === "string") countDown(counts, b);
      else if (b !== undefined) for (const key of b) countDown(counts, key);
      if (typeof a === "string") countUp(counts, a);
      else if (a !== undefined) for (const key of a) countUp(counts, key);
    }
  }

  #countsEditor(position: number): PersistentMapEditor<number> {
    let counts = this.#counts[position];
    if (counts === undefined) {
      counts = Snapshot.stateOf(this.base).counts[position]!.edit(this.#token);
      this.#counts[position] = counts;
    }
    return counts;
  }
}

function countDown(counts: PersistentMapEditor<number>, key: string): void {
  const id = counts.intern(key);
  const count = (counts.getById(id) ?? 0) - 1;
  if (count === 0) counts.deleteById(id);
  else counts.setById(id, count);
}

function countUp(counts: PersistentMapEditor<number>, key: string): void {
  const id = counts.intern(key);
  counts.setById(id, (counts.getById(id) ?? 0) + 1);
}

/** Rebuilds a state whose key space is mostly dead ids into a fresh key space (same contents). */
function compact<E extends RegistryEntry>(state: State<E>): State<E> {
  const live = state.entries.size + state.tombstones.size;
  if (state.entries.keySpace.size <= 2 * live + COMPACTION_SLACK) return state;
  const keys = new KeySpace();
  const token = newEditToken();
  const entries = PersistentMap.empty<E>(keys).edit(token);
  const groupMembers = new Map<string, IdSetEditor>();
  state.entries.forEach((entry, key) => {
    const id = keys.intern(key);
    entries.setById(id, entry);
    for (const groupKey of groupKeysOf(entry)) {
      let members = groupMembers.get(groupKey);
      if (members === undefined) {
        members = IdSet.empty().edit(token);
        groupMembers.set(groupKey, members);
      }
      members.add(id);
    }
  });
  const tombstones = PersistentMap.empty<Tombstone>(keys).edit(token);
  state.tombstones.forEach((tombstone, key) => {
    tombstones.set(key, tombstone);
  });
  const groups = PersistentMap.empty<IdSet>().edit(token);
  for (const [groupKey, members] of groupMembers) groups.set(groupKey, members.freeze());
  return {
    entries: entries.freeze(),
    tombstones: tombstones.freeze(),
    groups: groups.freeze(),
    counts: state.counts,
  };
}

export class Registry<E extends RegistryEntry> {
  readonly #config: Config<E>;
  readonly #maxUpdateAttempts: number;
  readonly #newest = new NewestEntries<E>(0);
  #current: Snapshot<E>;

  constructor(options: RegistryOptions<E> = {}) {
    const indexes = options.indexes ?? [];
    const indexPositions = new Map<string, number>();
    indexes.forEach((index, i) => {
      if (indexPositions.has(index.name))
        throw new Error(`duplicate registry index ${JSON.stringify(index.name)}`);
      indexPositions.set(index.name, i);
    });
    this.#config = {
      indexes: [...indexes],
      indexPositions,
      tombstoneTtlMs: options.tombstoneTtlMs ?? DEFAULT_TOMBSTONE_TTL_MS,
      now: options.now ?? Date.now,
    };
    this.#maxUpdateAttempts = options.maxUpdateAttempts ?? DEFAULT_MAX_UPDATE_ATTEMPTS;
    const keys = new KeySpace();
    this.#current = new Snapshot<E>(
      0,
      {
        entries: PersistentMap.empty<E>(keys),
        tombstones: PersistentMap.empty<Tombstone>(keys),
        groups: PersistentMap.empty<IdSet>(),
        counts: indexes.map(() => PersistentMap.empty<number>()),
      },
      this.#config,
      this.#newest,
    );
  }

  get version(): number {
    return this.#current.version;
  }

  /** The current snapshot, in O(1). */
  snapshot(): RegistrySnapshot<E> {
    return this.#current;
  }

  /**
   * Runs `mutate` on a draft of the current snapshot and publishes it, if the registry is still at
   * `baseVersion`; otherwise returns the conflict without calling `mutate`. `mutate` must be
   * synchronous (use `update` to await inside). A draft with no changes publishes no new version.
   * If `mutate` throws, nothing is published and the error propagates.
   */
  commit<R>(baseVersion: number, mutate: (draft: RegistryDraft<E>) => R): CommitResult<E, R> {
    const base = this.#current;
    if (base.version !== baseVersion) {
      return { ok: false, conflict: { baseVersion, currentVersion: base.version } };
    }
    const draft = new Draft<E>(base, this.#config);
    let value: R;
    try {
      value = mutate(draft);
    } catch (error) {
      draft.discard();
      throw error;
    }
    if (typeof (value as { then?: unknown } | null)?.then === "function") {
      draft.discard();
      // The caller gets the TypeError; the abandoned promise's own failure is not reported twice.
      Promise.resolve(value).catch(() => {});
      throw new TypeError("Registry.commit takes a synchronous function; use update() to await");
    }
    return { ok: true, snapshot: this.#publish(draft), value };
  }

  /**
   * Optimistic update: builds a draft on the current snapshot, awaits `mutate`, and publishes if no
   * other commit landed meanwhile; otherwise discards the draft and runs `mutate` again on a fresh
   * one. `mutate` may therefore run several times and must keep its side effects inside the draft.
   * Throws RegistryConflictError after `maxAttempts` conflicts.
   */
  async update<R>(
    mutate: (draft: RegistryDraft<E>) => R | Promise<R>,
    options: { readonly maxAttempts?: number } = {},
  ): Promise<{ readonly snapshot: RegistrySnapshot<E>; readonly value: R; readonly attempts: number }> {
    const maxAttempts = options.maxAttempts ?? this.#maxUpdateAttempts;
    let conflict: RegistryConflict = {
      baseVersion: this.#current.version,
      currentVersion: this.#current.version,
    };
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const base = this.#current;
      const draft = new Draft<E>(base, this.#config);
      let value: R;
      try {
        value = await mutate(draft);
      } catch (error) {
        draft.discard();
        throw error;
      }
      if (this.#current === base) return { snapshot: this.#publish(draft), value, attempts: attempt };
      draft.discard();
      conflict = { baseVersion: base.version, currentVersion: this.#current.version };
    }
    throw new RegistryConflictError(maxAttempts, conflict);
  }

  /**
   * Applies a burst of watch events as one version. Events are applied in order; stale ones (see
   * RegistryDraft.upsert/delete) are counted and skipped. Never conflicts: the events are the truth.
   */
  applyBatch(events: Iterable<RegistryEvent<E>>): BatchResult<E> {
    const draft = new Draft<E>(this.#current, this.#config);
    let applied = 0;
    let stale = 0;
    try {
      for (const event of events) {
        const outcome = event.type === "DELETED" ? draft.delete(event.object) : draft.upsert(event.object);
        if (outcome === "stale") stale++;
        else applied++;
      }
    } catch (error) {
      draft.discard();
      throw error;
    }
    return { snapshot: this.#publish(draft), applied, stale };
  }

  /** Reclaims tombstones expired by `now` in one new version; returns how many were dropped. */
  sweepTombstones(now: number = this.#config.now()): number {
    const draft = new Draft<E>(this.#current, this.#config);
    const dropped = draft.purgeExpiredTombstones(now);
    this.#publish(draft);
    return dropped;
  }

  /** Sweeps on a timer that does not keep the process alive; returns a function that stops it. */
  startTombstoneSweep(intervalMs: number = this.#config.tombstoneTtlMs): () => void {
    const timer = setInterval(() => this.sweepTombstones(), intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  #publish(draft: Draft<E>): Snapshot<E> {
    if (!draft.changed) {
      draft.discard();
      return draft.base;
    }
    const base = Snapshot.stateOf(draft.base);
    const state = compact(draft.freeze());
    const version = draft.base.version + 1;
    if (state.entries.keySpace === base.entries.keySpace)
      this.#newest.advance(version, state.entries, draft.changedIds);
    else this.#newest.reset(version, state.entries);
    const next = new Snapshot<E>(version, state, this.#config, this.#newest);
    this.#current = next;
    return next;
  }
}
