import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PersistentMap, type PersistentMapEditor } from "./persistent-map.ts";

type Write =
  | { readonly op: "set"; readonly key: string; readonly value: number }
  | { readonly op: "delete"; readonly key: string };
type Step = Write | { readonly op: "batch"; readonly writes: readonly Write[] };

/** Keys look like registry keys; the pool is large enough for three trie levels. */
const keyArb = fc.nat({ max: 3_000 }).map((n) => `SyncRun/ns-${n % 7}/run-${n}`);
const writeArb: fc.Arbitrary<Write> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant("set" as const), key: keyArb, value: fc.integer() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("delete" as const), key: keyArb }) },
);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: writeArb },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("batch" as const),
      writes: fc.array(writeArb, { maxLength: 60 }),
    }),
  },
);

function applyToModel(model: Map<string, number>, write: Write): void {
  if (write.op === "set") model.set(write.key, write.value);
  else model.delete(write.key);
}

function applyToEditor(editor: PersistentMapEditor<number>, model: Map<string, number>, write: Write): void {
  const before = model.get(write.key);
  const returned = write.op === "set" ? editor.set(write.key, write.value) : editor.delete(write.key);
  expect(returned).toBe(before);
}

function sorted(entries: Iterable<[string, number]>): [string, number][] {
  return [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function expectSame(
  map: PersistentMap<number>,
  model: ReadonlyMap<string, number>,
  probes: readonly string[],
): void {
  expect(map.size).toBe(model.size);
  expect(sorted(map.entries())).toEqual(sorted(model));
  for (const key of probes) {
    expect(map.get(key)).toBe(model.get(key));
    expect(map.has(key)).toBe(model.has(key));
  }
}

describe("PersistentMap", () => {
  it("behaves exactly like a Map under random sets, deletes and batches; old versions stay intact", () => {
    fc.assert(
      fc.property(
        fc.array(stepArb, { maxLength: 120 }),
        fc.array(keyArb, { maxLength: 20 }),
        (steps, probes) => {
          const model = new Map<string, number>();
          let map = PersistentMap.empty<number>();
          const history: [PersistentMap<number>, Map<string, number>][] = [[map, new Map()]];
          for (const step of steps) {
            if (step.op === "set") {
              map = map.set(step.key, step.value);
              applyToModel(model, step);
            } else if (step.op === "delete") {
              map = map.delete(step.key);
              applyToModel(model, step);
            } else {
              map = map.withMutations((editor) => {
                for (const write of step.writes) {
                  applyToEditor(editor, model, write);
                  applyToModel(model, write);
                  expect(editor.size).toBe(model.size);
                  expect(editor.get(write.key)).toBe(model.get(write.key));
                }
              });
            }
            history.push([map, new Map(model)]);
          }
          const allKeys = [
            ...new Set([
              ...probes,
              ...steps.flatMap((s) => (s.op === "batch" ? s.writes : [s])).map((w) => w.key),
            ]),
          ];
          for (const [version, expected] of history) expectSame(version, expected, allKeys);
        },
      ),
    );
  });

  it("returns the same map for writes that change nothing", () => {
    const map = PersistentMap.from([["a", 1]]);
    expect(map.set("a", 1)).toBe(map);
    expect(map.delete("missing")).toBe(map);
  });

  it("iterates keys, values and entries consistently", () => {
    const map = PersistentMap.from(Array.from({ length: 100 }, (_, i) => [`k${i}`, i] as const));
    const entries = [...map];
    expect(entries).toHaveLength(100);
    expect([...map.keys()]).toEqual(entries.map(([key]) => key));
    expect([...map.values()]).toEqual(entries.map(([, value]) => value));
    const visited: [string, number][] = [];
    map.forEach((value, key) => {
      visited.push([key, value]);
    });
    expect(visited).toEqual(entries);
    const byId: [string, number][] = [];
    map.forEachById((value, id) => {
      byId.push([map.keySpace.keyOf(id), value]);
    });
    expect(byId).toEqual(entries);
  });

  it("reclaims the ids of deleted keys by rebuilding its key space", () => {
    let map = PersistentMap.from([["keep", 0]]);
    for (let i = 0; i < 20_000; i++) {
      map = map.set(`run-${i}`, i);
      if (i >= 10) map = map.delete(`run-${i - 10}`);
    }
    expect(map.size).toBe(11);
    expect(map.keySpace.size).toBeLessThanOrEqual(2 * map.size + 1024 + 1);
    expect(map.get("keep")).toBe(0);
    expect(sorted(map.entries())).toEqual(
      sorted([
        ["keep", 0],
        ...Array.from({ length: 10 }, (_, k) => [`run-${19_990 + k}`, 19_990 + k] as [string, number]),
      ]),
    );
  });

  it("cannot be changed: instances are frozen and editors close on freeze", () => {
    const map = PersistentMap.from([["a", 1]]);
    expect(Object.isFrozen(map)).toBe(true);
    const editor = map.edit();
    editor.set("b", 2);
    const next = editor.freeze();
    expect(() => editor.set("c", 3)).toThrow(/after freeze/);
    expect(next.get("c")).toBeUndefined();
    expect(map.get("b")).toBeUndefined();
    expect(() => map.edit().set("x", undefined as unknown as number)).toThrow(TypeError);
  });
});
