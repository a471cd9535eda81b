import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ALL,
  BY_KIND_AND_PHASE,
  countByKindAndPhase,
  countRunningRuns,
  kindPhaseKey,
  RUNNING_BY_NAMESPACE,
  RUNNING_BY_TARGET,
  RUNNING_TOTAL,
} from "./indexes.ts";
import {
  type IndexDefinition,
  indexKeysOf,
  Registry,
  RegistryConflictError,
  type RegistryEntry,
  type RegistryEvent,
  type RegistrySnapshot,
  type RegistryView,
  registryKey,
} from "./registry.ts";

interface TestEntry extends RegistryEntry {
  readonly kind: "SyncJob" | "SyncRun" | "SyncPolicy";
  readonly phase?: string;
  readonly target?: string;
  readonly value?: number;
  readonly status?: { readonly conditions: readonly { readonly type: string }[] };
}

const indexes: IndexDefinition<TestEntry>[] = [
  countByKindAndPhase<TestEntry>((entry) => entry.phase),
  ...countRunningRuns<TestEntry>({
    isRunning: (entry) => entry.kind === "SyncRun" && entry.phase === "Running",
    targetKeyOf: (entry) => entry.target,
  }),
  // A many-key index beside the one-key ones above, so that both forms are exercised.
  {
    name: "kind-and-target",
    keysOf: (entry) => (entry.target === undefined ? [] : [entry.kind, `target:${entry.target}`]),
  },
];
const INDEX_NAMES = indexes.map((index) => index.name);

/** A clock the tests move by hand. */
function manualClock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

function newRegistry(
  options: { now?: () => number; tombstoneTtlMs?: number; maxUpdateAttempts?: number } = {},
) {
  return new Registry<TestEntry>({ indexes, ...options });
}

function run(name: string, rv: string, extra: Partial<TestEntry> = {}): TestEntry {
  return { kind: "SyncRun", namespace: "payments", name, resourceVersion: rv, ...extra };
}

const KINDS = ["SyncJob", "SyncRun", "SyncPolicy"] as const;
const NAMESPACES = ["payments", "billing"] as const;

/** Everything a reader can observe through RegistryView, for a fixed universe of keys. */
function observe(view: RegistryView<TestEntry>, probeKeys: readonly string[]) {
  const byKey = (entries: Iterable<TestEntry>) =>
    [...entries].map((e) => `${registryKey(e)}=${JSON.stringify(e)}`).sort();
  return {
    version: view.version,
    size: view.size,
    entries: byKey(view),
    gets: probeKeys.map((key) => [key, view.has(key), view.get(key)]),
    tombstones: probeKeys.map((key) => [key, view.tombstone(key)]),
    tombstoneCount: view.tombstoneCount,
    counts: INDEX_NAMES.map((name) => [name, [...view.counts(name)].sort()]),
    groups: [
      ...KINDS.map((kind) => byKey(view.ofKind(kind))),
      ...KINDS.flatMap((kind) => NAMESPACES.map((ns) => byKey(view.ofKind(kind, ns)))),
      ...NAMESPACES.map((ns) => byKey(view.inNamespace(ns))),
    ],
  };
}

/** Recomputes what the incremental indexes and groups must hold, from the entries alone. */
function expectDerivedStateConsistent(view: RegistryView<TestEntry>): void {
  const entries = [...view];
  for (const index of indexes) {
    const expected = new Map<string, number>();
    for (const entry of entries)
      for (const key of indexKeysOf(index, entry)) expected.set(key, (expected.get(key) ?? 0) + 1);
    expect(new Map([...view.counts(index.name)].sort())).toEqual(new Map([...expected].sort()));
    for (const [key, count] of expected) expect(view.count(index.name, key)).toBe(count);
  }
  const keysOf = (list: Iterable<TestEntry>) => [...list].map(registryKey).sort();
  for (const kind of KINDS) {
    expect(keysOf(view.ofKind(kind))).toEqual(keysOf(entries.filter((e) => e.kind === kind)));
    for (const ns of NAMESPACES) {
      expect(keysOf(view.ofKind(kind, ns))).toEqual(
        keysOf(entries.filter((e) => e.kind === kind && e.namespace === ns)),
      );
    }
  }
  for (const ns of NAMESPACES) {
    expect(keysOf(view.inNamespace(ns))).toEqual(keysOf(entries.filter((e) => e.namespace === ns)));
  }
}

/** Random watch events over a small universe of objects, with ever-growing resourceVersions. */
const eventsArb = fc
  .array(
    fc.record({
      type: fc.constantFrom("ADDED", "MODIFIED", "MODIFIED", "DELETED"),
      kind: fc.constantFrom(...KINDS),
      namespace: fc.constantFrom(...NAMESPACES),
      name: fc.constantFrom("a", "b", "c", "d"),
      phase: fc.option(fc.constantFrom("Pending", "Running", "Succeeded"), { nil: undefined }),
      target: fc.option(fc.constantFrom("db/t1", "db/t2"), { nil: undefined }),
    }),
    { maxLength: 30 },
  )
  .map((raw) =>
    raw.map((r, i): RegistryEvent<TestEntry> => {
      const object: TestEntry = {
        kind: r.kind,
        // SyncPolicy is cluster-scoped.
        ...(r.kind === "SyncPolicy" ? {} : { namespace: r.namespace }),
        name: r.name,
        resourceVersion: String(i + 2),
        ...(r.phase ? { phase: r.phase } : {}),
        ...(r.target ? { target: r.target } : {}),
      };
      return { type: r.type, object };
    }),
  );

const probeKeys = KINDS.flatMap((kind) =>
  kind === "SyncPolicy"
    ? ["a", "b", "c", "d"].map((name) => registryKey({ kind, name }))
    : NAMESPACES.flatMap((namespace) =>
        ["a", "b", "c", "d"].map((name) => registryKey({ kind, namespace, name })),
      ),
);

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("Registry snapshots", () => {
  it("hands out the current snapshot without copying, and a new one per commit", () => {
    const registry = newRegistry();
    const empty = registry.snapshot();
    expect(registry.snapshot()).toBe(empty);
    expect(empty.version).toBe(0);
    const result = registry.commit(0, (draft) => draft.upsert(run("r1", "5", { phase: "Running" })));
    expect(result.ok && result.value).toBe("created");
    const next = registry.snapshot();
    expect(next).not.toBe(empty);
    expect(next.version).toBe(1);
    expect(next.get("SyncRun/payments/r1")?.phase).toBe("Running");
    expect(empty.get("SyncRun/payments/r1")).toBeUndefined();
    expect(empty.size).toBe(0);
  });

  it("keeps a snapshot held across awaits unchanged, whatever commits land meanwhile", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        eventsArb,
        eventsArb,
        fc.nat({ max: 5 }),
        async (s, initial, later, pauses) => {
          const clock = manualClock();
          const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 50 });
          registry.applyBatch(initial);
          const held = registry.snapshot();
          const before = observe(held, probeKeys);
          const reader = (async () => {
            for (let i = 0; i <= pauses; i++) {
              await s.schedule(Promise.resolve(), `reader pause ${i}`);
              expect(observe(held, probeKeys)).toEqual(before);
            }
          })();
          const writers = later.map((event, i) =>
            s.schedule(Promise.resolve(), `writer ${i}`).then(() => {
              clock.advance(20);
              if (i % 3 === 0) registry.applyBatch([event]);
              else if (i % 3 === 1) registry.sweepTombstones();
              else
                return registry.update(async (draft) => {
                  await s.schedule(Promise.resolve(), `update ${i}`);
                  if (event.type === "DELETED") draft.delete(event.object);
                  else draft.upsert(event.object);
                });
            }),
          );
          await s.waitFor(Promise.all([reader, ...writers]));
          expect(observe(held, probeKeys)).toEqual(before);
        },
      ),
      { numRuns: 60 },
    );
  });

  it("answers every version's reads from that version, whether it is the newest or not", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(eventsArb, { maxLength: 8 }), async (batches) => {
        const clock = manualClock();
        const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 50 });
        const history: [RegistrySnapshot<TestEntry>, (TestEntry | undefined)[]][] = [];
        for (const [i, batch] of batches.entries()) {
          clock.advance(20);
          if (i % 3 === 2) {
            await registry.update((draft) => {
              for (const event of batch) {
                if (event.type === "DELETED") draft.delete(event.object);
                else draft.upsert(event.object);
              }
            });
          } else {
            registry.applyBatch(batch);
          }
          if (i % 4 === 3) registry.sweepTombstones();
          const newest = registry.snapshot();
          // The newest version's reads agree with a walk over its own entries.
          const stored = new Map([...newest].map((entry) => [registryKey(entry), entry]));
          const gets = probeKeys.map((key) => newest.get(key));
          expect(gets).toEqual(probeKeys.map((key) => stored.get(key)));
          history.push([newest, gets]);
          for (const [version, expected] of history) {
            probeKeys.forEach((key, k) => {
              expect(version.get(key)).toBe(expected[k]);
              expect(version.has(key)).toBe(expected[k] !== undefined);
            });
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it("leaves no trace of a draft that lost its compare-and-swap", async () => {
    const registry = newRegistry();
    registry.applyBatch([{ type: "ADDED", object: run("r1", "1", { phase: "Pending" }) }]);
    let attempts = 0;
    const updating = registry.update(async (draft) => {
      attempts++;
      draft.upsert(run("r1", String(10 + attempts), { phase: `attempt-${attempts}`, target: "db/t" }));
      draft.upsert(run(`only-in-attempt-${attempts}`, "1"));
      await Promise.resolve();
    });
    // Lands while the first attempt awaits, so that attempt's draft is thrown away.
    const { snapshot: between } = registry.applyBatch([
      { type: "MODIFIED", object: run("r1", "5", { phase: "Running" }) },
    ]);
    await updating;
    expect(attempts).toBe(2);
    expect(between.get("SyncRun/payments/r1")?.phase).toBe("Running");
    expect(between.has("SyncRun/payments/only-in-attempt-1")).toBe(false);
    expect(between.count(RUNNING_TOTAL, ALL)).toBe(1);
    const after = registry.snapshot();
    expect(after.get("SyncRun/payments/r1")?.phase).toBe("attempt-2");
    expect(after.has("SyncRun/payments/only-in-attempt-1")).toBe(false);
    expect(after.has("SyncRun/payments/only-in-attempt-2")).toBe(true);
    expect(after.count(BY_KIND_AND_PHASE, kindPhaseKey("SyncRun", "attempt-1"))).toBe(0);
    expectDerivedStateConsistent(after);
  });

  it("keeps every version's reads when the key space is rebuilt", () => {
    const clock = manualClock();
    const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 10 });
    const keeper = "SyncRun/payments/keeper";
    const churned = "SyncRun/payments/churn-7";
    const churn = Array.from({ length: 1_500 }, (_, i) => run(`churn-${i}`, "2"));
    // Each version is checked while it is the newest and again once newer ones exist.
    const checks: [RegistrySnapshot<TestEntry>, () => void][] = [];
    const check = (snapshot: RegistrySnapshot<TestEntry>, expectations: () => void) => {
      expectations();
      checks.push([snapshot, expectations]);
    };
    // The keeper is interned last, so the rebuilt key space gives it another id.
    const { snapshot: full } = registry.applyBatch([
      ...churn.map((object) => ({ type: "ADDED" as const, object })),
      { type: "ADDED", object: run("keeper", "1", { phase: "Pending" }) },
    ]);
    check(full, () => {
      expect(full.size).toBe(1_501);
      expect(full.get(churned)?.resourceVersion).toBe("2");
      expect(full.get(keeper)?.phase).toBe("Pending");
    });
    const { snapshot: emptied } = registry.applyBatch(
      churn.map((object) => ({ type: "DELETED" as const, object })),
    );
    check(emptied, () => {
      expect(emptied.has(churned)).toBe(false);
      expect(emptied.get(keeper)?.phase).toBe("Pending");
    });
    clock.advance(20);
    registry.sweepTombstones();
    const rebuilt = registry.snapshot();
    expect(rebuilt.internedKeyCount).toBeLessThan(full.internedKeyCount);
    check(rebuilt, () => {
      expect(rebuilt.has(churned)).toBe(false);
      expect(rebuilt.get(keeper)?.phase).toBe("Pending");
    });
    const { snapshot: updated } = registry.applyBatch([
      { type: "MODIFIED", object: run("keeper", "3", { phase: "Running" }) },
      { type: "ADDED", object: run("churn-7", "4", { phase: "Queued" }) },
    ]);
    check(updated, () => {
      expect(updated.size).toBe(2);
      expect(updated.get(keeper)?.phase).toBe("Running");
      expect(updated.get(churned)?.phase).toBe("Queued");
      expect(updated.has("SyncRun/payments/churn-8")).toBe(false);
    });
    registry.applyBatch([{ type: "MODIFIED", object: run("keeper", "5", { phase: "Succeeded" }) }]);
    for (const [, expectations] of checks) expectations();
    expectDerivedStateConsistent(registry.snapshot());
  });

  it("cannot be mutated through the public API", () => {
    const registry = newRegistry();
    const input: TestEntry = run("r1", "1", { status: { conditions: [{ type: "Admitted" }] } });
    registry.applyBatch([{ type: "ADDED", object: input }]);
    const snapshot = registry.snapshot();
    const stored = snapshot.get("SyncRun/payments/r1")!;
    const writable = snapshot as unknown as Record<string, unknown>;

    expect(Object.isFrozen(snapshot)).toBe(true);
    expect(Object.isFrozen(Object.getPrototypeOf(snapshot))).toBe(true);
    expect(() => {
      writable.version = 99;
    }).toThrow(TypeError);
    expect(() => {
      writable.extra = 1;
    }).toThrow(TypeError);
    expect(() => {
      writable.get = () => undefined;
    }).toThrow(TypeError);
    expect(() => Object.defineProperty(snapshot, "size", { value: 0 })).toThrow(TypeError);
    for (const mutator of ["upsert", "delete", "set", "commit", "clear"])
      expect(writable[mutator]).toBeUndefined();

    // Entries are deep-frozen, including the caller's object that was stored.
    expect(stored).toBe(input);
    expect(Object.isFrozen(stored)).toBe(true);
    expect(() => {
      (stored as { phase?: string }).phase = "Running";
    }).toThrow(TypeError);
    expect(() => {
      (stored.status!.conditions as { type: string }[]).push({ type: "Forged" });
    }).toThrow(TypeError);
    expect(() => {
      (stored.status!.conditions[0] as { type: string }).type = "Forged";
    }).toThrow(TypeError);

    // Counts handed out are copies.
    const counts = snapshot.counts(BY_KIND_AND_PHASE) as Map<string, number>;
    counts.set(kindPhaseKey("SyncRun", undefined), 42);
    expect(snapshot.count(BY_KIND_AND_PHASE, kindPhaseKey("SyncRun", undefined))).toBe(1);
    expect(registry.snapshot()).toBe(snapshot);
  });

  it("closes a draft once its commit attempt is over", async () => {
    const registry = newRegistry();
    let leaked: { upsert(entry: TestEntry): unknown; get(key: string): unknown } | undefined;
    registry.commit(0, (draft) => {
      leaked = draft;
      draft.upsert(run("r1", "1"));
    });
    expect(() => leaked!.upsert(run("r2", "1"))).toThrow(/draft used after/);
    expect(() => leaked!.get("SyncRun/payments/r1")).toThrow(/draft used after/);
    await registry.update((draft) => {
      leaked = draft;
    });
    expect(() => leaked!.upsert(run("r3", "1"))).toThrow(/draft used after/);
    expect(registry.snapshot().size).toBe(1);
  });
});

describe("Registry commit and update", () => {
  it("commits only at the base version (compare-and-swap)", () => {
    const registry = newRegistry();
    const base = registry.snapshot().version;
    expect(registry.commit(base, (draft) => draft.upsert(run("r1", "1"))).ok).toBe(true);
    const mutate = vi.fn((draft: { upsert(entry: TestEntry): unknown }) => draft.upsert(run("r2", "1")));
    const stale = registry.commit(base, mutate);
    expect(stale).toEqual({ ok: false, conflict: { baseVersion: base, currentVersion: base + 1 } });
    expect(mutate).not.toHaveBeenCalled();
    expect(registry.snapshot().has("SyncRun/payments/r2")).toBe(false);
  });

  it("publishes nothing for a draft without changes, or when the writer throws", () => {
    const registry = newRegistry();
    registry.commit(0, (draft) => draft.upsert(run("r1", "1")));
    const before = registry.snapshot();
    const noop = registry.commit(1, (draft) => draft.get("SyncRun/payments/r1")?.name);
    expect(noop.ok && noop.snapshot).toBe(before);
    expect(() =>
      registry.commit(1, (draft) => {
        draft.upsert(run("r2", "1"));
        throw new Error("admission failed");
      }),
    ).toThrow("admission failed");
    expect(() => registry.commit(1, async (draft) => draft.upsert(run("r3", "1")))).toThrow(/synchronous/);
    expect(registry.snapshot()).toBe(before);
    expect(registry.version).toBe(1);
  });

  it("lets a draft read its own writes, counts included", () => {
    const registry = newRegistry();
    registry.commit(0, (draft) => {
      draft.upsert(run("r1", "1", { phase: "Running", target: "db/t1" }));
      draft.upsert(run("r2", "1", { phase: "Running", target: "db/t1" }));
      expect(draft.count(RUNNING_BY_TARGET, "db/t1")).toBe(2);
      expect(draft.count(RUNNING_BY_NAMESPACE, "payments")).toBe(2);
      expect(draft.delete("SyncRun/payments/r1")).toBe("deleted");
      expect(draft.count(RUNNING_TOTAL, ALL)).toBe(1);
      expect([...draft.ofKind("SyncRun", "payments")].map((e) => e.name)).toEqual(["r2"]);
      expect(draft.size).toBe(1);
      expect(draft.base.size).toBe(0);
    });
    expect(registry.snapshot().count(RUNNING_TOTAL, ALL)).toBe(1);
  });

  it("never loses an update from interleaved async writers", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.scheduler(),
        fc.array(fc.nat({ max: 2 }), { minLength: 1, maxLength: 10 }),
        fc.boolean(),
        async (s, counters, tight) => {
          // With `tight`, writers may give up; a writer that gives up must leave no trace.
          const registry = newRegistry({ maxUpdateAttempts: tight ? 2 : counters.length + 1 });
          const counterRef = (c: number) => ({
            kind: "SyncJob" as const,
            namespace: "payments",
            name: `counter-${c}`,
          });
          const writers = counters.map((c, w) =>
            registry.update(async (draft) => {
              const current = draft.get(registryKey(counterRef(c)))?.value ?? 0;
              await s.schedule(Promise.resolve(), `writer ${w} read counter-${c}=${current}`);
              draft.upsert({ ...counterRef(c), value: current + 1 });
              return w;
            }),
          );
          const outcomes = await s.waitFor(Promise.allSettled(writers));
          const succeeded = new Map<number, number>();
          outcomes.forEach((outcome, w) => {
            if (outcome.status === "fulfilled") {
              succeeded.set(counters[w]!, (succeeded.get(counters[w]!) ?? 0) + 1);
            } else {
              expect(outcome.reason).toBeInstanceOf(RegistryConflictError);
            }
          });
          if (!tight) expect(outcomes.every((o) => o.status === "fulfilled")).toBe(true);
          const snapshot = registry.snapshot();
          for (const c of new Set(counters)) {
            expect(snapshot.get(registryKey(counterRef(c)))?.value).toBe(succeeded.get(c));
          }
          expect(snapshot.version).toBe([...succeeded.values()].reduce((a, b) => a + b, 0));
        },
      ),
      { numRuns: 80 },
    );
  });

  it("gives up after the configured attempts with a RegistryConflictError", async () => {
    const registry = newRegistry({ maxUpdateAttempts: 3 });
    let calls = 0;
    const attempt = registry.update(async (draft) => {
      calls++;
      // Another writer lands while this one awaits, every time.
      registry.applyBatch([{ type: "MODIFIED", object: run("noise", String(calls + 1)) }]);
      await Promise.resolve();
      draft.upsert(run("mine", "1"));
    });
    await expect(attempt).rejects.toBeInstanceOf(RegistryConflictError);
    await expect(attempt).rejects.toMatchObject({ attempts: 3 });
    expect(calls).toBe(3);
    expect(registry.snapshot().has("SyncRun/payments/mine")).toBe(false);
  });

  it("commits a burst of watch events as one version and reports stale ones", () => {
    const registry = newRegistry();
    const result = registry.applyBatch([
      { type: "ADDED", object: run("r1", "10") },
      { type: "MODIFIED", object: run("r1", "12", { phase: "Running" }) },
      { type: "MODIFIED", object: run("r1", "11", { phase: "Pending" }) },
      { type: "ADDED", object: run("r2", "13") },
    ]);
    expect(result.applied).toBe(3);
    expect(result.stale).toBe(1);
    expect(result.snapshot.version).toBe(1);
    expect(result.snapshot.get("SyncRun/payments/r1")?.phase).toBe("Running");
    expect(result.snapshot.size).toBe(2);
  });
});

describe("Registry tombstones", () => {
  it("never lets a stale event bring back a deleted object (decimal resourceVersions)", () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 1_000 }),
        fc.nat({ max: 1_000 }),
        fc.array(fc.tuple(fc.constantFrom("ADDED", "MODIFIED"), fc.nat({ max: 2_000 })), { maxLength: 8 }),
        (created, deletedAfter, lateEvents) => {
          const clock = manualClock();
          const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 60_000 });
          const deletedAt = created + deletedAfter;
          registry.applyBatch([{ type: "ADDED", object: run("r1", String(created)) }]);
          registry.applyBatch([{ type: "DELETED", object: run("r1", String(deletedAt)) }]);
          let resurrectedBy: number | undefined;
          for (const [type, rv] of lateEvents) {
            clock.advance(1_000);
            const result = registry.applyBatch([{ type, object: run("r1", String(rv)) }]);
            const present = result.snapshot.has("SyncRun/payments/r1");
            if (resurrectedBy === undefined) {
              // Only an event newer than the deletion (a re-creation) may bring the name back.
              expect(present).toBe(rv > deletedAt);
              expect(result.stale).toBe(rv > deletedAt ? 0 : 1);
              if (present) resurrectedBy = rv;
            }
          }
        },
      ),
    );
  });

  it("treats events with opaque resourceVersions as stale until the tombstone expires", () => {
    const clock = manualClock();
    const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 60_000 });
    registry.applyBatch([{ type: "ADDED", object: run("r1", "v-a") }]);
    registry.applyBatch([{ type: "DELETED", object: run("r1", "v-b") }]);
    expect(registry.snapshot().tombstone("SyncRun/payments/r1")).toMatchObject({ resourceVersion: "v-b" });
    clock.advance(59_999);
    expect(registry.applyBatch([{ type: "MODIFIED", object: run("r1", "v-c") }]).stale).toBe(1);
    expect(registry.applyBatch([{ type: "MODIFIED", object: run("r1", "999") }]).stale).toBe(1);
    expect(registry.snapshot().has("SyncRun/payments/r1")).toBe(false);
    clock.advance(1);
    const after = registry.applyBatch([{ type: "ADDED", object: run("r1", "v-d") }]);
    expect(after.applied).toBe(1);
    expect(after.snapshot.get("SyncRun/payments/r1")?.resourceVersion).toBe("v-d");
    expect(after.snapshot.tombstone("SyncRun/payments/r1")).toBeUndefined();
  });

  it("uses the stored resourceVersion when deleting by key, so a re-creation is accepted at once", () => {
    const registry = newRegistry();
    registry.applyBatch([{ type: "ADDED", object: run("r1", "40") }]);
    registry.commit(1, (draft) => expect(draft.delete("SyncRun/payments/r1")).toBe("deleted"));
    expect(registry.snapshot().tombstone("SyncRun/payments/r1")?.resourceVersion).toBe("40");
    expect(registry.applyBatch([{ type: "MODIFIED", object: run("r1", "40") }]).stale).toBe(1);
    expect(registry.applyBatch([{ type: "ADDED", object: run("r1", "41") }]).applied).toBe(1);
  });

  it("ignores a delete older than the stored object, and keeps the newer of two tombstones", () => {
    const registry = newRegistry();
    registry.applyBatch([{ type: "ADDED", object: run("r1", "50") }]);
    const late = registry.applyBatch([{ type: "DELETED", object: run("r1", "49") }]);
    expect(late.stale).toBe(1);
    expect(late.snapshot.has("SyncRun/payments/r1")).toBe(true);
    registry.applyBatch([{ type: "DELETED", object: run("r1", "60") }]);
    expect(registry.applyBatch([{ type: "DELETED", object: run("r1", "55") }]).applied).toBe(1);
    expect(registry.snapshot().tombstone("SyncRun/payments/r1")?.resourceVersion).toBe("60");
    expect(registry.applyBatch([{ type: "ADDED", object: run("r1", "58") }]).stale).toBe(1);
  });

  it("sweeps expired tombstones in one new version, and only when some expired", () => {
    const clock = manualClock();
    const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 1_000 });
    registry.applyBatch([
      { type: "ADDED", object: run("r1", "1") },
      { type: "ADDED", object: run("r2", "1") },
    ]);
    registry.applyBatch([{ type: "DELETED", object: run("r1", "2") }]);
    clock.advance(600);
    registry.applyBatch([{ type: "DELETED", object: run("r2", "3") }]);
    const version = registry.version;
    expect(registry.sweepTombstones(clock.now())).toBe(0);
    expect(registry.version).toBe(version);
    clock.advance(400);
    expect(registry.sweepTombstones(clock.now())).toBe(1);
    expect(registry.version).toBe(version + 1);
    expect(registry.snapshot().tombstone("SyncRun/payments/r1")).toBeUndefined();
    expect(registry.snapshot().tombstone("SyncRun/payments/r2")).toBeDefined();
    expect(registry.snapshot().tombstoneCount).toBe(1);
  });

  it("sweeps on an unref'd timer until stopped", () => {
    vi.useFakeTimers();
    const setIntervalSpy = vi.spyOn(globalThis, "setInterval");
    const registry = new Registry<TestEntry>({ tombstoneTtlMs: 1_000, now: () => Date.now() });
    registry.applyBatch([{ type: "DELETED", object: run("r1", "2") }]);
    const stop = registry.startTombstoneSweep(500);
    const timer = setIntervalSpy.mock.results[0]!.value as NodeJS.Timeout;
    expect(timer.hasRef()).toBe(false);
    vi.advanceTimersByTime(500);
    expect(registry.snapshot().tombstoneCount).toBe(1);
    vi.advanceTimersByTime(500);
    expect(registry.snapshot().tombstoneCount).toBe(0);
    stop();
    registry.applyBatch([{ type: "DELETED", object: run("r2", "3") }]);
    vi.advanceTimersByTime(5_000);
    expect(registry.snapshot().tombstoneCount).toBe(1);
  });
});

describe("Registry indexes and groups", () => {
  it("keeps counts and groups equal to a recomputation from the entries, after every commit", () => {
    fc.assert(
      fc.property(fc.array(eventsArb, { maxLength: 6 }), (batches) => {
        const registry = newRegistry();
        for (const batch of batches) {
          registry.applyBatch(batch);
          expectDerivedStateConsistent(registry.snapshot());
        }
      }),
    );
  });

  it("counts runs by kind and phase, and running runs per namespace, target and in total", () => {
    const registry = newRegistry();
    const { snapshot } = registry.applyBatch([
      { type: "ADDED", object: run("r1", "1", { phase: "Running", target: "db/orders" }) },
      { type: "ADDED", object: run("r2", "1", { phase: "Running", target: "db/orders" }) },
      {
        type: "ADDED",
        object: { ...run("r3", "1", { phase: "Running", target: "db/items" }), namespace: "billing" },
      },
      { type: "ADDED", object: run("r4", "1", { phase: "Queued", target: "db/orders" }) },
      { type: "ADDED", object: { kind: "SyncPolicy", name: "baseline", resourceVersion: "1" } },
    ]);
    expect(snapshot.count(BY_KIND_AND_PHASE, kindPhaseKey("SyncRun", "Running"))).toBe(3);
    expect(snapshot.count(BY_KIND_AND_PHASE, kindPhaseKey("SyncRun", "Queued"))).toBe(1);
    expect(snapshot.count(BY_KIND_AND_PHASE, kindPhaseKey("SyncPolicy", undefined))).toBe(1);
    expect(snapshot.counts(RUNNING_BY_NAMESPACE)).toEqual(
      new Map([
        ["payments", 2],
        ["billing", 1],
      ]),
    );
    expect(snapshot.count(RUNNING_BY_TARGET, "db/orders")).toBe(2);
    expect(snapshot.count(RUNNING_TOTAL, ALL)).toBe(3);
    expect(snapshot.count(RUNNING_BY_TARGET, "db/none")).toBe(0);
    const after = registry.applyBatch([{ type: "MODIFIED", object: run("r1", "2", { phase: "Succeeded" }) }]);
    expect(after.snapshot.count(RUNNING_BY_TARGET, "db/orders")).toBe(1);
    expect(snapshot.count(RUNNING_BY_TARGET, "db/orders")).toBe(2);
    expect([...after.snapshot.ofKind("SyncPolicy")].map((e) => e.name)).toEqual(["baseline"]);
  });

  it("leaves the draft untouched when an index function throws, even if the writer carries on", () => {
    const picky: IndexDefinition<TestEntry> = {
      name: "picky",
      keysOf: (entry) => {
        if (entry.phase === "Broken") throw new Error("cannot index");
        return [entry.phase ?? ""];
      },
    };
    const registry = new Registry<TestEntry>({ indexes: [picky] });
    registry.applyBatch([{ type: "ADDED", object: run("r1", "1", { phase: "Running" }) }]);
    registry.commit(1, (draft) => {
      expect(() => draft.upsert(run("r1", "2", { phase: "Broken" }))).toThrow("cannot index");
      expect(() => draft.upsert(run("r2", "2", { phase: "Broken" }))).toThrow("cannot index");
      draft.upsert(run("r3", "2", { phase: "Queued" }));
    });
    const snapshot = registry.snapshot();
    expect(snapshot.get("SyncRun/payments/r1")?.phase).toBe("Running");
    expect(snapshot.has("SyncRun/payments/r2")).toBe(false);
    expect([...snapshot.ofKind("SyncRun")].map((e) => e.name).sort()).toEqual(["r1", "r3"]);
    expect(snapshot.counts("picky")).toEqual(
      new Map([
        ["Running", 1],
        ["Queued", 1],
      ]),
    );
  });

  it("rejects unknown or duplicate index names and entries whose identity holds '/'", () => {
    expect(() => newRegistry().snapshot().count("nope", "x")).toThrow(/unknown registry index/);
    const duplicate = { name: "dup", keysOf: () => [] };
    expect(() => new Registry<TestEntry>({ indexes: [duplicate, duplicate] })).toThrow(/duplicate/);
    const registry = newRegistry();
    expect(() => registry.applyBatch([{ type: "ADDED", object: run("a/b", "1") }])).toThrow(TypeError);
    expect(() => registry.applyBatch([{ type: "ADDED", object: run("", "1") }])).toThrow(TypeError);
    expect(registry.version).toBe(0);
  });

  it("reclaims interned keys of deleted objects without changing what readers see", () => {
    const clock = manualClock();
    const registry = newRegistry({ now: clock.now, tombstoneTtlMs: 10 });
    registry.applyBatch([
      { type: "ADDED", object: run("keeper", "1", { phase: "Running", target: "db/t" }) },
    ]);
    for (let i = 0; i < 6_000; i++) {
      registry.applyBatch([
        { type: "ADDED", object: run(`churn-${i}`, String(i + 2), { phase: "Running" }) },
      ]);
      registry.applyBatch([{ type: "DELETED", object: run(`churn-${i}`, String(i + 3)) }]);
      clock.advance(1);
      if (i % 100 === 0) registry.sweepTombstones();
    }
    const snapshot = registry.snapshot();
    expect(snapshot.size).toBe(1);
    expect(snapshot.internedKeyCount).toBeLessThanOrEqual(
      2 * (snapshot.size + snapshot.tombstoneCount) + 1024 + 1,
    );
    expect(snapshot.get("SyncRun/payments/keeper")?.target).toBe("db/t");
    expect([...snapshot.inNamespace("payments")].map((e) => e.name)).toEqual(["keeper"]);
    expectDerivedStateConsistent(snapshot);
  });
});
