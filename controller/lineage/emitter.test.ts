import pino from "pino";
import { describe, expect, it } from "vitest";
import { createLineageTransport, LineageEmitter, lineageConfigFromEnv } from "./emitter.ts";
import { type RunEvent, RunLineage, syncJobLineageJob } from "./events.ts";
import { ConsoleTransport, HttpTransport, type LineageTransport } from "./transports.ts";

const run = new RunLineage({ job: syncJobLineageJob("ns", "job"), inputs: [], outputs: [] });

/** A logger whose lines are kept for inspection. */
function capturingLogger() {
  const lines: string[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => lines.push(line) });
  return { logger, lines };
}

/** A transport whose behaviour each test scripts: fail, hang or succeed per event. */
class ScriptedTransport implements LineageTransport {
  readonly kind = "http";
  readonly sent: RunEvent[] = [];
  readonly #behaviour: (event: RunEvent, index: number) => Promise<void>;
  #calls = 0;

  constructor(behaviour: (event: RunEvent, index: number) => Promise<void>) {
    this.#behaviour = behaviour;
  }

  async send(event: RunEvent): Promise<void> {
    await this.#behaviour(event, this.#calls++);
    this.sent.push(event);
  }

  async close(): Promise<void> {}

  describe(): string {
    return "scripted";
  }
}

describe("LineageEmitter", () => {
  it("sends in order, counts failures and logs them without throwing", async () => {
    const { logger, lines } = capturingLogger();
    const transport = new ScriptedTransport(async (_event, index) => {
      if (index === 1) throw new Error("connect ECONNREFUSED for http://user:hunter2@marquez:5000");
    });
    const emitter = new LineageEmitter({ transport, logger });
    const results = await Promise.all([
      emitter.emit(run.start()),
      emitter.emit(run.running()),
      emitter.emit(run.complete()),
    ]);
    expect(results).toEqual([true, false, true]);
    expect(transport.sent.map((e) => e.eventType)).toEqual(["START", "COMPLETE"]);
    expect(emitter.counters()).toEqual({ sent: 2, failed: 1, dropped: 0, queued: 0 });
    const warning = lines.find((l) => l.includes("lineage event not delivered"));
    expect(warning).toContain('"eventType":"RUNNING"');
    expect(warning).not.toContain("hunter2");
  });

  it("moves on after the deadline when a transport hangs, and drops events beyond the queue bound", async () => {
    const { logger } = capturingLogger();
    const hanging = new ScriptedTransport(() => new Promise(() => {}));
    const emitter = new LineageEmitter({ transport: hanging, logger, deadlineMs: 50, maxQueued: 1 });
    const began = Date.now();
    const results = await Promise.all([
      emitter.emit(run.start()),
      emitter.emit(run.running()),
      emitter.emit(run.complete()),
    ]);
    expect(results).toEqual([false, false, false]);
    expect(Date.now() - began).toBeLessThan(2000);
    expect(emitter.counters()).toEqual({ sent: 0, failed: 2, dropped: 1, queued: 0 });
  });

  it("writes one JSON line per event to the console transport", async () => {
    const written: string[] = [];
    const emitter = new LineageEmitter({ transport: new ConsoleTransport((line) => written.push(line)) });
    await emitter.emit(run.start());
    await emitter.emit(run.complete());
    await emitter.close();
    expect(written).toHaveLength(2);
    for (const line of written) expect(line.endsWith("\n") && !line.slice(0, -1).includes("\n")).toBe(true);
    expect(written.map((l) => (JSON.parse(l) as RunEvent).run.runId)).toEqual([run.runId, run.runId]);
  });
});

describe("lineage configuration", () => {
  it("reads the transport and its settings from the environment", () => {
    expect(lineageConfigFromEnv({})).toMatchObject({ transport: "console", namespace: "syncgov" });
    expect(
      lineageConfigFromEnv({
        SYNCGOV_LINEAGE: "HTTP",
        SYNCGOV_LINEAGE_URL: "http://marquez:5000",
        SYNCGOV_LINEAGE_API_KEY: "k",
      }),
    ).toMatchObject({ transport: "http", url: "http://marquez:5000", apiKey: "k" });
    expect(
      lineageConfigFromEnv({
        SYNCGOV_LINEAGE: "kafka",
        SYNCGOV_LINEAGE_TOPIC: "openlineage.events",
        SYNCGOV_LINEAGE_KAFKA_BROKERS: "a:9092, b:9092",
      }),
    ).toMatchObject({ transport: "kafka", topic: "openlineage.events", kafkaBrokers: ["a:9092", "b:9092"] });
  });

  it("names the missing or bad setting, and never repeats a URL's password", () => {
    expect(() => lineageConfigFromEnv({ SYNCGOV_LINEAGE: "http" })).toThrow(
      /url: the http transport needs a URL/,
    );
    expect(() => lineageConfigFromEnv({ SYNCGOV_LINEAGE: "kafka" })).toThrow(/topic/);
    expect(() => lineageConfigFromEnv({ SYNCGOV_LINEAGE: "carrier-pigeon" })).toThrow(/transport/);
    try {
      lineageConfigFromEnv({ SYNCGOV_LINEAGE: "http", SYNCGOV_LINEAGE_URL: "ftp://u:hunter2@host" });
      expect.unreachable();
    } catch (error) {
      expect(String(error)).toMatch(/url/);
      expect(String(error)).not.toContain("hunter2");
    }
  });

  it("builds the configured transport, describing it without credentials", () => {
    const http = createLineageTransport({
      transport: "http",
      url: "https://ops:hunter2@marquez.example:5000/base",
    });
    expect(http).toBeInstanceOf(HttpTransport);
    expect(http.describe()).toBe("https://marquez.example:5000/base/api/v1/lineage");
    expect(createLineageTransport({ transport: "none" }).kind).toBe("none");
    expect(() => createLineageTransport({ transport: "kafka", topic: "t" })).toThrow(/brokers/);
  });
});
