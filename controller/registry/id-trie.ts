/**
 * A persistent 32-way radix trie indexed by small non-negative integers (the layout of Clojure's
 * PersistentVector, but sparse). A lookup is one array index per level (four levels hold a million
 * ids); a write copies only the nodes on its path; an editor (transient) copies each path node at most
 * once per batch and then mutates its own copies in place.
 *
 * Ownership: every node carries, in its last slot, the edit token of the editor that created it. An
 * editor mutates a node in place only when the node carries its own token; `freeze()` closes the
 * editor, and a token is never handed to a new editor, so a frozen trie is never written again.
 */

const BITS = 5;
const WIDTH = 1 << BITS;
const MASK = WIDTH - 1;
/** Slot holding the edit token of the editor that created the node (null for none). */
const OWNER = WIDTH;
/** Ids fit in 30 bits: the root shift never exceeds 25, so every `>>>` stays below 32. */
const MAX_SHIFT = 25;

/** WIDTH child or value slots, then the owner slot. `undefined` marks an empty slot. */
type TrieNode = unknown[];

/** Identity of one batch of edits; compare by reference only. */
export type EditToken = object;

export function newEditToken(): EditToken {
  return {};
}

function newNode(owner: EditToken | null): TrieNode {
  const node: TrieNode = new Array(WIDTH + 1);
  node[OWNER] = owner;
  return node;
}

const EMPTY_ROOT: TrieNode = newNode(null);

function lookup(root: TrieNode, shift: number, id: number): unknown {
  if ((id >>> shift) >>> BITS !== 0) return undefined;
  let node = root;
  for (let level = shift; level > 0; level -= BITS) {
    const child = node[(id >>> level) & MASK];
    if (child === undefined) return undefined;
    node = child as TrieNode;
  }
  return node[id & MASK];
}

function isEmptyNode(node: TrieNode): boolean {
  for (let i = 0; i < WIDTH; i++) if (node[i] !== undefined) return false;
  return true;
}

function forEachIn<V>(node: TrieNode, level: number, base: number, fn: (value: V, id: number) => void): void {
  if (level === 0) {
    for (let i = 0; i < WIDTH; i++) {
      const value = node[i];
      if (value !== undefined) fn(value as V, base + i);
    }
    return;
  }
  for (let i = 0; i < WIDTH; i++) {
    const child = node[i];
    if (child !== undefined) forEachIn(child as TrieNode, level - BITS, base + i * 2 ** level, fn);
  }
}

/** Immutable: no method changes it, and its nodes are never written once an editor has frozen them. */
export class IdTrie<V> {
  readonly #root: TrieNode;
  readonly #shift: number;
  readonly #size: number;

  private constructor(root: TrieNode, shift: number, size: number) {
    this.#root = root;
    this.#shift = shift;
    this.#size = size;
  }

  static #empty = new IdTrie<never>(EMPTY_ROOT, 0, 0);

  static empty<V>(): IdTrie<V> {
    return IdTrie.#empty;
  }

  /** Used by IdTrieEditor.freeze only. */
  static fromParts<V>(root: TrieNode, shift: number, size: number): IdTrie<V> {
    return size === 0 ? IdTrie.#empty : new IdTrie<V>(root, shift, size);
  }

  get size(): number {
    return this.#size;
  }

  get(id: number): V | undefined {
    return lookup(this.#root, this.#shift, id) as V | undefined;
  }

  /** Starts a batch of edits; structures edited with the same token share no nodes it may write. */
  edit(token: EditToken = newEditToken()): IdTrieEditor<V> {
    return new IdTrieEditor<V>(this.#root, this.#shift, this.#size, token);
  }

  /** Visits values in ascending id order. */
  forEach(fn: (value: V, id: number) => void): void {
    if (this.#size > 0) forEachIn(this.#root, this.#shift, 0, fn);
  }

  *entries(): IterableIterator<[number, V]> {
    yield* iterate<V>(this.#root, this.#shift);
  }
}

function* iterate<V>(root: TrieNode, shift: number): Generator<[number, V]> {
  // Explicit stack instead of recursive generators (each nested generator adds a frame per item).
  const nodes: TrieNode[] = [root];
  const levels: number[] = [shift];
  const bases: number[] = [0];
  const positions: number[] = [0];
  while (nodes.length > 0) {
    const top = nodes.length - 1;
    const node = nodes[top]!;
    const level = levels[top]!;
    const i = positions[top]!;
    if (i === WIDTH) {
      nodes.pop();
      levels.pop();
      bases.pop();
      positions.pop();
      continue;
    }
    positions[top] = i + 1;
    const slot = node[i];
    if (slot === undefined) continue;
    if (level === 0) {
      yield [bases[top]! + i, slot as V];
    } else {
      nodes.push(slot as TrieNode);
      levels.push(level - BITS);
      bases.push(bases[top]! + i * 2 ** level);
      positions.push(0);
    }
  }
}

/**
 * A transient trie: a batch of writes that copies each shared node at most once, then `freeze()`.
 * Not safe to use after freeze (it throws); iterating a trie while its editor writes is unsupported.
 */
export class IdTrieEditor<V> {
  #root: TrieNode;
  #shift: number;
  #size: number;
  #token: EditToken | null;

  constructor(root: TrieNode, shift: number, size: number, token: EditToken) {
    this.#root = root;
    this.#shift = shift;
    this.#size = size;
    this.#token = token;
  }

  get size(): number {
    return this.#size;
  }

  get(id: number): V | undefined {
    return lookup(this.#root, this.#shift, id) as V | undefined;
  }

  /** Stores value under id and returns the value it replaces. `undefined` is not a storable value. */
  set(id: number, value: V): V | undefined {
    const token = this.#open();
    if (value === undefined) throw new TypeError("IdTrie cannot store undefined");
    if (!Number.isInteger(id) || id < 0 || id >= 2 ** (MAX_SHIFT + BITS)) {
      throw new RangeError(`IdTrie id out of range: ${id}`);
    }
    while ((id >>> this.#shift) >>> BITS !== 0) {
      const root = newNode(token);
      root[0] = this.#root;
      this.#root = root;
      this.#shift += BITS;
    }
    let node = this.#owned(this.#root, token);
    this.#root = node;
    for (let level = this.#shift; level > 0; level -= BITS) {
      const i = (id >>> level) & MASK;
      const child = node[i] as TrieNode | undefined;
      const owned = child === undefined ? newNode(token) : this.#owned(child, token);
      if (owned !== child) node[i] = owned;
      node = owned;
    }
    const i = id & MASK;
    const previous = node[i] as V | undefined;
    if (previous === undefined) this.#size++;
    node[i] = value;
    return previous;
  }

  /** Removes id and returns the removed value; nodes left empty are pruned from the path. */
  delete(id: number): V | undefined {
    const token = this.#open();
    const previous = lookup(this.#root, this.#shift, id) as V | undefined;
    if (previous === undefined) return undefined;
    const path: TrieNode[] = [];
    let node = this.#owned(this.#root, token);
    this.#root = node;
    for (let level = this.#shift; level > 0; level -= BITS) {
      path.push(node);
      const i = (id >>> level) & MASK;
      const owned = this.#owned(node[i] as TrieNode, token);
      node[i] = owned;
      node = owned;
    }
    node[id & MASK] = undefined;
    this.#size--;
    // Prune: an emptied node is unlinked from its parent, so deletes do not leave dead leaves behind.
    for (let depth = path.length - 1, level = BITS; depth >= 0 && isEmptyNode(node); depth--, level += BITS) {
      const parent = path[depth]!;
      parent[(id >>> level) & MASK] = undefined;
      node = parent;
    }
    return previous;
  }

  forEach(fn: (value: V, id: number) => void): void {
    if (this.#size > 0) forEachIn(this.#root, this.#shift, 0, fn);
  }

  /** Ends the batch and returns the immutable result; the editor cannot be used afterwards. */
  freeze(): IdTrie<V> {
    this.#open();
    this.#token = null;
    return IdTrie.fromParts<V>(this.#root, this.#shift, this.#size);
  }

  #open(): EditToken {
    if (this.#token === null) throw new Error("IdTrie editor used after freeze()");
    return this.#token;
  }

  #owned(node: TrieNode, token: EditToken): TrieNode {
    if (node[OWNER] === token) return node;
    const copy = node.slice();
    copy[OWNER] = token;
    return copy;
  }
}

/**
 * A persistent set of ids stored as 32-bit words in an IdTrie (id >>> 5 selects the word), so a set
 * of n dense ids costs about n/8 bytes and one trie path per 32 ids.
 */
export class IdSet {
  readonly #words: IdTrie<number>;
  readonly #size: number;

  private constructor(words: IdTrie<number>, size: number) {
    this.#words = words;
    this.#size = size;
  }

  static #empty = new IdSet(IdTrie.empty<number>(), 0);

  static empty(): IdSet {
    return IdSet.#empty;
  }

  static fromParts(words: IdTrie<number>, size: number): IdSet {
    return size === 0 ? IdSet.#empty : new IdSet(words, size);
  }

  get size(): number {
    return this.#size;
  }

  has(id: number): boolean {
    const word = this.#words.get(id >>> 5);
    return word !== undefined && (word & (1 << (id & 31))) !== 0;
  }

  edit(token: EditToken): IdSetEditor {
    return new IdSetEditor(this.#words.edit(token), this.#size);
  }

  *[Symbol.iterator](): IterableIterator<number> {
    for (const [index, word] of this.#words.entries()) yield* bitsOf(index, word);
  }
}

function* bitsOf(index: number, word: number): Generator<number> {
  let rest = word;
  while (rest !== 0) {
    const bit = 31 - Math.clz32(rest & -rest);
    yield index * 32 + bit;
    rest &= rest - 1;
  }
}

export class IdSetEditor {
  readonly #words: IdTrieEditor<number>;
  #size: number;

  constructor(words: IdTrieEditor<number>, size: number) {
    this.#words = words;
    this.#size = size;
  }

  get size(): number {
    return this.#size;
  }

  has(id: number): boolean {
    const word = this.#words.get(id >>> 5);
    return word !== undefined && (word & (1 << (id & 31))) !== 0;
  }

  add(id: number): boolean {
    const index = id >>> 5;
    const bit = 1 << (id & 31);
    const word = this.#words.get(index) ?? 0;
    if ((word & bit) !== 0) return false;
    this.#words.set(index, word | bit);
    this.#size++;
    return true;
  }

  remove(id: number): boolean {
    const index = id >>> 5;
    const bit = 1 << (id & 31);
    const word = this.#words.get(index) ?? 0;
    if ((word & bit) === 0) return false;
    const rest = word & ~bit;
    if (rest === 0) this.#words.delete(index);
    else this.#words.set(index, rest);
    this.#size--;
    return true;
  }

  /** Ids in ascending order; collected first, so writes during the loop do not disturb it. */
  ids(): number[] {
    const out: number[] = [];
    this.#words.forEach((word, index) => {
      for (const id of bitsOf(index, word)) out.push(id);
    });
    return out;
  }

  freeze(): IdSet {
    return IdSet.fromParts(this.#words.freeze(), this.#size);
  }
}
