import type { Admin, Kafka } from "kafkajs";
import { afterAll, beforeAll } from "vitest";
import { connectKafka } from "../../controller/connectors/kafka/cluster.ts";
import { testEnv } from "./env.ts";
import { ScratchTables } from "./postgres.ts";

/**
 * The test Kafka cluster and PostgreSQL database for a file that syncs topics into tables. The file
 * records in `topics` and `groups` what it creates in Kafka, and makes its tables with
 * `tables.create()`; all of it is removed after the file.
 */
export interface KafkaToPostgres {
  kafka: Kafka;
  /** Connected in a beforeAll. */
  admin: Admin;
  topics: string[];
  groups: string[];
  tables: ScratchTables;
  /** Stops for the file's consumers and producers, awaited in order before anything is removed. */
  stopBeforeCleanup: Array<() => Promise<void>>;
}

/**
 * Sets up a KafkaToPostgres for the calling test file; call it at the file's top level. Its afterAll
 * first stops the file's clients, then deletes the groups and topics, and drops the tables last, so
 * that nothing still running writes into a dropped table.
 */
export function kafkaToPostgres(): KafkaToPostgres {
  const kafka = connectKafka({ brokers: testEnv().kafkaBrokers.split(","), clientId: "syncgov-test" });
  const setup: KafkaToPostgres = {
    kafka,
    admin: kafka.admin(),
    topics: [],
    groups: [],
    tables: new ScratchTables({ max: 3 }),
    stopBeforeCleanup: [],
  };
  beforeAll(() => setup.admin.connect());
  afterAll(async () => {
    for (const stop of setup.stopBeforeCleanup) await stop();
    await setup.admin.deleteGroups(setup.groups).catch(() => {});
    await setup.admin.deleteTopics({ topics: setup.topics }).catch(() => {});
    await setup.admin.disconnect();
    await setup.tables.drop();
  });
  return setup;
}
