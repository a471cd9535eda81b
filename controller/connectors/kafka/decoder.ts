/**
 * Decoding a stream's messages in a worker thread. On the main thread a realtime session's rows cost
 * the Kafka client's decoding, JSON parsing, coercion to the row model and the COPY text the target
 * writes; the runner's main thread, not PostgreSQL or the broker, is then what bounds a session's
 * rate. A WorkerDecoder moves the pure part (dead-letter.ts decodeMessage for every message, the key
 * check and copy-text.ts copyText of the rows) into one worker thread, so that the main thread keeps
 * only the consumer, the session logic and the socket writes, and both cores of a small machine work.
 *
 * What crosses the thread boundary is bytes, both ways: the messages' keys and values packed into
 * one transferred buffer, and the rows' COPY text back in another, with the few rejections as plain
 * objects. Rows themselves never cross (cloning objects costs as much as decoding them again); where
 * a chunk's rows are needed as objects (masking, a divert to the buffer topic, an upsert), the source
 * decodes them on the main thread with the same function, which gives the same rows.
 *
 * The worker is pure: it holds no connection and no secret, only the row schema. If it fails, every
 * decode in flight and after rejects, and the source decodes on the main thread instead.
 */

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

export interface DecoderWorkerData {
  readonly schema: RowSchema;
}

interface Pending {
  readonly resolve: (decoded: DecodedMessages) => void;
  readonly reject: (error: Error) => void;
}

export class WorkerDecoder implements MessageDecoder {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #columns: readonly string[];
  #next = 0;
  #failure: Error | undefined;

  constructor(schema: RowSchema) {
    this.#columns = schema.columns.map((c) => c.name);
    const workerData: DecoderWorkerData = {
      schema: { columns: schema.columns.map((c) => ({ ...c })), keyColumns: [...schema.keyColumns] },
    };
    this.#worker = new Worker(new URL("./decode-worker.ts", import.meta.url), { workerData });
    // The session owns the decoder and closes it; it must never keep a stopping process alive.
    this.#worker.unref();
    this.#worker.on("message", (reply: DecodeReply) => this.#settle(reply));
    this.#worker.on("error", (error) => this.#fail(error));
    this.#worker.on("exit", (code) => this.#fail(new Error(`the decode worker exited with code ${code}`)));
  }

  decode(messages: readonly ConsumedMessage[]): Promise<DecodedMessages> {
    if (this.#failure) return Promise.reject(this.#failure);
    const { bytes, offsets } = pack(messages);
    const id = this.#next++;
    return new Promise<DecodedMessages>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const request: DecodeRequest = { id, bytes, offsets };
      this.#worker.postMessage(request, [bytes, offsets.buffer as ArrayBuffer]);
    });
  }

  /** Stops the worker; decodes still in flight reject. */
  async close(): Promise<void> {
    this.#fail(new Error("the decoder was closed"));
    await this.#worker.terminate();
  }

  #settle(reply: DecodeReply): void {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    pending.resolve({
      rows: reply.rows,
      rejections: reply.rejections,
      copy: { columns: this.#columns, text: new Uint8Array(reply.text), distinctKeys: reply.distinctKeys },
    });
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) pending.reject(this.#failure);
    this.#pending.clear();
  }
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
