import { describe, expect, it } from "vitest";
import { LineageEmitter } from "../lineage/emitter.ts";
import type { RunEvent } from "../lineage/events.ts";
import { ConsoleTransport } from "../lineage/transports.ts";
import { uuidv7 } from "../lineage/uuid.ts";
import type { LineageRun } from "./lineage.ts";
import { OpenLineageSink } from "./lineage-sink.ts";
import type { RunResult } from "./types.ts";

function capture(now: () => number) {
  const events: RunEvent[] = [];
  const emitter = new LineageEmitter({
    transport: new ConsoleTransport((line) => events.push(JSON.parse(line) as RunEvent)),
  });
  return { events, sink: new OpenLineageSink({ emitter, namespace: "prod", now }) };
}

const run = (type: LineageRun["type"], runId = uuidv7()): LineageRun => ({
  run: { namespace: "shop", name: `orders-${type.toLowerCase()}` },
  runId,
  job: { namespace: "shop", name: "orders" },
  type,
  inputs: [{ namespace: "kafka://broker:9092", name: "orders.cdc" }],
  outputs: [{ namespace: "postgres://db:5432", name: "dw.public.orders" }],
});

const result = (phase: RunResult["phase"], extra: Partial<RunResult> = {}): RunResult => ({
  phase,
  reason: phase === "Succeeded" ? "Completed" : phase === "Cancelled" ? "Cancelled" : "TargetSchemaMismatch",
  message: `the run ended ${phase}`,
  counts: { rowsRead: 12, rowsWritten: 10, rowsRejected: 2 },
  rejections: [],
  ...extra,
});

describe("OpenLineageSink", () => {
  it("emits START, RUNNING at most once per interval, and COMPLETE with the recorded runId and measurements", async () => {
    let now = 0;
    const { events, sink } = capture(() => now);
    const validation = run("Validation");
    sink.start(validation);
    now = 10_000;
    sink.progress(validation, { rowsRead: 5, rowsWritten: 0, rowsRejected: 0 });
    now = 30_000;
    sink.progress(validation, { rowsRead: 8, rowsWritten: 0, rowsRejected: 0 });
    now = 40_000;
    sink.progress(validation, { rowsRead: 9, rowsWritten: 0, rowsRejected: 0 });
    sink.complete(
      validation,
      result("Succeeded", {
        validation: {
          result: "Passed",
          sourceRows: 7,
          targetRows: 7,
          sourceChecksum: "00000000000000aa",
          targetChecksum: "00000000000000aa",
          columns: ["id"],
          excludedColumns: [],
        },
      }),
    );
    await sink.flush();
    expect(events.map((e) => e.eventType)).toEqual(["START", "RUNNING", "COMPLETE"]);
    expect(new Set(events.map((e) => e.run.runId))).toEqual(new Set([validation.runId]));
    expect(events[0]!.job).toMatchObject({ namespace: "prod", name: "shop.orders" });
    expect(events[0]!.job.facets.jobType?.processingType).toBe("BATCH");
    expect(events[1]!.inputs[0]!.inputFacets.dataQualityMetrics?.rowCount).toBe(8);
    const complete = events[2]!;
    expect(complete.inputs[0]).toMatchObject({ namespace: "kafka://broker:9092", name: "orders.cdc" });
    expect(complete.inputs[0]!.facets.syncgov_checksum).toMatchObject({
      rowCount: 7,
      sum: "00000000000000aa",
    });
    expect(complete.outputs[0]!.outputFacets.outputStatistics?.rowCount).toBe(10);
  });

  it("ends a cancelled run with ABORT and a failed one with FAIL and its message; a session is STREAMING", async () => {
    const { events, sink } = capture(() => 0);
    const session = run("Realtime");
    const batch = run("Batch");
    sink.start(session);
    sink.start(batch);
    sink.fail(session, result("Cancelled"));
    sink.fail(batch, result("Failed"));
    await sink.flush();
    const of = (id: string | undefined) => events.filter((e) => e.run.runId === id).map((e) => e.eventType);
    expect(of(session.runId)).toEqual(["START", "ABORT"]);
    expect(of(batch.runId)).toEqual(["START", "FAIL"]);
    expect(events[0]!.job.facets.jobType?.processingType).toBe("STREAMING");
    const failed = events.find((e) => e.eventType === "FAIL")!;
    expect(failed.run.facets.errorMessage?.message).toBe("TargetSchemaMismatch: the run ended Failed");
  });
});
