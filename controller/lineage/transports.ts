/**
 * Where lineage events go: stdout (one JSON line each), an HTTP endpoint speaking Marquez's
 * `POST /api/v1/lineage`, or a Kafka topic. A transport's send() throws when the event did not get
 * through; the emitter (./emitter.ts) counts and logs that, so a transport never decides whether a
 * sync goes on.
 *
 * describe() is what logs and errors may say about a transport: the HTTP endpoint without user,
 * password or query, the topic name. Credentials given in the URL are sent as a Basic authorization
 * header instead (fetch refuses URLs that carry them).
 */

import { type Kafka, Partitioners, type Producer } from "kafkajs";
import { clusterTopicLimit, fitsAlone, recordBytes, type TopicLimit } from "../connectors/kafka/limits.ts";
import type { RunEvent } from "./events.ts";
import { redactUrl } from "./naming.ts";

export interface LineageTransport {
  readonly kind: "console" | "http" | "kafka" | "none";
  /** Resolves once the event was delivered; throws when it was not. */
  send(event: RunEvent): Promise<void>;
  close(): Promise<void>;
  /** A description safe for logs: no credentials. */
  describe(): string;
}

/** Drops every event: lineage turned off. */
export class NoLineageTransport implements LineageTransport {
  readonly kind = "none";
  async send(): Promise<void> {}
  async close(): Promise<void> {}
  describe(): string {
    return "none";
  }
}

/** One JSON line per event, to stdout unless another writer is given. */
export class ConsoleTransport implements LineageTransport {
  readonly kind = "console";
  readonly #write: (line: string) => void;

  constructor(write: (line: string) => void = (line) => process.stdout.write(line)) {
    this.#write = write;
  }

  async send(event: RunEvent): Promise<void> {
    this.#write(`${JSON.stringify(event)}\n`);
  }

  async close(): Promise<void> {}

  describe(): string {
    return "console";
  }
}

/** An HTTP failure worth no further attempt (the endpoint refused the event as such). */
export class LineageRejectedError extends Error {
  override readonly name = "LineageRejectedError";
  readonly status: number;

  constructor(endpoint: string, status: number) {
    super(`lineage endpoint ${endpoint} refused the event with HTTP ${status}`);
    this.status = status;
  }
}

export interface HttpTransportOptions {
  /** Base URL of a Marquez-compatible server, e.g. `http://marquez:5000`. */
  readonly url: string;
  /** Path appended to the base URL; default `api/v1/lineage`. */
  readonly endpointPath?: string;
  /** Sent as `Authorization: Bearer …`. */
  readonly apiKey?: string;
  /** Per attempt; default 5 s. */
  readonly timeoutMs?: number;
  /** Attempts after the first; default 2. */
  readonly retries?: number;
  /** Wait before the first retry, doubling after; default 250 ms. */
  readonly retryBackoffMs?: number;
  readonly fetch?: typeof globalThis.fetch;
}

/**
 * POSTs each event as JSON. Network errors, timeouts, 408, 429 and 5xx are retried with backoff;
 * other 4xx are not (the event itself was refused). Worst case per event: (retries + 1) × timeout
 * plus the backoff — 15.75 s with the defaults.
 */
export class HttpTransport implements LineageTransport {
  readonly kind = "http";
  readonly #endpoint: URL;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #backoffMs: number;
  readonly #fetch: typeof globalThis.fetch;

  constructor(options: HttpTransportOptions) {
    let base: URL;
    try {
      base = new URL(options.url);
    } catch {
      throw new Error("the lineage URL is not a URL");
    }
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new Error(`the lineage URL must be http or https, not ${base.protocol}`);
    }
    this.#headers = { "content-type": "application/json" };
    if (base.username !== "" || base.password !== "") {
      const user = decodeURIComponent(base.username);
      const password = decodeURIComponent(base.password);
      this.#headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
      base.username = "";
      base.password = "";
    }
    if (options.apiKey) this.#headers.authorization = `Bearer ${options.apiKey}`;
    const path = (options.endpointPath ?? "api/v1/lineage").replace(/^\//, "");
    this.#endpoint = new URL(path, base.href.endsWith("/") ? base.href : `${base.href}/`);
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#retries = options.retries ?? 2;
    this.#backoffMs = options.retryBackoffMs ?? 250;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  async send(event: RunEvent): Promise<void> {
    const body = JSON.stringify(event);
    let lastError: unknown;
    for (let attempt = 0; attempt <= this.#retries; attempt++) {
      if (attempt > 0)
        await new Promise((resolve) => setTimeout(resolve, this.#backoffMs * 2 ** (attempt - 1)));
      try {
        const response = await this.#fetch(this.#endpoint, {
          method: "POST",
          headers: this.#headers,
          body,
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
        // Read the body so the connection can be reused; its content is not needed.
        await response.arrayBuffer().catch(() => undefined);
        if (response.ok) return;
        const refused = new LineageRejectedError(this.describe(), response.status);
        if (!retriableStatus(response.status)) throw refused;
        lastError = refused;
      } catch (error) {
        if (error instanceof LineageRejectedError && !retriableStatus(error.status)) throw error;
        lastError = error;
      }
    }
    throw new Error(
      `lineage endpoint ${this.describe()} did not take the event after ${this.#retries + 1} attempts: ${describeError(lastError)}`,
    );
  }

  async close(): Promise<void> {}

  describe(): string {
    return redactUrl(this.#endpoint.href);
  }
}

function retriableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    // fetch wraps the socket error; its cause says what happened (ECONNREFUSED, timeout).
    const cause = (error as { cause?: unknown }).cause;
    const detail = cause instanceof Error ? ` (${cause.message})` : "";
    return `${error.name}: ${error.message}${detail}`;
  }
  return String(error);
}

export interface KafkaTransportOptions {
  readonly kafka: Kafka;
  readonly topic: string;
}

/**
 * Produces each event as JSON to a topic, keyed `run:<job namespace>/<job name>` as OpenLineage's
 * own Kafka transport does, so a job's events stay in order on one partition.
 */
export class KafkaTransport implements LineageTransport {
  readonly kind = "kafka";
  readonly #kafka: Kafka;
  readonly #topic: string;
  #producer: Promise<Producer> | undefined;
  readonly #limit: TopicLimit;

  constructor(options: KafkaTransportOptions) {
    this.#kafka = options.kafka;
    this.#topic = options.topic;
    this.#limit = clusterTopicLimit(this.#kafka, this.#topic);
  }

  /**
   * Sends the event as one record. An event larger than the topic's max.message.bytes (read from the
   * cluster) is refused here with its size and the limit, rather than by the broker after the
   * producer's retries: the emitter reports the failure (a lineage failure never changes a run).
   */
  async send(event: RunEvent): Promise<void> {
    const producer = await this.#connected();
    const message = { key: `run:${event.job.namespace}/${event.job.name}`, value: JSON.stringify(event) };
    const limitBytes = await this.#limit.get();
    if (!fitsAlone(message, limitBytes)) {
      throw new Error(
        `the ${event.eventType} event of run ${event.run.runId} is ${recordBytes(message)} bytes; topic ${this.#topic} takes at most ${limitBytes} (max.message.bytes)`,
      );
    }
    try {
      await producer.send({ topic: this.#topic, acks: -1, messages: [message] });
    } catch (error) {
      this.#limit.forgetOn(error);
      throw error;
    }
  }

  async close(): Promise<void> {
    const producer = this.#producer;
    this.#producer = undefined;
    if (producer) await (await producer.catch(() => undefined))?.disconnect();
  }

  describe(): string {
    return `kafka topic ${this.#topic}`;
  }

  #connected(): Promise<Producer> {
    this.#producer ??= (async () => {
      const producer = this.#kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
      await producer.connect();
      return producer;
    })();
    this.#producer.catch(() => {
      this.#producer = undefined;
    });
    return this.#producer;
  }
}
