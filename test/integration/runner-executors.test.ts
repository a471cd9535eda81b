/**
 * The runner end to end against the real API server and PostgreSQL, started through each executor:
 * SyncJob and SyncRun objects in a namespace, the connection URL in a Secret, rows moved between
 * real tables, and the result read back from the SyncRun's status.
 *
 * There is no kubelet or Job controller in the test control plane: the Job executor's test checks
 * the Job it creates, runs that Job's command locally as the pod would, and then marks the Job
 * finished as the Job controller would.
 */

import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BatchV1Api, type V1Job } from "@kubernetes/client-node";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import type { SyncRunStatus } from "../../controller/api/syncrun.ts";
import type { Column } from "../../controller/connectors/record.ts";
import { SYNCPOLICIES, SYNCRUNS } from "../../controller/kube/resource.ts";
import { MASKING_SALT_ANNOTATION, type RunRef } from "../../controller/runner/cluster.ts";
import {
  ChildProcessExecutor,
  type ExecutorKind,
  InProcessExecutor,
  JobExecutor,
  SYNCGOV_CLI,
} from "../../controller/runner/executors.ts";
import { postgresTableChecksum } from "../../controller/validation/postgres.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { mergePatch } from "../support/kube.ts";
import { scratchTables } from "../support/postgres.ts";
import { DATABASE_SECRET, runNamespace } from "../support/runner.ts";

const env = testEnv();
const tables = scratchTables({ max: 4 });
const pool = tables.pool;
const ns = runNamespace("runner");
const namespace = ns.name;
const { kubeConfig: kc, custom, events: eventsApi } = ns.clients;
const batch = kc.makeApiClient(BatchV1Api);
const logDir = mkdtempSync(join(tmpdir(), "syncgov-runner-logs-"));
const policies: string[] = [];

/** Everything the in-process runner logs, to search for secrets. */
const inProcessLog: string[] = [];
const inProcessLogger = pino({ level: "info" }, { write: (line: string) => void inProcessLog.push(line) });

const executors = {
  InProcess: new InProcessExecutor({ kubeConfig: kc, log: inProcessLogger }),
  ChildProcess: new ChildProcessExecutor({ logDir, kubeconfigPath: env.kubeconfig, killGraceMs: 5000 }),
  Job: new JobExecutor({
    kubeConfig: kc,
    image: "ghcr.io/syncgov/syncgov:test",
    serviceAccountName: "syncgov-runner",
    ttlSecondsAfterFinished: 300,
    pollIntervalMs: 100,
  }),
};

afterAll(async () => {
  for (const name of policies)
    await custom.deleteClusterCustomObject({ ...SYNCPOLICIES, name }).catch(() => {});
});

/** A batch SyncJob named uniquely after prefix, scheduled nightly unless `spec` says otherwise. */
function createJob(prefix: string, spec: Record<string, unknown>, annotations?: Record<string, string>) {
  return ns.createJob(uniqueName(prefix), { mode: "batch", schedule: "0 2 * * *", ...spec }, annotations);
}

function sqlTable(table: string) {
  return { connectionSecretRef: { name: DATABASE_SECRET }, table };
}

/** Runs `argv` with this process's node, as the pod would run the image's entrypoint; logs to a file. */
function runLocally(argv: string[], logFile: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { env: { ...process.env, KUBECONFIG: env.kubeconfig } });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      writeFileSync(logFile, output);
      resolve(code ?? -1);
    });
  });
}

/** The Job controller's part: a finished pod makes the Job Complete or Failed. */
async function markJobFinished(job: V1Job, exitCode: number): Promise<void> {
  const now = new Date();
  const time = `${now.toISOString().slice(0, 19)}Z`;
  const condition = (type: string) => ({
    type,
    status: "True",
    lastProbeTime: time,
    lastTransitionTime: time,
    reason: exitCode === 0 ? "CompletionsReached" : "BackoffLimitExceeded",
    message:
      exitCode === 0
        ? "Reached expected number of succeeded pods"
        : "Job has reached the specified backoff limit",
  });
  const status =
    exitCode === 0
      ? {
          startTime: time,
          completionTime: time,
          succeeded: 1,
          active: 0,
          ready: 0,
          terminating: 0,
          uncountedTerminatedPods: {},
          conditions: [condition("SuccessCriteriaMet"), condition("Complete")],
        }
      : {
          startTime: time,
          failed: 1,
          active: 0,
          ready: 0,
          terminating: 0,
          uncountedTerminatedPods: {},
          conditions: [condition("FailureTarget"), condition("Failed")],
        };
  await batch.patchNamespacedJobStatus(
    { namespace, name: job.metadata!.name!, body: { status } },
    mergePatch,
  );
}

/** Executes the run through the executor and returns the runner's exit code. */
async function execute(kind: ExecutorKind, ref: RunRef): Promise<number> {
  if (kind !== "Job") return (await executors[kind].start(ref)).done;
  const handle = await executors.Job.start(ref);
  const job = await batch.readNamespacedJob({ namespace, name: handle.executor.jobName! });
  const run = (await custom.getNamespacedCustomObject({ ...SYNCRUNS, ...ref })) as {
    metadata: { uid: string };
  };
  expect(job.metadata?.ownerReferences).toEqual([
    expect.objectContaining({ kind: "SyncRun", name: ref.name, uid: run.metadata.uid, controller: true }),
  ]);
  expect(job.spec).toMatchObject({ backoffLimit: 0, ttlSecondsAfterFinished: 300 });
  const pod = job.spec!.template.spec!;
  expect(pod.serviceAccountName).toBe("syncgov-runner");
  expect(pod.securityContext).toMatchObject({
    runAsNonRoot: true,
    seccompProfile: { type: "RuntimeDefault" },
  });
  const container = pod.containers[0]!;
  expect(container.image).toBe("ghcr.io/syncgov/syncgov:test");
  expect(container.securityContext).toMatchObject({
    runAsNonRoot: true,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: ["ALL"] },
  });
  const [entrypoint, ...args] = container.command!;
  expect(entrypoint).toBe("syncgov");
  expect(args).toEqual(["run", `${ref.namespace}/${ref.name}`]);
  // The image's `syncgov` is controller/cli.ts.
  const code = await runLocally([SYNCGOV_CLI, ...args], join(logDir, `job_${ref.name}.log`));
  await markJobFinished(job, code);
  expect(await handle.done).toBe(code === 0 ? 0 : 1);
  return code;
}

async function checksums(source: string, target: string, columns: Column[]) {
  const [s, t] = await Promise.all([
    postgresTableChecksum(pool, source, columns),
    postgresTableChecksum(pool, target, columns),
  ]);
  return { source: s, target: t };
}

const CUSTOMER_COLUMNS = `id int8 PRIMARY KEY, name text NOT NULL, amount numeric(12,2), booked date,
  updated_at timestamptz, doc jsonb, version int8 NOT NULL`;
const CUSTOMER_ROW_MODEL: Column[] = [
  { name: "id", type: "bigint" },
  { name: "name", type: "text" },
  { name: "amount", type: "numeric" },
  { name: "booked", type: "date" },
  { name: "updated_at", type: "timestamp" },
  { name: "doc", type: "json" },
  { name: "version", type: "bigint" },
];

/** Rows `from`..`to`, each with version = id, so the cursor after them is `to`. */
async function insertCustomers(table: string, from: number, to: number): Promise<void> {
  await pool.query(
    `INSERT INTO ${table}
     SELECT g, 'customer ' || g, (g % 1000) * 1.25, date '2024-01-01' + (g % 365)::int,
            timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', jsonb_build_object('g', g, 'tag', 'x' || (g % 7)), g
       FROM generate_series($1::int8, $2::int8) g`,
    [from, to],
  );
}

const LEDGER_FIELDS = [
  { name: "entry_id", start: 0, length: 10, type: "bigint" },
  { name: "account", start: 10, length: 8 },
  { name: "amount", start: 18, length: 12, type: "numeric" },
  { name: "booked_on", start: 30, length: 8, type: "date", format: "YYYYMMDD" },
];

function ledgerLine(id: number, account: string, amount: string, date: string): string {
  return `${String(id).padStart(10, "0")}${account.padEnd(8)}${amount.padStart(12)}${date}`;
}

describe.each(["InProcess", "ChildProcess", "Job"] as const)("the %s executor", (kind) => {
  it("copies 100,000 rows table to table, then incrementally only the new and changed rows", async () => {
    const source = await tables.create("src", CUSTOMER_COLUMNS);
    const target = await tables.create("dst", CUSTOMER_COLUMNS);
    await insertCustomers(source, 1, 100_000);
    const job = await createJob("copy", {
      source: { sql: { ...sqlTable(source), cursorColumn: "version" } },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    });

    const full = await ns.createRun(job, { type: "Batch" });
    expect(await execute(kind, full)).toBe(0);
    const first = await ns.runStatus(full);
    expect(first).toMatchObject({
      phase: "Succeeded",
      rowsRead: 100_000,
      rowsWritten: 100_000,
      rowsRejected: 0,
      cursor: "100000",
      attempts: 1,
      validation: { result: "Passed", sourceRows: 100_000, targetRows: 100_000 },
    });
    expect(first.startTime).toBeDefined();
    expect(first.completionTime).toBeDefined();
    expect(first.conditions?.find((c) => c.type === "Succeeded")?.status).toBe("True");

    // 500 new rows and 100 changed ones; every change raises the version past the cursor.
    await insertCustomers(source, 100_001, 100_500);
    await pool.query(
      `UPDATE ${source} SET name = name || ' (moved)', amount = amount + 1, version = 100500 + id
        WHERE id <= 100000 AND id % 1000 = 7`,
    );
    const incremental = await ns.createRun(job, { type: "Batch", incremental: true });
    expect(await execute(kind, incremental)).toBe(0);
    const second = await ns.runStatus(incremental);
    // 600 new and changed rows, plus the one row at the previous cursor value (100000): the mark is
    // inclusive so that a row committed later with the same cursor value is not missed.
    expect(second).toMatchObject({
      phase: "Succeeded",
      rowsRead: 601,
      rowsWritten: 601,
      cursor: String(100_500 + 99_007),
      validation: { result: "Passed", sourceRows: 100_500, targetRows: 100_500 },
    });
    const sums = await checksums(source, target, CUSTOMER_ROW_MODEL);
    expect(sums.target).toEqual(sums.source);
    expect(second.validation?.sourceChecksum).toBe(sums.source.sum);
  }, 120_000);

  it("loads a fixed-width file, counting malformed lines and reporting them by line number", async () => {
    const dir = mkdtempSync(join(tmpdir(), "syncgov-ledger-"));
    const path = join(dir, "ledger.dat");
    const good = Array.from({ length: 40 }, (_, i) =>
      ledgerLine(i + 1, `ACC${i % 5}`, `${i * 100 + 7}.5`, `2024${String((i % 12) + 1).padStart(2, "0")}15`),
    );
    const lines = [
      "ENTRY_ID  ACCOUNT AMOUNT      BOOKED  ", // header, skipped
      ...good.slice(0, 10),
      "0000000099SHORT", // line 12: too short
      ...good.slice(10, 25),
      ledgerLine(98, "ACC1", "12x.45", "20240101"), // line 28: not a number
      ...good.slice(25),
      ledgerLine(97, "ACC1", "1.00", "20241345"), // line 44: no 45th of the 13th month
      ledgerLine(0, "ACC1", "1.00", "20240101").replace("0000000000", "          "), // line 45: blank key
    ];
    writeFileSync(path, `${lines.join("\n")}\n`);
    const target = await tables.create(
      "ledger",
      "entry_id int8 PRIMARY KEY, account text NOT NULL, amount numeric(14,2), booked_on date",
    );
    const job = await createJob("ledger", {
      source: { file: { path, skipLines: 1, fields: LEDGER_FIELDS } },
      target: { sql: { ...sqlTable(target), keyColumns: ["entry_id"] } },
    });
    const run = await ns.createRun(job);
    expect(await execute(kind, run)).toBe(0);
    const status = await ns.runStatus(run);
    expect(status).toMatchObject({
      phase: "Succeeded",
      rowsRead: 44,
      rowsWritten: 40,
      rowsRejected: 4,
      validation: { result: "Passed", sourceRows: 40, targetRows: 40 },
    });
    expect(status.message).toContain(
      "4 rejected: line 12 (TooShort); line 28 (amount: NotANumber); line 44 (booked_on: BadDate); line 45 (entry_id: MissingKey)",
    );
    const stored = await pool.query(`SELECT count(*)::int AS n, sum(amount)::text AS total FROM ${target}`);
    expect(stored.rows[0]).toEqual({
      n: 40,
      total: String(good.reduce((s, _, i) => s + i * 100 + 7.5, 0).toFixed(2)),
    });
  });

  it("fails with a message naming the column when the target lacks one, and writes nothing", async () => {
    const source = await tables.create("src", CUSTOMER_COLUMNS);
    await insertCustomers(source, 1, 50);
    const target = await tables.create(
      "dst",
      "id int8 PRIMARY KEY, name text NOT NULL, amount numeric(12,2), booked date, updated_at timestamptz, version int8 NOT NULL",
    );
    const job = await createJob("nocol", {
      source: { sql: sqlTable(source) },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    });
    const run = await ns.createRun(job);
    expect(await execute(kind, run)).toBe(1);
    const status = await ns.runStatus(run);
    expect(status.phase).toBe("Failed");
    expect(status.message).toContain(
      `target table ${target} does not fit the sync: table ${target} has no column doc`,
    );
    expect(status.conditions?.find((c) => c.type === "Failed")).toMatchObject({
      status: "True",
      reason: "TargetSchemaMismatch",
    });
    expect(status.rowsWritten).toBe(0);
    const count = await pool.query(`SELECT count(*)::int AS n FROM ${target}`);
    expect(count.rows[0].n).toBe(0);
  });
});

describe("Validation runs", () => {
  it("compare a source table with its target in the database, and notice a changed row", async () => {
    const source = await tables.create("src", CUSTOMER_COLUMNS);
    const target = await tables.create("dst", CUSTOMER_COLUMNS);
    await insertCustomers(source, 1, 5_000);
    await pool.query(`INSERT INTO ${target} SELECT * FROM ${source}`);
    const job = await createJob("check", {
      source: { sql: sqlTable(source) },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    });
    const same = await ns.createRun(job, { type: "Validation" });
    expect(await execute("InProcess", same)).toBe(0);
    const sums = await checksums(source, target, CUSTOMER_ROW_MODEL);
    expect(await ns.runStatus(same)).toMatchObject({
      phase: "Succeeded",
      rowsWritten: 0,
      validation: {
        result: "Passed",
        sourceRows: 5_000,
        targetRows: 5_000,
        sourceChecksum: sums.source.sum,
        targetChecksum: sums.source.sum,
      },
    });

    await pool.query(`UPDATE ${target} SET amount = amount + 0.01 WHERE id = 4321`);
    const drifted = await ns.createRun(job, { type: "Validation" });
    expect(await execute("InProcess", drifted)).toBe(0);
    const status = await ns.runStatus(drifted);
    const after = await checksums(source, target, CUSTOMER_ROW_MODEL);
    expect(status.validation).toEqual({
      result: "Failed",
      sourceRows: 5_000,
      targetRows: 5_000,
      sourceChecksum: after.source.sum,
      targetChecksum: after.target.sum,
    });
    expect(status.conditions?.find((c) => c.type === "Validated")).toMatchObject({
      status: "False",
      reason: "ChecksumsDiffer",
    });
    const events = await eventsApi.listNamespacedEvent({ namespace });
    expect(
      events.items.some((e) => e.reason === "ValidationFailed" && e.regarding?.name === drifted.name),
    ).toBe(true);
  });

  it("compare a fixed-width file with its target", async () => {
    const dir = mkdtempSync(join(tmpdir(), "syncgov-ledger-"));
    const path = join(dir, "ledger.dat");
    const lines = Array.from({ length: 30 }, (_, i) => ledgerLine(i + 1, "ACC1", `${i}.25`, "20240301"));
    writeFileSync(path, `${[...lines, "garbage"].join("\n")}\n`);
    const target = await tables.create(
      "ledger",
      "entry_id int8 PRIMARY KEY, account text NOT NULL, amount numeric(14,2), booked_on date",
    );
    await pool.query(
      `INSERT INTO ${target} SELECT g, 'ACC1', g - 1 + 0.25, date '2024-03-01' FROM generate_series(1, 30) g`,
    );
    const job = await createJob("ledger-check", {
      source: { file: { path, fields: LEDGER_FIELDS } },
      target: { sql: { ...sqlTable(target), keyColumns: ["entry_id"] } },
    });
    const run = await ns.createRun(job, { type: "Validation" });
    expect(await execute("InProcess", run)).toBe(0);
    const status = await ns.runStatus(run);
    expect(status).toMatchObject({
      phase: "Succeeded",
      rowsRead: 31,
      rowsRejected: 1,
      validation: { result: "Passed", sourceRows: 30, targetRows: 30 },
    });
    expect(status.message).toContain("1 rejected: line 31 (TooShort)");
  });
});

describe("crash and cancellation", () => {
  function randomBetween(low: number, high: number): number {
    return Math.floor(low + Math.random() * (high - low));
  }

  /** Polls the run's status until `until` holds or the runner ends. */
  async function waitFor(ref: RunRef, done: Promise<number>, until: (s: SyncRunStatus) => boolean) {
    let ended = false;
    void done.then(() => {
      ended = true;
    });
    for (;;) {
      if (ended) return false;
      if (until(await ns.runStatus(ref))) return true;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it("converges to the source after kill -9 of the child-process runner at random points and a retry", async () => {
    const source = await tables.create("src", CUSTOMER_COLUMNS);
    const target = await tables.create("dst", CUSTOMER_COLUMNS);
    await insertCustomers(source, 1, 100_000);
    const job = await createJob("crash", {
      source: { sql: sqlTable(source) },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    });
    const run = await ns.createRun(job);
    // Five kills, each followed by a retry: one while the runner starts up, then four at random
    // row counts of the copy. The counts stay well below the total because the status the kill
    // point is read from lags the writes by up to a progress interval.
    const points = [
      { afterMs: randomBetween(100, 700) },
      { afterRows: randomBetween(2_000, 10_000) },
      { afterRows: randomBetween(10_000, 20_000) },
      { afterRows: randomBetween(20_000, 30_000) },
      { afterRows: randomBetween(30_000, 40_000) },
    ];
    const writtenAtKill: number[] = [];
    let attemptsBefore = 0;
    for (const point of points) {
      const handle = await executors.ChildProcess.start(run);
      const alive =
        "afterMs" in point
          ? await Promise.race([
              handle.done.then(() => false),
              new Promise<boolean>((resolve) => setTimeout(() => resolve(true), point.afterMs)),
            ])
          : await waitFor(run, handle.done, (s) => (s.rowsWritten ?? 0) >= point.afterRows);
      expect(alive, `the runner ended before the kill point ${JSON.stringify(point)}`).toBe(true);
      process.kill(handle.pid, "SIGKILL");
      expect(await handle.done).toBe(137);
      const count = await pool.query(`SELECT count(*)::int AS n FROM ${target}`);
      writtenAtKill.push(count.rows[0].n);
      // A runner killed while starting may not have got as far as counting its attempt.
      attemptsBefore = (await ns.runStatus(run)).attempts ?? 0;
    }
    expect(writtenAtKill.at(-1)!).toBeLessThan(100_000);
    expect(writtenAtKill.at(-1)!).toBeGreaterThan(0);
    expect((await ns.runStatus(run)).phase).toBe("Running"); // a killed runner reports nothing

    const retry = await executors.ChildProcess.start(run);
    expect(await retry.done).toBe(0);
    const status = await ns.runStatus(run);
    expect(status).toMatchObject({
      phase: "Succeeded",
      attempts: attemptsBefore + 1,
      rowsWritten: 100_000,
      validation: { result: "Passed", sourceRows: 100_000, targetRows: 100_000 },
    });
    const sums = await checksums(source, target, CUSTOMER_ROW_MODEL);
    expect(sums.target).toEqual(sums.source);
    expect(sums.target.rowCount).toBe(100_000);

    // A finished run is not run again.
    const again = await executors.ChildProcess.start(run);
    expect(await again.done).toBe(0);
    expect((await ns.runStatus(run)).attempts).toBe(attemptsBefore + 1);
  }, 180_000);

  it("cancels a run at a batch boundary: in process by its signal, as a child process by SIGTERM", async () => {
    const source = await tables.create("src", CUSTOMER_COLUMNS);
    const target = await tables.create("dst", CUSTOMER_COLUMNS);
    await insertCustomers(source, 1, 100_000);
    const job = await createJob("cancel", {
      source: { sql: sqlTable(source) },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    });
    for (const kind of ["InProcess", "ChildProcess"] as const) {
      const run = await ns.createRun(job);
      const handle = await executors[kind].start(run);
      expect(await waitFor(run, handle.done, (s) => (s.rowsWritten ?? 0) > 0)).toBe(true);
      await handle.cancel();
      expect(await handle.done).toBe(1);
      const status = await ns.runStatus(run);
      expect(status.phase).toBe("Cancelled");
      expect(status.message).toMatch(/was cancelled after reading \d+ and writing \d+ rows/);
      expect(status.rowsWritten).toBeLessThan(100_000);
      expect(status.conditions?.find((c) => c.type === "Cancelled")?.status).toBe("True");
    }
  }, 120_000);
});

describe("masking required by policy", () => {
  it("runs nothing that the controller did not admit: a run without its admitted policy fails, writing nothing", async () => {
    const source = await tables.create("na", "id int4 PRIMARY KEY, email text");
    const target = await tables.create("na", "id int4 PRIMARY KEY, email text");
    await pool.query(`INSERT INTO ${source} VALUES (1, 'ada@example.org')`);
    const job = await createJob("not-admitted", {
      source: { sql: sqlTable(source) },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    });
    // Created as `kubectl create` leaves it: no status, so no recorded policy.
    const name = uniqueName("unadmitted");
    await custom.createNamespacedCustomObject({
      ...SYNCRUNS,
      namespace,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncRun",
        metadata: { name },
        spec: { jobName: job },
      },
    });
    expect(await execute("InProcess", { namespace, name })).toBe(1);
    const status = await ns.runStatus({ namespace, name });
    expect(status.phase).toBe("Failed");
    expect(status.conditions?.find((c) => c.type === "Failed")?.reason).toBe("NotAdmitted");
    expect(status.message).toContain("status.policy");
    expect((await pool.query(`SELECT count(*)::int AS n FROM ${target}`)).rows[0].n).toBe(0);
  });

  it("refuses to write a required column unmasked, and writes it hashed with the job's salt", async () => {
    const policy = uniqueName("pii");
    policies.push(policy);
    await custom.createClusterCustomObject({
      ...SYNCPOLICIES,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncPolicy",
        metadata: { name: policy },
        spec: {
          match: { namespaces: [namespace] },
          enforcement: "Enforce",
          masking: { requiredFor: [{ columnPattern: "e_?mail", transforms: ["hash", "redact"] }] },
        },
      },
    });
    const source = await tables.create("people", "id int4 PRIMARY KEY, email text, city text");
    const target = await tables.create("people", "id int4 PRIMARY KEY, email text, city text");
    await pool.query(
      `INSERT INTO ${source} VALUES (1, 'ada@example.org', 'London'), (2, 'grace@example.org', 'Arlington'), (3, NULL, 'Zurich')`,
    );
    const spec = {
      source: { sql: sqlTable(source) },
      target: { sql: { ...sqlTable(target), keyColumns: ["id"] } },
    };

    const unmasked = await ns.createRun(await createJob("pii", spec));
    expect(await execute("InProcess", unmasked)).toBe(1);
    const refused = await ns.runStatus(unmasked);
    expect(refused.phase).toBe("Failed");
    expect(refused.message).toContain(
      `refusing to write unmasked sensitive columns: column email matches /e_?mail/, which by policy ${policy} must be masked with hash or redact, but it has no masking rule`,
    );
    expect((await pool.query(`SELECT count(*)::int AS n FROM ${target}`)).rows[0].n).toBe(0);

    const salt = randomBytes(16).toString("hex");
    await ns.secret("pii-salt", { salt });
    const masked = await ns.createRun(
      await createJob(
        "pii",
        { ...spec, masking: [{ column: "email", transform: "hash" }] },
        {
          [MASKING_SALT_ANNOTATION]: "pii-salt",
        },
      ),
    );
    expect(await execute("InProcess", masked)).toBe(0);
    const status = await ns.runStatus(masked);
    expect(status).toMatchObject({ phase: "Succeeded", rowsWritten: 3, validation: { result: "Passed" } });
    expect(status.message).toContain("masked columns email not compared");
    expect(status.message).not.toContain(salt);
    const rows = await pool.query(`SELECT id, email, city FROM ${target} ORDER BY id`);
    const hmac = (text: string) => createHmac("sha256", salt).update(text).digest("hex");
    expect(rows.rows).toEqual([
      { id: 1, email: hmac("ada@example.org"), city: "London" },
      { id: 2, email: hmac("grace@example.org"), city: "Arlington" },
      { id: 3, email: null, city: "Zurich" },
    ]);
  });
});

describe("connection secrets", () => {
  it("never appear in any run's status, the runners' logs or the events", async () => {
    const password = decodeURIComponent(new URL(env.databaseUrl).password);
    expect(password.length).toBeGreaterThan(8);
    // A URL with a wrong password makes the driver fail on authentication; that password must not
    // surface either.
    const canary = `canary${randomBytes(8).toString("hex")}`;
    const wrong = new URL(env.databaseUrl);
    wrong.password = canary;
    await ns.secret("wrong-db", { url: wrong.toString() });
    const source = await tables.create("src", CUSTOMER_COLUMNS);
    const target = await tables.create("dst", CUSTOMER_COLUMNS);
    await insertCustomers(source, 1, 10);
    const job = await createJob("secret", {
      source: { sql: sqlTable(source) },
      target: { sql: { connectionSecretRef: { name: "wrong-db" }, table: target, keyColumns: ["id"] } },
    });
    for (const kind of ["InProcess", "ChildProcess", "Job"] as const) {
      const run = await ns.createRun(job);
      expect(await execute(kind, run)).toBe(1);
      const status = await ns.runStatus(run);
      expect(status.message).toContain("password authentication failed");
      expect(status.conditions?.find((c) => c.type === "Failed")?.reason).toBe("AuthenticationFailed");
    }

    const runs = await custom.listNamespacedCustomObject({ ...SYNCRUNS, namespace });
    const events = await eventsApi.listNamespacedEvent({ namespace });
    const logs = readdirSync(logDir).map((f) => readFileSync(join(logDir, f), "utf8"));
    const everything = {
      statuses: JSON.stringify(runs),
      events: JSON.stringify(events),
      logs: logs.join("\n"),
      inProcessLogs: inProcessLog.join(""),
    };
    // The search covers real material: the runs of this file, their events and logs.
    expect(events.items.some((e) => e.reason === "RunFailed")).toBe(true);
    expect(events.items.some((e) => e.reason === "RunSucceeded")).toBe(true);
    expect(everything.logs).toContain("run started");
    expect(everything.inProcessLogs).toContain("run started");
    for (const [where, text] of Object.entries(everything)) {
      expect(text.includes(password), `the database password appears in ${where}`).toBe(false);
      expect(text.includes(canary), `the wrong password appears in ${where}`).toBe(false);
      expect(text.includes(env.databaseUrl), `the database URL appears in ${where}`).toBe(false);
    }
  }, 120_000);
});
