import { describe, expect, it } from "vitest";
import packageJson from "../../package.json" with { type: "json" };
import { defineRowSchema } from "../connectors/record.ts";
import { checksumRows } from "../validation/checksum.ts";
import {
  buildRunEvent,
  FACET_SCHEMA_URLS,
  RUN_EVENT_SCHEMA_URL,
  RunLineage,
  SYNCGOV_PRODUCER,
  syncJobLineageJob,
} from "./events.ts";
import checksumFacetSchema from "./facets/SyncgovChecksumDatasetFacet.json" with { type: "json" };
import { fileDataset, kafkaDataset, postgresDataset } from "./naming.ts";
import { isUuidV7, uuidv7, uuidv7Time } from "./uuid.ts";

const schema = defineRowSchema(
  [
    { name: "order_id", type: "bigint" },
    { name: "status", type: "text" },
  ],
  ["order_id"],
);

describe("uuidv7", () => {
  it("is a version 7 UUID carrying the time, strictly increasing within a millisecond", () => {
    const now = Date.UTC(2025, 0, 2, 3, 4, 5, 678);
    const ids = Array.from({ length: 5000 }, () => uuidv7(now));
    for (const id of ids) expect(isUuidV7(id)).toBe(true);
    expect(uuidv7Time(ids[0]!)).toBe(now);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe("dataset naming", () => {
  it("follows the OpenLineage naming spec for PostgreSQL, Kafka and files", () => {
    expect(postgresDataset("postgres://db.internal:6543/warehouse", "analytics.orders")).toEqual({
      namespace: "postgres://db.internal:6543",
      name: "warehouse.analytics.orders",
    });
    expect(postgresDataset("postgresql://db.internal/warehouse", "orders")).toEqual({
      namespace: "postgres://db.internal:5432",
      name: "warehouse.public.orders",
    });
    expect(postgresDataset({ host: "10.0.0.5", database: "app" }, "s.t")).toEqual({
      namespace: "postgres://10.0.0.5:5432",
      name: "app.s.t",
    });
    expect(kafkaDataset("broker-1:9093,broker-2:9093", "orders.cdc")).toEqual({
      namespace: "kafka://broker-1:9093",
      name: "orders.cdc",
    });
    expect(kafkaDataset(["broker"], "t")).toEqual({ namespace: "kafka://broker:9092", name: "t" });
    expect(fileDataset("/data/in/../exports/orders.dat", "batch-host")).toEqual({
      namespace: "file://batch-host",
      name: "/data/exports/orders.dat",
    });
    expect(fileDataset("file://nas01/exports/orders.dat")).toEqual({
      namespace: "file://nas01",
      name: "/exports/orders.dat",
    });
  });

  it("refuses locations it cannot name, without repeating them", () => {
    const secret = "p4ss-w0rd";
    expect(() => postgresDataset(`postgres://u:${secret}@host`, "t")).toThrow(/names no database/);
    expect(() => postgresDataset(`mysql://u:${secret}@host/db`, "t")).toThrow(/postgres:\/\//);
    try {
      postgresDataset(`postgres://u:${secret}@host`, "t");
    } catch (error) {
      expect(String(error)).not.toContain(secret);
    }
    expect(() => fileDataset("relative/path")).toThrow(/absolute/);
    expect(() => kafkaDataset([], "t")).toThrow(/bootstrap/);
  });

  it("never lets a user or password from a connection URL into an event", () => {
    const password = "s3cr3t-Pa55";
    const target = postgresDataset(
      `postgres://alice:${password}@db.internal:6543/warehouse?sslpassword=${password}&application_name=x`,
      "analytics.orders",
    );
    const source = kafkaDataset(`SASL_SSL://bob:${password}@broker-1:9093`, "orders.cdc");
    const run = new RunLineage({
      job: syncJobLineageJob("payments", "orders-to-warehouse"),
      inputs: [source],
      outputs: [{ ...target, fields: schema.columns }],
    });
    const events = [
      run.start(),
      run.complete(),
      run.fail(new Error(`could not connect to postgres://alice:${password}@db.internal:6543/warehouse`)),
    ];
    for (const event of events) {
      const text = JSON.stringify(event);
      expect(text).not.toContain(password);
      expect(text).not.toContain("alice");
      expect(text).not.toContain("bob");
    }
    expect(events[2]!.run.facets.errorMessage?.message).toBe(
      "Error: could not connect to postgres://db.internal:6543/warehouse",
    );
    expect(events[0]!.outputs[0]).toMatchObject({
      namespace: "postgres://db.internal:6543",
      name: "warehouse.analytics.orders",
    });
    expect(events[0]!.inputs[0]).toMatchObject({ namespace: "kafka://broker-1:9093", name: "orders.cdc" });
  });
});

describe("RunEvents", () => {
  const job = syncJobLineageJob("payments", "orders-to-warehouse");
  const source = kafkaDataset("broker:9092", "orders.cdc");
  const target = { ...postgresDataset("postgres://db:5432/dw", "analytics.orders"), fields: schema.columns };
  // The clock is read for the runId, then for each event.
  const times = [
    new Date("2025-03-01T02:00:00.000Z"),
    new Date("2025-03-01T02:00:00.000Z"),
    new Date("2025-03-01T02:05:30.250Z"),
  ];

  it("share one runId and carry the spec's envelope, job type and schema facet", () => {
    let tick = 0;
    const run = new RunLineage({
      job,
      inputs: [source],
      outputs: [target],
      processingType: "STREAMING",
      clock: () => times[Math.min(tick++, times.length - 1)]!,
    });
    const start = run.start();
    const complete = run.complete();
    expect(isUuidV7(run.runId)).toBe(true);
    expect(uuidv7Time(run.runId)).toBe(times[0]!.getTime());
    expect(start.run.runId).toBe(run.runId);
    expect(complete.run.runId).toBe(run.runId);
    expect(start).toMatchObject({
      eventType: "START",
      eventTime: "2025-03-01T02:00:00.000Z",
      producer: SYNCGOV_PRODUCER,
      schemaURL: RUN_EVENT_SCHEMA_URL,
      job: {
        namespace: "syncgov",
        name: "payments.orders-to-warehouse",
        facets: {
          jobType: {
            _producer: SYNCGOV_PRODUCER,
            _schemaURL: FACET_SCHEMA_URLS.jobType,
            processingType: "STREAMING",
            integration: "SYNCGOV",
          },
        },
      },
    });
    expect(complete.eventType).toBe("COMPLETE");
    expect(complete.eventTime).toBe("2025-03-01T02:05:30.250Z");
    expect(start.outputs[0]?.facets.schema).toEqual({
      _producer: SYNCGOV_PRODUCER,
      _schemaURL: FACET_SCHEMA_URLS.schema,
      fields: [
        { name: "order_id", type: "bigint" },
        { name: "status", type: "text" },
      ],
    });
    expect(start.outputs[0]?.facets.dataSource?.uri).toBe("postgres://db:5432");
    expect(start.inputs[0]?.facets.schema).toBeUndefined();
    expect(start.run.facets).toEqual({});
    expect(SYNCGOV_PRODUCER).toContain(packageJson.version);
  });

  it("report row counts as data-quality metrics and output statistics, and the checksum as a custom facet", () => {
    const rows = [
      { order_id: "1", status: "paid" },
      { order_id: "2", status: "open" },
    ];
    const checksum = checksumRows(schema.columns, rows);
    const run = new RunLineage({ job, inputs: [source], outputs: [target] });
    const event = run.complete({
      inputs: [{ ...source, rowCount: 3, checksum }],
      outputs: [{ ...target, checksum }],
    });
    expect(event.inputs[0]?.inputFacets.dataQualityMetrics).toEqual({
      _producer: SYNCGOV_PRODUCER,
      _schemaURL: FACET_SCHEMA_URLS.dataQualityMetrics,
      rowCount: 3,
      columnMetrics: {},
    });
    expect(event.outputs[0]?.outputFacets.outputStatistics?.rowCount).toBe(2);
    expect(event.outputs[0]?.facets.syncgov_checksum).toEqual({
      _producer: SYNCGOV_PRODUCER,
      _schemaURL: FACET_SCHEMA_URLS.syncgovChecksum,
      rowCount: 2,
      sum: checksum.sum,
      algorithm: "syncgov-md5-sum64",
    });
    expect(FACET_SCHEMA_URLS.syncgovChecksum.startsWith(`${checksumFacetSchema.$id}#/$defs/`)).toBe(true);
    expect(run.start().inputs[0]?.inputFacets).toEqual({});
  });

  it("put the error on FAIL only, and ABORT carries none", () => {
    const run = new RunLineage({ job, inputs: [source], outputs: [target] });
    const failed = run.fail(new TypeError("target table analytics.orders does not exist"));
    expect(failed.eventType).toBe("FAIL");
    expect(failed.run.facets.errorMessage).toEqual({
      _producer: SYNCGOV_PRODUCER,
      _schemaURL: FACET_SCHEMA_URLS.errorMessage,
      message: "TypeError: target table analytics.orders does not exist",
      programmingLanguage: "JavaScript",
    });
    expect(run.abort().run.facets).toEqual({});
    expect(run.running().eventType).toBe("RUNNING");
    expect(buildRunEvent({ eventType: "FAIL", runId: run.runId, job }).run.facets.errorMessage?.message).toBe(
      "the run failed",
    );
  });

  it("keep a runId given back by a restarted runner, and refuse one that is not a UUIDv7", () => {
    const runId = uuidv7();
    expect(new RunLineage({ job, inputs: [], outputs: [], runId }).start().run.runId).toBe(runId);
    expect(() => new RunLineage({ job, inputs: [], outputs: [], runId: "not-a-uuid" })).toThrow(/UUIDv7/);
  });
});
