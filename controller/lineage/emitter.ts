/**
 * Sends lineage events without ever holding up a sync. emit() queues the event and returns at once;
 * one sender works through the queue in order (so a run's START reaches the server before its
 * COMPLETE), giving each event at most `deadlineMs`. An event that fails or times out is counted
 * and logged, never thrown; a full queue drops new events (counted and logged) rather than grow.
 *
 * Configuration comes from an explicit options object or from the environment:
 *   SYNCGOV_LINEAGE               console | http | kafka | none   (default console, as OpenLineage clients)
 *   SYNCGOV_LINEAGE_URL           base URL of a Marquez-compatible server (http)
 *   SYNCGOV_LINEAGE_API_KEY       bearer token for it (http, optional)
 *   SYNCGOV_LINEAGE_TOPIC         topic for events (kafka)
 *   SYNCGOV_LINEAGE_KAFKA_BROKERS bootstrap servers, comma-separated (kafka, unless a client is passed)
 *   SYNCGOV_LINEAGE_NAMESPACE     the installation's job namespace (default syncgov)
 */

import type { Kafka } from "kafkajs";
import { z } from "zod";
import { KAFKA_TOPIC } from "../api/identifiers.ts";
import { connectKafka } from "../connectors/kafka/cluster.ts";
import { type Logger, logger as rootLogger } from "../telemetry/logger.ts";
import type { RunEvent } from "./events.ts";
import { redactCredentials } from "./naming.ts";
import {
  ConsoleTransport,
  HttpTransport,
  KafkaTransport,
  type LineageTransport,
  NoLineageTransport,
} from "./transports.ts";

export interface LineageEmitterOptions {
  readonly transport: LineageTransport;
  readonly logger?: Logger;
  /** Events waiting to be sent before new ones are dropped; default 1000. */
  readonly maxQueued?: number;
  /** Longest time one event may take before the sender moves on; default 30 s. */
  readonly deadlineMs?: number;
}

export interface LineageCounters {
  readonly sent: number;
  readonly failed: number;
  readonly dropped: number;
  readonly queued: number;
}

interface Pending {
  readonly event: RunEvent;
  readonly done: (delivered: boolean) => void;
}

export class LineageEmitter {
  readonly transport: LineageTransport;
  readonly #log: Logger;
  readonly #maxQueued: number;
  readonly #deadlineMs: number;
  readonly #queue: Pending[] = [];
  #sender: Promise<void> = Promise.resolve();
  #draining = false;
  #sent = 0;
  #failed = 0;
  #dropped = 0;

  constructor(options: LineageEmitterOptions) {
    this.transport = options.transport;
    this.#log = (options.logger ?? rootLogger).child({
      component: "lineage",
      transport: options.transport.describe(),
    });
    this.#maxQueued = options.maxQueued ?? 1000;
    this.#deadlineMs = options.deadlineMs ?? 30_000;
  }

  /**
   * Queues the event. The promise resolves true once it was delivered and false if it was dropped
   * or failed; it never rejects, and nobody needs to wait for it.
   */
  emit(event: RunEvent): Promise<boolean> {
    if (this.transport.kind === "none") return Promise.resolve(true);
    if (this.#queue.length >= this.#maxQueued) {
      this.#dropped++;
      this.#log.warn(
        { eventType: event.eventType, runId: event.run.runId, queued: this.#queue.length },
        "lineage queue is full; event dropped",
      );
      return Promise.resolve(false);
    }
    const delivered = new Promise<boolean>((done) => this.#queue.push({ event, done }));
    if (!this.#draining) {
      this.#draining = true;
      this.#sender = this.#drain();
    }
    return delivered;
  }

  counters(): LineageCounters {
    return { sent: this.#sent, failed: this.#failed, dropped: this.#dropped, queued: this.#queue.length };
  }

  /** Waits until the queue is empty (each event bounded by the deadline). */
  async flush(): Promise<void> {
    while (this.#draining) await this.#sender;
  }

  /** Sends what is queued, then closes the transport. */
  async close(): Promise<void> {
    await this.flush();
    await this.transport.close();
  }

  /**
   * Sends until the queue is empty. The flag is cleared in the same synchronous step that finds the
   * queue empty, so an emit() right after always sees either a running sender or none at all.
   */
  async #drain(): Promise<void> {
    try {
      for (let next = this.#queue.shift(); next; next = this.#queue.shift()) {
        const { event, done } = next;
        try {
          await withDeadline(this.transport.send(event), this.#deadlineMs);
          this.#sent++;
          done(true);
        } catch (error) {
          this.#failed++;
          this.#log.warn(
            {
              eventType: event.eventType,
              runId: event.run.runId,
              job: `${event.job.namespace}/${event.job.name}`,
              error: redactCredentials(error instanceof Error ? error.message : String(error)),
            },
            "lineage event not delivered",
          );
          done(false);
        }
      }
    } finally {
      this.#draining = false;
    }
  }
}

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  // The send may still settle later; its outcome no longer matters.
  work.catch(() => {});
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

const kafkaTopic = z.string().regex(new RegExp(KAFKA_TOPIC), { message: "must be a Kafka topic name" });

/** Lineage settings, from the environment or given explicitly; validated, errors name the field. */
export const LineageConfig = z
  .object({
    transport: z.enum(["console", "http", "kafka", "none"]).default("console"),
    url: z.url({ protocol: /^https?$/ }).optional(),
    apiKey: z.string().min(1).optional(),
    topic: kafkaTopic.optional(),
    kafkaBrokers: z.array(z.string().min(1)).optional(),
    namespace: z.string().min(1).max(1024).default("syncgov"),
    timeoutMs: z.int().min(1).max(60_000).optional(),
    retries: z.int().min(0).max(10).optional(),
  })
  .superRefine((config, ctx) => {
    if (config.transport === "http" && config.url === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["url"],
        message: "the http transport needs a URL (SYNCGOV_LINEAGE_URL)",
      });
    }
    if (config.transport === "kafka" && config.topic === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["topic"],
        message: "the kafka transport needs a topic (SYNCGOV_LINEAGE_TOPIC)",
      });
    }
  });
export type LineageConfig = z.output<typeof LineageConfig>;
export type LineageConfigInput = z.input<typeof LineageConfig>;

/** Reads the SYNCGOV_LINEAGE* variables (see the module comment). Throws a ZodError naming the bad one. */
export function lineageConfigFromEnv(env: NodeJS.ProcessEnv = process.env): LineageConfig {
  const value = (name: string) => {
    const text = env[name]?.trim();
    return text === undefined || text === "" ? undefined : text;
  };
  const brokers = value("SYNCGOV_LINEAGE_KAFKA_BROKERS");
  const result = LineageConfig.safeParse({
    transport: value("SYNCGOV_LINEAGE")?.toLowerCase(),
    url: value("SYNCGOV_LINEAGE_URL"),
    apiKey: value("SYNCGOV_LINEAGE_API_KEY"),
    topic: value("SYNCGOV_LINEAGE_TOPIC"),
    kafkaBrokers: brokers?.split(",").map((b) => b.trim()),
    namespace: value("SYNCGOV_LINEAGE_NAMESPACE"),
  });
  if (result.success) return result.data;
  // The issues name the field; the input (which may hold a URL with a password or a key) stays out.
  throw new Error(
    `invalid lineage settings: ${result.error.issues.map((i) => `${i.path.join(".") || "config"}: ${i.message}`).join("; ")}`,
  );
}

export interface LineageDependencies {
  /** A Kafka client for the kafka transport; otherwise one is made from config.kafkaBrokers. */
  readonly kafka?: Kafka;
  readonly logger?: Logger;
  /** Writer for the console transport; default stdout. */
  readonly write?: (line: string) => void;
}

/** The transport the configuration asks for. */
export function createLineageTransport(
  input: LineageConfigInput,
  deps: LineageDependencies = {},
): LineageTransport {
  const config = LineageConfig.parse(input);
  switch (config.transport) {
    case "none":
      return new NoLineageTransport();
    case "console":
      return new ConsoleTransport(deps.write);
    case "http":
      return new HttpTransport({
        url: config.url!,
        ...(config.apiKey ? { apiKey: config.apiKey } : {}),
        ...(config.timeoutMs ? { timeoutMs: config.timeoutMs } : {}),
        ...(config.retries === undefined ? {} : { retries: config.retries }),
      });
    case "kafka": {
      const kafka =
        deps.kafka ??
        (config.kafkaBrokers
          ? connectKafka({
              brokers: config.kafkaBrokers,
              clientId: "syncgov-lineage",
              ...(deps.logger ? { logger: deps.logger } : {}),
            })
          : undefined);
      if (!kafka)
        throw new Error(
          "the kafka lineage transport needs brokers (SYNCGOV_LINEAGE_KAFKA_BROKERS) or a client",
        );
      return new KafkaTransport({ kafka, topic: config.topic! });
    }
  }
}

/** An emitter for the configuration; `lineageConfigFromEnv()` when none is given. */
export function createLineageEmitter(
  config: LineageConfigInput = lineageConfigFromEnv(),
  deps: LineageDependencies = {},
): LineageEmitter {
  return new LineageEmitter({
    transport: createLineageTransport(config, deps),
    ...(deps.logger ? { logger: deps.logger } : {}),
  });
}
