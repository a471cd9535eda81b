import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IdSet, IdTrie, newEditToken } from "./id-trie.ts";

type Op = { readonly set: number; readonly value: string } | { readonly del: number };

/** Ids spread over every trie depth: dense small ones and a few up to the 30-bit limit. */
const idArb = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 2_100 }) },
  { weight: 1, arbitrary: fc.nat({ max: 2 ** 30 - 1 }) },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ set: idArb, value: fc.string({ maxLength: 3 }) }),
  fc.record({ del: idArb }),
);

function contents<V>(trie: IdTrie<V>): [number, V][] {
  return [...trie.entries()];
}

function sortedModel<V>(model: Map<number, V>): [number, V][] {
  return [...model].sort((a, b) => a[0] - b[0]);
}

describe("IdTrie", () => {
  it("matches a model Map under random batches, and earlier versions never change", () => {
    fc.assert(
      fc.property(fc.array(fc.array(opArb, { maxLength: 40 }), { maxLength: 25 }), (batches) => {
        const model = new Map<number, string>();
        const history: [IdTrie<string>, [number, string][]][] = [];
        let trie = IdTrie.empty<string>();
        for (const batch of batches) {
          const editor = trie.edit(newEditToken());
          for (const op of batch) {
            if ("set" in op) {
              expect(editor.set(op.set, op.value)).toBe(model.get(op.set));
              model.set(op.set, op.value);
            } else {
              expect(editor.delete(op.del)).toBe(model.get(op.del));
              model.delete(op.del);
            }
            expect(editor.size).toBe(model.size);
          }
          trie = editor.freeze();
          history.push([trie, sortedModel(model)]);
        }
        for (const [version, expected] of history) {
          expect(version.size).toBe(expected.length);
          expect(contents(version)).toEqual(expected);
          for (const [id, value] of expected) expect(version.get(id)).toBe(value);
          const visited: [number, string][] = [];
          version.forEach((value, id) => {
            visited.push([id, value]);
          });
          expect(visited).toEqual(expected);
        }
      }),
    );
  });

  it("refuses undefined values, out-of-range ids and use after freeze", () => {
    const editor = IdTrie.empty<string>().edit();
    expect(() => editor.set(1, undefined as unknown as string)).toThrow(TypeError);
    expect(() => editor.set(-1, "x")).toThrow(RangeError);
    expect(() => editor.set(2 ** 30, "x")).toThrow(RangeError);
    editor.set(2 ** 30 - 1, "top");
    const trie = editor.freeze();
    expect(trie.get(2 ** 30 - 1)).toBe("top");
    expect(trie.get(2 ** 31)).toBeUndefined();
    expect(() => editor.set(2, "late")).toThrow(/after freeze/);
    expect(trie.get(2)).toBeUndefined();
  });

  it("copies a shared node once per batch and never writes into an earlier version", () => {
    const base = IdTrie.empty<number>().edit();
    for (let id = 0; id < 2_000; id++) base.set(id, id);
    const v1 = base.freeze();
    const editor = v1.edit();
    for (let id = 0; id < 2_000; id += 7) editor.set(id, -id);
    editor.delete(5);
    const v2 = editor.freeze();
    for (let id = 0; id < 2_000; id++) {
      expect(v1.get(id)).toBe(id);
      expect(v2.get(id)).toBe(id === 5 ? undefined : id % 7 === 0 ? -id : id);
    }
  });

  it("gives editors started on one version separate copies, as for drafts racing on one snapshot", () => {
    const base = IdTrie.empty<number>().edit();
    for (let id = 0; id < 2_000; id++) base.set(id, id);
    const v1 = base.freeze();
    const first = v1.edit(newEditToken());
    const second = v1.edit(newEditToken());
    for (let id = 0; id < 2_000; id += 3) {
      first.set(id, -id);
      second.set(id, id + 10_000);
    }
    first.delete(6);
    second.set(2_500, 1);
    expect(first.get(9)).toBe(-9);
    expect(second.get(9)).toBe(10_009);
    const v2 = first.freeze();
    // Writes after the first editor froze must not reach its version, nor the shared base.
    second.set(9, 42);
    second.delete(12);
    const v3 = second.freeze();
    for (let id = 0; id < 2_000; id++) {
      expect(v1.get(id)).toBe(id);
      expect(v2.get(id)).toBe(id === 6 ? undefined : id % 3 === 0 ? -id : id);
      const third = id === 9 ? 42 : id === 12 ? undefined : id % 3 === 0 ? id + 10_000 : id;
      expect(v3.get(id)).toBe(third);
    }
    expect([v1.size, v2.size, v3.size]).toEqual([2_000, 1_999, 2_000]);
    expect(v2.get(2_500)).toBeUndefined();
  });

  it("prunes emptied nodes and returns to the empty trie", () => {
    const editor = IdTrie.empty<string>().edit();
    for (let id = 0; id < 3_000; id += 3) editor.set(id, "v");
    for (let id = 0; id < 3_000; id += 3) editor.delete(id);
    const trie = editor.freeze();
    expect(trie.size).toBe(0);
    expect(trie).toBe(IdTrie.empty<string>());
  });
});

describe("IdSet", () => {
  it("matches a model Set, including bit 31 of a word", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ add: fc.boolean(), id: fc.nat({ max: 5_000 }) }), { maxLength: 200 }),
        (ops) => {
          const model = new Set<number>();
          const editor = IdSet.empty().edit(newEditToken());
          for (const { add, id } of [...ops, { add: true, id: 31 }, { add: true, id: 63 }]) {
            expect(add ? editor.add(id) : editor.remove(id)).toBe(add ? !model.has(id) : model.has(id));
            if (add) model.add(id);
            else model.delete(id);
          }
          const set = editor.freeze();
          const expected = [...model].sort((a, b) => a - b);
          expect([...set]).toEqual(expected);
          expect(set.size).toBe(model.size);
          for (let id = 0; id < 70; id++) expect(set.has(id)).toBe(model.has(id));
        },
      ),
    );
  });
});
