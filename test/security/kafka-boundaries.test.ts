import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import { Kafka, logLevel } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNCJOBS, SYNCRUNS } from "../../controller/kube/resource.ts";
import { syncgovCli } from "../support/cli.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { kubeConfig, testEnv } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { createTenant, deleteTenant, type Tenant } from "../support/tenant.ts";

/**
 * Finding 4 of the security review, its topic part: buffer and dead-letter topic names were free,
 * so a job in namespace B could name namespace A's buffer, and its Compensation run would replay
 * A's rows into B's table (committing A's replay offsets, so A's own replay skipped them). A job now
 * names its topics only under its own namespace's prefix (controller/api/tenancy.ts); the controller
 * marks any other name Invalid, `syncgov validate` refuses it offline, and the runner refuses it too.
 */
const admin = kubeConfig();
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
const RUNS = { group: SYNCRUNS.group, version: SYNCRUNS.version, plural: SYNCRUNS.plural };
const kafka = new Kafka({
  clientId: "sec-kafka",
  brokers: testEnv().kafkaBrokers.split(","),
  logLevel: logLevel.NOTHING,
});
let victim: Tenant;
let attacker: Tenant;
let controller: RunningController | undefined;
let victimBuffer: string;

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}

function realtimeJob(name: string, topics: { bufferTopic?: string; deadLetterTopic?: string }) {
  return {
    apiVersion: "syncgov.io/v1alpha1",
    kind: "SyncJob",
    metadata: { name },
    spec: {
      mode: "realtime",
      source: { kafka: { topic: `${name}.cdc` } },
      target: { sql: { connectionSecretRef: { name: "db" }, table: "loot.orders", keyColumns: ["id"] } },
      ...topics,
    },
  };
}

async function validCondition(namespace: string, name: string): Promise<Condition> {
  return eventually(`the Valid condition of ${name}`, async () => {
    const job = (await admin
      .makeApiClient(CustomObjectsApi)
      .getNamespacedCustomObject({ ...JOBS, namespace, name })) as { status?: { conditions?: Condition[] } };
    return job.status?.conditions?.find((c) => c.type === "Valid");
  });
}

beforeAll(async () => {
  await installCrds();
  victim = await createTenant("sec-kafka-a");
  attacker = await createTenant("sec-kafka-b");
  await attacker.kubeConfig.makeApiClient(CoreV1Api).createNamespacedSecret({
    namespace: attacker.namespace,
    body: { metadata: { name: "db" }, stringData: { url: testEnv().databaseUrl } },
  });
  // The victim's buffer holds rows waiting for its own Compensation run.
  victimBuffer = `syncgov.buffer.${victim.namespace}.orders`;
  const kafkaAdmin = kafka.admin();
  await kafkaAdmin.connect();
  await kafkaAdmin.createTopics({
    topics: [{ topic: victimBuffer, numPartitions: 1 }],
    waitForLeaders: true,
  });
  await kafkaAdmin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({
    topic: victimBuffer,
    messages: Array.from({ length: 5 }, (_, i) => ({
      key: String(i),
      value: JSON.stringify({ id: i, card: "4111" }),
    })),
  });
  await producer.disconnect();
  controller = await startController({
    identity: "sec-kafka",
    leaseName: "sec-kafka",
    extraArgs: ["--executor", "InProcess"],
  });
});

afterAll(async () => {
  await controller?.stop();
  for (const t of [victim, attacker]) if (t) await deleteTenant(t);
});

describe("a tenant naming another namespace's Kafka topics", () => {
  it.each([
    { field: "spec.bufferTopic", topics: () => ({ bufferTopic: victimBuffer }), prefix: "syncgov.buffer." },
    {
      field: "spec.deadLetterTopic",
      topics: () => ({ deadLetterTopic: `syncgov.dlq.${victim.namespace}.orders` }),
      prefix: "syncgov.dlq.",
    },
    {
      field: "spec.bufferTopic",
      topics: () => ({ bufferTopic: "orders.buffer" }),
      prefix: "syncgov.buffer.",
    },
  ])("is refused by the live controller: $field", async ({ field, topics, prefix }) => {
    const name = `steal-${Math.random().toString(36).slice(2, 8)}`;
    await attacker.kubeConfig.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      ...JOBS,
      namespace: attacker.namespace,
      body: realtimeJob(name, topics()),
    });
    const valid = await validCondition(attacker.namespace, name);
    expect(valid).toMatchObject({ status: "False", reason: "InvalidSpec" });
    expect(valid.message).toContain(`${field}: must start with ${prefix}${attacker.namespace}.`);
  });

  it("cannot replay the victim's buffer with a Compensation run of its own", async () => {
    await attacker.kubeConfig.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      ...JOBS,
      namespace: attacker.namespace,
      body: realtimeJob("replayer", { bufferTopic: victimBuffer }),
    });
    await attacker.kubeConfig.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
      ...RUNS,
      namespace: attacker.namespace,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncRun",
        metadata: { name: "replay-theirs" },
        spec: { jobName: "replayer", type: "Compensation" },
      },
    });
    // The run of an invalid job is never admitted: it waits, saying why.
    const run = await eventually(
      "the Compensation run to be refused",
      async () => {
        const r = (await admin.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
          ...RUNS,
          namespace: attacker.namespace,
          name: "replay-theirs",
        })) as { status?: { phase?: string; queueReason?: string; rowsWritten?: number } };
        return r.status?.queueReason ? r.status : undefined;
      },
      30_000,
    );
    expect(run).toMatchObject({
      phase: "Queued",
      queueReason: "job replayer is invalid (see its Valid condition)",
    });
    expect(run.rowsWritten ?? 0).toBe(0);
    // Nothing consumed the victim's buffer: its replay group has no committed offset.
    const kafkaAdmin = kafka.admin();
    await kafkaAdmin.connect();
    try {
      // A broker that just started may not have a coordinator for the group yet: ask until it answers.
      const offsets = await eventually("the replay group's offsets", () =>
        kafkaAdmin.fetchOffsets({ groupId: `${victimBuffer}.replay`, topics: [victimBuffer] }),
      );
      expect(offsets.flatMap((t) => t.partitions.map((p) => p.offset))).toEqual(["-1"]);
    } finally {
      await kafkaAdmin.disconnect();
    }
  });
});

describe("syncgov validate, offline", () => {
  it("refuses a manifest whose namespace does not own the topic it names", async () => {
    const dir = mkdtempSync(join(tmpdir(), "syncgov-validate-"));
    const file = join(dir, "job.yaml");
    const job = realtimeJob("orders", { bufferTopic: "syncgov.buffer.payments.orders" });
    writeFileSync(file, JSON.stringify({ ...job, metadata: { ...job.metadata, namespace: "shop" } }));
    const result = await syncgovCli(["validate", file]);
    expect(result.code).toBe(1);
    expect(result.out).toContain("spec.bufferTopic: must start with syncgov.buffer.shop.");
  });
});
