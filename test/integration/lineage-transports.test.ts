import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { connectKafka } from "../../controller/connectors/kafka/cluster.ts";
import { defineRowSchema } from "../../controller/connectors/record.ts";
import { createLineageEmitter, LineageEmitter } from "../../controller/lineage/emitter.ts";
import { type RunEvent, RunLineage, syncJobLineageJob } from "../../controller/lineage/events.ts";
import { kafkaDataset, postgresDataset } from "../../controller/lineage/naming.ts";
import { HttpTransport } from "../../controller/lineage/transports.ts";
import { testEnv, uniqueName } from "../support/env.ts";

interface Received {
  readonly method: string | undefined;
  readonly path: string | undefined;
  readonly contentType: string | undefined;
  readonly authorization: string | undefined;
  readonly event: RunEvent;
}

/**
 * A tiny Marquez stand-in on a loopback port: records every request, and answers each with what
 * `respond` says (a status, or "hang" to never answer).
 */
async function lineageServer(respond: (index: number) => number | "hang" = () => 201) {
  const received: Received[] = [];
  const open = new Set<IncomingMessage>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      received.push({
        method: req.method,
        path: req.url,
        contentType: req.headers["content-type"],
        authorization: req.headers.authorization,
        event: JSON.parse(Buffer.concat(chunks).toString("utf8")) as RunEvent,
      });
      const answer = respond(received.length - 1);
      if (answer === "hang") {
        open.add(req);
        return;
      }
      res.writeHead(answer, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  servers.push(server);
  return { received, port, url: `http://127.0.0.1:${port}` };
}

const servers: Server[] = [];
afterAll(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

function capturingLogger() {
  const lines: string[] = [];
  return { logger: pino({ level: "debug" }, { write: (line: string) => lines.push(line) }), lines };
}

const schema = defineRowSchema(
  [
    { name: "order_id", type: "bigint" },
    { name: "status", type: "text" },
  ],
  ["order_id"],
);

/** A run reading the test Kafka and writing the test PostgreSQL, named from their real addresses. */
function ordersRun() {
  return new RunLineage({
    job: syncJobLineageJob("payments", "orders-to-warehouse"),
    inputs: [kafkaDataset(testEnv().kafkaBrokers, "orders.cdc")],
    outputs: [{ ...postgresDataset(testEnv().databaseUrl, "analytics.orders"), fields: schema.columns }],
    processingType: "STREAMING",
  });
}

describe("HTTP lineage transport", () => {
  it("delivers START and COMPLETE of one run, in order, to POST /api/v1/lineage", async () => {
    const server = await lineageServer();
    const { logger } = capturingLogger();
    const emitter = createLineageEmitter(
      { transport: "http", url: server.url.replace("http://", "http://ops:hunter2@") },
      { logger },
    );
    const run = ordersRun();
    const started = emitter.emit(run.start());
    const completed = emitter.emit(
      run.complete({
        outputs: [{ ...postgresDataset(testEnv().databaseUrl, "analytics.orders"), rowCount: 42 }],
      }),
    );
    expect(await Promise.all([started, completed])).toEqual([true, true]);
    await emitter.close();

    expect(server.received.map((r) => r.event.eventType)).toEqual(["START", "COMPLETE"]);
    for (const request of server.received) {
      expect(request).toMatchObject({
        method: "POST",
        path: "/api/v1/lineage",
        contentType: "application/json",
      });
      expect(request.authorization).toBe(`Basic ${Buffer.from("ops:hunter2").toString("base64")}`);
      expect(request.event.run.runId).toBe(run.runId);
      expect(request.event.job).toMatchObject({ namespace: "syncgov", name: "payments.orders-to-warehouse" });
    }
    const databaseUrl = new URL(testEnv().databaseUrl);
    const [start, complete] = server.received.map((r) => r.event);
    expect(start?.outputs[0]).toMatchObject({
      namespace: `postgres://${databaseUrl.hostname}:${databaseUrl.port}`,
      name: `${databaseUrl.pathname.slice(1)}.analytics.orders`,
    });
    expect(complete?.outputs[0]?.outputFacets.outputStatistics?.rowCount).toBe(42);
    // The test database URL carries a user and password; neither is in anything sent.
    expect(databaseUrl.password.length).toBeGreaterThan(0);
    for (const request of server.received) {
      const body = JSON.stringify(request.event);
      expect(body).not.toContain(databaseUrl.password);
      expect(body).not.toContain(`${databaseUrl.username}:`);
    }
    expect(emitter.counters()).toEqual({ sent: 2, failed: 0, dropped: 0, queued: 0 });
  });

  it("retries a server error, and does not retry an event the server refuses", async () => {
    const server = await lineageServer((index) => (index === 0 ? 503 : index === 2 ? 400 : 201));
    const { logger } = capturingLogger();
    const emitter = new LineageEmitter({
      transport: new HttpTransport({ url: server.url, retryBackoffMs: 20 }),
      logger,
    });
    const run = ordersRun();
    expect(await emitter.emit(run.start())).toBe(true);
    expect(await emitter.emit(run.complete())).toBe(false);
    // 503 then 201 for START; 400 for COMPLETE, not repeated.
    expect(server.received.map((r) => r.event.eventType)).toEqual(["START", "START", "COMPLETE"]);
    expect(emitter.counters()).toMatchObject({ sent: 1, failed: 1 });
  });

  it("gives up on a server that never answers within its bound, counting and logging without the password", async () => {
    const server = await lineageServer(() => "hang");
    const { logger, lines } = capturingLogger();
    const emitter = new LineageEmitter({
      transport: new HttpTransport({
        url: server.url.replace("http://", "http://ops:hunter2@"),
        timeoutMs: 200,
        retries: 1,
        retryBackoffMs: 20,
      }),
      logger,
    });
    const began = Date.now();
    expect(await emitter.emit(ordersRun().start())).toBe(false);
    expect(Date.now() - began).toBeLessThan(3000);
    expect(server.received).toHaveLength(2);
    expect(emitter.counters()).toMatchObject({ sent: 0, failed: 1 });
    const warning = lines.find((line) => line.includes("lineage event not delivered"));
    expect(warning).toContain(`127.0.0.1:${server.port}/api/v1/lineage`);
    expect(lines.join("\n")).not.toContain("hunter2");
  });

  it("counts an unreachable endpoint as a failure, quickly", async () => {
    const server = await lineageServer();
    const closed = servers.pop()!;
    await new Promise((resolve) => closed.close(resolve));
    const { logger } = capturingLogger();
    const emitter = new LineageEmitter({
      transport: new HttpTransport({ url: server.url, retries: 1, retryBackoffMs: 20 }),
      logger,
    });
    const began = Date.now();
    expect(await emitter.emit(ordersRun().start())).toBe(false);
    expect(Date.now() - began).toBeLessThan(3000);
    expect(emitter.counters().failed).toBe(1);
  });
});

describe("Kafka lineage transport", () => {
  it("produces each event as JSON keyed by job, so a run's events stay in order", async () => {
    const kafka = connectKafka({ brokers: testEnv().kafkaBrokers.split(","), clientId: "syncgov-test" });
    const admin = kafka.admin();
    await admin.connect();
    const topic = uniqueName("lineage-events");
    const groupId = `${topic}.reader`;
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
    try {
      const emitter = createLineageEmitter({ transport: "kafka", topic }, { kafka });
      const run = ordersRun();
      expect(await emitter.emit(run.start())).toBe(true);
      expect(await emitter.emit(run.complete())).toBe(true);
      await emitter.close();

      const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 200 });
      const received: { key: string | undefined; partition: number; event: RunEvent }[] = [];
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ message, partition }) => {
          received.push({
            key: message.key?.toString(),
            partition,
            event: JSON.parse(message.value?.toString() ?? "null") as RunEvent,
          });
        },
      });
      const deadline = Date.now() + 20_000;
      while (received.length < 2 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 100));
      await consumer.disconnect();

      expect(received.map((r) => r.event.eventType)).toEqual(["START", "COMPLETE"]);
      expect(new Set(received.map((r) => r.event.run.runId))).toEqual(new Set([run.runId]));
      expect(new Set(received.map((r) => r.key))).toEqual(
        new Set(["run:syncgov/payments.orders-to-warehouse"]),
      );
      expect(new Set(received.map((r) => r.partition)).size).toBe(1);
    } finally {
      await admin.deleteGroups([groupId]).catch(() => {});
      await admin.deleteTopics({ topics: [topic] }).catch(() => {});
      await admin.disconnect();
    }
  });
});
