import { Map as ImmutableMap } from "immutable";
import {
  compareResourceVersions,
  countByKindAndPhase,
  countRunningRuns,
  deepFreeze,
  type IndexDefinition,
  indexKeysOf,
  Registry,
  type RegistryEntry,
  type RegistryEvent,
  registryKey,
} from "../../controller/registry/index.ts";
import {
  type Contender,
  integerOption,
  opsPerSecond,
  retainedMegabytes,
  seededRandom,
  shuffled,
  sinkValue,
  table,
} from "./measure.ts";

/**
 * The job registry against the obvious alternatives (docs/architecture.md, The registry), at 1k, 10k and 100k entries:
 *
 * - registry: controller/registry with the controller's indexes (runs by kind+phase, running runs per
 *   namespace, per target and in total), deep-freezing each stored entry, checking resourceVersions;
 * - registry (no indexes): the same without derived indexes;
 * - Map + async mutex: a commit holds the lock; a consistent snapshot holds it while copying the Map
 *   (a lone Map.get needs no lock in single-threaded JS, so its reads are plain Map.get);
 * - immutable.js Map: `set` per write, `withMutations` for a batch, a snapshot is a reference; it does
 *   none of the registry's per-write work;
 * - immutable.js + registry work, with and without the indexes: the same, plus what the registry does
 *   on each update (check the identity, drop an older resourceVersion, deep-freeze the entry, keep the
 *   same index counts in immutable.js Maps), so that each registry row has an immutable.js row doing
 *   the same work, and the cost of the data structure shows apart from the cost of that work;
 * - full copy: every commit copies the Map, then writes; a snapshot is a reference.
 *
 * Writes update existing keys chosen at random with a new object (newer resourceVersion, phase cycling
 * through Pending/Running/Succeeded), built and keyed the same way for every contender. Reads look up
 * every key in a shuffled order, using key strings distinct from the stored ones, and count hits
 * (no value is dereferenced, which would hide lookup cost behind the same cache miss for everyone).
 * The batch target compares the registry with immutable.js doing the same work; the comparison with
 * the bare immutable.js Map is printed too.
 */

interface BenchEntry extends RegistryEntry {
  readonly kind: "SyncJob" | "SyncRun";
  readonly namespace: string;
  readonly name: string;
  readonly resourceVersion: string;
  readonly spec: { readonly target: string };
  readonly status: { readonly phase: string };
}

const SIZES = [1_000, 10_000, 100_000] as const;
/** `--sizes 1000,5000` measures other sizes (the suite's small correctness run); the targets need the defaults. */
const sizesOption = (): readonly number[] => {
  const at = process.argv.findIndex((a) => a === "--sizes" || a.startsWith("--sizes="));
  if (at < 0) return SIZES;
  const text = process.argv[at]!.includes("=") ? process.argv[at]!.slice(8) : (process.argv[at + 1] ?? "");
  const sizes = text.split(",").map(Number);
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error(`--sizes needs whole numbers separated by commas, not ${text}`);
  return sizes;
};
const BATCH_SIZE = 100;
const PHASES = ["Pending", "Running", "Succeeded"] as const;

function entryAt(i: number, resourceVersion: number, phase: string): BenchEntry {
  return {
    kind: i % 10 === 0 ? "SyncJob" : "SyncRun",
    namespace: `team-${i % 64}`,
    name: `orders-to-warehouse-${i}`,
    resourceVersion: String(resourceVersion),
    spec: { target: `warehouse-db/analytics.orders_${i % 256}` },
    status: { phase },
  };
}

const controllerIndexes: IndexDefinition<BenchEntry>[] = [
  countByKindAndPhase<BenchEntry>((entry) => entry.status.phase),
  ...countRunningRuns<BenchEntry>({
    isRunning: (entry) => entry.kind === "SyncRun" && entry.status.phase === "Running",
    targetKeyOf: (entry) => entry.spec.target,
  }),
];

/** Produces the write stream: random existing keys, ever newer resourceVersions. */
class Workload {
  readonly #size: number;
  readonly #random = seededRandom(7);
  #resourceVersion = 1;

  constructor(size: number) {
    this.#size = size;
  }

  next(): BenchEntry {
    const rv = ++this.#resourceVersion;
    return entryAt(Math.floor(this.#random() * this.#size), rv, PHASES[rv % 3]!);
  }

  batch(): RegistryEvent<BenchEntry>[] {
    const events: RegistryEvent<BenchEntry>[] = new Array(BATCH_SIZE);
    for (let i = 0; i < BATCH_SIZE; i++) events[i] = { type: "MODIFIED", object: this.next() };
    return events;
  }
}

interface Contestant {
  readonly name: string;
  /**
   * Why the heap figure is not shown, when it is not. (Both immutable.js contestants hold the same
   * key strings and V8 shares the copies it makes of them, so the second one built would look about
   * 6 MB lighter at 100k than it is.)
   */
  readonly memoryNotMeasured?: string;
  build(entries: readonly BenchEntry[]): void;
  /** n lookups, continuing through the shuffled keys; returns the number found. */
  reads(keys: readonly string[], n: number): number;
  singleCommits?(work: Workload, n: number): number | Promise<number>;
  batchCommits?(work: Workload, n: number): number | Promise<number>;
  snapshots?(n: number): number | Promise<number>;
  /** After the timed work: what is wrong with the contestant's state, if anything. */
  verify?(size: number): string | undefined;
}

/** The obvious lock: a promise chain; `run` waits for every earlier holder. */
class AsyncMutex {
  #tail: Promise<void> = Promise.resolve();

  async run<T>(critical: () => T): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    try {
      return critical();
    } finally {
      release();
    }
  }
}

function registryContestant(name: string, indexes: IndexDefinition<BenchEntry>[]): Contestant {
  const registry = new Registry<BenchEntry>({ indexes });
  let cursor = 0;
  return {
    name,
    build(entries) {
      registry.applyBatch(entries.map((object) => ({ type: "ADDED", object })));
    },
    reads(keys, n) {
      const snapshot = registry.snapshot();
      let found = 0;
      let j = cursor;
      for (let i = 0; i < n; i++) {
        if (snapshot.get(keys[j]!) !== undefined) found++;
        if (++j === keys.length) j = 0;
      }
      cursor = j;
      return found;
    },
    singleCommits(work, n) {
      let committed = 0;
      for (let i = 0; i < n; i++) {
        const entry = work.next();
        if (registry.commit(registry.version, (draft) => draft.upsert(entry)).ok) committed++;
      }
      return committed;
    },
    batchCommits(work, n) {
      let applied = 0;
      for (let i = 0; i < n; i++) applied += registry.applyBatch(work.batch()).applied;
      return applied;
    },
    snapshots(n) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += registry.snapshot().version;
      return sum;
    },
    // Every update lands on an existing key: the size holds, and each derived index's counts equal a
    // recount over the entries the snapshot holds after all the timed commits.
    verify(size) {
      const snapshot = registry.snapshot();
      if (snapshot.size !== size) return `${snapshot.size} entries after the writes, not ${size}`;
      for (const index of indexes) {
        const recount = new Map<string, number>();
        for (const kind of ["SyncJob", "SyncRun"])
          for (const entry of snapshot.ofKind(kind))
            for (const key of indexKeysOf(index, entry)) recount.set(key, (recount.get(key) ?? 0) + 1);
        const counted = new Map([...snapshot.counts(index.name)].filter(([, n]) => n !== 0));
        if (JSON.stringify([...counted].sort()) !== JSON.stringify([...recount].sort()))
          return `index ${index.name} disagrees with a recount of the entries`;
      }
      return undefined;
    },
  };
}

function plainMapContestant(): Contestant {
  const map = new Map<string, BenchEntry>();
  let cursor = 0;
  return {
    name: "Map (reads baseline)",
    build(entries) {
      for (const entry of entries) map.set(registryKey(entry), entry);
    },
    reads(keys, n) {
      let found = 0;
      let j = cursor;
      for (let i = 0; i < n; i++) {
        if (map.get(keys[j]!) !== undefined) found++;
        if (++j === keys.length) j = 0;
      }
      cursor = j;
      return found;
    },
  };
}

function mutexMapContestant(): Contestant {
  const map = new Map<string, BenchEntry>();
  const mutex = new AsyncMutex();
  let cursor = 0;
  return {
    name: "Map + async mutex",
    build(entries) {
      for (const entry of entries) map.set(registryKey(entry), entry);
    },
    reads(keys, n) {
      let found = 0;
      let j = cursor;
      for (let i = 0; i < n; i++) {
        if (map.get(keys[j]!) !== undefined) found++;
        if (++j === keys.length) j = 0;
      }
      cursor = j;
      return found;
    },
    async singleCommits(work, n) {
      let committed = 0;
      for (let i = 0; i < n; i++) {
        const entry = work.next();
        committed += await mutex.run(() => {
          map.set(registryKey(entry), entry);
          return 1;
        });
      }
      return committed;
    },
    async batchCommits(work, n) {
      let applied = 0;
      for (let i = 0; i < n; i++) {
        const events = work.batch();
        applied += await mutex.run(() => {
          for (const event of events) map.set(registryKey(event.object), event.object);
          return events.length;
        });
      }
      return applied;
    },
    async snapshots(n) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += (await mutex.run(() => new Map(map))).size;
      return sum;
    },
  };
}

function immutableContestant(): Contestant {
  let map = ImmutableMap<string, BenchEntry>();
  let cursor = 0;
  return {
    name: "immutable.js Map",
    build(entries) {
      map = map.withMutations((draft) => {
        for (const entry of entries) draft.set(registryKey(entry), entry);
      });
    },
    reads(keys, n) {
      const snapshot = map;
      let found = 0;
      let j = cursor;
      for (let i = 0; i < n; i++) {
        if (snapshot.get(keys[j]!) !== undefined) found++;
        if (++j === keys.length) j = 0;
      }
      cursor = j;
      return found;
    },
    singleCommits(work, n) {
      for (let i = 0; i < n; i++) {
        const entry = work.next();
        map = map.set(registryKey(entry), entry);
      }
      return map.size;
    },
    batchCommits(work, n) {
      for (let i = 0; i < n; i++) {
        const events = work.batch();
        map = map.withMutations((draft) => {
          for (const event of events) draft.set(registryKey(event.object), event.object);
        });
      }
      return map.size;
    },
    snapshots(n) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += map.size;
      return sum;
    },
  };
}

/** The registry's check that kind, namespace and name make an unambiguous key. */
function isBadNamePart(part: unknown): boolean {
  return typeof part !== "string" || part === "" || part.includes("/");
}

function hasValidIdentity(entry: BenchEntry): boolean {
  return !(
    isBadNamePart(entry.kind) ||
    isBadNamePart(entry.name) ||
    (entry.namespace !== "" && isBadNamePart(entry.namespace))
  );
}

type IndexKeys = string | readonly string[] | undefined;

function sameKeys(a: IndexKeys, b: IndexKeys): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function keysOf(index: IndexDefinition<BenchEntry>, entry: BenchEntry | undefined): IndexKeys {
  if (entry === undefined) return undefined;
  return index.keyOf !== undefined ? index.keyOf(entry) : index.keysOf(entry);
}

/** Adds delta to the count of every key in keys, dropping counts that reach zero. */
function addToCounts(counts: ImmutableMap<string, number>, keys: IndexKeys, delta: 1 | -1): void {
  if (keys === undefined) return;
  if (typeof keys === "string") {
    const n = (counts.get(keys) ?? 0) + delta;
    if (n === 0) counts.delete(keys);
    else counts.set(keys, n);
    return;
  }
  for (const key of keys) addToCounts(counts, key, delta);
}

/**
 * immutable.js doing per write what the registry does on an update: check the identity, drop an
 * older resourceVersion, compute every index's keys of the old and the new entry before changing
 * anything, deep-freeze, store, and move the counts of the indexes whose keys changed. Scratch arrays
 * and plain loops, as in the registry, so neither side pays for closures the other does not.
 */
function immutableRegistryContestant(name: string, indexes: IndexDefinition<BenchEntry>[]): Contestant {
  type Counts = ImmutableMap<string, number>;
  let entries = ImmutableMap<string, BenchEntry>();
  const counts: Counts[] = indexes.map(() => ImmutableMap<string, number>());
  const drafts: (Counts | undefined)[] = indexes.map(() => undefined);
  const before: IndexKeys[] = indexes.map(() => undefined);
  const after: IndexKeys[] = indexes.map(() => undefined);
  let cursor = 0;
  const write = (draft: ImmutableMap<string, BenchEntry>, entry: BenchEntry) => {
    if (!hasValidIdentity(entry)) throw new TypeError("bad identity");
    const key = registryKey(entry);
    const old = draft.get(key);
    if (old === entry) return;
    if (old !== undefined && compareResourceVersions(entry.resourceVersion, old.resourceVersion) === -1)
      return;
    let reindex = false;
    for (let i = 0; i < indexes.length; i++) {
      before[i] = keysOf(indexes[i]!, old);
      after[i] = keysOf(indexes[i]!, entry);
      if (!sameKeys(before[i], after[i])) reindex = true;
    }
    if (!Object.isFrozen(entry)) deepFreeze(entry);
    draft.set(key, entry);
    if (!reindex) return;
    for (let i = 0; i < indexes.length; i++) {
      if (sameKeys(before[i], after[i])) continue;
      let count = drafts[i];
      if (count === undefined) {
        count = counts[i]!.asMutable();
        drafts[i] = count;
      }
      addToCounts(count, before[i], -1);
      addToCounts(count, after[i], 1);
    }
  };
  const publishCounts = () => {
    for (let i = 0; i < drafts.length; i++) {
      const draft = drafts[i];
      if (draft === undefined) continue;
      counts[i] = draft.asImmutable();
      drafts[i] = undefined;
    }
  };
  const commit = (batch: readonly BenchEntry[]) => {
    entries = entries.withMutations((draft) => {
      for (const entry of batch) write(draft, entry);
    });
    publishCounts();
  };
  const commitEvents = (events: readonly RegistryEvent<BenchEntry>[]) => {
    entries = entries.withMutations((draft) => {
      for (const event of events) write(draft, event.object);
    });
    publishCounts();
  };
  return {
    name,
    memoryNotMeasured: "shares interned key strings with immutable.js Map; its structure is the same",
    build(all) {
      commit(all);
    },
    reads(keys, n) {
      const snapshot = entries;
      let found = 0;
      let j = cursor;
      for (let i = 0; i < n; i++) {
        if (snapshot.get(keys[j]!) !== undefined) found++;
        if (++j === keys.length) j = 0;
      }
      cursor = j;
      return found;
    },
    singleCommits(work, n) {
      for (let i = 0; i < n; i++) commit([work.next()]);
      return entries.size;
    },
    batchCommits(work, n) {
      for (let i = 0; i < n; i++) commitEvents(work.batch());
      return entries.size;
    },
    snapshots(n) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += entries.size;
      return sum;
    },
  };
}

function fullCopyContestant(): Contestant {
  let map = new Map<string, BenchEntry>();
  let cursor = 0;
  return {
    name: "full copy per write",
    build(entries) {
      for (const entry of entries) map.set(registryKey(entry), entry);
    },
    reads(keys, n) {
      const snapshot = map;
      let found = 0;
      let j = cursor;
      for (let i = 0; i < n; i++) {
        if (snapshot.get(keys[j]!) !== undefined) found++;
        if (++j === keys.length) j = 0;
      }
      cursor = j;
      return found;
    },
    singleCommits(work, n) {
      for (let i = 0; i < n; i++) {
        const entry = work.next();
        const next = new Map(map);
        next.set(registryKey(entry), entry);
        map = next;
      }
      return map.size;
    },
    batchCommits(work, n) {
      for (let i = 0; i < n; i++) {
        const events = work.batch();
        const next = new Map(map);
        for (const event of events) next.set(registryKey(event.object), event.object);
        map = next;
      }
      return map.size;
    },
    snapshots(n) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += map.size;
      return sum;
    },
  };
}

const REGISTRY = "registry";
const IMMUTABLE_REGISTRY_WORK = "immutable.js + registry work";
const memoryNotes = new Map<string, string>();

interface SizeResult {
  readonly size: number;
  /** Absent for a contestant whose heap figure is not measured (see Contestant.memoryNotMeasured). */
  readonly megabytes: Map<string, number>;
  readonly reads: Map<string, number>;
  readonly singles: Map<string, number>;
  readonly batches: Map<string, number>;
  readonly snapshots: Map<string, number>;
}

/** Timing rounds: `--round-ms` and `--rounds` shorten a correctness run; the figures want the defaults. */
const timing = () => ({ roundMs: integerOption("round-ms", 150), rounds: integerOption("rounds", 5) });

async function measureSize(size: number): Promise<SizeResult> {
  const entries = Array.from({ length: size }, (_, i) => entryAt(i, 1, PHASES[i % 3]!));
  // Lookup keys are fresh strings equal to the stored ones, in a random order.
  const keys = shuffled(
    entries.map((entry) => registryKey({ kind: entry.kind, namespace: entry.namespace, name: entry.name })),
    seededRandom(size),
  );
  const contestants = [
    plainMapContestant(),
    registryContestant(REGISTRY, controllerIndexes),
    registryContestant(`${REGISTRY} (no indexes)`, []),
    mutexMapContestant(),
    immutableContestant(),
    immutableRegistryContestant(IMMUTABLE_REGISTRY_WORK, controllerIndexes),
    immutableRegistryContestant(`${IMMUTABLE_REGISTRY_WORK} (no indexes)`, []),
    fullCopyContestant(),
  ];
  const megabytes = new Map<string, number>();
  for (const contestant of contestants) {
    const { megabytes: grown } = retainedMegabytes(() => contestant.build(entries));
    if (contestant.memoryNotMeasured === undefined) megabytes.set(contestant.name, grown);
    else memoryNotes.set(contestant.name, contestant.memoryNotMeasured);
  }
  const reads = await opsPerSecond(
    contestants.map(({ name, reads }) => ({
      name,
      body: (n) => {
        const found = reads(keys, n);
        if (found !== n) throw new Error(`${name}: ${found} of ${n} keys found`);
        return found;
      },
    })),
    timing(),
  );
  const work = new Workload(size);
  const contenders = (pick: (c: Contestant) => Contender["body"] | undefined): Contender[] =>
    contestants.flatMap((c) => {
      const body = pick(c);
      return body ? [{ name: c.name, body }] : [];
    });
  const singles = await opsPerSecond(
    contenders((c) => c.singleCommits && ((n) => c.singleCommits!(work, n))),
    timing(),
  );
  const batches = await opsPerSecond(
    contenders((c) => c.batchCommits && ((n) => c.batchCommits!(work, n))),
    timing(),
  );
  const snapshots = await opsPerSecond(
    contenders((c) => c.snapshots && ((n) => c.snapshots!(n))),
    timing(),
  );
  for (const c of contestants) {
    const wrong = c.verify?.(size);
    if (wrong) throw new Error(`${c.name} at ${size} entries: ${wrong}`);
  }
  return { size, megabytes, reads, singles, batches, snapshots };
}

const int = (value: number) => Math.round(value).toLocaleString("en-US");
const fixed = (value: number | undefined, digits: number) =>
  value === undefined ? "-" : value.toFixed(digits);

export async function run(): Promise<void> {
  const started = performance.now();
  const results: SizeResult[] = [];
  const sizes = sizesOption();
  for (const size of sizes) {
    console.error(`registry bench: ${size.toLocaleString("en-US")} entries...`);
    results.push(await measureSize(size));
  }
  const rows = results.flatMap((r) =>
    [...r.reads.keys()].map((name) => {
      const snapshotRate = r.snapshots.get(name);
      return [
        name,
        r.size.toLocaleString("en-US"),
        fixed(r.reads.get(name)! / 1e6, 2),
        r.singles.has(name) ? int(r.singles.get(name)!) : "-",
        r.batches.has(name) ? int(r.batches.get(name)!) : "-",
        snapshotRate === undefined ? "-" : fixed(1e9 / snapshotRate, 1),
        fixed(r.megabytes.get(name), 1),
      ];
    }),
  );
  console.log(
    table(
      [
        "contender",
        "entries",
        "M reads/s",
        "1-write commits/s",
        `${BATCH_SIZE}-write commits/s`,
        "snapshot ns",
        "heap MB",
      ],
      rows,
    ),
  );
  if (sizes !== SIZES) {
    // A correctness run at other sizes: every read found its key and every registry verified.
    console.log(JSON.stringify({ bench: "registry", sizes, verified: true }));
    return;
  }
  const at = (size: number) => results.find((r) => r.size === size)!;
  const big = at(100_000);
  const small = at(1_000);
  const figures = {
    bench: "registry",
    reads_per_s_100k: Math.round(big.reads.get(REGISTRY)!),
    map_reads_per_s_100k: Math.round(big.reads.get("Map (reads baseline)")!),
    batch_commits_per_s_100k: Math.round(big.batches.get(REGISTRY)!),
    fullcopy_batch_commits_per_s_100k: Math.round(big.batches.get("full copy per write")!),
    immutablejs_batch_commits_per_s_100k: Math.round(big.batches.get("immutable.js Map")!),
    immutablejs_registry_work_batch_commits_per_s_100k: Math.round(big.batches.get(IMMUTABLE_REGISTRY_WORK)!),
    noindex_batch_commits_per_s_100k: Math.round(big.batches.get(`${REGISTRY} (no indexes)`)!),
    immutablejs_registry_work_noindex_batch_commits_per_s_100k: Math.round(
      big.batches.get(`${IMMUTABLE_REGISTRY_WORK} (no indexes)`)!,
    ),
    snapshot_ns_1k: Number((1e9 / small.snapshots.get(REGISTRY)!).toFixed(2)),
    snapshot_ns_100k: Number((1e9 / big.snapshots.get(REGISTRY)!).toFixed(2)),
  };
  for (const [name, note] of memoryNotes) console.log(`heap MB of ${name}: not measured (${note})`);
  const check = (label: string, ok: boolean, detail: string) =>
    console.log(`${ok ? "met   " : "MISSED"}  ${label}: ${detail}`);
  console.log("");
  check(
    "reads within 2x of Map.get at 100k",
    figures.map_reads_per_s_100k <= 2 * figures.reads_per_s_100k,
    `Map.get is ${(figures.map_reads_per_s_100k / figures.reads_per_s_100k).toFixed(2)}x the registry`,
  );
  check(
    "100-write batches at 100k at least 10x full copy",
    figures.batch_commits_per_s_100k >= 10 * figures.fullcopy_batch_commits_per_s_100k,
    `${(figures.batch_commits_per_s_100k / figures.fullcopy_batch_commits_per_s_100k).toFixed(1)}x`,
  );
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  check(
    "100-write batches at 100k not slower than immutable.js doing the same work",
    figures.batch_commits_per_s_100k >= figures.immutablejs_registry_work_batch_commits_per_s_100k &&
      figures.noindex_batch_commits_per_s_100k >=
        figures.immutablejs_registry_work_noindex_batch_commits_per_s_100k,
    `${ratio(figures.batch_commits_per_s_100k, figures.immutablejs_registry_work_batch_commits_per_s_100k)} with the indexes, ` +
      `${ratio(figures.noindex_batch_commits_per_s_100k, figures.immutablejs_registry_work_noindex_batch_commits_per_s_100k)} without`,
  );
  check(
    "100-write batches at 100k not slower than a bare immutable.js Map (no freeze, version check or index)",
    figures.batch_commits_per_s_100k >= figures.immutablejs_batch_commits_per_s_100k,
    `${ratio(figures.batch_commits_per_s_100k, figures.immutablejs_batch_commits_per_s_100k)} with the indexes, ` +
      `${ratio(figures.noindex_batch_commits_per_s_100k, figures.immutablejs_batch_commits_per_s_100k)} without`,
  );
  check(
    "snapshot at 100k within 2x of 1k",
    figures.snapshot_ns_100k <= 2 * figures.snapshot_ns_1k,
    `${figures.snapshot_ns_1k} ns at 1k, ${figures.snapshot_ns_100k} ns at 100k`,
  );
  console.log(
    `(${((performance.now() - started) / 1000).toFixed(0)} s; Node ${process.version}; sink ${sinkValue() % 997})`,
  );
  console.log(JSON.stringify(figures));
}
