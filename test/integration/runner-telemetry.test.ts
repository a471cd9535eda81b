/**
 * The runner process reports through OpenTelemetry like the controller: a run executed by the
 * ChildProcess executor (exactly the pod entrypoint, `syncgov run`) pushes its metrics and its span
 * over OTLP/HTTP to the endpoint the controller passes on (OTEL_EXPORTER_OTLP_ENDPOINT), and the
 * run's span is a child of the admission span recorded on the run (status.traceContext). The OTLP
 * receiver here is a plain HTTP server decoding what the real exporters send (OTLP/HTTP JSON).
 */

import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNCRUNS } from "../../controller/kube/resource.ts";
import { patchStatus } from "../../controller/kube/status.ts";
import { ChildProcessExecutor } from "../../controller/runner/executors.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { OtlpReceiver, pointLabel } from "../support/otlp.ts";
import { scratchTables } from "../support/postgres.ts";
import { DATABASE_SECRET, runNamespace } from "../support/runner.ts";

const tables = scratchTables({ max: 2 });
const ns = runNamespace("telemetry");

const otlp = new OtlpReceiver();
let endpoint: string;

beforeAll(async () => {
  endpoint = (await otlp.start()).endpoint;
});

afterAll(() => otlp.stop());

const metricsOf = (service: string) => otlp.metricsOf(service);
const spans = () => otlp.spans();
const label = pointLabel;

describe("runner telemetry", () => {
  it("a child-process run pushes its rows, its duration and its span, a child of the admission span", async () => {
    const source = await tables.create("tsrc", "id int4 PRIMARY KEY, name text");
    const target = await tables.create("tdst", "id int4 PRIMARY KEY, name text");
    await tables.pool.query(`INSERT INTO ${source} SELECT g, 'n' || g FROM generate_series(1, 250) g`);
    const job = await ns.createJob(uniqueName("tel"), {
      mode: "batch",
      schedule: "0 2 * * *",
      source: { sql: { connectionSecretRef: { name: DATABASE_SECRET }, table: source } },
      target: { sql: { connectionSecretRef: { name: DATABASE_SECRET }, table: target, keyColumns: ["id"] } },
    });
    const run = await ns.createRun(job);
    // The admission span, as the scheduler records it on the run.
    const traceId = randomBytes(16).toString("hex");
    const admissionSpan = randomBytes(8).toString("hex");
    await patchStatus(
      ns.clients.custom,
      { resource: SYNCRUNS, namespace: run.namespace, name: run.name },
      { traceContext: { traceparent: `00-${traceId}-${admissionSpan}-01` } },
    );

    const executor = new ChildProcessExecutor({
      logDir: mkdtempSync(join(tmpdir(), "syncgov-telemetry-")),
      kubeconfigPath: testEnv().kubeconfig,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint },
    });
    expect(await (await executor.start(run)).done).toBe(0);
    expect(await ns.runStatus(run)).toMatchObject({ phase: "Succeeded", rowsWritten: 250 });

    // The process flushed before it exited: everything is here now.
    const metrics = metricsOf("syncgov-runner");
    const rows = metrics.filter((m) => m.name === "syncgov_run_rows_total").flatMap((m) => m.sum!.dataPoints);
    const sumOf = (direction: string) =>
      rows
        .filter((p) => label(p, "direction") === direction && label(p, "job") === job)
        .reduce((n, p) => n + Number(p.asInt ?? p.asDouble ?? 0), 0);
    expect(sumOf("read")).toBe(250);
    expect(sumOf("written")).toBe(250);
    const runs = metrics.filter((m) => m.name === "syncgov_runs_total").flatMap((m) => m.sum!.dataPoints);
    expect(
      runs.some(
        (p) => label(p, "phase") === "Succeeded" && label(p, "job") === job && label(p, "type") === "Batch",
      ),
    ).toBe(true);
    const durations = metrics
      .filter((m) => m.name === "syncgov_run_duration_seconds")
      .flatMap((m) => m.histogram!.dataPoints);
    expect(durations.some((p) => label(p, "job") === job && Number(p.count) === 1)).toBe(true);
    const validations = metrics
      .filter((m) => m.name === "syncgov_validation_results_total")
      .flatMap((m) => m.sum!.dataPoints);
    expect(validations.some((p) => label(p, "result") === "Passed" && label(p, "job") === job)).toBe(true);
    // The target's own counters come from the same process.
    expect(metrics.some((m) => m.name === "syncgov_target_batches_total")).toBe(true);
    const batches = metrics
      .filter((m) => m.name === "syncgov_target_batch_duration_seconds")
      .flatMap((m) => m.histogram!.dataPoints);
    expect(batches.some((p) => label(p, "table") === target && Number(p.count) >= 1)).toBe(true);

    const span = spans().find((s) => s.name === `run ${run.namespace}/${run.name}`);
    expect(span, "the run's span").toBeDefined();
    expect(span!.traceId).toBe(traceId);
    expect(span!.parentSpanId).toBe(admissionSpan);
  }, 90_000);
});
