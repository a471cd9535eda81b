import { describe, expect, it } from "vitest";
import { SyncJobSpec } from "../api/syncjob.ts";
import { SyncRunSpec } from "../api/syncrun.ts";
import type { LineageRun, LineageSink } from "./lineage.ts";
import { executeRun } from "./run.ts";
import { REDACTED_SECRET } from "./secrets.ts";
import type { RunInput, RunResult, StreamRunner } from "./types.ts";

const TARGET_URL = "postgres://writer:t0p-s3cret@warehouse.internal:5432/dw";

const kafkaJob = SyncJobSpec.parse({
  source: { kafka: { topic: "orders.cdc" } },
  target: {
    sql: { connectionSecretRef: { name: "dw" }, table: "analytics.orders", keyColumns: ["order_id"] },
  },
  mode: "realtime",
});

const fileJob = SyncJobSpec.parse({
  source: {
    file: {
      path: "/data/customers.dat",
      fields: [
        { name: "id", start: 0, length: 8, type: "bigint" },
        { name: "email", start: 8, length: 40 },
      ],
    },
  },
  target: { sql: { connectionSecretRef: { name: "dw" }, table: "crm.customers", keyColumns: ["id"] } },
  mode: "batch",
  schedule: "0 2 * * *",
});

function input(spec: SyncJobSpec, run: Partial<SyncRunSpec> = {}): RunInput {
  return {
    run: { namespace: "shop", name: "orders-1" },
    job: { namespace: "shop", name: "orders", spec },
    spec: SyncRunSpec.parse({ jobName: "orders", ...run }),
    connections: { target: TARGET_URL },
  };
}

class RecordingLineage implements LineageSink {
  readonly calls: string[] = [];
  readonly runs: LineageRun[] = [];
  start(run: LineageRun) {
    this.calls.push("start");
    this.runs.push(run);
  }
  progress() {
    this.calls.push("progress");
  }
  complete(_run: LineageRun, result: RunResult) {
    this.calls.push(`complete:${result.phase}`);
  }
  fail(_run: LineageRun, result: RunResult) {
    this.calls.push(`fail:${result.phase}`);
  }
}

describe("executeRun", () => {
  it("fails Realtime runs with NotWired until a stream runner is wired", async () => {
    const lineage = new RecordingLineage();
    const result = await executeRun(input(kafkaJob, { type: "Realtime" }), { lineage });
    expect(result).toMatchObject({
      phase: "Failed",
      reason: "NotWired",
      message:
        "Realtime run shop/orders-1 failed: Realtime runs of a Kafka source are not wired into this runner yet",
      counts: { rowsRead: 0, rowsWritten: 0, rowsRejected: 0 },
    });
    expect(lineage.calls).toEqual(["start", "fail:Failed"]);
    // Datasets are named from the URL's host, port and database only.
    expect(lineage.runs[0]!.outputs).toEqual([
      { namespace: "postgres://warehouse.internal:5432", name: "dw.analytics.orders" },
    ]);
    expect(JSON.stringify(lineage.runs)).not.toContain("t0p-s3cret");
  });

  it("hands Kafka-sourced runs to the stream runner and scrubs what it throws", async () => {
    const stream: StreamRunner = {
      async execute() {
        throw new Error(`cannot reach ${TARGET_URL}`);
      },
    };
    const result = await executeRun(input(kafkaJob, { type: "Realtime" }), { stream });
    expect(result.phase).toBe("Failed");
    expect(result.message).toBe(`Realtime run shop/orders-1 failed: cannot reach ${REDACTED_SECRET}`);

    const succeeding: StreamRunner = {
      async execute(context) {
        context.progress.add({ rowsRead: 3, rowsWritten: 3 });
        return { summary: "streamed 3 records", cursor: "orders.cdc:0:3" };
      },
    };
    expect(await executeRun(input(kafkaJob, { type: "Realtime" }), { stream: succeeding })).toMatchObject({
      phase: "Succeeded",
      reason: "Completed",
      message: "streamed 3 records.",
      cursor: "orders.cdc:0:3",
      counts: { rowsRead: 3, rowsWritten: 3, rowsRejected: 0 },
    });
  });

  it("refuses to write a column the policy requires masked, before touching the target", async () => {
    const result = await executeRun(
      {
        ...input(fileJob),
        requiredMasking: [{ columnPattern: "mail", transforms: ["hash"], policy: "pii" }],
      },
      {
        openPool: () => {
          throw new Error("no connection may be opened");
        },
      },
    );
    expect(result).toMatchObject({ phase: "Failed", reason: "MaskingRequired" });
    expect(result.message).toContain(
      "refusing to write unmasked sensitive columns: column email matches /mail/, which by policy pii must be masked with hash, but it has no masking rule",
    );
  });

  it("reports a masking rule for a column the source lacks", async () => {
    const spec = { ...fileJob, masking: [{ column: "e_mail", transform: "redact" as const }] };
    const result = await executeRun(input(spec));
    expect(result.reason).toBe("InvalidMaskingRule");
    expect(result.message).toContain(
      "masking rule for column e_mail: file /data/customers.dat has no such column",
    );
  });

  it("does not run run types the runner does not execute, nor unsupported dialects", async () => {
    expect(await executeRun(input(fileJob, { type: "Swap" }))).toMatchObject({
      phase: "Failed",
      reason: "RunTypeNotSupported",
    });
    const mysql = { ...fileJob, target: { sql: { ...fileJob.target.sql, dialect: "mysql" as const } } };
    expect(await executeRun(input(mysql))).toMatchObject({ phase: "Failed", reason: "DialectNotSupported" });
  });

  it("ends Cancelled without work when the signal has already fired, and a throwing sink changes nothing", async () => {
    const cancelled = new AbortController();
    cancelled.abort();
    const throwing: LineageSink = {
      start() {
        throw new Error("lineage endpoint down");
      },
      progress() {},
      complete() {},
      async fail() {
        throw new Error("lineage endpoint down");
      },
    };
    const result = await executeRun({ ...input(fileJob), signal: cancelled.signal }, { lineage: throwing });
    expect(result).toMatchObject({ phase: "Cancelled", reason: "Cancelled" });
  });
});
