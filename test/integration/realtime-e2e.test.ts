import { Kafka, logLevel } from "kafkajs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";

/**
 * The realtime sync as a user meets it: `kubectl apply` a Kafka→PostgreSQL SyncJob, produce records,
 * and watch the controller run the session, then validate on request (the run-now annotation).
 */
const namespace = uniqueName("rt-e2e");
const topic = uniqueName("orders");
const table = `rt_${Date.now().toString(36)}`;
const pool = new pg.Pool({ connectionString: testEnv().databaseUrl, max: 2 });
const kafka = new Kafka({
  clientId: "rt-e2e",
  brokers: testEnv().kafkaBrokers.split(","),
  logLevel: logLevel.WARN,
});
let controller: RunningController;

interface Job {
  status?: {
    phase?: string;
    conditions?: { type: string; status: string; message?: string }[];
    lastValidation?: {
      result: string;
      sourceRows: number;
      targetRows: number;
      sourceChecksum: string;
      targetChecksum: string;
    };
  };
}

beforeAll(async () => {
  await installCrds();
  await kubectl(["delete", "syncpolicies", "--all"]);
  await kubectl(["create", "namespace", "syncgov-system"]);
  await kubectlOk(["create", "namespace", namespace]);
  await kubectlOk([
    "create",
    "secret",
    "generic",
    "warehouse",
    "-n",
    namespace,
    `--from-literal=url=${testEnv().databaseUrl}`,
  ]);
  await pool.query(
    `CREATE TABLE ${table} (order_id bigint PRIMARY KEY, status text NOT NULL, amount numeric(12,2), updated_at timestamptz NOT NULL)`,
  );
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  await admin.disconnect();
  controller = await startController({
    identity: "rt-e2e",
    leaseName: uniqueName("lease"),
    extraArgs: ["--executor", "InProcess"],
  });
});

afterAll(async () => {
  await controller?.stop();
  await kubectl(["delete", "namespace", namespace, "--wait=false"]);
  await pool.query(`DROP TABLE IF EXISTS ${table}`);
  await pool.end();
});

describe("realtime Kafka → PostgreSQL, end to end", () => {
  it("holds exactly the latest value per key of 10,000 records and validates", {
    timeout: 180_000,
  }, async () => {
    const job = {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncJob",
      metadata: { name: "orders", namespace },
      spec: {
        source: { kafka: { topic, startFrom: "earliest" } },
        target: { sql: { connectionSecretRef: { name: "warehouse" }, table, keyColumns: ["order_id"] } },
        mode: "realtime",
      },
    };
    expect(await kubectlOk(["apply", "-f", "-"], stringify(job))).toContain(
      "syncjob.syncgov.io/orders created",
    );

    // 10,000 records over 2,000 keys: each order moves through five states; the last one wins.
    const statuses = ["placed", "paid", "packed", "shipped", "delivered"];
    const producer = kafka.producer();
    await producer.connect();
    for (let step = 0; step < statuses.length; step++) {
      await producer.send({
        topic,
        messages: Array.from({ length: 2000 }, (_, i) => ({
          key: String(i + 1),
          value: JSON.stringify({
            order_id: i + 1,
            status: statuses[step],
            amount: (i + 1) * 1.25 + step,
            updated_at: new Date(Date.UTC(2026, 10, 22, 8, step, i % 60)).toISOString(),
          }),
        })),
      });
    }
    await producer.disconnect();

    await eventually(
      "the latest value of every key",
      async () => {
        const r = await pool.query<{ n: string; done: string }>(
          `SELECT count(*) AS n, count(*) FILTER (WHERE status = 'delivered') AS done FROM ${table}`,
        );
        return r.rows[0]!.n === "2000" && r.rows[0]!.done === "2000" ? true : undefined;
      },
      120_000,
    );
    const wrong = await pool.query(`SELECT count(*) AS n FROM ${table} WHERE amount <> order_id * 1.25 + 4`);
    expect(wrong.rows[0].n).toBe("0");

    await kubectlOk(["annotate", "syncjob", "orders", "-n", namespace, "syncgov.io/run-now=check-1"]);
    const validated = await eventually(
      "Validated=True",
      async () => {
        const j = JSON.parse(
          await kubectlOk(["get", "syncjob", "orders", "-n", namespace, "-o", "json"]),
        ) as Job;
        return j.status?.conditions?.some((c) => c.type === "Validated" && c.status === "True")
          ? j
          : undefined;
      },
      90_000,
    );
    const v = validated.status!.lastValidation!;
    expect(v).toMatchObject({ result: "Passed", sourceRows: 2000, targetRows: 2000 });
    expect(v.sourceChecksum).toBe(v.targetChecksum);
    const table_ = await kubectlOk(["get", "syncjob", "orders", "-n", namespace]);
    expect(table_).toMatch(/orders\s+realtime\s+Running\s+Closed\s+None\s+Passed/);
  });
});
