/**
 * Decoding a stream's messages in a worker thread. On the main thread a realtime session's rows cost
 * the Kafka client's decoding, JSON parsing, coercion to the row model and the COPY text the target
 * writes; the runner's main thread, not PostgreSQL or the broker, is then what bounds a session's
 * rate. A DecodePool moves the pure part (dead-letter.ts decodeMessage for every message, the key
 * check and copy-text.ts copyText of the rows) into worker threads, so that the main thread keeps
 * only the consumer, the session logic and the socket writes, and both cores of a small machine work.
 *
 * What crosses the thread boundary is bytes, both ways: the messages' keys and values packed into
 * one transferred buffer, and the rows' COPY text back in another, with the few rejections as plain
 * objects. Rows themselves never cross (cloning objects costs as much as decoding them again); where
 * a chunk's rows are needed as objects (masking, a divert to the buffer topic, an upsert), the source
 * decodes them on the main thread with the same function, which gives the same rows.
 *
 * The threads belong to the process, not to a session (sharedDecodePool): a controller running many
 * sessions in-process keeps one small pool, and a session started later finds its code already
 * compiled. A worker is pure: it holds no connection and no secret, only the row schemas it was sent.
 * If one fails, the decodes it had in flight reject and the source decodes those chunks on the main
 * thread; the pool starts a new worker for later chunks, at most one per RESPAWN_MS.
 */

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { PreparedCopy } from "../postgres/copy-text.ts";
import type { RowSchema } from "../record.ts";
import type { ConsumedMessage, Rejection } from "./dead-letter.ts";

/** A message the decoder set aside, by its index in the decoded list. */
export type IndexedRejection = Rejection & { readonly index: number };

export interface DecodedMessages {
  /** Messages that became rows. */
  readonly rows: number;
  /** The others, in order, with the reason. */
  readonly rejections: readonly IndexedRejection[];
  /** The rows as COPY text in schema column order, and whether their keys are distinct. */
  readonly copy: PreparedCopy;
}

/** Decodes a list of messages somewhere other than the caller's thread. */
export interface MessageDecoder {
  decode(messages: readonly ConsumedMessage[]): Promise<DecodedMessages>;
}

/** What the main thread sends: keys and values packed into `bytes`; offsets holds 4 numbers a message. */
export interface DecodeRequest {
  readonly id: number;
  /** The pool's number for the schema; the schema itself comes with the first request naming it. */
  readonly schemaId: number;
  readonly schema?: RowSchema;
  readonly bytes: ArrayBuffer;
  /** Per message: key start, key length, value start, value length; a length of -1 is null. */
  readonly offsets: Int32Array;
}

export interface DecodeReply {
  readonly id: number;
  readonly rows: number;
  readonly rejections: readonly IndexedRejection[];
  readonly text: ArrayBuffer;
  readonly distinctKeys: boolean;
}

interface Pending {
  readonly columns: readonly string[];
  readonly resolve: (decoded: DecodedMessages) => void;
  readonly reject: (error: Error) => void;
}

/** One worker thread, the schemas it was sent, and the decodes it has in flight. */
interface PoolWorker {
  readonly thread: Worker;
  readonly schemas: Set<number>;
  readonly pending: Map<number, Pending>;
  failed: boolean;
}

/** Least time between starting a worker after a failure and the next. */
const RESPAWN_MS = 10_000;

/** The worker threads' entry: decode-worker.ts in the source tree, decode-worker.js in the build. */
const DECODE_WORKER = new URL(
  import.meta.url.endsWith(".ts") ? "./decode-worker.ts" : "./decode-worker.js",
  import.meta.url,
);

export interface DecodePoolOptions {
  /**
   * Worker threads; default one a core, at most 4. The threads share the cores with the main thread,
   * PostgreSQL and the broker: on 2 cores, one decode thread held a realtime session to about 188k
   * rows/s round after round (it was busy 94% of the time while the main thread idled half of it),
   * and two let it reach 210–231k (test/bench/sync.ts).
   */
  readonly threads?: number;
}

export class DecodePool {
  readonly #threads: number;
  readonly #workers: (PoolWorker | undefined)[] = [];
  /** Schemas by their definition, so that sessions of the same job share one number. */
  readonly #schemaIds = new Map<string, number>();
  readonly #schemaKeys = new WeakMap<RowSchema, { id: number; columns: readonly string[] }>();
  #next = 0;
  #turn = 0;
  #lastSpawn = Number.NEGATIVE_INFINITY;
  #closed = false;

  constructor(options: DecodePoolOptions = {}) {
    this.#threads = options.threads ?? Math.min(4, availableParallelism());
    if (!Number.isInteger(this.#threads) || this.#threads < 1)
      throw new Error("threads must be a positive integer");
  }

  /** A decoder for the rows of one schema. */
  decoder(schema: RowSchema): MessageDecoder {
    return { decode: (messages) => this.decode(schema, messages) };
  }

  decode(schema: RowSchema, messages: readonly ConsumedMessage[]): Promise<DecodedMessages> {
    if (this.#closed) return Promise.reject(new Error("the decode pool was closed"));
    const worker = this.#pick();
    if (!worker) return Promise.reject(new Error("no decode worker is running; one starts again shortly"));
    const { id: schemaId, columns } = this.#schemaOf(schema);
    const { bytes, offsets } = pack(messages);
    const id = this.#next++;
    return new Promise<DecodedMessages>((resolve, reject) => {
      if (worker.pending.size === 0) worker.thread.ref();
      worker.pending.set(id, { columns, resolve, reject });
      const first = !worker.schemas.has(schemaId);
      worker.schemas.add(schemaId);
      const request: DecodeRequest = {
        id,
        schemaId,
        ...(first ? { schema } : {}),
        bytes,
        offsets,
      };
      worker.thread.postMessage(request, [bytes, offsets.buffer as ArrayBuffer]);
    });
  }

  /** Stops the workers; decodes in flight and after reject. */
  async close(): Promise<void> {
    this.#closed = true;
    const workers = this.#workers.splice(0).filter((w) => w !== undefined);
    for (const worker of workers) this.#fail(worker, new Error("the decode pool was closed"));
    await Promise.all(workers.map((w) => w.thread.terminate()));
  }

  /** The next worker in turn, started (or restarted after a failure) when needed. */
  #pick(): PoolWorker | undefined {
    const slot = this.#turn++ % this.#threads;
    let worker = this.#workers[slot];
    if (worker && !worker.failed) return worker;
    const respawn = worker !== undefined;
    if (respawn && performance.now() - this.#lastSpawn < RESPAWN_MS) {
      return this.#workers.find((w) => w && !w.failed);
    }
    if (respawn) this.#lastSpawn = performance.now();
    worker = this.#spawn();
    this.#workers[slot] = worker;
    return worker;
  }

  #spawn(): PoolWorker {
    const thread = new Worker(DECODE_WORKER);
    const worker: PoolWorker = { thread, schemas: new Set(), pending: new Map(), failed: false };
    thread.on("message", (reply: DecodeReply) => {
      const pending = worker.pending.get(reply.id);
      if (!pending) return;
      worker.pending.delete(reply.id);
      if (worker.pending.size === 0) worker.thread.unref();
      pending.resolve({
        rows: reply.rows,
        rejections: reply.rejections,
        copy: {
          columns: pending.columns,
          text: new Uint8Array(reply.text),
          distinctKeys: reply.distinctKeys,
        },
      });
    });
    thread.on("error", (error) => this.#fail(worker, error));
    thread.on("exit", (code) => this.#fail(worker, new Error(`a decode worker exited with code ${code}`)));
    // An idle worker must never keep a stopping process alive (one with decodes in flight does).
    // After the listeners: adding a message listener refs the worker's port again.
    thread.unref();
    return worker;
  }

  #fail(worker: PoolWorker, error: Error): void {
    worker.failed = true;
    worker.thread.unref();
    for (const pending of worker.pending.values()) pending.reject(error);
    worker.pending.clear();
  }

  #schemaOf(schema: RowSchema): { id: number; columns: readonly string[] } {
    let known = this.#schemaKeys.get(schema);
    if (!known) {
      const key = JSON.stringify([schema.columns, schema.keyColumns]);
      let id = this.#schemaIds.get(key);
      if (id === undefined) {
        id = this.#schemaIds.size;
        this.#schemaIds.set(key, id);
      }
      known = { id, columns: schema.columns.map((c) => c.name) };
      this.#schemaKeys.set(schema, known);
    }
    return known;
  }
}

let shared: DecodePool | undefined;

/** The process's decode pool, started at first use; its threads never keep the process alive. */
export function sharedDecodePool(): DecodePool {
  shared ??= new DecodePool();
  return shared;
}

/** Keys and values side by side in one buffer of its own (so it can be transferred, not copied). */
export function pack(messages: readonly ConsumedMessage[]): { bytes: ArrayBuffer; offsets: Int32Array } {
  let total = 0;
  for (const m of messages) total += (m.key?.length ?? 0) + (m.value?.length ?? 0);
  const bytes = new ArrayBuffer(total);
  const view = new Uint8Array(bytes);
  const offsets = new Int32Array(messages.length * 4);
  let at = 0;
  for (let i = 0; i < messages.length; i++) {
    const { key, value } = messages[i]!;
    offsets[4 * i] = at;
    offsets[4 * i + 1] = key === null ? -1 : key.length;
    if (key !== null) {
      view.set(key, at);
      at += key.length;
    }
    offsets[4 * i + 2] = at;
    offsets[4 * i + 3] = value === null ? -1 : value.length;
    if (value !== null) {
      view.set(value, at);
      at += value.length;
    }
  }
  return { bytes, offsets };
}

/** The messages packed by pack(), as Buffers over the same memory. */
export function unpack(bytes: ArrayBuffer, offsets: Int32Array): ConsumedMessage[] {
  const messages = new Array<ConsumedMessage>(offsets.length / 4);
  for (let i = 0; i < messages.length; i++) {
    const keyLength = offsets[4 * i + 1]!;
    const valueLength = offsets[4 * i + 3]!;
    messages[i] = {
      key: keyLength < 0 ? null : Buffer.from(bytes, offsets[4 * i]!, keyLength),
      value: valueLength < 0 ? null : Buffer.from(bytes, offsets[4 * i + 2]!, valueLength),
    };
  }
  return messages;
}
