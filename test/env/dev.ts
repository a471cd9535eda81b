/**
 * The local default: `npm run dev`. Brings up a real control plane (etcd + kube-apiserver), Kafka and
 * PostgreSQL as local processes, prints how to reach them, and keeps them up until Ctrl-C.
 * `.syncgov/dev.env` receives the addresses as shell variables (mode 0600, since DATABASE_URL
 * carries the password), so another terminal can `source` it.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startEnvironment } from "./services/environment.ts";

const env = await startEnvironment();
const envFile = join(env.runDir, "..", "..", "dev.env");
writeFileSync(
  envFile,
  [
    `export KUBECONFIG=${env.kube.kubeconfig}`,
    `export KAFKA_BROKERS=${env.kafka.brokers}`,
    `export DATABASE_URL='${env.postgres.url}'`,
    "",
  ].join("\n"),
  { mode: 0o600 },
);
const masked = new URL(env.postgres.url);
masked.password = "***";
console.log(`
syncgov local environment is up.
  kubeconfig:  ${env.kube.kubeconfig}
               kubectl --kubeconfig ${env.kube.kubeconfig} get ns
  Kafka:       ${env.kafka.brokers}
  PostgreSQL:  ${masked.toString()}
  all three:   source ${envFile}
  logs:        ${env.runDir}
Press Ctrl-C to stop.`);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  console.log(`\n${signal}: stopping the environment...`);
  await env.stop();
  console.log("stopped.");
  process.exit(0);
}
process.on("SIGINT", () => void shutdown("SIGINT"));
process.on("SIGTERM", () => void shutdown("SIGTERM"));
// Keeps the process alive until a signal arrives.
setInterval(() => {}, 1 << 30);
