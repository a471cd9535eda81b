import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import { obtainScript, type StartedService } from "./common.ts";
import { execFileAsync, freePort, type ProcessGroup, waitFor } from "./process.ts";

export interface KafkaEndpoint {
  /** Comma-separated bootstrap servers. */
  brokers: string;
}

/** Starts a single-node KRaft Kafka (broker and controller in one JVM) on loopback ports. */
export async function startLocalKafka(
  group: ProcessGroup,
  runDir: string,
): Promise<StartedService<KafkaEndpoint>> {
  const began = Date.now();
  const home = (await execFileAsync("bash", [obtainScript("kafka.sh")])).stdout.trim();
  const version = home.slice(home.lastIndexOf("kafka-") + "kafka-".length);
  const dir = join(runDir, "kafka");
  mkdirSync(join(dir, "data"), { recursive: true });
  const [port, controllerPort] = [await freePort(), await freePort()];
  const properties = join(dir, "server.properties");
  writeFileSync(
    properties,
    [
      "process.roles=broker,controller",
      "node.id=1",
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      "controller.listener.names=CONTROLLER",
      "inter.broker.listener.name=PLAINTEXT",
      "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
      `log.dirs=${join(dir, "data")}`,
      "num.partitions=1",
      "offsets.topic.replication.factor=1",
      "offsets.topic.num.partitions=4",
      "transaction.state.log.replication.factor=1",
      "transaction.state.log.min.isr=1",
      "group.initial.rebalance.delay.ms=0",
      "auto.create.topics.enable=true",
      "delete.topic.enable=true",
      "",
    ].join("\n"),
  );
  const log4j = join(dir, "log4j.properties");
  writeFileSync(
    log4j,
    [
      "log4j.rootLogger=WARN, stdout",
      "log4j.logger.kafka.server.KafkaServer=INFO",
      "log4j.logger.kafka.server.KafkaRaftServer=INFO",
      "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
      "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
      "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
      "",
    ].join("\n"),
  );
  const classpath = join(home, "lib", "*");
  const jvm = [
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-Djava.awt.headless=true",
    `-Dlog4j.configuration=file:${log4j}`,
  ];
  const clusterId = newClusterId();
  await execFileAsync("java", [
    ...jvm,
    "-cp",
    classpath,
    "kafka.tools.StorageTool",
    "format",
    "-t",
    clusterId,
    "-c",
    properties,
  ]);

  const logFile = join(runDir, "kafka.log");
  const child = group.start({
    name: "kafka",
    command: "java",
    args: [...jvm, "-cp", classpath, "kafka.Kafka", properties],
    logFile,
  });
  const brokers = `127.0.0.1:${port}`;
  await waitFor(
    `Kafka on ${brokers} (log ${logFile})`,
    () => kafkaAnswers(brokers),
    90_000,
    () => group.assertAlive(child, "kafka", logFile),
  );
  return {
    endpoint: { brokers },
    description: `Kafka ${version} (KRaft) at ${brokers}`,
    seconds: (Date.now() - began) / 1000,
    logs: [logFile],
    processes: ["kafka"],
    ready: () => waitFor(`Kafka on ${brokers} (log ${logFile})`, () => kafkaAnswers(brokers), 90_000),
  };
}

/** True once the broker answers a metadata request and has elected a controller. */
export async function kafkaAnswers(brokers: string): Promise<boolean> {
  const admin = new Kafka({
    clientId: "syncgov-env-probe",
    brokers: brokers.split(","),
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 1000,
  }).admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return cluster.brokers.length > 0 && cluster.controller !== null && cluster.controller >= 0;
  } finally {
    await admin.disconnect();
  }
}

/**
 * A random cluster id as Kafka writes them (16 bytes, base64url), never starting with "-": the
 * storage tool would read such an id as an option and refuse to format (Kafka's Uuid.randomUuid
 * skips those ids for the same reason).
 */
function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString("base64url");
    if (!id.startsWith("-")) return id;
  }
}
