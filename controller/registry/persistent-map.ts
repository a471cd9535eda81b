import { type EditToken, IdTrie, type IdTrieEditor, newEditToken } from "./id-trie.ts";

/**
 * A persistent map from string keys to values, with structural sharing.
 *
 * Why hand-written: the registry is read far more than it is written, and its reads must stay within
 * 2x of a plain `Map.get`. immutable.js hashes the key string itself on every `get` (it caches hashes
 * of only a few hundred long strings), which makes its reads several times slower than `Map.get`
 * (about 6x at 100k entries in test/bench/registry.ts, against about 1.2x for this map alone).
 * Here each key is interned once into a small integer id through a native Map, and values live in a
 * persistent radix trie indexed by id: a read is one native `Map.get` plus about four array index
 * steps, a write copies about four 33-slot nodes, and a batch copies each path node at most once.
 *
 * Values may not be `undefined` (it marks an empty slot). Iteration order is the order in which keys
 * were first interned: stable for one map, but not insertion order after a delete and re-insert.
 */

/** Any value except `undefined`. */
export type Defined = NonNullable<unknown> | null;

/**
 * Interns keys into dense ids. Append-only: an id, once given, always names the same key, so one key
 * space can be shared by every version of a map (and by several maps that want common ids) without
 * coordination. Dead keys are reclaimed by rebuilding into a fresh key space (see `compacted`).
 */
export class KeySpace {
  readonly #ids = new Map<string, number>();
  readonly #keys: string[] = [];

  get size(): number {
    return this.#keys.length;
  }

  idOf(key: string): number | undefined {
    return this.#ids.get(key);
  }

  intern(key: string): number {
    let id = this.#ids.get(key);
    if (id === undefined) {
      id = this.#keys.length;
      this.#ids.set(key, id);
      this.#keys.push(key);
    }
    return id;
  }

  keyOf(id: number): string {
    const key = this.#keys[id];
    if (key === undefined) throw new RangeError(`no key interned with id ${id}`);
    return key;
  }
}

/**
 * A map that owns its key space rebuilds it once the dead keys outnumber the live ones by this much
 * plus the map's own size, so the rebuild (O(size)) is paid for by at least as many earlier deletes.
 */
const COMPACTION_SLACK = 1024;

export class PersistentMap<V extends Defined> implements Iterable<[string, V]> {
  readonly #keys: KeySpace;
  readonly #values: IdTrie<V>;
  /** True when no other structure shares the key space, so this map may replace it by a smaller one. */
  readonly #ownsKeys: boolean;

  private constructor(keys: KeySpace, values: IdTrie<V>, ownsKeys: boolean) {
    this.#keys = keys;
    this.#values = values;
    this.#ownsKeys = ownsKeys;
    Object.freeze(this);
  }

  /**
   * An empty map. Pass a key space to share ids with other maps (the caller then owns compaction);
   * without one the map gets a private key space and compacts it by itself.
   */
  static empty<V extends Defined>(keys?: KeySpace): PersistentMap<V> {
    return new PersistentMap<V>(keys ?? new KeySpace(), IdTrie.empty<V>(), keys === undefined);
  }

  static from<V extends Defined>(entries: Iterable<readonly [string, V]>): PersistentMap<V> {
    return PersistentMap.empty<V>().withMutations((editor) => {
      for (const [key, value] of entries) editor.set(key, value);
    });
  }

  /** Used by PersistentMapEditor.freeze only. */
  static fromParts<V extends Defined>(
    keys: KeySpace,
    values: IdTrie<V>,
    ownsKeys: boolean,
  ): PersistentMap<V> {
    if (ownsKeys && keys.size > 2 * values.size + COMPACTION_SLACK) {
      const fresh = new KeySpace();
      const editor = IdTrie.empty<V>().edit();
      values.forEach((value, id) => {
        editor.set(fresh.intern(keys.keyOf(id)), value);
      });
      return new PersistentMap<V>(fresh, editor.freeze(), true);
    }
    return new PersistentMap<V>(keys, values, ownsKeys);
  }

  get size(): number {
    return this.#values.size;
  }

  /** The key space this map interns into; exposes only read access and its size. */
  get keySpace(): Pick<KeySpace, "size" | "idOf" | "keyOf"> {
    return this.#keys;
  }

  get(key: string): V | undefined {
    const id = this.#keys.idOf(key);
    return id === undefined ? undefined : this.#values.get(id);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** Reads by interned id (for structures that share this map's key space). */
  getById(id: number): V | undefined {
    return this.#values.get(id);
  }

  set(key: string, value: V): PersistentMap<V> {
    if (this.get(key) === value) return this;
    const editor = this.edit();
    editor.set(key, value);
    return editor.freeze();
  }

  delete(key: string): PersistentMap<V> {
    if (this.get(key) === undefined) return this;
    const editor = this.edit();
    editor.delete(key);
    return editor.freeze();
  }

  /** Applies a batch of writes that copies each shared trie node at most once. */
  withMutations(mutate: (editor: PersistentMapEditor<V>) => void): PersistentMap<V> {
    const editor = this.edit();
    mutate(editor);
    return editor.freeze();
  }

  /** Starts a transient batch; pass a token to edit several structures as one batch. */
  edit(token: EditToken = newEditToken()): PersistentMapEditor<V> {
    return new PersistentMapEditor<V>(this.#keys, this.#values.edit(token), this.#ownsKeys);
  }

  forEach(fn: (value: V, key: string) => void): void {
    const keys = this.#keys;
    this.#values.forEach((value, id) => {
      fn(value, keys.keyOf(id));
    });
  }

  /** Visits values with their interned ids, in ascending id order. */
  forEachById(fn: (value: V, id: number) => void): void {
    this.#values.forEach(fn);
  }

  *entries(): IterableIterator<[string, V]> {
    for (const [id, value] of this.#values.entries()) yield [this.#keys.keyOf(id), value];
  }

  *keys(): IterableIterator<string> {
    for (const [id] of this.#values.entries()) yield this.#keys.keyOf(id);
  }

  *values(): IterableIterator<V> {
    for (const [, value] of this.#values.entries()) yield value;
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries();
  }
}

/** A transient PersistentMap: mutate in place, then `freeze()`; unusable after freeze. */
export class PersistentMapEditor<V extends Defined> {
  readonly #keys: KeySpace;
  readonly #values: IdTrieEditor<V>;
  readonly #ownsKeys: boolean;

  constructor(keys: KeySpace, values: IdTrieEditor<V>, ownsKeys: boolean) {
    this.#keys = keys;
    this.#values = values;
    this.#ownsKeys = ownsKeys;
  }

  get size(): number {
    return this.#values.size;
  }

  get(key: string): V | undefined {
    const id = this.#keys.idOf(key);
    return id === undefined ? undefined : this.#values.get(id);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  getById(id: number): V | undefined {
    return this.#values.get(id);
  }

  /** Stores value and returns the value it replaces. */
  set(key: string, value: V): V | undefined {
    if (value === undefined) throw new TypeError("PersistentMap cannot store undefined");
    return this.#values.set(this.#keys.intern(key), value);
  }

  /** Like set, for a key already interned in this map's key space. */
  setById(id: number, value: V): V | undefined {
    return this.#values.set(id, value);
  }

  /** Removes key and returns the removed value. */
  delete(key: string): V | undefined {
    const id = this.#keys.idOf(key);
    return id === undefined ? undefined : this.#values.delete(id);
  }

  deleteById(id: number): V | undefined {
    return this.#values.delete(id);
  }

  intern(key: string): number {
    return this.#keys.intern(key);
  }

  forEach(fn: (value: V, key: string) => void): void {
    const keys = this.#keys;
    this.#values.forEach((value, id) => {
      fn(value, keys.keyOf(id));
    });
  }

  freeze(): PersistentMap<V> {
    return PersistentMap.fromParts(this.#keys, this.#values.freeze(), this.#ownsKeys);
  }
}
