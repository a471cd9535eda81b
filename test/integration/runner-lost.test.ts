/**
 * Runs whose runner is lost (issue 18, findings 1 and 3), against the real API server, Kafka and
 * PostgreSQL:
 * - a live controller with the ChildProcess executor: the runner process of a realtime session is
 *   SIGKILLed; the session is Failed with the reason within a bounded time, and the job's next
 *   session starts and syncs;
 * - the API server restarts while a runner writes its final status: the result is still recorded,
 *   and the runner does not return before it is.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import type { SyncRunStatus } from "../../controller/api/syncrun.ts";
import { SYNCRUNS } from "../../controller/kube/resource.ts";
import { createStreamRunner } from "../../controller/runner/stream.ts";
import { eventually, type RunningController, restartServer, startController } from "../support/controller.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { kafkaToPostgres } from "../support/kafka.ts";
import { realtimeRuns, runNamespace } from "../support/runner.ts";

const env = testEnv();
const streams = kafkaToPostgres();
const pool = streams.tables.pool;
pool.on("error", () => {});
const ns = runNamespace("lost");
const namespace = ns.name;
const { custom } = ns.clients;
const log = pino(
  { level: "info" },
  pino.destination({ dest: join(env.runDir, `${namespace}.log`), sync: false }),
);
afterAll(() => log.flush());

const runs = realtimeRuns(ns, streams, {
  log,
  stream: createStreamRunner({ pollIntervalMs: 250, statusIntervalMs: 250, logger: log }),
});

interface Run {
  metadata: { name: string; creationTimestamp?: string };
  spec: { jobName: string; type?: string };
  status?: SyncRunStatus;
}

async function runsOf(job: string): Promise<Run[]> {
  const list = (await custom.listNamespacedCustomObject({ ...SYNCRUNS, namespace })) as { items: Run[] };
  return list.items.filter((r) => r.spec.jobName === job);
}

async function rowCount(table: string): Promise<number> {
  return Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);
}

/** The pid of the `syncgov run <namespace>/<run>` process, if one runs. */
function runnerPid(run: string): number | undefined {
  const ps = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" });
  for (const line of ps.split("\n")) {
    const m = /^\s*(\d+)\s+(.*)$/.exec(line);
    if (m?.[2]?.endsWith(` run ${namespace}/${run}`)) return Number(m[1]);
  }
  return undefined;
}

const records = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => ({ id: from + i, name: `n${from + i}` }));

describe("a runner that is lost", () => {
  let controller: RunningController | undefined;
  afterAll(async () => {
    await controller?.stop();
  });

  it("ChildProcess: a SIGKILLed session runner fails its run with the reason, and the next session syncs", {
    timeout: 240_000,
  }, async () => {
    const { job, topic, table } = await runs.createJob("killed", {
      columns: "id int8 PRIMARY KEY, name text",
    });
    controller = await startController({
      identity: uniqueName("lost"),
      leaseName: uniqueName("lease"),
      extraArgs: [
        "--executor",
        "ChildProcess",
        "--runner-log-dir",
        mkdtempSync(join(tmpdir(), "lost-runners-")),
      ],
    });
    await runs.produce(topic, records(1, 50));
    await eventually(
      "the first 50 records",
      async () => ((await rowCount(table)) === 50 ? true : undefined),
      90_000,
    );
    const session = await eventually("a running session with a heartbeat", async () =>
      (await runsOf(job)).find(
        (r) => r.spec.type === "Realtime" && r.status?.phase === "Running" && r.status.heartbeatTime,
      ),
    );
    const pid = await eventually("the session's runner process", async () =>
      runnerPid(session.metadata.name),
    );

    process.kill(pid, "SIGKILL");
    const killedAt = Date.now();
    const failed = await eventually(
      "the session Failed with the reason",
      async () => {
        const run = (await runsOf(job)).find((r) => r.metadata.name === session.metadata.name);
        return run?.status?.phase === "Failed" ? run : undefined;
      },
      30_000,
    );
    const failedAfterMs = Date.now() - killedAt;
    expect(failed.status!.message).toContain(`runner process ${pid} was killed by SIGKILL (exit 137)`);
    expect(failed.status!.conditions).toContainEqual(
      expect.objectContaining({ type: "Failed", status: "True", reason: "RunnerExited" }),
    );
    expect(failedAfterMs).toBeLessThan(30_000);

    // The job's next session (after the session backoff, 10 s) streams on from the committed offsets.
    const next = await eventually(
      "the next session Running",
      async () =>
        (await runsOf(job)).find(
          (r) =>
            r.spec.type === "Realtime" &&
            r.metadata.name !== session.metadata.name &&
            r.status?.phase === "Running",
        ),
      90_000,
    );
    await runs.produce(topic, records(51, 100));
    await eventually(
      "all 100 records",
      async () => ((await rowCount(table)) === 100 ? true : undefined),
      90_000,
    );
    const after = (await runsOf(job)).find((r) => r.metadata.name === next.metadata.name);
    expect(after?.status?.phase).toBe("Running");
    await controller.stop();
    controller = undefined;
  });

  it("the final status lands after an API server restart of 15 s, and the runner waits for it", {
    timeout: 180_000,
  }, async () => {
    const { job, topic, table } = await runs.createJob("restart", {
      columns: "id int8 PRIMARY KEY, name text",
    });
    const session = await runs.startSession(job);
    await runs.produce(topic, records(1, 20));
    await runs.until(session.ref, "20 rows written", (s) => (s.rowsWritten ?? 0) >= 20, 90_000);
    expect(await rowCount(table)).toBe(20);

    // The API server goes away; while it is away the session is stopped, so its final write meets
    // a refused connection and has to wait for the API server to come back.
    const restarted = restartServer("kube-apiserver", 15_000);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const stoppedAt = Date.now();
    const outcome = await session.stop();
    const waitedMs = Date.now() - stoppedAt;
    await restarted;
    expect(outcome.phase).toBe("Cancelled");
    expect(waitedMs).toBeGreaterThan(5000);
    const status = await eventually("the recorded result", async () => {
      const s = await ns.runStatus(session.ref);
      return s.phase === "Running" ? undefined : s;
    });
    expect(status).toMatchObject({ phase: "Cancelled", rowsWritten: 20 });
    expect(status.completionTime).toBeDefined();
  });
});
