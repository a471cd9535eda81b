import { CoreV1Api } from "@kubernetes/client-node";
import { Kafka, logLevel } from "kafkajs";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { kubeConfig, testEnv, uniqueName } from "../support/env.ts";

describe("real components", () => {
  it("kube-apiserver: client-node creates and reads a namespace and a ConfigMap", async () => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const namespace = uniqueName("smoke");
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    try {
      expect((await core.readNamespace({ name: namespace })).status?.phase).toBe("Active");
      await core.createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: "greeting" }, data: { text: "hello from syncgov" } },
      });
      const read = await core.readNamespacedConfigMap({ namespace, name: "greeting" });
      expect(read.data).toEqual({ text: "hello from syncgov" });
    } finally {
      await core.deleteNamespace({ name: namespace });
    }
  });

  describe("kafka", () => {
    const kafka = new Kafka({
      clientId: "syncgov-smoke",
      brokers: testEnv().kafkaBrokers.split(","),
      logLevel: logLevel.WARN,
    });
    const admin = kafka.admin();
    afterAll(() => admin.disconnect());

    it("kafkajs produces and consumes a message through a consumer group", async () => {
      const topic = uniqueName("smoke");
      await admin.connect();
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
      const producer = kafka.producer();
      await producer.connect();
      await producer.send({ topic, messages: [{ key: "k1", value: JSON.stringify({ id: 1, v: "one" }) }] });
      await producer.disconnect();

      const groupId = uniqueName("smoke-group");
      const consumer = kafka.consumer({ groupId });
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const received = await new Promise<{ key: string; value: string }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no message within 30 s")), 30_000);
        void consumer.run({
          eachMessage: async ({ message }) => {
            clearTimeout(timer);
            resolve({ key: String(message.key), value: String(message.value) });
          },
        });
      });
      await consumer.disconnect();
      expect(received).toEqual({ key: "k1", value: JSON.stringify({ id: 1, v: "one" }) });
      const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
      expect(offsets[0]?.partitions[0]?.offset).toBe("1");
    });
  });

  it("postgres: pg creates a table, writes and reads rows", async () => {
    const client = new pg.Client({ connectionString: testEnv().databaseUrl });
    await client.connect();
    try {
      const table = uniqueName("smoke").replaceAll("-", "_");
      await client.query(`CREATE TABLE "${table}" (id int PRIMARY KEY, name text NOT NULL)`);
      await client.query(
        `INSERT INTO "${table}" (id, name) SELECT g, 'row ' || g FROM generate_series(1, 100) g`,
      );
      const res = await client.query<{ n: string; last: string }>(
        `SELECT count(*) AS n, max(name) FILTER (WHERE id = 100) AS last FROM "${table}"`,
      );
      expect(res.rows[0]).toEqual({ n: "100", last: "row 100" });
      await client.query(`DROP TABLE "${table}"`);
    } finally {
      await client.end();
    }
  });
});
